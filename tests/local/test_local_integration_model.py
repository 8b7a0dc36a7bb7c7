"""Action types with a Lambda executor on the local CodePipeline: declared with a
definition file (or the engine's API), served by GetActionType / ListActionTypes /
UpdateActionType, and run by invoking the executor's function with the integration-model
event and reading the result it returns."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from cpw_local_lab import Lab, local_process

from cpworker.local.server import LocalCodePipeline
from cpworker.testing import custom_action, start_pipeline, zip_bytes

HERE = Path(__file__).parent
FUNCTIONS_FILE = HERE / "cpw_integration_functions.py"
Register = Callable[..., str]
REPLY = [{"name": "Reply", "optional": False, "key": False, "noEcho": False}]


def arn(function_name: str) -> str:
    return f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"


def declaration(
    function_name: str,
    *,
    provider: str | None = None,
    properties: list[dict[str, Any]] | None = None,
    job_timeout: int | None = None,
    outputs: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """An action type with a Lambda executor, as a definition file's ``actionType``."""
    executor: dict[str, Any] = {
        "configuration": {"lambdaExecutorConfiguration": {"lambdaFunctionArn": arn(function_name)}},
        "type": "Lambda",
    }
    if job_timeout is not None:
        executor["jobTimeout"] = job_timeout
    return {
        "executor": executor,
        "id": {
            "category": "Test",
            "owner": "ThirdParty",
            "provider": provider or f"Int-{uuid.uuid4().hex[:8]}",
            "version": "1",
        },
        "inputArtifactDetails": {"minimumCount": 0, "maximumCount": 1},
        "outputArtifactDetails": {"minimumCount": outputs[0], "maximumCount": outputs[1]},
        "properties": properties if properties is not None else REPLY,
    }


def partner_action(declared: dict[str, Any], configuration: dict[str, str]) -> dict[str, Any]:
    """A pipeline action of a declared type."""
    action = custom_action("Act", provider="-", configuration=configuration)
    action["actionTypeId"] = dict(declared["id"])
    return action


@pytest.fixture
def function(function: Register) -> Register:
    """Register a function of cpw_integration_functions.py under a unique FunctionName."""
    return lambda handler, **options: function(f"{FUNCTIONS_FILE}:{handler}", **options)


@pytest.fixture
def declare(local: LocalCodePipeline) -> Callable[..., dict[str, Any]]:
    """Declare an action type run by a function of cpw_integration_functions.py."""

    def make(function_name: str, **options: Any) -> dict[str, Any]:
        declared = declaration(function_name, **options)
        local.engine.register_action_type(declared)
        return declared

    return make


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="cpworker.local")
    return caplog


def _run_reply(lab: Lab, declared: dict[str, Any], reply: Any) -> tuple[str, str]:
    return lab.pipeline([partner_action(declared, {"Reply": json.dumps(reply)})])


