"""The Lambda integration model's runtime, in process: the ``jobId``/``data`` event in,
the result payload out (no job API call), for each kind of result."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from cpworker import (
    ActionApp,
    Continue,
    Failure,
    Job,
    PermissionError,
    Success,
    lambda_handler,
    prop,
)
from cpworker.sources.lambda_runtime import LambdaSettings

JOB_ID = "01234567-abcd-abcd-abcd-012345678910"
PASSWORD = "correct-horse-battery-staple"


class DeployConfig(BaseModel):
    Stack: str = prop(description="What to deploy.")
    Password: SecretStr = prop(description="Never shown.")
    Outcome: str = "success"


app = ActionApp()


@app.action(category="Deploy", provider="CpwIntegration", config=DeployConfig, inputs=(0, 1))
def deploy(job: Job[DeployConfig]) -> Success | Continue | Failure:
    """Return the result the configuration asks for."""
    password = job.config.Password.get_secret_value()
    if job.config.Outcome == "continue":
        return Continue(state={"seen": job.continuation}, summary="waiting", percent_complete=40)
    if job.config.Outcome == "denied":
        raise PermissionError(f"{job.config.Stack} refused {password}", external_execution_id="d-1")
    if job.config.Outcome == "raise":
        raise RuntimeError(f"boom with {password}")
    return Success(
        summary=f"deployed {job.config.Stack}",
        external_execution_id="d-1",
        output_variables={"Stack": job.config.Stack, "Account": job.account_id or "-"},
    )


class _Context:
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _event(outcome: str, token: str | None = None, **data: Any) -> dict[str, Any]:
    """The User Guide's example event, without artifacts (so nothing touches S3)."""
    configuration = {"Stack": "web", "Password": PASSWORD, "Outcome": outcome}
    return {
        "jobId": JOB_ID,
        "accountId": "012345678910",
        "data": {
            "actionConfiguration": configuration,
            "encryptionKey": {"id": "123-abc", "type": "KMS"},
            "inputArtifacts": [],
            "outputArtifacts": [],
            "actionExecutionId": "exec-1",
            "actionCredentials": {
                "accessKeyId": "ASIAEXAMPLEACCESSKEY",
                "secretAccessKey": "secret-access-key-value",
                "sessionToken": "session-token-value",
            },
            "continuationToken": token,
            **data,
        },
    }


def _invoke(event: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    handler = lambda_handler(app, "deploy", LambdaSettings(workspace_root=tmp_path))
    return handler(event, _Context())


def test_success_returns_status_and_output_variables(tmp_path: Path) -> None:
    assert _invoke(_event("success"), tmp_path) == {
        "result": "Success",
        "status": {"ExternalExecutionId": "d-1", "Summary": "deployed web"},
        "outputVariables": {"Stack": "web", "Account": "012345678910"},
    }


def test_continue_returns_the_state_that_comes_back_as_the_next_token(tmp_path: Path) -> None:
    first = _invoke(_event("continue"), tmp_path)
    assert first == {
        "result": "Continue",
        "continuation": {"State": '{"seen":null}'},
        "status": {"Summary": "waiting"},
    }
    second = _invoke(_event("continue", first["continuation"]["State"]), tmp_path)
    assert json.loads(second["continuation"]["State"]) == {"seen": {"seen": None}}


def test_a_typed_failure_returns_fail_with_the_guides_failure_type_and_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        answer = _invoke(_event("denied"), tmp_path)
    assert answer == {
        "result": "Fail",
        "failureType": "PermissionsError",
        "status": {"ExternalExecutionId": "d-1", "Summary": "web refused ****"},
    }
    assert "result returned" in caplog.text
    for secret in (PASSWORD, "secret-access-key-value", "session-token-value"):
        assert secret not in caplog.text


def test_an_exception_and_a_bad_configuration_are_failures_too(tmp_path: Path) -> None:
    raised = _invoke(_event("raise"), tmp_path)
    assert raised["result"] == "Fail"
    assert raised["failureType"] == "JobFailed"
    assert raised["status"]["Summary"] == "RuntimeError: boom with ****"
    event = _event("success")
    del event["data"]["actionConfiguration"]["Stack"]
    missing = _invoke(event, tmp_path)
    assert missing["failureType"] == "ConfigurationError"
    assert "Stack" in missing["status"]["Summary"]


def test_the_deadline_is_at_most_the_actions_timeout_and_fifteen_minutes(tmp_path: Path) -> None:
    quick = ActionApp()

    @quick.action(category="Test", provider="CpwQuick", timeout=1.5)
    def slow(job: Job[None]) -> Success:
        return Success(summary=f"{job.remaining():.3f}")

    settings = LambdaSettings(timeout_margin_s=0.5, workspace_root=tmp_path)
    answer = lambda_handler(quick, "slow", settings)(_event("success"), _Context())
    remaining = float(answer["status"]["Summary"])
    assert 0 < remaining <= 1.0, "the 1.5 s timeout less the margin, not Lambda's 60 s"


def test_an_event_of_neither_model_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"neither an invoke action's 'CodePipeline\.job' event"):
        _invoke({"Records": []}, tmp_path)
