"""Registered secrets never reach a formatted log line, in any of their forms."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest

from cpworker.logs import SDK_LOGGERS, RedactingFormatter, limit_sdk_loggers
from cpworker.redact import SECRETS, scrub

# What breaks naive masking: JSON and repr escape the quote, the backslash and the
# newline; URLs encode the +, / and = of session tokens.
NASTY = 'pa"ss\\word\nnext+/=line'


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose lines are written by the redacting formatter into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(service="test"))
    log = logging.getLogger("test.redact")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield log, stream
    log.removeHandler(handler)


def test_log_lines_mask_active_secrets_only_while_active(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = json_log
    with SECRETS.active(["ASIAEXAMPLEKEY", "ASIAEXAMPLEKEYLONGER"]):
        log.info("key ASIAEXAMPLEKEYLONGER and ASIAEXAMPLEKEY", extra={"k": "ASIAEXAMPLEKEY"})
    log.info("after ASIAEXAMPLEKEY")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "key **** and ****"
    assert first["k"] == "****"
    assert second["message"] == "after ASIAEXAMPLEKEY"


def test_secrets_that_json_escapes_are_masked_before_the_line_is_written(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = json_log
    with SECRETS.active([NASTY]):
        log.info("password %s", NASTY, extra={"nested": {"list": [NASTY], NASTY: 1}})
        try:
            raise RuntimeError(f"login with {NASTY} failed")
        except RuntimeError:
            log.exception("as JSON %s, as repr %r", json.dumps({"p": NASTY}), [NASTY])
    text = stream.getvalue()
    for form in (NASTY, json.dumps(NASTY)[1:-1], repr(NASTY)[1:-1], 'pa"ss', 'pa\\"ss', "next+/="):
        assert form not in text
    plain, failed = (json.loads(line) for line in text.splitlines())
    assert plain["message"] == "password ****"
    assert plain["nested"] == {"list": ["****"], "****": 1}
    assert failed["message"] == 'as JSON {"p": "****"}, as repr [\'****\']'
    assert "RuntimeError: login with **** failed" in failed["exception"]


def test_url_encoded_json_and_repr_forms_are_scrubbed() -> None:
    token = "FQoGZXIvYXdzE+abc/def+ghi=="
    texts = [
        f"https://b.s3.amazonaws.com/k?X-Amz-Security-Token={quote(token, safe='')}&x=1",
        f"path /{quote(token)}/",
        f"form token={quote_plus(token)}",
        f"json {json.dumps({'token': NASTY})}",
        f"repr {[NASTY]}",
        f"raw {token} {NASTY}",
    ]
    with SECRETS.active([token, NASTY]):
        registered = [SECRETS.scrub(text) for text in texts]
    given = [scrub(text, [token, NASTY]) for text in texts]
    assert (
        registered
        == given
        == [
            "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=****&x=1",
            "path /****/",
            "form token=****",
            'json {"token": "****"}',
            "repr ['****']",
            "raw **** ****",
        ]
    )


def test_overlapping_secrets_are_masked_without_showing_any_part() -> None:
    assert scrub("id abcdef12ghij.", ["abcdef12", "ef12ghij"]) == "id ****."
    assert scrub("abcdef12 then ef12ghij", ["abcdef12", "ef12ghij"]) == "**** then ****"


def test_a_secret_stays_masked_while_any_holder_keeps_it() -> None:
    with SECRETS.active(["held-twice-secret"]):
        with SECRETS.active(["held-twice-secret"]):
            pass
        assert SECRETS.scrub("held-twice-secret") == "****"
    assert SECRETS.scrub("held-twice-secret") == "held-twice-secret"


def test_short_values_are_not_treated_as_secrets() -> None:
    assert scrub("answer: yes", ["yes"]) == "answer: yes"
    assert scrub("pw: hunter2", ["hunter2"]) == "pw: ****"


@pytest.fixture
def sdk_levels() -> Iterator[None]:
    """The SDK loggers' and the root's levels, restored after the test."""
    loggers = [logging.getLogger(name) for name in ("", *SDK_LOGGERS)]
    levels = [each.level for each in loggers]
    yield
    for each, level in zip(loggers, levels, strict=True):
        each.setLevel(level)


def test_the_sdk_never_logs_below_info_whatever_the_root_level(sdk_levels: None) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    limit_sdk_loggers()
    for name in (*SDK_LOGGERS, "botocore.endpoint", "urllib3.connectionpool"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name
    assert root.isEnabledFor(logging.DEBUG), "everything else keeps its level"
