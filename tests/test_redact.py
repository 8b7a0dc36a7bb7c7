"""Registered secrets never reach a formatted log line."""

from __future__ import annotations

import io
import json
import logging

from cpworker.logs import RedactingFormatter
from cpworker.redact import SECRETS, scrub


def test_log_lines_mask_active_secrets_only_while_active() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(service="test"))
    log = logging.getLogger("test.redact")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with SECRETS.active(["ASIAEXAMPLEKEY", "ASIAEXAMPLEKEYLONGER"]):
            log.info("key ASIAEXAMPLEKEYLONGER and ASIAEXAMPLEKEY", extra={"k": "ASIAEXAMPLEKEY"})
        log.info("after ASIAEXAMPLEKEY")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "key **** and ****"
    assert first["k"] == "****"
    assert second["message"] == "after ASIAEXAMPLEKEY"


def test_short_values_are_not_treated_as_secrets() -> None:
    assert scrub("answer: yes", ["yes"]) == "answer: yes"
    assert scrub("pw: hunter2", ["hunter2"]) == "pw: ****"
