"""Injected faults, seen through boto3 as a worker sees them, on a server of their own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError
from cpw_local_lab import Lab

from cpworker.local.faults import FaultSettings
from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline

Clients = Callable[..., Any]


@pytest.fixture(scope="module")
def chaos(local: LocalCodePipeline) -> Iterator[LocalCodePipeline]:
    """A server of its own, so that no other test's requests draw from its faults."""
    with LocalCodePipeline(settings=local.engine.settings) as server:
        yield server


@pytest.fixture
def clients(chaos: LocalCodePipeline) -> Iterator[Clients]:
    """``clients(service, attempts=1)``: boto3 clients of the chaos server; faults off after."""

    def client(service: str, attempts: int = 1) -> Any:
        config = Config(
            retries={"total_max_attempts": attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=chaos.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )

    yield client
    chaos.set_faults(None)


@pytest.fixture
def chaos_lab(chaos: LocalCodePipeline, clients: Clients) -> Iterator[Lab]:
    created = Lab(clients("codepipeline"), clients("s3"))
    yield created
    chaos.set_faults(None)
    created.cleanup()


def error_of(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(ClientError) as raised:
        call()
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def counts(chaos: LocalCodePipeline, job_id: str) -> dict[str, Any]:
    answer = call_private(chaos.endpoint_url, "GetResultCounts", {})
    found: dict[str, Any] = next(job for job in answer["jobs"] if job["jobId"] == job_id)
    return found


def with_object(clients: Clients, bucket: str) -> tuple[Any, Any]:
    """CodePipeline and S3 clients, and ``bucket`` holding the object ``k`` (``x``)."""
    codepipeline, s3 = clients("codepipeline"), clients("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    return codepipeline, s3


def test_throttling_answers_in_each_services_wire_form(
    chaos: LocalCodePipeline, clients: Clients
) -> None:
    codepipeline, s3 = with_object(clients, "chaos-throttle")
    chaos.set_faults(
        FaultSettings(throttle=1.0, operations=frozenset({"ListPipelines", "GetObject"}))
    )

    assert error_of(codepipeline.list_pipelines) == (400, "ThrottlingException")
    assert error_of(lambda: s3.get_object(Bucket="chaos-throttle", Key="k")) == (503, "SlowDown")
    # operations outside ops are not touched
    assert "actionTypes" in codepipeline.list_action_types()
    assert s3.head_object(Bucket="chaos-throttle", Key="k")["ContentLength"] == 1


def test_latency_holds_each_request_within_ops_and_then_answers_it(
    chaos: LocalCodePipeline, clients: Clients
) -> None:
    codepipeline, s3 = with_object(clients, "chaos-latency")
    chaos.set_faults(FaultSettings.parse("latency=0.4,ops=ListPipelines|GetObject"))

    began = time.monotonic()
    pipelines = codepipeline.list_pipelines()
    body = s3.get_object(Bucket="chaos-latency", Key="k")["Body"].read()
    held = time.monotonic() - began

    # each held call is answered as usual, after its latency
    assert "pipelines" in pipelines
    assert body == b"x"
    assert held >= 0.8


def test_5xx_answers_500_or_503(chaos: LocalCodePipeline, clients: Clients) -> None:
    codepipeline, s3 = with_object(clients, "chaos-5xx")
    ops = frozenset({"ListPipelines", "S3"})
    chaos.set_faults(FaultSettings(server_error=1.0, operations=ops, seed=3))

    seen = {error_of(codepipeline.list_pipelines) for _ in range(12)}
    seen_s3 = {error_of(lambda: s3.get_object(Bucket="chaos-5xx", Key="k")) for _ in range(12)}

    assert seen == {(500, "InternalFailure"), (503, "ServiceUnavailable")}
    assert seen_s3 == {(500, "InternalError"), (503, "ServiceUnavailable")}


def test_the_same_seed_gives_the_same_faults(chaos: LocalCodePipeline, clients: Clients) -> None:
    codepipeline = clients("codepipeline")

    def outcomes() -> list[bool]:
        chaos.set_faults(
            FaultSettings(throttle=0.5, operations=frozenset({"ListPipelines"}), seed=7)
        )
        seen = []
        for _ in range(16):
            try:
                codepipeline.list_pipelines()
                seen.append(True)
            except ClientError:
                seen.append(False)
        return seen

    first = outcomes()

    assert outcomes() == first
    assert True in first
    assert False in first


def test_a_reset_before_processing_changes_nothing(
    chaos: LocalCodePipeline, chaos_lab: Lab, clients: Clients
) -> None:
    type_id = chaos_lab.action_type()
    name, execution_id = chaos_lab.pipeline([chaos_lab.action(type_id)])
    job = chaos_lab.claim(type_id)
    chaos.set_faults(FaultSettings(reset=1.0, operations=frozenset({"PutJobSuccessResult"})))

    with pytest.raises(ConnectionClosedError):
        chaos_lab.codepipeline.put_job_success_result(jobId=job["id"])

    assert counts(chaos, job["id"]) == {
        "jobId": job["id"],
        "status": "InProgress",
        "pipelineName": name,
        "actionExecutionId": job["data"]["pipelineContext"]["action"]["actionExecutionId"],
        "received": {},
        "accepted": {},
        "refused": {},
    }
    chaos.set_faults(None)
    chaos_lab.codepipeline.put_job_success_result(jobId=job["id"])
    assert chaos_lab.wait(name, execution_id)["status"] == "Succeeded"


def test_a_lost_answer_lands_and_its_retry_is_refused(
    chaos: LocalCodePipeline, chaos_lab: Lab
) -> None:
    type_id = chaos_lab.action_type()
    name, execution_id = chaos_lab.pipeline([chaos_lab.action(type_id)])
    job = chaos_lab.claim(type_id)
    codepipeline = chaos_lab.codepipeline
    chaos.set_faults(FaultSettings(lost=1.0, operations=frozenset({"PutJobSuccessResult"})))

    # The report lands, but its answer never comes back
    with pytest.raises(ConnectionClosedError):
        codepipeline.put_job_success_result(jobId=job["id"], outputVariables={"Run": "1"})
    assert chaos_lab.wait(name, execution_id)["status"] == "Succeeded"

    # A retry meets InvalidJobStateException; GetJobDetails still describes the job
    chaos.set_faults(None)
    with pytest.raises(codepipeline.exceptions.InvalidJobStateException):
        codepipeline.put_job_success_result(jobId=job["id"], outputVariables={"Run": "1"})
    details = codepipeline.get_job_details(jobId=job["id"])["jobDetails"]
    assert details["id"] == job["id"]
    assert details["accountId"] == "123456789012"
    assert details["data"]["pipelineContext"] == job["data"]["pipelineContext"]
    renewed = details["data"]["artifactCredentials"]["accessKeyId"]
    assert renewed != job["data"]["artifactCredentials"]["accessKeyId"]

    # And the counts show two reports received, one accepted
    job_counts = counts(chaos, job["id"])
    assert job_counts["status"] == "Succeeded"
    assert job_counts["received"] == {"PutJobSuccessResult": 2}
    assert job_counts["accepted"] == {"success": 1}
    assert job_counts["refused"] == {"InvalidJobStateException": 1}


def test_a_lost_s3_answer_still_stores_the_object(
    chaos: LocalCodePipeline, clients: Clients
) -> None:
    s3 = clients("s3")
    s3.create_bucket(Bucket="chaos-lost")
    chaos.set_faults(FaultSettings(lost=1.0, operations=frozenset({"PutObject"})))

    with pytest.raises(ConnectionClosedError):
        s3.put_object(Bucket="chaos-lost", Key="k", Body=b"landed")

    chaos.set_faults(None)
    assert s3.get_object(Bucket="chaos-lost", Key="k")["Body"].read() == b"landed"


def test_sdk_retries_carry_a_job_through_faults(chaos: LocalCodePipeline, clients: Clients) -> None:
    # Given every request of a worker's job at risk of throttling, 5xx and resets
    lab = Lab(clients("codepipeline", attempts=12), clients("s3", attempts=12))
    type_id = lab.action_type()
    name, execution_id = lab.pipeline([lab.action(type_id)])
    worker_calls = {"PollForJobs", "AcknowledgeJob", "PutJobSuccessResult", "GetObject"}
    chaos.set_faults(
        FaultSettings(
            throttle=0.3, server_error=0.1, reset=0.05, operations=frozenset(worker_calls), seed=7
        )
    )
    faults_seen: list[object] = []

    def seen(response: Any, caught_exception: Exception | None, **_: Any) -> None:
        """botocore's retry check of each attempt: note every fault it is shown."""
        if caught_exception is not None or response[0].status_code >= 400:
            faults_seen.append(caught_exception or response[0].status_code)

    lab.codepipeline.meta.events.register("needs-retry", seen)
    try:
        # When a worker set up with standard SDK retries runs it by hand
        job = lab.claim(type_id, timeout_s=30)
        location = job["data"]["inputArtifacts"][0]["location"]["s3Location"]
        job_s3 = boto3.client(
            "s3",
            endpoint_url=chaos.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=job["data"]["artifactCredentials"]["accessKeyId"],
            aws_secret_access_key=job["data"]["artifactCredentials"]["secretAccessKey"],
            aws_session_token=job["data"]["artifactCredentials"]["sessionToken"],
            config=Config(retries={"total_max_attempts": 12, "mode": "standard"}),
        )
        job_s3.meta.events.register("needs-retry", seen)
        body = job_s3.get_object(Bucket=location["bucketName"], Key=location["objectKey"])
        assert body["Body"].read()[:2] == b"PK"
        lab.codepipeline.put_job_success_result(jobId=job["id"])

        # Then the job ends with one report received and accepted: refused faults never land
        assert lab.wait(name, execution_id, timeout_s=60)["status"] == "Succeeded"
        job_counts = counts(chaos, job["id"])
        assert job_counts["received"] == {"PutJobSuccessResult": 1}
        assert job_counts["accepted"] == {"success": 1}
        assert faults_seen, "the SDK met no fault to retry"
    finally:
        chaos.set_faults(None)
        lab.cleanup()
