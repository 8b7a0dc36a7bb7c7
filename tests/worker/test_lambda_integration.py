"""The same handlers as Lambda executors of partner action types (the Lambda integration
model) in the local CodePipeline: the function runs in its own process, as in Lambda, is
invoked with the ``jobId``/``data`` event and returns its result."""

from __future__ import annotations

import io
import logging
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    APPS_DIR,
    Executor,
    Run,
    assert_build_output,
    assert_failed_by_the_timeout_trap,
    assert_leaky_masked,
)
from cpw_test_apps import app as test_app

from cpworker.testing import zip_bytes
from handlers.build import app as build_app

APPS = APPS_DIR / "cpw_test_apps.py"
PROJECT = {
    "build.sh": "mkdir -p dist && wc -w < words.txt > dist/count.txt && echo built\n",
    "words.txt": "one two three\n",
}


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def test_the_build_handler_continues_then_uploads_its_output_with_the_jobs_key(
    start_pipeline: Callable[..., Run],
    executor: Executor,
    aws: Callable[..., Any],
    logs: pytest.LogCaptureFixture,
) -> None:
    # Given the example build action as a Lambda executor, and an artifact store with a key
    key_id = aws("kms").create_key()["KeyMetadata"]["KeyId"]
    configuration = {"ProjectName": "demo", "Command": "sh build.sh", "OutputDirectory": "dist"}
    action = executor(
        build_app["build"], "handlers.build:handler", configuration, outputs=("BuildOutput",)
    )

    # When the pipeline runs it
    run = start_pipeline(
        "integration", source=zip_bytes(PROJECT), action=action, encryption_key_id=key_id
    )
    assert run.wait(timeout_s=60)["status"] == "Succeeded"

    # Then it took two invocations (the first only named the run), and the second
    # uploaded the output under the pipeline's key and returned the output variables
    starts = re.findall(r"\[(fn-\w+) ([0-9a-f-]{36})\] START", logs.text)
    assert len({request for _, request in starts}) == 2
    output = assert_build_output(run)
    location = output["outputArtifacts"][0]["s3location"]
    stored = aws("s3").get_object(Bucket=location["bucket"], Key=location["key"])
    assert stored["ServerSideEncryption"] == "aws:kms"
    assert stored["SSEKMSKeyId"].endswith(key_id)
    assert zipfile.ZipFile(io.BytesIO(stored["Body"].read())).namelist() == ["count.txt"]


def test_a_typed_failure_fails_the_action_with_its_type(
    start_pipeline: Callable[..., Run], executor: Executor
) -> None:
    configuration = {"ProjectName": "demo", "Command": "true", "OutputDirectory": "../../etc"}
    action = executor(build_app["build"], "handlers.build:handler", configuration)

    run = start_pipeline("integration", source=zip_bytes(PROJECT), action=action)

    assert run.wait(timeout_s=60)["status"] == "Failed"
    assert run.action_state()["errorDetails"] == {
        "code": "ConfigurationError",
        "message": "OutputDirectory must stay inside the source artifact",
    }


def test_a_handler_past_its_timeout_margin_fails_the_action_promptly(
    start_pipeline: Callable[..., Run], executor: Executor
) -> None:
    action = executor(
        test_app["sleep"],
        f"{APPS}:sleep_lambda",
        {"Seconds": "60"},
        timeout_s=4,
        environment={"CPWORKER_TIMEOUT_MARGIN_S": "1"},
    )
    started = time.monotonic()

    run = start_pipeline("integration", action=action)

    assert_failed_by_the_timeout_trap(run, started)


def test_no_credential_nor_secret_value_reaches_a_log_or_the_pipeline(
    start_pipeline: Callable[..., Run],
    executor: Executor,
    spy_dir: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    # Given a careless handler that logs its secrets and fails with them in the message
    password = "correct-horse-battery-staple"
    action = executor(
        test_app["leaky"],
        f"{APPS}:leaky_lambda",
        {"Target": "db.internal", "Password": password},
        environment={"CPW_TEST_SPY_DIR": str(spy_dir)},
    )

    # When the pipeline runs it through the integration model
    run = start_pipeline("integration", action=action)
    assert run.wait(timeout_s=30)["status"] == "Failed"

    # Then the pipeline and every captured log line show masks instead
    assert_leaky_masked(run.action_state()["errorDetails"]["message"], logs.text, spy_dir)