def test_a_definition_round_trips_through_get_list_and_update(
    local: LocalCodePipeline, aws: Callable[..., Any]
) -> None:
    # Given a type declared with the User Guide's definition file fields
    codepipeline = aws("codepipeline")
    declared = declaration(
        "Integrator",
        job_timeout=300,
        properties=[
            {"name": "Host", "optional": False, "key": True, "noEcho": False, "queryable": False},
            {"name": "Password", "optional": True, "key": False, "noEcho": True},
        ],
    )
    declared |= {
        "description": "An integration",
        "permissions": {"allowedAccounts": ["123456789012"]},
        "urls": {
            "configurationUrl": "https://example.com/setup",
            "executionUrlTemplate": "https://example.com/{Config:Host}/{ExternalExecutionId}",
        },
    }
    local.engine.register_action_type(declared)
    type_id = declared["id"]

    # Then GetActionType answers it as declared, and ListActionTypes as an ActionType
    assert codepipeline.get_action_type(**type_id)["actionType"] == declared
    listed = codepipeline.list_action_types(actionOwnerFilter="ThirdParty")["actionTypes"]
    (action_type,) = [t for t in listed if t["id"] == type_id]
    assert action_type["actionConfigurationProperties"] == [
        {"name": "Host", "required": True, "key": True, "secret": False, "queryable": False},
        {"name": "Password", "required": False, "key": False, "secret": True, "queryable": False},
    ]
    assert action_type["settings"] == {
        "thirdPartyConfigurationUrl": "https://example.com/setup",
        "executionUrlTemplate": "https://example.com/{Config:Host}/{ExternalExecutionId}",
    }

    # When UpdateActionType adds a property and the longest job timeout
    updated = json.loads(json.dumps(declared))
    updated["executor"]["jobTimeout"] = 900
    updated["properties"].append(
        {"name": "Region", "optional": True, "key": False, "noEcho": False}
    )
    codepipeline.update_action_type(actionType=updated)
    assert codepipeline.get_action_type(**type_id)["actionType"] == updated

    # And invalid updates are refused, naming the problem, and change nothing
    too_long = json.loads(json.dumps(updated))
    too_long["executor"]["jobTimeout"] = 901
    with pytest.raises(codepipeline.exceptions.ValidationException, match="at most 900"):
        codepipeline.update_action_type(actionType=too_long)
    both = json.loads(json.dumps(updated))
    both["executor"]["configuration"]["jobWorkerExecutorConfiguration"] = {
        "pollingAccounts": ["123456789012"]
    }
    with pytest.raises(
        codepipeline.exceptions.ValidationException,
        match=r"needs executor\.configuration\.lambdaExecutorConfiguration and nothing else",
    ):
        codepipeline.update_action_type(actionType=both)
    assert codepipeline.get_action_type(**type_id)["actionType"] == updated
    unknown = json.loads(json.dumps(updated))
    unknown["id"]["provider"] = "NeverDeclared"
    with pytest.raises(codepipeline.exceptions.ActionTypeNotFoundException):
        codepipeline.update_action_type(actionType=unknown)
    with pytest.raises(codepipeline.exceptions.ActionTypeNotFoundException):
        codepipeline.get_action_type(category="Source", owner="AWS", provider="S3", version="1")


def test_the_function_gets_the_integration_event_and_returns_the_result(
    lab: Lab,
    local: LocalCodePipeline,
    function: Register,
    declare: Callable[..., dict[str, Any]],
    logs: pytest.LogCaptureFixture,
) -> None:
    # Given a type whose executor is a function that describes its event
    fn = function("describe_event")
    secret = {"name": "Password", "optional": False, "key": False, "noEcho": True}
    host = {"name": "Host", "optional": False, "key": True, "noEcho": False}
    declared = declare(fn, properties=[host, secret])

    # When a pipeline runs an action of that type
    configuration = {"Host": "db.internal", "Password": "hunter2-but-longer"}
    name, execution_id = lab.pipeline([partner_action(declared, configuration)])
    assert lab.wait(name, execution_id, timeout_s=60)["status"] == "Succeeded"

    # Then the function got the integration-model event: a flat configuration, the
    # action execution id and credentials, no action type nor pipeline context
    detail = lab.action_executions(name, execution_id)["Act"]
    seen = detail["output"]["outputVariables"]
    assert seen["EventKeys"] == "accountId,data,jobId"
    assert seen["DataKeys"] == (
        "actionConfiguration,actionCredentials,actionExecutionId,encryptionKey,"
        "inputArtifacts,outputArtifacts"
    )
    assert seen["ConfigurationKeys"] == "Host,Password"
    assert seen["ActionExecutionId"] == detail["actionExecutionId"]
    assert seen["AccountId"] == "123456789012"
    assert seen["CredentialKeys"] == "accessKeyId,secretAccessKey,sessionToken"
    assert seen["FunctionName"] == fn

    # And its returned status is the action's; the noEcho value is masked
    state = lab.action_state(name, "Act")
    assert state["summary"] == "described"
    job_id = state["externalExecutionId"]
    assert detail["input"]["resolvedConfiguration"]["Password"] == "****"
    assert f"job {job_id} started" in logs.text
    assert "hunter2-but-longer" not in logs.text


