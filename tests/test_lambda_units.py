"""Pure parts of the Lambda runtime: the event, the config source, resume tokens, the
handler thread, and what happens when a result cannot be reported."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pytest_mock import MockerFixture

from cpworker import ActionApp, Continue, Job, Success, emf, lambda_handler
from cpworker.logs import logger
from cpworker.result import decode_token, resume
from cpworker.sources import lambda_invoke
from cpworker.sources.lambda_invoke import config_values, envelope_from_event
from cpworker.sources.lambda_runtime import LambdaSettings, _HandlerThread


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


def test_the_handler_thread_gives_its_result_or_none_when_it_overruns() -> None:
    log = logger("test.handler_thread")
    assert _HandlerThread("j1", log, lambda: Success(summary="fast")).run(5.0) == Success(
        summary="fast"
    )
    release = threading.Event()

    def blocked() -> Success:
        release.wait(30)
        return Success(summary="late")

    slow = _HandlerThread("j2", log, blocked)
    try:
        assert slow.run(0.05) is None
    finally:
        release.set()


def test_lambda_handler_needs_a_name_when_the_app_has_several_actions() -> None:
    app = ActionApp()

    @app.action(category="Invoke", provider="One")
    def one(job: Job[None]) -> None: ...

    assert lambda_handler(app).__name__ == "one_lambda_handler"

    @app.action(category="Invoke", provider="Two")
    def two(job: Job[None]) -> None: ...

    # One handler may serve both as an event worker (the event's type picks the action),
    # but a job event needs the action named
    several = r"2 actions \(one, two\): name one, as in lambda_handler\(app, 'build'\)"
    with pytest.raises(ValueError, match=several):
        lambda_handler(app)(_event(None), _Context())
    assert lambda_handler(app, "two").__name__ == "two_lambda_handler"


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "refused"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutJobSuccessResult",
    )


class _Context:
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def metrics_namespace(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """EMF metrics on, with a Metrics object made for this namespace."""
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "cpworker-tests")
    emf._metrics.cache_clear()
    yield
    emf._metrics.cache_clear()


def _metric_names(printed: str) -> set[str]:
    names: set[str] = set()
    for line in printed.splitlines():
        if line.startswith("{") and "_aws" in line:
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                names |= {metric["Name"] for metric in directive["Metrics"]}
    return names


@pytest.mark.parametrize(
    ("error", "attempts", "expected_log"),
    [
        (
            _client_error("AccessDeniedException", 400),
            1,
            "could not report the result: the function's role needs "
            "codepipeline:PutJobSuccessResult on Resource '*'",
        ),
        (_client_error("InternalFailure", 500), 2, "could not report the result"),
    ],
    ids=["denied", "5xx-after-retries"],
)
def test_a_result_that_cannot_be_reported_is_logged_critical_and_counted_not_raised(
    error: ClientError,
    attempts: int,
    expected_log: str,
    mocker: MockerFixture,
    metrics_namespace: None,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # Given a handler whose result CodePipeline refuses (or keeps failing on)
    app = ActionApp()
    runs: list[str] = []

    @app.action(category="Invoke", provider="Unreported")
    def unreported(job: Job[None]) -> Success:
        runs.append(job.id)
        return Success(summary="deployed")

    client = mocker.Mock()
    client.put_job_success_result.side_effect = error
    mocker.patch.object(lambda_invoke, "function_client", return_value=client)
    settings = LambdaSettings(workspace_root=tmp_path, report_attempts=2)
    caplog.set_level(logging.INFO, logger="cpworker.job")

    # When Lambda invokes the function
    answer = lambda_handler(app, "unreported", settings)(_event(None), _Context())

    # Then it returns normally (no Lambda retry runs the handler again), after the retries
    assert answer == {"jobId": "11111111-2222-3333-4444-555555555555", "outcome": "success"}
    assert runs == ["11111111-2222-3333-4444-555555555555"]
    assert client.put_job_success_result.call_count == attempts
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [r.getMessage() for r in critical] == [expected_log]
    assert "result reported" not in caplog.text
    assert {"ReportFailed", "JobSuccess"} <= _metric_names(capsys.readouterr().out)


def test_a_reported_result_emits_no_report_failed_metric(
    mocker: MockerFixture,
    metrics_namespace: None,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    app = ActionApp()

    @app.action(category="Invoke", provider="Reported")
    def reported(job: Job[None]) -> None: ...

    mocker.patch.object(lambda_invoke, "function_client", return_value=mocker.Mock())
    lambda_handler(app, "reported", LambdaSettings(workspace_root=tmp_path))(
        _event(None), _Context()
    )
    names = _metric_names(capsys.readouterr().out)
    assert "JobSuccess" in names
    assert "ReportFailed" not in names


def test_a_lambda_function_loads_neither_boto3_nor_s3transfer_for_its_own_calls() -> None:
    """Importing boto3 loads s3transfer too (about 18 ms of a cold start): cpworker's
    CodePipeline and S3 clients come from botocore, and s3transfer loads only for
    ``upload_file``."""
    code = (
        "import sys\n"
        "from cpworker import ActionApp, Success, lambda_handler\n"
        "from cpworker.sources import lambda_integration, lambda_invoke\n"
        "from cpworker.api import codepipeline_client\n"
        "from cpworker.artifacts import artifact_s3_client\n"
        "codepipeline_client(region='us-east-1', endpoint_url='http://127.0.0.1:9')\n"
        "artifact_s3_client(access_key_id='a', secret_access_key='b', session_token=None,\n"
        "                   region='us-east-1', endpoint_url='http://127.0.0.1:9')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 's3transfer'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )

    assert done.stdout.strip() == "[]", done.stdout + done.stderr
