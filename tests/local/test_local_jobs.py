"""The custom-action job APIs of the local CodePipeline, driven by hand as a worker would."""

from __future__ import annotations

import io
import uuid
import zipfile
from typing import Any

import pytest
from cpw_local_lab import SOURCE_FILES, Lab

PROJECT = [{"name": "Project", "required": True, "key": True, "secret": False, "queryable": True}]
UNKNOWN_JOB = str(uuid.uuid4())


def job_state(lab: Lab, job_id: str) -> dict[str, Any]:
    details: dict[str, Any] = lab.codepipeline.get_job_details(jobId=job_id)["jobDetails"]
    return details


def test_full_manual_job_lifecycle(lab: Lab, local: Any) -> None:
    # Given a pipeline whose Build action is a custom action with a secret property
    properties = [
        {"name": "Project", "required": True, "key": True, "secret": False},
        {"name": "Password", "required": True, "key": False, "secret": True},
    ]
    type_id = lab.action_type(properties=properties, outputs=(1, 1))
    config = {"Project": "demo", "Password": "hunter2"}
    name, execution_id = lab.pipeline(
        [lab.action(type_id, configuration=config, outputs=["BuildOutput"])]
    )

    # When a worker polls, acknowledges and reads the job
    job = lab.poll(type_id)[0]
    assert job["data"]["actionConfiguration"]["configuration"] == config
    assert lab.codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])["status"] == (
        "InProgress"
    )
    details = job_state(lab, job["id"])
    assert "nonce" not in details
    assert details["accountId"] == "123456789012"
    data = details["data"]
    context = data["pipelineContext"]
    assert context["pipelineName"] == name
    assert context["stage"]["name"] == "Build"
    assert context["action"]["name"] == "Build"
    assert context["pipelineExecutionId"] == execution_id
    assert context["pipelineArn"] == f"arn:aws:codepipeline:us-east-1:123456789012:{name}"
    assert data["encryptionKey"]["type"] == "KMS"
    output = data["outputArtifacts"][0]["location"]["s3Location"]
    assert output["bucketName"] == f"{name}-store"
    assert output["objectKey"].startswith(f"{name[:20]}/BuildOutpu/")

    # Then the input artifact downloads with the job's own credentials
    job_s3 = lab.job_s3(data)
    location = data["inputArtifacts"][0]["location"]["s3Location"]
    body = job_s3.get_object(Bucket=location["bucketName"], Key=location["objectKey"])["Body"]
    with zipfile.ZipFile(io.BytesIO(body.read())) as archive:
        assert archive.read("README.md").decode() == SOURCE_FILES["README.md"]

    # And a success result ends the execution
    lab.codepipeline.put_job_success_result(
        jobId=job["id"],
        executionDetails={
            "summary": "built",
            "externalExecutionId": "run-7",
            "percentComplete": 100,
        },
        outputVariables={"RunId": "run-7"},
    )
    assert lab.wait(name, execution_id)["status"] == "Succeeded"
    assert job_state(lab, job["id"])["id"] == job["id"]
    build = lab.action_executions(name, execution_id)["Build"]
    assert build["status"] == "Succeeded"
    assert build["output"]["outputVariables"] == {"RunId": "run-7"}
    assert build["output"]["executionResult"]["externalExecutionId"] == "run-7"
    assert build["output"]["executionResult"]["externalExecutionSummary"] == "built"
    assert build["input"]["configuration"]["Password"] == "****"
    assert lab.action_state(name, "Build")["summary"] == "built"


def test_wrong_nonce_is_refused(lab: Lab) -> None:
    type_id = lab.action_type()
    lab.pipeline([lab.action(type_id)])
    job = lab.poll(type_id)[0]

    with pytest.raises(lab.codepipeline.exceptions.InvalidNonceException):
        lab.codepipeline.acknowledge_job(jobId=job["id"], nonce="not-the-nonce")


def test_second_ack_with_the_same_nonce_is_idempotent(lab: Lab) -> None:
    type_id = lab.action_type()
    lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)

    again = lab.codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])

    assert again["status"] == "InProgress"


def test_result_before_acknowledge_is_refused(lab: Lab) -> None:
    type_id = lab.action_type()
    lab.pipeline([lab.action(type_id)])
    job = lab.poll(type_id)[0]

    with pytest.raises(lab.codepipeline.exceptions.InvalidJobStateException, match="acknowledge"):
        lab.codepipeline.put_job_success_result(jobId=job["id"])


def test_result_on_a_finished_job_is_refused(lab: Lab) -> None:
    type_id = lab.action_type()
    name, execution_id = lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)
    lab.codepipeline.put_job_success_result(jobId=job["id"])
    lab.wait(name, execution_id)

    with pytest.raises(lab.codepipeline.exceptions.InvalidJobStateException):
        lab.codepipeline.put_job_success_result(jobId=job["id"])
    with pytest.raises(lab.codepipeline.exceptions.InvalidJobStateException):
        lab.codepipeline.put_job_failure_result(
            jobId=job["id"], failureDetails={"type": "JobFailed", "message": "late"}
        )
    ack = lab.codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
    assert ack["status"] == "Succeeded"


def test_output_variables_with_a_continuation_change_nothing(lab: Lab) -> None:
    type_id = lab.action_type()
    name, execution_id = lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)

    with pytest.raises(lab.codepipeline.exceptions.ValidationException, match="continuation"):
        lab.codepipeline.put_job_success_result(
            jobId=job["id"],
            continuationToken="step-2",
            outputVariables={"A": "1"},
            executionDetails={"summary": "should not be recorded"},
        )

    # The job is still ours to finish, and nothing was recorded.
    assert "summary" not in lab.action_state(name, "Build")
    lab.codepipeline.put_job_success_result(jobId=job["id"])
    assert lab.wait(name, execution_id)["status"] == "Succeeded"


