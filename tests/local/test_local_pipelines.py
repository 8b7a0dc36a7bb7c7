"""Pipelines and executions on the local CodePipeline: structure checks, run order,
execution modes, variables and the engine's timers."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cpw_local_lab import Lab

from cpworker.testing import custom_action, pipeline_declaration

PROJECT = [{"name": "Project", "required": True, "key": True, "secret": False}]


def declaration(lab: Lab, actions: list[dict[str, Any]]) -> dict[str, Any]:
    """A declaration that is never created, for structure checks."""
    return pipeline_declaration(
        f"bad-{lab.uid}",
        artifact_bucket="art-bucket",
        source_bucket="src-bucket",
        source_key="app.zip",
        actions=actions,
    )


def _break(pipeline: dict[str, Any], how: str) -> None:
    build = pipeline["stages"][1]["actions"][0]
    if how == "duplicate stage":
        pipeline["stages"][1]["name"] = "Source"
    elif how == "single stage":
        del pipeline["stages"][1]
    elif how == "unproduced input":
        build["inputArtifacts"] = [{"name": "Nowhere"}]
    elif how == "unknown type":
        build["actionTypeId"]["provider"] = "No-Such-Provider"
    elif how == "missing config":
        build["configuration"] = {}
    elif how == "unknown config":
        build["configuration"]["Colour"] = "blue"
    elif how == "too many inputs":
        build["inputArtifacts"] *= 2


@pytest.mark.parametrize(
    ("how", "error", "message"),
    [
        ("duplicate stage", "InvalidStructureException", "'Source' is used more than once"),
        ("single stage", "InvalidStructureException", "at least two stages"),
        ("unproduced input", "InvalidStructureException", "'Nowhere'"),
        ("unknown type", "InvalidActionDeclarationException", "not found"),
        ("missing config", "InvalidActionDeclarationException", "['Project']"),
        ("unknown config", "InvalidActionDeclarationException", "['Colour']"),
        ("too many inputs", "InvalidActionDeclarationException", "takes 1 to 1 input"),
    ],
)
def test_structure_errors(lab: Lab, how: str, error: str, message: str) -> None:
    type_id = lab.action_type(properties=PROJECT)
    pipeline = declaration(lab, [lab.action(type_id, configuration={"Project": "p"})])
    _break(pipeline, how)

    with pytest.raises(getattr(lab.codepipeline.exceptions, error)) as caught:
        lab.codepipeline.create_pipeline(pipeline=pipeline)

    assert message in caught.value.response["Error"]["Message"]


def test_pipeline_crud_and_versions(lab: Lab) -> None:
    type_id = lab.action_type()
    name, _ = lab.pipeline([lab.action(type_id)])
    cp = lab.codepipeline

    with pytest.raises(cp.exceptions.PipelineNameInUseException):
        cp.create_pipeline(pipeline=cp.get_pipeline(name=name)["pipeline"])
    got = cp.get_pipeline(name=name)
    assert got["pipeline"]["version"] == 1
    assert got["pipeline"]["executionMode"] == "SUPERSEDED"
    assert got["metadata"]["pipelineArn"].endswith(f":{name}")
    changed = copy.deepcopy(got["pipeline"])
    changed["stages"][1]["actions"][0]["name"] = "Renamed"
    assert cp.update_pipeline(pipeline=changed)["pipeline"]["version"] == 2
    assert cp.get_pipeline(name=name, version=1)["pipeline"]["stages"][1]["actions"][0]["name"] == (
        "Build"
    )
    assert name in [p["name"] for p in cp.list_pipelines()["pipelines"]]
    assert lab.executions(name)[0]["trigger"]["triggerType"] == "CreatePipeline"
    with pytest.raises(cp.exceptions.PipelineExecutionNotFoundException):
        cp.get_pipeline_execution(pipelineName=name, pipelineExecutionId=str(uuid.uuid4()))

    cp.delete_pipeline(name=name)

    with pytest.raises(cp.exceptions.PipelineNotFoundException):
        cp.get_pipeline(name=name)
    with pytest.raises(cp.exceptions.PipelineNotFoundException):
        cp.get_pipeline_state(name=name)


def test_same_run_order_runs_in_parallel_and_higher_runs_after(lab: Lab) -> None:
    type_id = lab.action_type()
    name, execution_id = lab.pipeline(
        [
            lab.action(type_id, "A", run_order=1),
            lab.action(type_id, "B", run_order=1),
            lab.action(type_id, "C", run_order=2),
        ]
    )

    # A and B are dispatched together; C waits for both.
    first = lab.poll(type_id, count=2)
    assert sorted(j["data"]["pipelineContext"]["action"]["name"] for j in first) == ["A", "B"]
    for job in first[:1]:
        lab.codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
        lab.codepipeline.put_job_success_result(jobId=job["id"])
    # Once A's success is recorded, C could be dispatched — but it must wait for B.
    done = job["data"]["pipelineContext"]["action"]["name"]
    assert lab.action_state(name, done)["status"] == "Succeeded"
    assert lab.codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=5)["jobs"] == []
    assert (
        "latestExecution"
        not in lab.codepipeline.get_pipeline_state(name=name)["stageStates"][1]["actionStates"][2]
    )

    lab.codepipeline.acknowledge_job(jobId=first[1]["id"], nonce=first[1]["nonce"])
    lab.codepipeline.put_job_success_result(jobId=first[1]["id"])
    third = lab.claim(type_id)
    assert third["data"]["pipelineContext"]["action"]["name"] == "C"
    lab.codepipeline.put_job_success_result(jobId=third["id"])
    assert lab.wait(name, execution_id)["status"] == "Succeeded"


def test_a_failed_action_stops_later_run_orders(lab: Lab) -> None:
    type_id = lab.action_type()
    name, execution_id = lab.pipeline(
        [lab.action(type_id, "A", run_order=1), lab.action(type_id, "C", run_order=2)]
    )
    job = lab.claim(type_id)

    lab.codepipeline.put_job_failure_result(
        jobId=job["id"], failureDetails={"type": "JobFailed", "message": "broken"}
    )

    assert lab.wait(name, execution_id)["status"] == "Failed"
    assert set(lab.action_executions(name, execution_id)) == {"Source", "A"}


def test_newer_waiting_execution_supersedes_an_older_one(lab: Lab) -> None:
    type_id = lab.action_type()
    name, first = lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)  # the first execution holds the Build stage

    second = lab.codepipeline.start_pipeline_execution(name=name)["pipelineExecutionId"]
    lab.wait_until(
        lambda: lab.action_executions(name, second).get("Source", {}).get("status") == "Succeeded"
    )
    third = lab.codepipeline.start_pipeline_execution(name=name)["pipelineExecutionId"]

    assert lab.wait(name, second)["status"] == "Superseded"
    lab.codepipeline.put_job_success_result(jobId=job["id"])
    assert lab.wait(name, first)["status"] == "Succeeded"
    lab.codepipeline.put_job_success_result(jobId=lab.claim(type_id)["id"])
    assert lab.wait(name, third)["status"] == "Succeeded"
    summaries = lab.executions(name)
    assert [s["pipelineExecutionId"] for s in summaries] == [third, second, first]
    assert summaries[0]["trigger"]["triggerType"] == "StartPipelineExecution"


def test_variables_resolve_in_action_configuration(lab: Lab) -> None:
    type_id = lab.action_type(properties=PROJECT)
    action = custom_action(
        "Build",
        provider=type_id["provider"],
        configuration={"Project": "#{variables.env}-#{SourceVariables.ETag}"},
    )
    pipeline = declaration(lab, [action])
    pipeline["name"] = f"vars-{lab.uid}"
    pipeline["stages"][0]["actions"][0]["namespace"] = "SourceVariables"
    pipeline["variables"] = [{"name": "env", "defaultValue": "dev"}]
    pipeline["artifactStore"]["location"] = f"art-vars-{lab.uid}"
    pipeline["stages"][0]["actions"][0]["configuration"]["S3Bucket"] = f"src-vars-{lab.uid}"
    lab.s3.create_bucket(Bucket=f"art-vars-{lab.uid}")
    lab.s3.create_bucket(Bucket=f"src-vars-{lab.uid}")
    etag = lab.s3.put_object(Bucket=f"src-vars-{lab.uid}", Key="app.zip", Body=b"x")["ETag"]
    lab.codepipeline.create_pipeline(pipeline=pipeline)
    lab.pipelines.append(pipeline["name"])

    job = lab.poll(type_id)[0]

    configuration = job["data"]["actionConfiguration"]["configuration"]
    assert configuration["Project"] == f"dev-{etag.strip(chr(34))}"


def test_unacknowledged_job_is_dispatched_again_with_a_new_nonce(
    lab: Lab, tune: Callable[..., None]
) -> None:
    tune(redispatch_after_s=0.3)
    type_id = lab.action_type()
    lab.pipeline([lab.action(type_id)])
    first = lab.poll(type_id)[0]
    assert lab.codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)["jobs"] == []

    time.sleep(0.4)
    again = lab.poll(type_id)[0]

    assert again["id"] == first["id"]
    assert again["nonce"] != first["nonce"]
    with pytest.raises(lab.codepipeline.exceptions.InvalidNonceException):
        lab.codepipeline.acknowledge_job(jobId=first["id"], nonce=first["nonce"])
    ack = lab.codepipeline.acknowledge_job(jobId=again["id"], nonce=again["nonce"])
    assert ack["status"] == "InProgress"


def test_job_without_a_result_times_out_and_fails_the_action(
    lab: Lab, tune: Callable[..., None]
) -> None:
    type_id = lab.action_type()
    name, execution_id = lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)

    tune(job_timeout_s=0.2)

    assert lab.wait(name, execution_id)["status"] == "Failed"
    state = lab.action_state(name, "Build")
    assert state["errorDetails"]["code"] == "JobTimedOut"
    assert "timed out" in state["errorDetails"]["message"]
    with pytest.raises(lab.codepipeline.exceptions.InvalidJobStateException, match="TimedOut"):
        lab.codepipeline.put_job_success_result(jobId=job["id"])
