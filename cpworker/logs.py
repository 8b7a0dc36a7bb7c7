"""Logs, one line per event, with secrets masked: JSON, or text for a terminal.

The JSON formatter is Powertools' ``LambdaPowertoolsFormatter`` so that worker and
Lambda logs look alike. Secrets are masked in the line's fields *before* they are
serialised: masking the finished JSON would miss a secret that JSON escapes
(``"``, ``\\``, a newline) and could cut an escape sequence in two. The text
formatter (``--log-format text``) masks the same fields the same way.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import textwrap
import time
from collections.abc import MutableMapping
from typing import IO, TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from cpworker.redact import SECRETS

if TYPE_CHECKING:
    from aws_lambda_powertools.logging.types import LogRecord

LOGGER_NAME = "cpworker"
# Libraries whose DEBUG lines carry request headers, the job's session token included.
SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")
LogFormat = Literal["json", "text"]


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter whose output never carries a registered secret."""

    def serialize(self, log: LogRecord) -> str:
        return super().serialize(_scrubbed(log))

    def _extract_log_exception(
        self, log_record: logging.LogRecord
    ) -> tuple[str, str, list[Any]] | tuple[None, None, None]:
        """Also a traceback that came from a job's process as text (``exc_text``):
        a traceback object cannot cross the process boundary."""
        if log_record.exc_info is None and log_record.exc_text:
            last_line = log_record.exc_text.rstrip().rsplit("\n", 1)[-1]
            return log_record.exc_text, last_line.split(":", 1)[0], []
        return super()._extract_log_exception(log_record)


class TextFormatter(logging.Formatter):
    """One line per record for a terminal: time, level, message, then the record's fields
    as ``key=value``; a traceback follows, indented. Secrets are masked as in JSON."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        fields = {
            key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES
        }
        message = SECRETS.scrub(record.getMessage()).replace("\n", "\\n")
        line = " ".join(
            [
                f"{when}.{int(record.msecs):03d}",
                f"{record.levelname:<8}",
                message,
                *(f"{key}={_text_value(value)}" for key, value in _scrubbed(fields).items()),
            ]
        )
        trace = record.exc_text or (
            self.formatException(record.exc_info) if record.exc_info else ""
        )
        if trace:
            line += "\n" + textwrap.indent(SECRETS.scrub(trace.rstrip()), "    ")
        return line


# Attributes every record has; the others are the fields a log call added (``extra``).
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_BARE = re.compile(r"[^\s\"'=\\]+")


def _text_value(value: Any) -> str:
    """A field's value, quoted (JSON) only when it has spaces, quotes or ``=`` in it."""
    if isinstance(value, str) and _BARE.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def _scrubbed(value: Any) -> Any:
    """``value`` with registered secrets masked in every string it holds (keys included);
    other objects become their ``str()``, as the JSON serialiser would write them."""
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {_scrubbed(key): _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrubbed(item) for item in value]
    return SECRETS.scrub(str(value))


def limit_sdk_loggers() -> None:
    """Keep the AWS SDK's loggers at INFO or above, whatever the root level.

    Their DEBUG lines carry request headers (``X-Amz-Security-Token``) and may go out
    through handlers cpworker does not own (Lambda's own, for one), unmasked.
    """
    floor = max(logging.INFO, logging.getLogger().level)
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(floor)


def configure_logging(
    level: int | str = logging.INFO,
    stream: IO[str] | None = None,
    log_format: LogFormat = "json",
) -> None:
    """Send cpworker's (and the handlers') logs as JSON (or text) lines to ``stream``
    (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        TextFormatter() if log_format == "text" else RedactingFormatter(service=LOGGER_NAME)
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    limit_sdk_loggers()


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
