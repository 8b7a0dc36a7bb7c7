"""``CpworkerLocal.GetResultCounts``: every result request per job, duplicates included."""

from __future__ import annotations

from typing import Any

import pytest
from cpw_local_lab import Lab

from cpworker.local.errors import ServiceError
from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline


def result_counts(local: LocalCodePipeline, **params: Any) -> dict[str, Any]:
    answer: dict[str, Any] = call_private(local.endpoint_url, "GetResultCounts", params)
    return answer


def test_counts_results_per_job_and_per_action_execution(
    local: LocalCodePipeline, lab: Lab
) -> None:
    # Given an action that takes two steps (a continuation, then a success)
    type_id = lab.action_type()
    name, execution_id = lab.pipeline([lab.action(type_id)])
    cp = lab.codepipeline
    first = lab.poll(type_id)[0]
    with pytest.raises(cp.exceptions.InvalidJobStateException):  # not acknowledged yet
        cp.put_job_success_result(jobId=first["id"], continuationToken="step-1")
    cp.acknowledge_job(jobId=first["id"], nonce=first["nonce"])
    cp.put_job_success_result(jobId=first["id"], continuationToken="step-1")
    second = lab.claim(type_id)
    cp.put_job_success_result(jobId=second["id"])

    # When both jobs are reported again, as a retrying worker might
    with pytest.raises(cp.exceptions.InvalidJobStateException):
        cp.put_job_success_result(jobId=first["id"], continuationToken="step-1")
    failure = {"type": "JobFailed", "message": "late"}
    with pytest.raises(cp.exceptions.InvalidJobStateException):
        cp.put_job_failure_result(jobId=second["id"], failureDetails=failure)
    assert lab.wait(name, execution_id)["status"] == "Succeeded"

    # Then each request is counted, and each job accepted exactly one
    counts = result_counts(local, pipelineName=name)
    run_id = first["data"]["pipelineContext"]["action"]["actionExecutionId"]
    assert counts["jobs"] == [
        {
            "jobId": first["id"],
            "status": "Succeeded",
            "pipelineName": name,
            "actionExecutionId": run_id,
            "received": {"PutJobSuccessResult": 3},
            "accepted": {"continuation": 1},
            "refused": {"InvalidJobStateException": 2},
        },
        {
            "jobId": second["id"],
            "status": "Succeeded",
            "pipelineName": name,
            "actionExecutionId": run_id,
            "received": {"PutJobSuccessResult": 1, "PutJobFailureResult": 1},
            "accepted": {"success": 1},
            "refused": {"InvalidJobStateException": 1},
        },
    ]
    assert counts["actionExecutions"] == [
        {
            "actionExecutionId": run_id,
            "pipelineName": name,
            "pipelineExecutionId": execution_id,
            "actionName": "Build",
            "steps": 2,
            "accepted": {"continuation": 1, "success": 1},
        }
    ]


def test_counts_without_a_pipeline_name_cover_every_job(local: LocalCodePipeline, lab: Lab) -> None:
    type_id = lab.action_type()
    name, _ = lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)

    counts = result_counts(local)

    assert job["id"] in [j["jobId"] for j in counts["jobs"]]
    assert {j["pipelineName"] for j in result_counts(local, pipelineName=name)["jobs"]} == {name}


def test_counts_refuse_an_unknown_member(local: LocalCodePipeline) -> None:
    with pytest.raises(ServiceError) as raised:
        result_counts(local, pipeline="typo")

    assert raised.value.code == "ValidationException"
    assert "pipeline" in raised.value.message


def test_job_times_tell_when_each_job_was_created_dispatched_and_acknowledged(
    local: LocalCodePipeline, lab: Lab
) -> None:
    type_id = lab.action_type()
    name, _ = lab.pipeline([lab.action(type_id)])
    polled = lab.poll(type_id)[0]
    dispatched = call_private(local.endpoint_url, "GetJobTimes", {"pipelineName": name})
    lab.codepipeline.acknowledge_job(jobId=polled["id"], nonce=polled["nonce"])

    (job,) = call_private(local.endpoint_url, "GetJobTimes", {"pipelineName": name})["jobs"]

    assert "acknowledgedAt" not in dispatched["jobs"][0]
    assert job["jobId"] == polled["id"]
    assert job["status"] == "InProgress"
    assert job["createdAt"] <= job["dispatchedAt"] <= job["acknowledgedAt"]
