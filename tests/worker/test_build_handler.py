"""The example build action (handlers/build.py) under a worker, against the local CodePipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Run, stopped, until

from cpworker.testing import zip_bytes
from cpworker.worker import Worker
from handlers.build import app as build_app

PROJECT = {
    "build.sh": "mkdir -p dist && wc -w < words.txt > dist/count.txt && echo built\n",
    "words.txt": "one two three\n",
}


def _start(
    start_pipeline: Callable[..., Run], aws: Callable[..., Any], **configuration: str
) -> Run:
    build_app.register(aws("codepipeline"))
    return start_pipeline(
        "CpworkerBuild",
        {"ProjectName": "demo", **configuration},
        category="Build",
        source=zip_bytes(PROJECT),
        outputs=("BuildOutput",),
    )


def test_build_runs_in_two_steps_and_uploads_its_output(
    start_pipeline: Callable[..., Run], worker: Callable[..., Worker], aws: Callable[..., Any]
) -> None:
    run = _start(start_pipeline, aws, Command="sh build.sh", OutputDirectory="dist")
    worker(serve=build_app)
    assert run.wait()["status"] == "Succeeded"
    state = run.action_state("Act")
    run_id = state["externalExecutionId"]
    assert run_id.startswith("demo-")
    assert state["externalExecutionUrl"] == f"https://builds.example.com/demo/runs/{run_id}"
    output = run.action_output("Act")
    variables = output["outputVariables"]
    assert variables["RunId"] == run_id
    assert float(variables["DurationSeconds"]) >= 0
    assert output["executionResult"]["externalExecutionSummary"].startswith(f"build {run_id}")
    location = output["outputArtifacts"][0]["s3location"]
    s3 = aws("s3")
    assert (
        s3.head_object(Bucket=location["bucket"], Key=location["key"])["ServerSideEncryption"]
        == "aws:kms"
    )


def test_failing_command_fails_the_action_with_its_output(
    start_pipeline: Callable[..., Run], worker: Callable[..., Worker], aws: Callable[..., Any]
) -> None:
    run = _start(start_pipeline, aws, Command="echo compiling; echo 'error: bad' >&2; exit 3")
    worker(serve=build_app)
    assert run.wait()["status"] == "Failed"
    error = run.action_state("Act")["errorDetails"]
    assert error["code"] == "JobFailed"
    assert error["message"].startswith("the command exited with status 3")
    assert "error: bad" in error["message"]


def test_output_directory_outside_the_source_is_a_configuration_error(
    start_pipeline: Callable[..., Run], worker: Callable[..., Worker], aws: Callable[..., Any]
) -> None:
    run = _start(start_pipeline, aws, Command="true", OutputDirectory="../../etc")
    worker(serve=build_app)
    assert run.wait()["status"] == "Failed"
    error = run.action_state("Act")["errorDetails"]
    assert error == {
        "code": "ConfigurationError",
        "message": "OutputDirectory must stay inside the source artifact",
    }


# Thread isolation in both tests below: nothing but the build handler itself stops what
# its command started (in process isolation the worker also kills the job's session).


def test_a_build_that_times_out_leaves_no_process_behind(
    start_pipeline: Callable[..., Run],
    worker: Callable[..., Worker],
    aws: Callable[..., Any],
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    run = _start(
        start_pipeline,
        aws,
        Command=f"sleep 300 & echo $! > {pid_file}; wait",
        TimeoutSeconds="2",
    )
    worker(serve=build_app, isolation="thread")
    assert run.wait()["status"] == "Failed"
    assert run.action_state("Act")["errorDetails"] == {
        "code": "JobFailed",
        "message": "the command timed out after 2 s",
    }
    until(lambda: stopped(int(pid_file.read_text())), what="the build's processes to stop")


def test_a_build_that_leaves_a_background_process_succeeds_at_once_and_stops_it(
    start_pipeline: Callable[..., Run],
    worker: Callable[..., Worker],
    aws: Callable[..., Any],
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "daemon.pid"
    run = _start(
        start_pipeline,
        aws,
        Command=f"sh build.sh; sleep 300 & echo $! > {pid_file}",
        OutputDirectory="dist",
    )
    worker(serve=build_app, isolation="thread")
    assert run.wait()["status"] == "Succeeded"  # not held by the sleep's copy of stdout
    until(lambda: stopped(int(pid_file.read_text())), what="the build's processes to stop")
