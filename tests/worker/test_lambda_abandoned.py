"""The Lambda runtime in this process, as on a warm container where invocations follow
one another: a handler cut off by the timeout trap (issue 10, item 8), and the AWS
SDK's DEBUG logging (item 7). Jobs come from the local CodePipeline."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from cpworker import ActionApp, Job, Success, lambda_handler
from cpworker.local.lambda_context import LambdaContext
from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline
from cpworker.logs import SDK_LOGGERS
from cpworker.redact import SECRETS
from cpworker.sources import lambda_invoke
from cpworker.sources.jobdata import JobAbandoned
from cpworker.sources.lambda_runtime import LambdaSettings
from cpworker.testing import zip_bytes

PASSWORD = "abandoned-but-still-secret"
REGION = "us-east-1"


class PasswordConfig(BaseModel):
    Password: SecretStr


class Jobs:
    """Lambda events for jobs made by the local CodePipeline, and their reported results."""

    def __init__(self, local: LocalCodePipeline, aws: Callable[..., Any]) -> None:
        self.endpoint_url = local.endpoint_url
        self.bucket = f"lambda-abandoned-{uuid.uuid4().hex[:8]}"
        self.s3 = aws("s3")
        self.s3.create_bucket(Bucket=self.bucket)
        self.s3.put_object(Bucket=self.bucket, Key="in.zip", Body=zip_bytes({"a.txt": "a"}))

    def _location(self, key: str) -> dict[str, Any]:
        return {"type": "S3", "s3Location": {"bucketName": self.bucket, "objectKey": key}}

    def event(self) -> dict[str, Any]:
        configuration = {"FunctionName": "fn", "UserParameters": json.dumps({"Password": PASSWORD})}
        data = {
            "actionConfiguration": {"configuration": configuration},
            "inputArtifacts": [
                {"name": "In", "revision": "r1", "location": self._location("in.zip")}
            ],
            "outputArtifacts": [{"name": "Out", "location": self._location(f"{uuid.uuid4()}.zip")}],
        }
        event: dict[str, Any] = call_private(self.endpoint_url, "CreateLambdaJob", {"data": data})[
            "event"
        ]
        return event

    def result(self, job_id: str) -> dict[str, Any]:
        described: dict[str, Any] = call_private(
            self.endpoint_url, "DescribeJob", {"jobId": job_id}
        )
        return described

    def output_keys(self) -> set[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return {item["Key"] for item in listed} - {"in.zip"}


@pytest.fixture
def jobs(
    local: LocalCodePipeline, aws: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Jobs]:
    """Jobs to invoke with; boto3 (the report, the artifacts) talks to the local endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", local.endpoint_url)
    lambda_invoke.function_client.cache_clear()
    yield Jobs(local, aws)
    lambda_invoke.function_client.cache_clear()


def _invoke(
    app: ActionApp, name: str, event: dict[str, Any], timeout_s: float, root: Path
) -> dict[str, Any]:
    context = LambdaContext.start("fn", timeout_s, region=REGION, account_id="123456789012")
    settings = LambdaSettings(timeout_margin_s=1.0, workspace_root=root)
    return lambda_handler(app, name, settings)(event, context)


def _handler_thread(job_id: str) -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t.name == f"cpworker-handler-{job_id}"]
    return thread