def test_oversize_output_variables_are_refused(lab: Lab) -> None:
    type_id = lab.action_type()
    name, execution_id = lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)
    variables = {f"V{i}": "x" * 1000 for i in range(123)}  # 123 * 1002+ bytes > 122880

    with pytest.raises(lab.codepipeline.exceptions.OutputVariablesSizeExceededException):
        lab.codepipeline.put_job_success_result(jobId=job["id"], outputVariables=variables)

    lab.codepipeline.put_job_success_result(jobId=job["id"], outputVariables={"V0": "ok"})
    assert lab.wait(name, execution_id)["status"] == "Succeeded"


def test_unknown_job_is_not_found(lab: Lab) -> None:
    cp = lab.codepipeline
    with pytest.raises(cp.exceptions.JobNotFoundException):
        cp.get_job_details(jobId=UNKNOWN_JOB)
    with pytest.raises(cp.exceptions.JobNotFoundException):
        cp.acknowledge_job(jobId=UNKNOWN_JOB, nonce="n")
    with pytest.raises(cp.exceptions.JobNotFoundException):
        cp.put_job_success_result(jobId=UNKNOWN_JOB)


def test_poll_for_jobs_is_for_custom_owners_only(lab: Lab) -> None:
    s3_source = {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"}
    with pytest.raises(lab.codepipeline.exceptions.ValidationException, match="Custom"):
        lab.codepipeline.poll_for_jobs(actionTypeId=s3_source, maxBatchSize=1)


def test_poll_for_an_unknown_type_is_not_found(lab: Lab) -> None:
    unknown = {"category": "Build", "owner": "Custom", "provider": f"No-{lab.uid}", "version": "1"}
    with pytest.raises(lab.codepipeline.exceptions.ActionTypeNotFoundException):
        lab.codepipeline.poll_for_jobs(actionTypeId=unknown, maxBatchSize=1)


def test_query_param_selects_jobs_by_the_queryable_property(lab: Lab) -> None:
    type_id = lab.action_type(properties=PROJECT)
    lab.pipeline(
        [
            lab.action(type_id, "Alpha", configuration={"Project": "alpha"}),
            lab.action(type_id, "Beta", configuration={"Project": "beta"}),
        ]
    )

    beta = lab.poll(type_id, query={"Project": "beta"})
    alpha = lab.poll(type_id, query={"Project": "alpha"})

    assert [j["data"]["pipelineContext"]["action"]["name"] for j in beta] == ["Beta"]
    assert [j["data"]["pipelineContext"]["action"]["name"] for j in alpha] == ["Alpha"]
    nothing = lab.codepipeline.poll_for_jobs(
        actionTypeId=type_id, maxBatchSize=5, queryParam={"Project": "gamma"}
    )
    assert nothing["jobs"] == []
    with pytest.raises(lab.codepipeline.exceptions.ValidationException, match="queryable"):
        lab.codepipeline.poll_for_jobs(
            actionTypeId=type_id, maxBatchSize=1, queryParam={"Other": "x"}
        )


def test_continuation_queues_a_new_job_with_the_token(lab: Lab) -> None:
    type_id = lab.action_type(settings={"executionUrlTemplate": "https://ci/{ExternalExecutionId}"})
    name, execution_id = lab.pipeline([lab.action(type_id)])
    first = lab.claim(type_id)
    assert "continuationToken" not in first["data"]

    lab.codepipeline.put_job_success_result(
        jobId=first["id"],
        continuationToken="step-2",
        executionDetails={
            "summary": "started",
            "externalExecutionId": "run-1",
            "percentComplete": 30,
        },
    )

    state = lab.action_state(name, "Build")
    assert state["status"] == "InProgress"
    assert (state["summary"], state["percentComplete"]) == ("started", 30)
    assert state["externalExecutionUrl"] == "https://ci/run-1"
    second = lab.claim(type_id)
    assert second["id"] != first["id"]
    assert second["data"]["continuationToken"] == "step-2"
    assert second["data"]["artifactCredentials"] != first["data"]["artifactCredentials"]
    action_id = first["data"]["pipelineContext"]["action"]["actionExecutionId"]
    assert second["data"]["pipelineContext"]["action"]["actionExecutionId"] == action_id
    assert job_state(lab, first["id"])["id"] == first["id"]

    lab.codepipeline.put_job_success_result(jobId=second["id"], outputVariables={"Done": "yes"})
    assert lab.wait(name, execution_id)["status"] == "Succeeded"
    assert lab.action_executions(name, execution_id)["Build"]["output"]["outputVariables"] == {
        "Done": "yes"
    }


def test_failure_result_fails_the_execution(lab: Lab) -> None:
    type_id = lab.action_type()
    name, execution_id = lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)

    lab.codepipeline.put_job_failure_result(
        jobId=job["id"],
        failureDetails={
            "type": "ConfigurationError",
            "message": "no Makefile",
            "externalExecutionId": "r9",
        },
    )

    execution = lab.wait(name, execution_id)
    assert execution["status"] == "Failed"
    assert "no Makefile" in execution["statusSummary"]
    state = lab.action_state(name, "Build")
    assert state["status"] == "Failed"
    assert state["errorDetails"] == {"code": "ConfigurationError", "message": "no Makefile"}
    assert state["externalExecutionId"] == "r9"
    stages = lab.codepipeline.get_pipeline_state(name=name)["stageStates"]
    assert stages[1]["latestExecution"] == {"pipelineExecutionId": execution_id, "status": "Failed"}
