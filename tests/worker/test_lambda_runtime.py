"""The same handlers as Lambda invoke actions in the local CodePipeline (a function runs
in its own process, as in Lambda, and reports with PutJob*Result)."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    APPS_DIR,
    Run,
    assert_build_output,
    assert_failed_by_the_timeout_trap,
    assert_leaky_masked,
)

from cpworker.testing import lambda_action, zip_bytes
from cpworker.worker import Worker
from handlers.build import app as build_app

APPS = APPS_DIR / "cpw_test_apps.py"
PROJECT = {
    "build.sh": "mkdir -p dist && wc -w < words.txt > dist/count.txt && echo built\n",
    "words.txt": "one two three\n",
}
BUILD_CONFIG = {"ProjectName": "demo", "Command": "sh build.sh", "OutputDirectory": "dist"}


def _output_files(run: Run, aws: Callable[..., Any]) -> list[str]:
    location = run.action_output()["outputArtifacts"][0]["s3location"]
    body = aws("s3").get_object(Bucket=location["bucket"], Key=location["key"])["Body"].read()
    return sorted(zipfile.ZipFile(io.BytesIO(body)).namelist())


@pytest.mark.parametrize("runtime", ["serve", "lambda"])
def test_the_build_handler_gives_the_same_result_as_worker_and_as_lambda(
    runtime: str,
    start_pipeline: Callable[..., Run],
    worker: Callable[..., Worker],
    function: Callable[..., str],
    aws: Callable[..., Any],
) -> None:
    if runtime == "serve":
        build_app.register(aws("codepipeline"))
        run = start_pipeline(
            "CpworkerBuild", BUILD_CONFIG, category="Build", source=zip_bytes(PROJECT),
            outputs=("BuildOutput",),
        )  # fmt: skip
        worker(serve=build_app)
    else:
        name = function("handlers.build:handler", timeout_s=60)
        action = lambda_action(
            "Act", function_name=name, user_parameters=json.dumps(BUILD_CONFIG),
            outputs=("BuildOutput",),
        )  # fmt: skip
        run = start_pipeline("lambda", source=zip_bytes(PROJECT), action=action)
    assert run.wait(timeout_s=60)["status"] == "Succeeded"
    assert_build_output(run)
    assert _output_files(run, aws) == ["count.txt"]


def test_a_handler_past_its_timeout_margin_fails_the_action_promptly(
    start_pipeline: Callable[..., Run], function: Callable[..., str]
) -> None:
    name = function(
        f"{APPS}:sleep_lambda", timeout_s=4, environment={"CPWORKER_TIMEOUT_MARGIN_S": "1"}
    )
    started = time.monotonic()
    run = start_pipeline(
        "lambda", action=lambda_action("Act", function_name=name, user_parameters='{"Seconds": 60}')
    )
    assert_failed_by_the_timeout_trap(run, started)


def test_on_timeout_continue_runs_the_step_again(
    start_pipeline: Callable[..., Run], function: Callable[..., str], spy_dir: Path
) -> None:
    name = function(
        f"{APPS}:resumable_lambda",
        timeout_s=4,
        environment={"CPWORKER_TIMEOUT_MARGIN_S": "1", "CPW_TEST_SPY_DIR": str(spy_dir)},
    )
    run = start_pipeline(
        "lambda", action=lambda_action("Act", function_name=name, user_parameters='{"Seconds": 60}')
    )
    assert run.wait(timeout_s=30)["status"] == "Succeeded"
    assert run.action_state()["summary"] == "done on attempt 2, continuation None"


def test_lambda_logs_never_carry_credentials_or_secret_parameters(
    start_pipeline: Callable[..., Run],
    function: Callable[..., str],
    spy_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = function(f"{APPS}:leaky_lambda", environment={"CPW_TEST_SPY_DIR": str(spy_dir)})
    parameters = {"Target": "db.internal", "Password": "correct-horse-battery-staple"}
    with caplog.at_level(logging.INFO):
        run = start_pipeline(
            "lambda",
            action=lambda_action("Act", function_name=name, user_parameters=json.dumps(parameters)),
        )
        assert run.wait(timeout_s=30)["status"] == "Failed"
    assert_leaky_masked(run.action_state()["errorDetails"]["message"], caplog.text, spy_dir)


def test_tracing_sends_a_subsegment_per_job_to_the_xray_daemon(
    start_pipeline: Callable[..., Run], function: Callable[..., str]
) -> None:
    # Given an X-Ray daemon on loopback, and a function with tracing enabled
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))
        daemon.settimeout(20)
        port = daemon.getsockname()[1]
        trace_id = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
        name = function(
            f"{APPS}:sleep_lambda",
            environment={
                "CPWORKER_TRACING": "true",
                "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
                "_X_AMZN_TRACE_ID": f"Root={trace_id};Parent={uuid.uuid4().hex[:16]};Sampled=1",
            },
        )
        # When a job runs
        action = lambda_action("Act", function_name=name, user_parameters='{"Seconds": 0}')
        run = start_pipeline("lambda", action=action)
        assert run.wait(timeout_s=30)["status"] == "Succeeded"
        # Then the daemon receives the job's subsegment, annotated with its outcome
        documents = []
        while not any(d.get("name") == "## sleep" for d in documents):
            packet = daemon.recv(65536).decode()
            documents.append(json.loads(packet.split("\n", 1)[1]))
    segment = next(d for d in documents if d.get("name") == "## sleep")
    assert segment["trace_id"] == trace_id
    assert segment["annotations"]["outcome"] == "success"
    assert re.fullmatch(r"[0-9a-f-]{36}", segment["annotations"]["job_id"])