def test_the_result_is_read_case_insensitively(
    lab: Lab, function: Register, declare: Callable[..., dict[str, Any]]
) -> None:
    declared = declare(function("reply"))
    reply = {
        "RESULT": "SUCCESS",
        "FailureType": None,
        "Status": {"summary": "all fine", "EXTERNALEXECUTIONID": "x-1"},
        "outputvariables": {"Answer": "42"},
    }
    name, execution_id = _run_reply(lab, declared, reply)

    assert lab.wait(name, execution_id, timeout_s=60)["status"] == "Succeeded"

    output = lab.action_executions(name, execution_id)["Act"]["output"]
    assert output["outputVariables"] == {"Answer": "42"}
    assert output["executionResult"] == {
        "externalExecutionId": "x-1",
        "externalExecutionSummary": "all fine",
    }


def test_a_fail_with_a_failure_type_fails_the_action_with_it(
    lab: Lab, function: Register, declare: Callable[..., dict[str, Any]]
) -> None:
    declared = declare(function("reply"))
    reply = {
        "result": "fail",
        "failureType": "PermissionsError",  # the User Guide's spelling
        "status": {"Summary": "no access to the stack", "ExternalExecutionId": "e-1"},
    }
    name, execution_id = _run_reply(lab, declared, reply)

    assert lab.wait(name, execution_id, timeout_s=60)["status"] == "Failed"

    state = lab.action_state(name, "Act")
    assert state["errorDetails"] == {"code": "PermissionError", "message": "no access to the stack"}
    assert state["externalExecutionId"] == "e-1"


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (
            {"result": "Fail", "status": {"Summary": "broken"}},
            "failureType is required when result is Fail",
        ),
        ({"result": "Continue"}, "continuation is required when result is Continue"),
        (
            {"result": "Continue", "continuation": {"State": "s"}, "outputVariables": {"A": "1"}},
            "outputVariables must be null when result is Continue",
        ),
        (
            {"result": "Success", "failureType": "JobFailed"},
            "failureType must be null when result is Success",
        ),
        (
            {"result": "Done"},
            "result is 'Done'; it must be Success, Continue or Fail (any case)",
        ),
        (
            {"result": "Fail", "failureType": "Oops"},
            "failureType 'Oops' is not one of ConfigurationError, JobFailed, PermissionsError, "
            "RevisionOutOfSync, RevisionUnavailable, SystemUnavailable",
        ),
        ([1, 2], "the function's return value is a list, not a JSON object"),
    ],
    ids=[
        "fail-without-type",
        "continue-without-continuation",
        "variables-with-continue",
        "type-with-success",
        "unknown-result",
        "unknown-type",
        "not-an-object",
    ],
)
def test_an_invalid_result_fails_the_action_naming_the_problem(
    lab: Lab,
    function: Register,
    declare: Callable[..., dict[str, Any]],
    reply: Any,
    problem: str,
) -> None:
    fn = function("reply")
    name, execution_id = _run_reply(lab, declare(fn), reply)

    assert lab.wait(name, execution_id, timeout_s=60)["status"] == "Failed"

    assert lab.action_state(name, "Act")["errorDetails"] == {
        "code": "JobFailed",
        "message": f"the Lambda function {fn} returned an invalid result: {problem}",
    }


def test_a_continue_invokes_the_function_again_with_the_state(
    lab: Lab,
    function: Register,
    declare: Callable[..., dict[str, Any]],
    tune: Callable[..., None],
) -> None:
    # Given continuations that come one second apart
    tune(continuation_delay_s=1.0)
    declared = declare(function("three_steps"), properties=[])
    started = time.monotonic()

    # When the function continues twice, then succeeds
    name, execution_id = lab.pipeline([partner_action(declared, {})])
    assert lab.wait(name, execution_id, timeout_s=60)["status"] == "Succeeded"

    # Then it ran three jobs, each given the state the previous one returned
    jobs = lab.action_executions(name, execution_id)["Act"]["output"]["outputVariables"]["Jobs"]
    assert len(set(jobs.split(","))) == 3
    assert time.monotonic() - started >= 2.0, "each continuation waits for the delay"


