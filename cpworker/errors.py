"""Exceptions a handler raises to fail its job with a chosen failure type.

The tree::

    ActionFailed                 any failure with a type and a pipeline-facing message
    ├── JobFailed                the work itself failed (the default type)
    ├── ConfigurationError       the action's configuration is wrong
    ├── PermissionError          cpworker.PermissionError: access to something was denied
    ├── RevisionOutOfSync        the revision changed under the action
    ├── RevisionUnavailable      the revision to act on cannot be found
    └── SystemUnavailable        a system the action depends on is down

Any other exception a handler raises becomes a ``JobFailed`` failure whose message is
``"<ExceptionType>: <message>"``. A continuation is a result, never an exception.
This module is pure: no I/O, no boto3.
"""

from __future__ import annotations

from enum import StrEnum


class FailureType(StrEnum):
    """The ``failureDetails.type`` values CodePipeline accepts."""

    JOB_FAILED = "JobFailed"
    CONFIGURATION_ERROR = "ConfigurationError"
    PERMISSION_ERROR = "PermissionError"
    REVISION_OUT_OF_SYNC = "RevisionOutOfSync"
    REVISION_UNAVAILABLE = "RevisionUnavailable"
    SYSTEM_UNAVAILABLE = "SystemUnavailable"


class ActionFailed(Exception):  # noqa: N818 - it names an outcome, as the API does
    """Fail the job with ``message`` (shown in the pipeline) and a failure ``type``."""

    failure_type: FailureType = FailureType.JOB_FAILED

    def __init__(
        self,
        message: str,
        *,
        type: FailureType | None = None,
        external_execution_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if type is not None:
            self.failure_type = FailureType(type)
        self.external_execution_id = external_execution_id


class JobFailed(ActionFailed):
    """The action's work failed."""

    failure_type = FailureType.JOB_FAILED


class ConfigurationError(ActionFailed):
    """The action's configuration is missing, malformed or inconsistent."""

    failure_type = FailureType.CONFIGURATION_ERROR


class PermissionError(ActionFailed):
    """The action was denied access to something it needs."""

    failure_type = FailureType.PERMISSION_ERROR


class RevisionOutOfSync(ActionFailed):
    """The revision the action worked on is no longer the one the pipeline expects."""

    failure_type = FailureType.REVISION_OUT_OF_SYNC


class RevisionUnavailable(ActionFailed):
    """The revision the action needs cannot be found."""

    failure_type = FailureType.REVISION_UNAVAILABLE


class SystemUnavailable(ActionFailed):
    """A system the action depends on cannot be reached."""

    failure_type = FailureType.SYSTEM_UNAVAILABLE
