"""Lambda invoke actions on the local CodePipeline: real functions in real subprocesses,
reporting over HTTP with plain boto3, as they would in AWS."""

from __future__ import annotations

import io
import logging
import os
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cpw_local_lab import Lab

from cpworker.local.server import LocalCodePipeline
from cpworker.testing import lambda_action

FUNCTIONS_FILE = Path(__file__).with_name("cpw_lambda_functions.py")
PROJECT = [{"name": "Project", "required": True, "key": True, "secret": False}]
Register = Callable[..., str]


@pytest.fixture
def function(function: Register) -> Register:
    """Register a function of cpw_lambda_functions.py, by name, under a unique FunctionName."""
    return lambda handler, **options: function(f"{FUNCTIONS_FILE}:{handler}", **options)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="cpworker.local")
    return caplog


def test_success_reports_output_variables_that_flow_downstream(
    lab: Lab, local: LocalCodePipeline, function: Register, logs: pytest.LogCaptureFixture
) -> None:
    # Given a Lambda action with a namespace, and a custom action that uses its variables
    fn = function("report_success")
    type_id = lab.action_type(properties=PROJECT)
    name, execution_id = lab.pipeline(
        [
            lambda_action(
                "Inspect", function_name=fn, user_parameters="hello", namespace="Inspect"
            ),
            lab.action(
                type_id,
                name="Deploy",
                configuration={"Project": "#{Inspect.Greeting}-#{Inspect.FunctionName}"},
                run_order=2,
            ),
        ]
    )

    # When the function has reported, the custom action's job carries the resolved values
    job = lab.claim(type_id)
    assert job["data"]["actionConfiguration"]["configuration"]["Project"] == f"hello-{fn}"
    lab.codepipeline.put_job_success_result(jobId=job["id"])
    assert lab.wait(name, execution_id)["status"] == "Succeeded"

    # Then the function got the exact event and a Lambda-like context and environment
    seen = lab.action_executions(name, execution_id)["Inspect"]["output"]["outputVariables"]
    assert seen["EventKeys"] == "accountId,data,id"
    assert seen["DataKeys"] == (
        "actionConfiguration,artifactCredentials,encryptionKey,inputArtifacts,outputArtifacts"
    )
    assert seen["FunctionName"] == fn
    assert seen["FunctionArn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{fn}"
    assert 800_000 < int(seen["RemainingMs"]) <= 900_000
    assert seen["Endpoint"] == local.endpoint_url
    assert seen["Region"] == "us-east-1"
    deploy = lab.action_executions(name, execution_id)["Deploy"]["input"]
    assert deploy["resolvedConfiguration"]["Project"] == f"hello-{fn}"
    assert lab.action_state(name, "Inspect")["summary"] == "reported by the function"

    # And its output is logged under its name and request id, but never its credentials
    assert f"[{fn} {seen['RequestId']}] job {seen['JobId']} started" in logs.text
    data = lab.codepipeline.get_job_details(jobId=seen["JobId"])["jobDetails"]["data"]
    assert "pipelineContext" not in data
    assert "actionTypeId" not in data
    credentials = data["artifactCredentials"]
    assert credentials["secretAccessKey"] not in logs.text
    assert credentials["sessionToken"] not in logs.text


def test_function_environment_is_isolated_from_the_server(
    lab: Lab, function: Register, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "real-profile")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEYOFTHEUSER")
    fn = function("report_success", environment={"CPW_OWN": "mine"})
    name, execution_id = lab.pipeline([lambda_action("Inspect", function_name=fn)])

    assert lab.wait(name, execution_id)["status"] == "Succeeded"

    seen = lab.action_executions(name, execution_id)["Inspect"]["output"]["outputVariables"]
    assert seen["Profile"] == "-"
    assert seen["AccessKey"] == "cpworker-local"
    assert seen["OwnVariable"] == "mine"


def test_continuation_invokes_the_function_again_with_the_token(
    lab: Lab, function: Register
) -> None:
    fn = function("continue_twice")
    name, execution_id = lab.pipeline([lambda_action("Steps", function_name=fn)])

    assert lab.wait(name, execution_id)["status"] == "Succeeded"

    seen = lab.action_executions(name, execution_id)["Steps"]["output"]["outputVariables"]
    assert seen["Tokens"] == "first,second"
    last = lab.codepipeline.get_job_details(jobId=seen["LastJob"])["jobDetails"]
    assert last["data"]["continuationToken"] == "first,second"


def test_failure_reported_by_the_function_fails_the_action(lab: Lab, function: Register) -> None:
    fn = function("report_failure")
    name, execution_id = lab.pipeline(
        [lambda_action("Check", function_name=fn, user_parameters="because")]
    )

    assert lab.wait(name, execution_id)["status"] == "Failed"

    state = lab.action_state(name, "Check")
    assert state["errorDetails"] == {"code": "JobFailed", "message": "broken on purpose: because"}
    assert state["externalExecutionId"] == "ext-7"


def test_silent_function_fails_the_action_after_the_reply_window(
    lab: Lab, function: Register, tune: Callable[..., None]
) -> None:
    tune(lambda_reply_window_s=1.5)
    fn = function("silent")
    name, execution_id = lab.pipeline([lambda_action("Quiet", function_name=fn)])

    assert lab.wait(name, execution_id)["status"] == "Failed"

    error = lab.action_state(name, "Quiet")["errorDetails"]
    assert error["code"] == "JobTimedOut"
    assert "the Lambda function did not report a result within 1.5 s" in error["message"]


def test_function_timeout_kills_the_process_but_only_the_reply_window_fails_the_action(
    lab: Lab, function: Register, tune: Callable[..., None], logs: pytest.LogCaptureFixture
) -> None:
    # The reply window counts from the job's creation, so it also covers the function's
    # init, which can take seconds on a loaded machine: keep it long until the kill.
    tune(lambda_reply_window_s=60.0)
    fn = function("sleep_past_timeout", timeout_s=1)
    name, execution_id = lab.pipeline([lambda_action("Sleepy", function_name=fn)])

    lab.wait_until(lambda: "Task timed out after 1.00 seconds" in logs.text, timeout_s=60)

    pid = int(logs.text.split("pid=")[1].split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert lab.action_state(name, "Sleepy")["status"] == "InProgress"
    tune(lambda_reply_window_s=1.0)  # now let the (already elapsed) window end it
    assert lab.wait(name, execution_id)["status"] == "Failed"
    assert "did not report" in lab.action_state(name, "Sleepy")["errorDetails"]["message"]


def test_unknown_function_name_fails_the_action_at_once(lab: Lab, function: Register) -> None:
    known = function("silent")
    name, execution_id = lab.pipeline(
        [lambda_action("Ghost", function_name=f"no-such-function-{lab.uid}")]
    )

    assert lab.wait(name, execution_id, timeout_s=5)["status"] == "Failed"

    error = lab.action_state(name, "Ghost")["errorDetails"]
    assert error["code"] == "ConfigurationError"
    assert f"no function named 'no-such-function-{lab.uid}'" in error["message"]
    assert known in error["message"]


def test_unresolvable_variable_fails_the_lambda_action(lab: Lab, function: Register) -> None:
    fn = function("report_success")
    name, execution_id = lab.pipeline(
        [lambda_action("Inspect", function_name=fn, user_parameters="#{Nowhere.Value}")]
    )

    assert lab.wait(name, execution_id, timeout_s=5)["status"] == "Failed"

    error = lab.action_state(name, "Inspect")["errorDetails"]
    assert error == {
        "code": "ConfigurationError",
        "message": "The variable #{Nowhere.Value} could not be resolved",
    }


def test_output_artifact_written_with_the_job_credentials_reaches_the_next_action(
    lab: Lab, local: LocalCodePipeline, function: Register
) -> None:
    fn = function("write_artifact")
    type_id = lab.action_type()
    name, execution_id = lab.pipeline(
        [
            lambda_action(
                "Write",
                function_name=fn,
                user_parameters="42",
                inputs=["SourceOutput"],
                outputs=["Made"],
            ),
            lab.action(type_id, name="Use", inputs=["Made"], run_order=2),
        ]
    )

    job = lab.claim(type_id)

    data = job["data"]
    s3 = lab.job_s3(data)
    location = data["inputArtifacts"][0]["location"]["s3Location"]
    obj = s3.get_object(Bucket=location["bucketName"], Key=location["objectKey"])
    assert obj["ServerSideEncryption"] == "aws:kms"
    assert obj["SSEKMSKeyId"] == data["encryptionKey"]["id"]
    with zipfile.ZipFile(io.BytesIO(obj["Body"].read())) as archive:
        assert archive.read("params.json") == b'{"UserParameters": "42"}'
    lab.codepipeline.put_job_success_result(jobId=job["id"])
    assert lab.wait(name, execution_id)["status"] == "Succeeded"


def test_cloudformation_is_served_on_the_same_endpoint(aws: Callable[..., Any]) -> None:
    cloudformation = aws("cloudformation")
    stack = f"cpw-{uuid.uuid4().hex[:8]}"
    template = '{"Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}}}'

    cloudformation.create_stack(StackName=stack, TemplateBody=template)

    described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    cloudformation.delete_stack(StackName=stack)
