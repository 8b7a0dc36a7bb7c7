"""A worker in this process against a real local CodePipeline over HTTP: whole job lifecycles."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Run

from cpworker.worker import Worker

StartPipeline = Callable[..., Run]
StartWorker = Callable[..., Worker]


def test_job_lifecycle_with_artifacts_variables_and_job_key(
    start_pipeline: StartPipeline, worker: StartWorker, aws: Callable[..., Any]
) -> None:
    # Given a pipeline whose artifact store uses its own KMS key
    key_arn = aws("kms").create_key(Description="pipeline key")["KeyMetadata"]["Arn"]
    run = start_pipeline("CpwExtract", outputs=("Out",), encryption_key_id=key_arn)
    # When a worker serves the action
    worker("extract")
    execution = run.wait()
    # Then the action saw the source, published variables and wrote an encrypted output
    assert execution["status"] == "Succeeded"
    output = run.action_output()
    assert output["outputVariables"] == {"Files": "README.md,src/main.py"}
    assert output["executionResult"]["externalExecutionSummary"] == "2 files"
    location = output["outputArtifacts"][0]["s3location"]
    s3 = aws("s3")
    head = s3.head_object(Bucket=location["bucket"], Key=location["key"])
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_arn
    body = s3.get_object(Bucket=location["bucket"], Key=location["key"])["Body"].read()
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert sorted(n for n in names if not n.endswith("/")) == ["README.md", "src/main.py"]


def test_output_without_pipeline_key_uses_kms_default(
    start_pipeline: StartPipeline, worker: StartWorker, aws: Callable[..., Any]
) -> None:
    run = start_pipeline("CpwExtract", outputs=("Out",))
    worker("extract")
    assert run.wait()["status"] == "Succeeded"
    location = run.action_output()["outputArtifacts"][0]["s3location"]
    head = aws("s3").head_object(Bucket=location["bucket"], Key=location["key"])
    assert head["ServerSideEncryption"] == "aws:kms"


def test_continuation_runs_several_jobs_for_one_action(
    start_pipeline: StartPipeline, worker: StartWorker, spy_dir: Path
) -> None:
    run = start_pipeline("CpwSteps", {"Steps": "3"})
    worker("steps")
    assert run.wait()["status"] == "Succeeded"
    jobs = run.action_output()["outputVariables"]["Jobs"].split(",")
    assert len(set(jobs)) == 3, "each step is a new job with a new id"
    assert (spy_dir / "runs").read_text().split() == jobs
    state = run.action_state()
    assert state["status"] == "Succeeded"
    assert state["externalExecutionId"] == "steps-run"


def test_handler_exception_is_a_bounded_job_failure(
    start_pipeline: StartPipeline, worker: StartWorker
) -> None:
    run = start_pipeline("CpwBoom")
    worker("boom")
    assert run.wait()["status"] == "Failed"
    error = run.action_state()["errorDetails"]
    assert error["code"] == "JobFailed"
    assert error["message"].startswith("ValueError: disk on fire !!!")
    assert len(error["message"]) == 5000


def test_wrong_configuration_is_a_configuration_error(
    start_pipeline: StartPipeline, worker: StartWorker
) -> None:
    run = start_pipeline("CpwSteps", {"Steps": "many"})
    worker("steps")
    assert run.wait()["status"] == "Failed"
    error = run.action_state()["errorDetails"]
    assert error["code"] == "ConfigurationError"
    assert error["message"].startswith("configuration property 'Steps': input should be")


def test_query_serves_only_jobs_with_the_queryable_value(
    start_pipeline: StartPipeline, worker: StartWorker
) -> None:
    tag = uuid.uuid4().hex[:8]
    ours = start_pipeline("CpwStaged", {"Stage": f"prod-{tag}"})
    theirs = start_pipeline("CpwStaged", {"Stage": f"dev-{tag}"})
    worker("staged", queries={"staged": {"Stage": f"prod-{tag}"}})
    assert ours.wait()["status"] == "Succeeded"
    # A job of ours queued after theirs is served: the worker polled past theirs.
    later = start_pipeline("CpwStaged", {"Stage": f"prod-{tag}"})
    assert later.wait()["status"] == "Succeeded"
    assert theirs.action_state().get("status") == "InProgress"


def test_a_job_that_cannot_even_start_still_gets_a_failure(
    start_pipeline: StartPipeline, worker: StartWorker, workspace_root: Path
) -> None:
    # Given a worker whose workspace root was replaced by a file after it started
    worker("steps")
    deadline = time.monotonic() + 5
    while not workspace_root.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    workspace_root.rmdir()
    workspace_root.write_text("not a directory")
    # When a job arrives, it cannot get a workspace
    run = start_pipeline("CpwSteps", {"Steps": "1"})
    # Then the pipeline is told at once instead of waiting for the job timeout
    assert run.wait()["status"] == "Failed"
    error = run.action_state()["errorDetails"]
    assert error["code"] == "SystemUnavailable"
    assert error["message"].startswith("cpworker could not run the job: WorkspaceRootError")
