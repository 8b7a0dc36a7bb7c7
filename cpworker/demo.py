"""``cpworker demo``: the example build action, end to end, on an embedded local CodePipeline.

Starts ``cpworker local`` in this process (loopback, free port), creates the
artifact bucket and KMS key, registers ``handlers.build``, creates a pipeline
(sample project from S3 → the build action), runs ``cpworker serve`` as a
separate process, shows live progress, and prints the outcome. Exits non-zero
unless the execution succeeded; leaves no process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from cpworker.local.engine import EngineSettings
from cpworker.local.server import LocalCodePipeline
from cpworker.testing import (
    action_execution,
    custom_action,
    start_pipeline,
    zip_directory,
)

REGION = "us-east-1"
PIPELINE = "cpworker-demo"
SAMPLE_PROJECT = Path(__file__).resolve().parents[1] / "examples" / "sample-project"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"}
TIMEOUT_S = 120.0


def _client(service: str, endpoint_url: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="demo",
        aws_secret_access_key="demo",  # noqa: S106 - moto accepts any; never real AWS
        config=Config(s3={"addressing_style": "path"}),
    )


def _start_worker(endpoint_url: str, state_dir: Path) -> subprocess.Popen[bytes]:
    environment = {**os.environ, **DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint_url}
    environment.pop("AWS_PROFILE", None)
    command = [sys.executable, "-m", "cpworker.cli", "serve", "handlers.build:app"]
    command += ["--region", REGION, "--poll-max", "1", "--log-level", "WARNING"]
    # The demo's jobs live and die with it: its journal goes with it too.
    command += ["--state-dir", str(state_dir)]
    return subprocess.Popen(command, cwd=SAMPLE_PROJECT.parents[1], env=environment)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _show_progress(codepipeline: Any, execution_id: str) -> str:
    """Print each change of an action's state until the execution ends; returns its status."""
    seen: dict[str, tuple[Any, ...]] = {}
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        state = codepipeline.get_pipeline_state(name=PIPELINE)
        for stage in state["stageStates"]:
            for action in stage.get("actionStates", []):
                latest = action.get("latestExecution", {})
                view = (latest.get("status"), latest.get("summary"), latest.get("percentComplete"))
                where = f"{stage['stageName']}/{action['actionName']}"
                if latest and seen.get(where) != view:
                    seen[where] = view
                    in_progress = view[0] == "InProgress" and view[2] is not None
                    percent = f" {view[2]}%" if in_progress else ""
                    print(f"  {where:<22} {view[0]}{percent}  {view[1] or ''}", flush=True)
        execution = codepipeline.get_pipeline_execution(
            pipelineName=PIPELINE, pipelineExecutionId=execution_id
        )["pipelineExecution"]
        if execution["status"] != "InProgress":
            return str(execution["status"])
        time.sleep(0.3)
    return "TimedOut (demo)"


def _show_outputs(codepipeline: Any, s3: Any, execution_id: str) -> None:
    output = action_execution(codepipeline, PIPELINE, execution_id, "Build").get("output", {})
    print("output variables:")
    for name, value in sorted(output.get("outputVariables", {}).items()):
        print(f"  {name} = {value}")
    for artifact in output.get("outputArtifacts", []):
        location = artifact["s3location"]
        head = s3.head_object(Bucket=location["bucket"], Key=location["key"])
        print(f"output artifact {artifact['name']}: s3://{location['bucket']}/{location['key']}")
        print(f"  ServerSideEncryption: {head.get('ServerSideEncryption')}")
        print(f"  SSEKMSKeyId: {head.get('SSEKMSKeyId')}")


def _prepare(endpoint_url: str) -> str:
    """Create buckets, key, action type and pipeline; returns the execution id."""
    from handlers.build import app

    codepipeline, s3 = _client("codepipeline", endpoint_url), _client("s3", endpoint_url)
    key_id = _client("kms", endpoint_url).create_key(Description="cpworker demo artifacts")[
        "KeyMetadata"
    ]["Arn"]
    app.register(codepipeline)
    build = custom_action(
        "Build",
        provider="CpworkerBuild",
        configuration={
            "ProjectName": "sample",
            "Command": "python3 build.py",
            "OutputDirectory": "dist",
        },
        outputs=("BuildOutput",),
    )
    # CreatePipeline starts the first execution itself, as CodePipeline does.
    run = start_pipeline(
        codepipeline,
        s3,
        PIPELINE,
        source=zip_directory(SAMPLE_PROJECT),
        actions=[build],
        encryption_key_id=key_id,
    )
    return run.execution_id


def run_demo() -> int:
    settings = EngineSettings(continuation_delay_s=0.5)
    with LocalCodePipeline(settings=settings) as server:
        endpoint_url = server.endpoint_url
        print(f"cpworker local ready at {endpoint_url}")
        sys.path.insert(0, str(SAMPLE_PROJECT.parents[1]))
        execution_id = _prepare(endpoint_url)
        print(f"pipeline {PIPELINE}: execution {execution_id} started by CreatePipeline")
        with tempfile.TemporaryDirectory(prefix="cpworker-demo-") as state_dir:
            worker = _start_worker(endpoint_url, Path(state_dir))
            try:
                status = _show_progress(_client("codepipeline", endpoint_url), execution_id)
            finally:
                _stop(worker)
        codepipeline = _client("codepipeline", endpoint_url)
        print(f"execution {execution_id}: {status}")
        _show_outputs(codepipeline, _client("s3", endpoint_url), execution_id)
    return 0 if status == "Succeeded" else 1
