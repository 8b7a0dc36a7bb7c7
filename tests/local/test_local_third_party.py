"""The third-party job APIs of the local CodePipeline, driven by hand with boto3 and the AWS CLI."""

from __future__ import annotations

import io
import time
import zipfile
from typing import Any

import pytest
from cpw_local_lab import SOURCE_FILES, Lab, aws_cli
from cpw_third_party import declare_job_worker_type

from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline

PROJECT = [{"name": "Project", "optional": False, "key": True, "noEcho": False}]


def third_party_pipeline(local: LocalCodePipeline, lab: Lab) -> tuple[dict[str, str], str, str]:
    """A ThirdParty Build type and a pipeline running it as Build: (type, name, execution)."""
    type_id = {
        "category": "Build",
        "owner": "ThirdParty",
        "provider": f"P-{lab.uid}",
        "version": "1",
    }
    declare_job_worker_type(
        local.engine, type_id, properties=PROJECT, inputs=(1, 1), outputs=(0, 1)
    )
    action = lab.action(type_id, configuration={"Project": "demo"}, outputs=["Built"])
    action["actionTypeId"]["owner"] = "ThirdParty"
    name, execution_id = lab.pipeline([action])
    return type_id, name, execution_id


def client_of(local: LocalCodePipeline, name: str, **change: str) -> dict[str, str]:
    """The client id and token of the pipeline's Build action (``change``: new ones)."""
    request = {"pipelineName": name, "stageName": "Build", "actionName": "Build", **change}
    answer: dict[str, str] = call_private(local.endpoint_url, "ThirdPartyClient", request)
    return answer


def poll(lab: Lab, type_id: dict[str, str], timeout_s: float = 10.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = lab.codepipeline.poll_for_third_party_jobs(actionTypeId=type_id, maxBatchSize=1)
        if jobs["jobs"]:
            job: dict[str, str] = jobs["jobs"][0]
            return job
        time.sleep(0.02)
    raise AssertionError(f"no third-party job for {type_id}")


def test_a_third_party_job_by_hand(local: LocalCodePipeline, lab: Lab) -> None:
    # Given a pipeline whose Build action is of a third-party type
    type_id, name, execution_id = third_party_pipeline(local, lab)
    client = client_of(local, name)
    cp = lab.codepipeline

    # When a job worker polls, it learns only whose job it is
    job = poll(lab, type_id)
    assert job == {"clientId": client["clientId"], "jobId": job["jobId"]}

    # Then the client token opens the job: data and nonce, without what only custom jobs carry
    details = cp.get_third_party_job_details(jobId=job["jobId"], clientToken=client["clientToken"])
    details = details["jobDetails"]
    assert set(details) == {"id", "data", "nonce"}
    data = details["data"]
    assert data["pipelineContext"]["pipelineName"] == name
    assert data["pipelineContext"]["action"]["name"] == "Build"
    assert not {"pipelineArn", "pipelineExecutionId"} & set(data["pipelineContext"])
    assert data["actionConfiguration"]["configuration"] == {"Project": "demo"}
    location = data["inputArtifacts"][0]["location"]["s3Location"]
    body = lab.job_s3(data).get_object(Bucket=location["bucketName"], Key=location["objectKey"])
    with zipfile.ZipFile(io.BytesIO(body["Body"].read())) as archive:
        assert archive.read("README.md").decode() == SOURCE_FILES["README.md"]

    # And the nonce claims it, once
    token = client["clientToken"]
    with pytest.raises(cp.exceptions.InvalidNonceException):
        cp.acknowledge_third_party_job(jobId=job["jobId"], nonce="0", clientToken=token)
    ack = cp.acknowledge_third_party_job(
        jobId=job["jobId"], nonce=details["nonce"], clientToken=token
    )
    assert ack["status"] == "InProgress"

    # And a continuation brings a second job carrying the token, whose failure ends the action
    cp.put_third_party_job_success_result(
        jobId=job["jobId"],
        clientToken=token,
        continuationToken="step-2",
        executionDetails={"summary": "half way", "percentComplete": 50},
    )
    second = poll(lab, type_id)
    assert second["jobId"] != job["jobId"]
    details = cp.get_third_party_job_details(jobId=second["jobId"], clientToken=token)
    assert details["jobDetails"]["data"]["continuationToken"] == "step-2"
    cp.acknowledge_third_party_job(
        jobId=second["jobId"], nonce=details["jobDetails"]["nonce"], clientToken=token
    )
    cp.put_third_party_job_failure_result(
        jobId=second["jobId"],
        clientToken=token,
        failureDetails={"type": "ConfigurationError", "message": "no such project"},
    )
    assert lab.wait(name, execution_id)["status"] == "Failed"
    error = lab.action_state(name, "Build")["errorDetails"]
    assert (error["code"], error["message"]) == ("ConfigurationError", "no such project")
    counts = call_private(local.endpoint_url, "GetResultCounts", {"pipelineName": name})
    assert [j["received"] for j in counts["jobs"]] == [
        {"PutThirdPartyJobSuccessResult": 1},
        {"PutThirdPartyJobFailureResult": 1},
    ]


def test_a_wrong_client_token_is_refused_by_every_operation_and_changes_nothing(
    local: LocalCodePipeline, lab: Lab
) -> None:
    type_id, name, execution_id = third_party_pipeline(local, lab)
    client = client_of(local, name)
    cp = lab.codepipeline
    job_id = poll(lab, type_id)["jobId"]
    wrong = "not-the-token"
    nonce = cp.get_third_party_job_details(jobId=job_id, clientToken=client["clientToken"])[
        "jobDetails"
    ]["nonce"]

    refusals = [
        lambda: cp.get_third_party_job_details(jobId=job_id, clientToken=wrong),
        lambda: cp.acknowledge_third_party_job(jobId=job_id, nonce=nonce, clientToken=wrong),
        lambda: cp.put_third_party_job_success_result(jobId=job_id, clientToken=wrong),
        lambda: cp.put_third_party_job_failure_result(
            jobId=job_id, clientToken=wrong, failureDetails={"type": "JobFailed", "message": "x"}
        ),
    ]
    for refused in refusals:
        with pytest.raises(cp.exceptions.InvalidClientTokenException) as caught:
            refused()
        assert wrong not in str(caught.value)
    assert lab.action_state(name, "Build")["status"] == "InProgress"
    (job,) = call_private(local.endpoint_url, "GetResultCounts", {"pipelineName": name})["jobs"]
    assert (job["refused"], job["accepted"]) == ({"InvalidClientTokenException": 2}, {})

    # A new token replaces the old one, which is refused from then on
    renewed = client_of(local, name, clientToken="renewed-token-0123456789")
    assert renewed["clientId"] == client["clientId"]
    with pytest.raises(cp.exceptions.InvalidClientTokenException):
        cp.acknowledge_third_party_job(jobId=job_id, nonce=nonce, clientToken=client["clientToken"])
    ack = cp.acknowledge_third_party_job(
        jobId=job_id, nonce=nonce, clientToken=renewed["clientToken"]
    )
    assert ack["status"] == "InProgress"
    cp.put_third_party_job_success_result(jobId=job_id, clientToken=renewed["clientToken"])
    assert lab.wait(name, execution_id)["status"] == "Succeeded"


def test_custom_and_third_party_job_apis_keep_to_their_own_jobs(
    local: LocalCodePipeline, lab: Lab
) -> None:
    type_id, name, _ = third_party_pipeline(local, lab)
    token = client_of(local, name)["clientToken"]
    cp = lab.codepipeline
    third_party_job = poll(lab, type_id)["jobId"]
    custom_type = lab.action_type()
    lab.pipeline([lab.action(custom_type)], suffix="custom")
    custom_job = lab.poll(custom_type)[0]["id"]

    calls: list[tuple[Any, Any]] = [
        (cp.exceptions.JobNotFoundException, lambda: cp.get_job_details(jobId=third_party_job)),
        (
            cp.exceptions.JobNotFoundException,
            lambda: cp.get_third_party_job_details(jobId=custom_job, clientToken=token),
        ),
        (
            cp.exceptions.ValidationException,
            lambda: cp.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1),
        ),
        (
            cp.exceptions.ValidationException,
            lambda: cp.poll_for_third_party_jobs(actionTypeId=custom_type, maxBatchSize=1),
        ),
    ]
    for error, call in calls:
        with pytest.raises(error):
            call()


