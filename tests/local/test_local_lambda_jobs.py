"""Standalone Lambda jobs (``CpworkerLocal.*``), what ``cpworker invoke`` reports on."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cpw_local_lab import Lab

from cpworker.local.errors import ServiceError
from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline

DATA = {
    "actionConfiguration": {"configuration": {"FunctionName": "Fn", "UserParameters": "p"}},
    "inputArtifacts": [],
    "outputArtifacts": [],
}


@pytest.fixture
def private(local: LocalCodePipeline) -> Callable[..., Any]:
    def call(operation: str, **params: Any) -> Any:
        return call_private(local.endpoint_url, operation, params)

    return call


def test_job_takes_results_without_acknowledgement_and_describes_them(
    lab: Lab, private: Callable[..., Any]
) -> None:
    created = private("CreateLambdaJob", data=DATA)

    job_id = created["jobId"]
    assert str(uuid.UUID(job_id)) == job_id
    event = created["event"]["CodePipeline.job"]
    assert set(event) == {"id", "accountId", "data"}
    assert event["id"] == job_id
    assert event["data"]["actionConfiguration"] == DATA["actionConfiguration"]
    assert set(event["data"]["artifactCredentials"]) == {
        "accessKeyId",
        "secretAccessKey",
        "sessionToken",
    }
    assert event["data"]["encryptionKey"]["type"] == "KMS"
    assert private("DescribeJob", jobId=job_id) == {"jobId": job_id, "status": "InProgress"}

    lab.codepipeline.put_job_success_result(
        jobId=job_id,
        executionDetails={"summary": "done", "percentComplete": 100},
        outputVariables={"Answer": "42"},
    )

    assert private("DescribeJob", jobId=job_id) == {
        "jobId": job_id,
        "status": "Succeeded",
        "result": {
            "type": "success",
            "executionDetails": {"summary": "done", "percentComplete": 100},
            "outputVariables": {"Answer": "42"},
        },
    }
    with pytest.raises(lab.codepipeline.exceptions.InvalidJobStateException):
        lab.codepipeline.put_job_failure_result(
            jobId=job_id, failureDetails={"type": "JobFailed", "message": "late"}
        )


def test_continuation_creates_the_next_job_with_the_token(
    lab: Lab, private: Callable[..., Any]
) -> None:
    key = {"id": "alias/my-key", "type": "KMS"}
    job_id = private("CreateLambdaJob", data={**DATA, "encryptionKey": key})["jobId"]

    lab.codepipeline.put_job_success_result(jobId=job_id, continuationToken="step-1")

    described = private("DescribeJob", jobId=job_id)
    assert described["result"] == {"type": "continuation", "continuationToken": "step-1"}
    next_id = described["nextJobId"]
    details = lab.codepipeline.get_job_details(jobId=next_id)["jobDetails"]
    assert details["data"]["continuationToken"] == "step-1"
    assert details["data"]["encryptionKey"] == key
    lab.codepipeline.put_job_failure_result(
        jobId=next_id,
        failureDetails={"type": "ConfigurationError", "message": "no", "externalExecutionId": "x"},
    )
    assert private("DescribeJob", jobId=next_id) == {
        "jobId": next_id,
        "status": "Failed",
        "result": {
            "type": "failure",
            "failureDetails": {
                "type": "ConfigurationError",
                "message": "no",
                "externalExecutionId": "x",
            },
        },
    }


def test_job_without_a_result_times_out_after_the_reply_window(
    lab: Lab, private: Callable[..., Any], tune: Callable[..., None]
) -> None:
    tune(lambda_reply_window_s=0.2)
    job_id = private("CreateLambdaJob", data=DATA)["jobId"]

    lab.wait_until(lambda: private("DescribeJob", jobId=job_id)["status"] == "TimedOut")


def test_a_given_job_id_is_used_once(private: Callable[..., Any]) -> None:
    job_id = str(uuid.uuid4())
    assert private("CreateLambdaJob", data=DATA, jobId=job_id)["jobId"] == job_id
    with pytest.raises(ServiceError) as raised:
        private("CreateLambdaJob", data=DATA, jobId=job_id)
    assert raised.value.code == "ConflictException"


@pytest.mark.parametrize(
    ("operation", "params", "code", "text"),
    [
        ("CreateLambdaJob", {}, "ValidationException", "'data' failed"),
        ("CreateLambdaJob", {"data": {"continuationToken": ""}}, "ValidationException", "length"),
        ("CreateLambdaJob", {"data": DATA, "jobId": "NOT-A-UUID"}, "ValidationException", "jobId"),
        ("CreateLambdaJob", {"data": DATA, "extra": 1}, "ValidationException", "not known"),
        ("DescribeJob", {"jobId": str(uuid.uuid4())}, "JobNotFoundException", "not found"),
        ("Explode", {}, "UnknownOperationException", "CpworkerLocal.Explode"),
    ],
)
def test_bad_requests_answer_modelled_errors(
    private: Callable[..., Any], operation: str, params: dict[str, Any], code: str, text: str
) -> None:
    with pytest.raises(ServiceError) as raised:
        private(operation, **params)
    assert raised.value.code == code
    assert text in raised.value.message
    assert raised.value.status == 400
