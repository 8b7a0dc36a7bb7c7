"""``handlers/cfn_deploy`` and the User Guide's own CloudFormation sample as Lambda invoke
actions, against moto's CloudFormation behind the local CodePipeline's endpoint."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import Register, Run

from cpworker import ConfigurationError, Failure
from cpworker.testing import SOURCE_ARTIFACT, lambda_action
from cpworker.testing_jobs import JobMaker
from handlers import cfn_deploy

GUIDE = Path(__file__).parents[2] / "examples" / "guide"
GUIDE_SAMPLE = GUIDE / "cloudformation_sample.py"
GUIDE_TEMPLATE = (GUIDE / "template-package" / "template.json").read_text()
# The User Guide's text, in ../shared beside the project when there is one (there in CI).
SEED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "000_6f698508a0caad18.txt"
TEMPLATE_FILE = "template-package/template.json"
HANDLER = "handlers.cfn_deploy:handler"
# A parameterised template: moto answers "No updates are to be performed." only when an
# update repeats both the template and non-empty parameters, as CloudFormation does.
TAGGED_TEMPLATE = json.dumps(
    {
        "Parameters": {"Team": {"Type": "String"}},
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"QueueName": {"Value": {"Fn::GetAtt": ["Queue", "QueueName"]}}},
    }
)


@pytest.fixture
def deploy(
    function: Register, start_pipeline: Callable[..., Run], caplog: pytest.LogCaptureFixture
) -> Callable[..., Run]:
    """Run a pipeline whose Lambda action (``handler``) deploys ``template``; wait for it."""
    caplog.set_level(logging.INFO, logger="cpworker.local")

    def run(
        stack: str,
        template: str = GUIDE_TEMPLATE,
        handler: str = HANDLER,
        **parameters: Any,
    ) -> Run:
        user_parameters = {
            "stack": stack,
            "artifact": SOURCE_ARTIFACT,
            "file": TEMPLATE_FILE,
            **parameters,
        }
        started = start_pipeline(
            [
                lambda_action(
                    "Deploy",
                    function_name=function(handler),
                    user_parameters=json.dumps(user_parameters),
                )
            ],
            source={TEMPLATE_FILE: template, "other/big.bin": b"\0" * 4096},
        )
        started.wait()
        return started

    return run


def stack_name() -> str:
    return f"MyTestStack-{uuid.uuid4().hex[:8]}"


def test_creates_the_stack_across_continuations_then_publishes_its_outputs(
    deploy: Callable[..., Run], aws: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    stack = stack_name()
    run = deploy(stack)
    assert run.wait()["status"] == "Succeeded"
    described = aws("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    bucket = described["Outputs"][0]["OutputValue"]
    assert run.action_output("Deploy")["outputVariables"] == {"BucketName": bucket}
    assert (
        run.action_state("Deploy")["summary"] == f"stack {stack} create complete (CREATE_COMPLETE)"
    )
    assert run.action_state("Deploy")["externalExecutionId"] == described["StackId"]
    # Two invocations: the first started the create and continued, the second watched it.
    assert "stack operation started" in caplog.text
    assert "CREATE_COMPLETE" in caplog.text


def test_deploying_again_updates_and_an_unchanged_stack_succeeds_at_once(
    deploy: Callable[..., Run], aws: Callable[..., Any]
) -> None:
    stack = stack_name()
    assert deploy(stack, TAGGED_TEMPLATE, parameters={"Team": "a"}).wait()["status"] == "Succeeded"
    # A changed parameter is an update, watched to UPDATE_COMPLETE.
    updated = deploy(stack, TAGGED_TEMPLATE, parameters={"Team": "b"})
    assert updated.wait()["status"] == "Succeeded"
    assert (
        updated.action_state("Deploy")["summary"]
        == f"stack {stack} update complete (UPDATE_COMPLETE)"
    )
    # The same template and parameters: "No updates are to be performed." is a success.
    unchanged = deploy(stack, TAGGED_TEMPLATE, parameters={"Team": "b"})
    assert unchanged.wait()["status"] == "Succeeded"
    assert unchanged.action_state("Deploy")["summary"] == (
        f"stack {stack} is up to date: no updates to perform"
    )
    queue = unchanged.action_output("Deploy")["outputVariables"]["QueueName"]
    assert queue.startswith(stack)
    parameters = aws("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]["Parameters"]
    assert parameters == [{"ParameterKey": "Team", "ParameterValue": "b"}]


def test_a_template_cloudformation_refuses_fails_with_its_reason(
    deploy: Callable[..., Run], aws: Callable[..., Any]
) -> None:
    taken = f"taken-{uuid.uuid4().hex[:8]}"
    aws("s3").create_bucket(Bucket=taken)
    template = json.dumps(
        {"Resources": {"B": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": taken}}}}
    )
    stack = stack_name()
    run = deploy(stack, template)
    assert run.wait()["status"] == "Failed"
    details = run.action_state("Deploy")["errorDetails"]
    assert details["code"] == "JobFailed"
    assert details["message"].startswith(
        f"CloudFormation refused to create stack {stack}: BucketAlreadyExists: "
    )


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        ({"stack": "1-not-a-stack-name"}, "configuration property 'stack'"),
        ({"artifact": "MyTemplate"}, "no input artifact named 'MyTemplate'"),
        ({"file": "template-package/missing.json"}, "has no file 'template-package/missing.json'"),
        ({"capabilities": ["CAPABILITY_EVERYTHING"]}, "configuration property 'capabilities'"),
        ({"parameters": {"Team": ["a"]}}, "parameter 'team' must be a string"),
    ],
)
def test_a_bad_configuration_is_a_configuration_error(
    make_job: JobMaker, parameters: dict[str, Any], problem: str
) -> None:
    # Refused before any CloudFormation call: by the config model, or on reading the input
    config = {"stack": stack_name(), "artifact": SOURCE_ARTIFACT, "file": TEMPLATE_FILE}
    source = {SOURCE_ARTIFACT: {TEMPLATE_FILE: GUIDE_TEMPLATE}}
    with pytest.raises(ConfigurationError) as refused:
        cfn_deploy.cfn_deploy(make_job(cfn_deploy.app, config=config | parameters, inputs=source))
    assert problem in refused.value.message


def test_user_parameters_that_are_not_json_are_a_configuration_error(
    function: Register, start_pipeline: Callable[..., Run]
) -> None:
    action = lambda_action("Deploy", function_name=function(HANDLER), user_parameters="my-stack")
    run = start_pipeline([action])
    assert run.wait()["status"] == "Failed"
    details = run.action_state("Deploy")["errorDetails"]
    assert details["code"] == "ConfigurationError"
    assert details["message"].startswith("UserParameters is not valid JSON (")
    assert details["message"].endswith(
        "give a JSON object with stack, artifact, file, capabilities, parameters, roleArn"
    )


class _FailedStack:
    """Just enough of a CloudFormation client for a stack that rolled back."""

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        stack = {"StackId": f"arn:stack/{StackName}", "StackStatus": "ROLLBACK_COMPLETE"}
        return {"Stacks": [{**stack, "StackStatusReason": "The following resource(s) failed"}]}

    def describe_stack_events(self, StackName: str) -> dict[str, Any]:
        return {  # newest first, as CloudFormation lists them
            "StackEvents": [
                {"LogicalResourceId": "B", "ResourceStatus": "DELETE_COMPLETE"},
                {
                    "LogicalResourceId": StackName,
                    "ResourceStatus": "ROLLBACK_IN_PROGRESS",
                    "ResourceStatusReason": "The following resource(s) failed to create: [B].",
                },
                {
                    "LogicalResourceId": "B",
                    "ResourceStatus": "CREATE_FAILED",
                    "ResourceStatusReason": "my-bucket already exists",
                },
            ]
        }


def test_a_stack_that_rolled_back_fails_with_its_status_and_first_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto's CloudFormation never rolls back, so this one branch runs against a stub.
    monkeypatch.setattr(cfn_deploy, "_cloudformation", _FailedStack)
    job = SimpleNamespace(log=logging.getLogger("test"))
    result = cfn_deploy._watch(job, "app", "create")  # type: ignore[arg-type]
    assert result == Failure(
        "stack app create failed: ROLLBACK_COMPLETE: B: my-bucket already exists",
        external_execution_id="arn:stack/app",
    )


# -- the User Guide's own sample, unmodified --------------------------------------------


@pytest.mark.skipif(
    not SEED.is_file(), reason=f"the User Guide's text is not beside this clone ({SEED})"
)
def test_the_guide_sample_is_the_guides_code() -> None:
    """The sample file differs from the guide's text only in whitespace (and its header)."""
    lines = SEED.read_text().splitlines()
    start = lines.index("from __future__ import print_function")
    end = lines.index('return "Complete."', start)
    guide = [line for line in lines[start : end + 1] if line.strip() != "```"]
    ours = GUIDE_SAMPLE.read_text().split("from __future__ import print_function", 1)[1]
    squeeze = re.compile(r"\s+")
    assert squeeze.sub("", "".join(guide)) == squeeze.sub(
        "", "from __future__ import print_function" + ours
    )