def test_an_abandoned_handler_cannot_upload_and_keeps_its_secrets_and_workspace_until_it_ends(
    jobs: Jobs, tmp_path: Path, caplog: pytest.LogCaptureFixture, json_lines: io.StringIO
) -> None:
    # Given a handler that is still blocked when the Lambda timeout trap fires
    app = ActionApp()
    release = threading.Event()
    seen: dict[str, Any] = {}

    @app.action(category="Invoke", provider="Stuck", config=PasswordConfig, outputs=(1, 1))
    def stuck(job: Job[PasswordConfig]) -> Success:
        seen["workspace"] = job.workspace
        release.wait(60)
        try:
            job.outputs.one().upload_files({"late.txt": "too late"})
        except JobAbandoned as exc:
            seen["refused"] = exc
        job.log.info("woke up with %s", job.config.Password.get_secret_value())
        return Success(summary="finished late")

    @app.action(category="Invoke", provider="Quick", config=PasswordConfig)
    def quick(job: Job[PasswordConfig]) -> None: ...

    root = tmp_path / "workspaces"
    stuck_event = jobs.event()
    stuck_id = stuck_event["CodePipeline.job"]["id"]
    caplog.set_level(logging.INFO)
    try:
        # When its invocation times out, and the container then serves another job
        assert _invoke(app, "stuck", stuck_event, 1.5, root)["outcome"].startswith("failure")
        thread = _handler_thread(stuck_id)
        assert jobs.result(stuck_id)["status"] == "Failed"
        assert seen["workspace"].is_dir(), "the workspace stays while the handler runs"
        assert SECRETS.scrub(PASSWORD) == "****", "its secrets stay masked while it runs"
        caplog.clear()
        _invoke(app, "quick", jobs.event(), 60, root)
        warnings = [r for r in caplog.records if "abandoned at an earlier" in r.getMessage()]
        assert [getattr(r, "abandoned_job_id", None) for r in warnings] == [stuck_id]
    finally:
        release.set()
    # Then, woken up, it cannot upload; once it ends its workspace and secrets are gone
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert isinstance(seen.get("refused"), JobAbandoned)
    assert "abandoned at its deadline" in str(seen["refused"])
    assert jobs.output_keys() == set(), "nothing was uploaded after the failure was reported"
    assert not seen["workspace"].exists()
    assert SECRETS.scrub(PASSWORD) == PASSWORD
    assert jobs.result(stuck_id)["result"]["type"] == "failure", "the late result is dropped"
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert "woke up with ****" in [line["message"] for line in lines]
    assert PASSWORD not in json_lines.getvalue()
    assert any(line["message"].startswith("an abandoned handler ended") for line in lines)
    caplog.clear()
    _invoke(app, "quick", jobs.event(), 60, root)
    assert "abandoned at an earlier" not in caplog.text, "no warning once the thread is gone"


def test_a_handler_that_returns_in_time_uploads_as_usual(jobs: Jobs, tmp_path: Path) -> None:
    app = ActionApp()

    @app.action(category="Invoke", provider="Prompt", config=PasswordConfig, outputs=(1, 1))
    def prompt(job: Job[PasswordConfig]) -> None:
        job.outputs.one().upload_files({"ok.txt": "in time"})

    event = jobs.event()
    assert _invoke(app, "prompt", event, 60, tmp_path)["outcome"] == "success"
    assert len(jobs.output_keys()) == 1
    assert jobs.result(event["CodePipeline.job"]["id"])["status"] == "Succeeded"


@pytest.fixture
def sdk_loggers_unset() -> Iterator[None]:
    """The SDK loggers as a fresh process has them (no level), restored afterwards."""
    loggers = [logging.getLogger(name) for name in SDK_LOGGERS]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.NOTSET)
    yield
    for each, level in zip(loggers, levels, strict=True):
        each.setLevel(level)


def test_lambda_keeps_botocore_debug_lines_and_the_job_token_out_of_a_debug_root_logger(
    jobs: Jobs, tmp_path: Path, caplog: pytest.LogCaptureFixture, sdk_loggers_unset: None
) -> None:
    # Given Lambda's root logger at DEBUG (AWS_LAMBDA_LOG_LEVEL=DEBUG), unmasked
    app = ActionApp()

    @app.action(
        category="Invoke", provider="Reader", config=PasswordConfig, optional_outputs=("Out",)
    )
    def reader(job: Job[PasswordConfig]) -> Success:
        return Success(summary=f"{len(job.inputs.one().names())} files")

    event = jobs.event()
    token = event["CodePipeline.job"]["data"]["artifactCredentials"]["sessionToken"]
    # When a job reads its input artifact with the job's credentials and reports
    with caplog.at_level(logging.DEBUG):
        assert _invoke(app, "reader", event, 60, tmp_path)["outcome"] == "success"
    # Then the SDK wrote nothing below INFO, and the job's token appears nowhere
    sdk = [r for r in caplog.records if r.name.split(".")[0] in SDK_LOGGERS]
    assert [r for r in sdk if r.levelno < logging.INFO] == []
    assert token not in caplog.text
    assert any(r.name == "cpworker.job" for r in caplog.records), "cpworker's lines are kept"
