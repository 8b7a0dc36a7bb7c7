"""Structured JSON logs, one line per event, with secrets masked.

The formatter is Powertools' ``LambdaPowertoolsFormatter`` so that worker and
Lambda logs look alike; every formatted line goes through ``redact.SECRETS``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from cpworker.redact import SECRETS

LOGGER_NAME = "cpworker"


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter whose output never carries a registered secret."""

    def format(self, record: logging.LogRecord) -> str:
        return SECRETS.scrub(super().format(record))


def configure_logging(level: int | str = logging.INFO, stream: IO[str] | None = None) -> None:
    """Send cpworker's (and the handlers') logs as JSON lines to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(service=LOGGER_NAME))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # botocore logs request details (headers included) at DEBUG: never let them through.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds the job's fields to every record, merged with the call's ``extra``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def logger(name: str = LOGGER_NAME, **fields: Any) -> JobLogger:
    """A logger bound to ``fields`` (job id, pipeline, ...)."""
    return JobLogger(logging.getLogger(name), fields)