def test_a_third_party_job_by_hand_with_the_aws_cli(local: LocalCodePipeline, lab: Lab) -> None:
    type_id, name, execution_id = third_party_pipeline(local, lab)
    token = client_of(local, name)["clientToken"]
    endpoint, cp = local.endpoint_url, "codepipeline"
    type_arg = ",".join(f"{k}={v}" for k, v in type_id.items())
    deadline = time.monotonic() + 15
    jobs: list[dict[str, str]] = []
    while not jobs and time.monotonic() < deadline:
        code, answer, stderr = aws_cli(
            endpoint, cp, "poll-for-third-party-jobs", "--action-type-id", type_arg
        )
        assert code == 0, stderr
        jobs = answer["jobs"]
    job_id = jobs[0]["jobId"]

    code, _, stderr = aws_cli(
        endpoint, cp, "get-third-party-job-details", "--job-id", job_id, "--client-token", "wrong"
    )
    assert code != 0
    assert "InvalidClientTokenException" in stderr
    code, answer, stderr = aws_cli(
        endpoint, cp, "get-third-party-job-details", "--job-id", job_id, "--client-token", token
    )
    assert code == 0, stderr
    nonce = answer["jobDetails"]["nonce"]
    code, answer, stderr = aws_cli(
        endpoint, cp, "acknowledge-third-party-job",
        "--job-id", job_id, "--nonce", nonce, "--client-token", token,
    )  # fmt: skip
    assert code == 0, stderr
    assert answer == {"status": "InProgress"}
    code, _, stderr = aws_cli(
        endpoint, cp, "put-third-party-job-success-result",
        "--job-id", job_id, "--client-token", token,
        "--execution-details", "summary=built by hand,percentComplete=100",
    )  # fmt: skip
    assert code == 0, stderr
    assert lab.wait(name, execution_id)["status"] == "Succeeded"
    assert lab.action_state(name, "Build")["summary"] == "built by hand"
