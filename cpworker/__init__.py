"""cpworker: write AWS CodePipeline actions as plain Python functions.

One import gives a handler author everything::

    from cpworker import ActionApp, Job, Success, Continue, Failure, ConfigurationError

and ``handler = lambda_handler(app)`` makes the app's action a Lambda function.
"""

from cpworker.app import ActionApp, ActionSettings, ActionSpec
from cpworker.config import prop
from cpworker.errors import (
    ActionFailed,
    ConfigurationError,
    FailureType,
    JobFailed,
    PermissionError,
    RevisionOutOfSync,
    RevisionUnavailable,
    SystemUnavailable,
)
from cpworker.job import Job, current_job
from cpworker.result import Continue, CurrentRevision, Failure, InvalidResult, Result, Success
from cpworker.sources.lambda_entry import lambda_handler

__all__ = [
    "ActionApp",
    "ActionFailed",
    "ActionSettings",
    "ActionSpec",
    "ConfigurationError",
    "Continue",
    "CurrentRevision",
    "Failure",
    "FailureType",
    "InvalidResult",
    "Job",
    "JobFailed",
    "PermissionError",
    "Result",
    "RevisionOutOfSync",
    "RevisionUnavailable",
    "Success",
    "SystemUnavailable",
    "current_job",
    "lambda_handler",
    "prop",
]
