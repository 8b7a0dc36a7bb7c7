"""``--log-format text``: one line per record for a terminal, with secrets masked."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from cpworker.logs import configure_logging, logger
from cpworker.redact import SECRETS

SECRET = "s3cr3t-Pa55/word"


@contextmanager
def text_logging() -> Iterator[io.StringIO]:
    """cpworker's logging set up as ``--log-format text`` does, for the block; the root's
    handlers (pytest's and the session's credentials scan) are put back after it, in the
    same test phase, so that none is left behind."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("INFO", stream, log_format="text")
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_record_is_one_line_time_level_message_fields() -> None:
    job_log = logger("cpworker.job", job_id="j-1", action_type="Build/Custom/Acme/1")
    with text_logging() as text_log:
        job_log.info("result reported", extra={"outcome": "success", "duration_s": 0.25})
        job_log.warning("odd", extra={"note": 'two words, "quoted"', "names": ["a", "b c"]})
    first, second = text_log.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO     result reported "
        r"job_id=j-1 action_type=Build/Custom/Acme/1 outcome=success duration_s=0\.25",
        first,
    ), first
    assert second.endswith(
        "WARNING  odd job_id=j-1 action_type=Build/Custom/Acme/1 "
        'note="two words, \\"quoted\\"" names=["a", "b c"]'
    ), second


def test_secrets_are_masked_in_text_lines_too() -> None:
    with text_logging() as text_log, SECRETS.active([SECRET]):
        job_log = logger("cpworker.job", job_id="j-2")
        job_log.info(f"logging in with {SECRET}", extra={"url": f"https://x/?p={SECRET}"})
        try:
            raise RuntimeError(f"login refused for {SECRET!r}")
        except RuntimeError:
            job_log.exception("the job could not be run")
    text = text_log.getvalue()
    assert SECRET not in text
    assert "Pa55" not in text, "nor any encoded form of it"
    lines = text.splitlines()
    assert lines[0].endswith('INFO     logging in with **** job_id=j-2 url="https://x/?p=****"')
    assert lines[1].endswith("ERROR    the job could not be run job_id=j-2")
    assert lines[2] == "    Traceback (most recent call last):", "the traceback follows, indented"
    assert lines[-1] == "    RuntimeError: login refused for '****'"