def test_the_unmodified_guide_sample_fails_on_python_3(deploy: Callable[..., Run]) -> None:
    """Written for Python 2.7: ``zip.read`` gives bytes, which botocore refuses as TemplateBody."""
    run = deploy(stack_name(), handler=f"{GUIDE_SAMPLE}:lambda_handler")
    assert run.wait()["status"] == "Failed"
    message = run.action_state("Deploy")["errorDetails"]["message"]
    assert message.startswith("Function exception: Parameter validation failed:")
    assert "Invalid type for parameter TemplateBody" in message


def test_the_guide_sample_ported_by_one_decode_deploys_through_continuations(
    deploy: Callable[..., Run],
    aws: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """The one change Python 3 needs (bytes → str); the same pipeline then succeeds."""
    source = GUIDE_SAMPLE.read_text()
    old, new = "return zip.read(file_in_zip)", "return zip.read(file_in_zip).decode()"
    assert source.count(old) == 1
    ported = tmp_path / "cloudformation_sample_py3.py"
    ported.write_text(source.replace(old, new))
    stack = stack_name()

    run = deploy(stack, handler=f"{ported}:lambda_handler")

    assert run.wait()["status"] == "Succeeded"
    described = aws("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    assert "Stack create started" in caplog.text  # first invocation: continue_job_later
    assert "Stack update complete" in caplog.text  # the continuation: put_job_success
    # And again on the existing stack: an update, watched through a continuation too.
    assert deploy(stack, handler=f"{ported}:lambda_handler").wait()["status"] == "Succeeded"
    assert "Stack update started" in caplog.text
