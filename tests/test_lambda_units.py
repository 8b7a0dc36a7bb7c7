"""Pure parts of the Lambda runtime: the event, the config source, resume tokens."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cpworker import ActionApp, Continue, Job, Success
from cpworker.result import decode_token, resume
from cpworker.sources import lambda_invoke
from cpworker.sources.lambda_invoke import (
    LambdaSettings,
    ReportError,
    _within,
    config_values,
    envelope_from_event,
)


def _event(user_parameters: str | None) -> dict[str, Any]:
    configuration = {"FunctionName": "fn"}
    if user_parameters is not None:
        configuration["UserParameters"] = user_parameters
    return {
        "CodePipeline.job": {
            "id": "11111111-2222-3333-4444-555555555555",
            "accountId": "123456789012",
            "data": {"actionConfiguration": {"configuration": configuration}},
        }
    }


def test_the_event_has_no_action_type_nor_pipeline_context() -> None:
    envelope = envelope_from_event(_event("x"))
    assert envelope.id == "11111111-2222-3333-4444-555555555555"
    assert envelope.data.action_type_id is None
    assert envelope.data.pipeline_context is None


def test_anything_else_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"no 'CodePipeline\.job' key"):
        envelope_from_event({"Records": []})


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ('{"stack": "web", "count": 2}', {"stack": "web", "count": 2}),
        ("https://example.com", {"FunctionName": "fn", "UserParameters": "https://example.com"}),
        ('["a"]', {"FunctionName": "fn", "UserParameters": '["a"]'}),
        (None, {"FunctionName": "fn"}),
    ],
)
def test_config_comes_from_a_json_object_in_user_parameters(
    parameters: str | None, expected: dict[str, Any]
) -> None:
    assert config_values(envelope_from_event(_event(parameters))) == expected


def test_resume_token_unwraps_to_the_previous_state() -> None:
    first = resume(None, summary="again")
    assert decode_token(first.token) is None
    later = resume(Continue(state={"step": 2}).token, summary="again")
    assert decode_token(later.token) == {"step": 2}
    assert decode_token("not json") == "not json"
    assert decode_token(json.dumps({"step": 3})) == {"step": 3}


def test_within_returns_none_when_the_call_overruns() -> None:
    assert _within(1.0, lambda: Success(summary="fast")) == Success(summary="fast")
    started = time.monotonic()
    assert _within(0.1, lambda: time.sleep(2) or Success()) is None
    assert time.monotonic() - started < 1


def test_lambda_handler_needs_a_name_when_the_app_has_several_actions() -> None:
    app = ActionApp()

    @app.action(category="Invoke", provider="One")
    def one(job: Job[None]) -> None: ...

    assert app.lambda_handler.__name__ == "one_lambda_handler"

    @app.action(category="Invoke", provider="Two")
    def two(job: Job[None]) -> None: ...

    with pytest.raises(ValueError, match=r"2 actions \(one, two\): use app.lambda_handler_for"):
        _ = app.lambda_handler
    assert app.lambda_handler_for("two").__name__ == "two_lambda_handler"


class _DeniedClient:
    """A CodePipeline client whose caller lacks codepipeline:PutJob*Result."""

    def put_job_success_result(self, **_: Any) -> None:
        raise ClientError(
            {
                "Error": {"Code": "AccessDeniedException", "Message": "not authorized"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "PutJobSuccessResult",
        )


class _Context:
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def test_a_result_that_cannot_be_reported_names_the_missing_permission_and_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    app = ActionApp()

    @app.action(category="Invoke", provider="Denied")
    def denied(job: Job[None]) -> Success:
        return Success(summary="done")

    monkeypatch.setattr(lambda_invoke, "_client", lambda region: _DeniedClient())
    settings = LambdaSettings(workspace_root=tmp_path)
    caplog.set_level(logging.ERROR, logger="cpworker.job")
    with pytest.raises(ReportError, match=r"PutJobSuccessResult for job .* AccessDeniedException"):
        app.lambda_handler_for("denied", settings)(_event(None), _Context())
    assert (
        "the function's role needs codepipeline:PutJobSuccessResult on Resource '*'" in caplog.text
    )