def test_a_function_that_raises_or_outlives_the_job_timeout_fails_the_action(
    lab: Lab,
    function: Register,
    declare: Callable[..., dict[str, Any]],
    tune: Callable[..., None],
    logs: pytest.LogCaptureFixture,
) -> None:
    tune(integration_job_timeout_s=2.0)
    crashing, sleeping = function("crash"), function("sleep")
    crashed = lab.pipeline([partner_action(declare(crashing, properties=[]), {})], suffix="c")
    slept = lab.pipeline([partner_action(declare(sleeping, properties=[]), {})], suffix="s")

    assert lab.wait(*crashed, timeout_s=60)["status"] == "Failed"
    assert lab.wait(*slept, timeout_s=60)["status"] == "Failed"

    assert lab.action_state(crashed[0], "Act")["errorDetails"] == {
        "code": "JobFailed",
        "message": f"the Lambda function {crashing} failed: it raised an error or returned "
        "a value JSON cannot carry (its log says which)",
    }
    assert "[ERROR] RuntimeError: the integration crashed" in logs.text
    error = lab.action_state(slept[0], "Act")["errorDetails"]
    assert error["code"] == "JobTimedOut"
    assert error["message"].startswith(
        f"the Lambda function {sleeping} returned no result within the job timeout of 2 s"
    )


def test_an_unmapped_function_fails_the_action_at_once(
    lab: Lab, declare: Callable[..., dict[str, Any]]
) -> None:
    name, execution_id = lab.pipeline([partner_action(declare("nobody", properties=[]), {})])

    assert lab.wait(name, execution_id, timeout_s=60)["status"] == "Failed"

    error = lab.action_state(name, "Act")["errorDetails"]
    assert error["code"] == "ConfigurationError"
    assert error["message"].startswith("cpworker local has no function named 'nobody'")


def test_cpworker_local_declares_action_types_from_definition_files(tmp_path: Path) -> None:
    # Given a definition file in the User Guide's format, and its function mapped by name
    declared = declaration("Describer", provider="CliIntegration", properties=[])
    definition = tmp_path / "action-type.json"
    definition.write_text(json.dumps({"actionType": declared}))
    options = ("--action-type", str(definition))
    options += ("--function", "Describer=cpw_integration_functions:describe_event")
    with local_process(*options, cwd=HERE) as (process, ready, port):
        assert ready.startswith("cpworker local ready")
        options = {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}
        codepipeline = boto3.client("codepipeline", **options)

        # Then the type is served, and a pipeline action of it runs the function
        assert codepipeline.get_action_type(**declared["id"])["actionType"] == declared
        run = start_pipeline(
            codepipeline,
            boto3.client("s3", **options),
            "cli-integration",
            source=zip_bytes({"a.txt": "a"}),
            actions=[partner_action(declared, {})],
        )
        assert run.wait(timeout_s=30)["status"] == "Succeeded"
        assert run.action_state()["summary"] == "described"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{", "not JSON"),
        ({"executor": {}}, 'an action-type definition file is {"actionType": {...}}'),
        (
            {"actionType": declaration("F", job_timeout=1200)},
            "executor.jobTimeout is 1200 s; the Lambda integration model allows at most 900",
        ),
        (
            {"actionType": declaration("F") | {"id": {"category": "Test", "owner": "Custom"}}},
            "Value at 'actionType.id.owner' failed to satisfy constraint",
        ),
    ],
    ids=["not-json", "no-action-type", "job-timeout", "bad-owner"],
)
def test_cpworker_local_refuses_a_bad_definition_file(
    tmp_path: Path, document: Any, message: str
) -> None:
    definition = tmp_path / "bad.json"
    definition.write_text(document if isinstance(document, str) else json.dumps(document))
    done = subprocess.run(
        [sys.executable, "-m", "cpworker.cli", "local", "--action-type", str(definition)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"cpworker local: --action-type {definition}: " in done.stderr
    assert message in done.stderr
