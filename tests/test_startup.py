"""serve's start-up check of the account leaves a least-privilege role able to serve:
a role without ListActionTypes is warned, not refused. (botocore's Stubber answers: no
network), and a CodePipeline that answers "busy" is waited for (a real cpworker local
with injected throttling)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from cpworker import ActionApp
from cpworker.api import RetryPolicy
from cpworker.local.faults import FaultSettings
from cpworker.local.server import LocalCodePipeline
from cpworker.startup import check_account

app = ActionApp()


@app.action(category="Test", provider="StartupCheck")
def check(job: object) -> None: ...


def test_a_role_without_list_action_types_serves_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    codepipeline = boto3.client("codepipeline", region_name="us-east-1")
    with Stubber(codepipeline) as stub:
        stub.add_client_error("list_action_types", "AccessDeniedException", "not allowed")
        check_account(codepipeline, list(app), RetryPolicy(attempts=1))
    (warning,) = [r for r in caplog.records if r.name == "cpworker.serve"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().endswith("the role lacks codepipeline:ListActionTypes")


def test_refused_credentials_still_stop_serve() -> None:
    codepipeline = boto3.client("codepipeline", region_name="us-east-1")
    with Stubber(codepipeline) as stub:
        stub.add_client_error("list_action_types", "UnrecognizedClientException", "bad token")
        with pytest.raises(codepipeline.exceptions.ClientError):
            check_account(codepipeline, list(app), RetryPolicy(attempts=1))


class _Seen(logging.Handler):
    """Sets ``event`` when a record's message starts with ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.text):
            self.event.set()


def test_a_busy_codepipeline_is_waited_for_past_the_start_up_attempts(
    local: LocalCodePipeline, aws: Callable[..., Any]
) -> None:
    # Given a registered type, and a CodePipeline that throttles every ListActionTypes
    codepipeline = aws("codepipeline")
    app.register(codepipeline)
    busy = _Seen("CodePipeline is busy at start")
    logging.getLogger("cpworker.serve").addHandler(busy)
    errors: list[BaseException] = []

    def check_now() -> None:
        try:
            check_account(codepipeline, list(app), RetryPolicy(attempts=2, backoff_base_s=0.01))
        except BaseException as exc:  # reported below
            errors.append(exc)

    checking = threading.Thread(target=check_now)
    local.set_faults(FaultSettings(throttle=1.0, operations=frozenset({"ListActionTypes"})))
    try:
        checking.start()
        # When the start-up attempts are spent on answers that say "busy"
        assert busy.event.wait(60), "the check gave up instead of waiting"
    finally:
        local.set_faults(None)
        logging.getLogger("cpworker.serve").removeHandler(busy)
    # Then it goes on trying, and passes once CodePipeline answers
    checking.join(60)
    assert not checking.is_alive()
    assert errors == []
