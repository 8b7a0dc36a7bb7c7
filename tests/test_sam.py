"""``sam/template.yaml``: it lints, translates offline, and its handlers exist in the package."""

from __future__ import annotations

import copy
import importlib
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
from cfnlint.api import lint_file
from moto.events.models import EventPattern
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

from cpworker.sources.lambda_event_worker import FollowUp
from handlers.build import app as build_app

ROOT = Path(__file__).parents[1]
SAM = ROOT / "sam"
TEMPLATE = SAM / "template.yaml"
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
PARAMETERS = {"CloudFormationRoleArn": "arn:aws:iam::123456789012:role/cfn-deployer"}
BUILD_TYPE = build_app["build"].type_id
EVENT_WORKER = "BuildEventWorkerFunction"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse(TEMPLATE.read_text())
    return parsed


@pytest.fixture(scope="module")
def translated(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation that ``sam deploy`` makes after uploading the package to S3."""
    packaged = copy.deepcopy(template)
    packaged["Globals"]["Function"]["CodeUri"] = "s3://deploy-bucket/cpworker-package.zip"
    translator = Translator(
        # The managed-policy map SAM would fetch from IAM: only the policy it attaches itself.
        {"AWSLambdaBasicExecutionRole": BASIC_EXECUTION},
        Parser(),
        boto_session=boto3.session.Session(region_name="us-east-1"),  # the Region: no AWS call
    )
    result: dict[str, Any] = translator.translate(packaged, parameter_values=dict(PARAMETERS))
    return result


@pytest.fixture(scope="module")
def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def test_the_template_passes_cfn_lint() -> None:
    problems = [str(match) for match in lint_file(TEMPLATE)]
    assert problems == []


def test_the_template_translates_offline(
    template: dict[str, Any], translated: dict[str, Any]
) -> None:
    resources = translated["Resources"]
    kinds = {name: resource["Type"] for name, resource in resources.items()}
    for function in (
        "UrlCheckFunction",
        "CfnDeployFunction",
        "VariablesFunction",
        "BuildEventWorkerFunction",
    ):
        assert kinds[function] == "AWS::Lambda::Function"
        assert kinds[f"{function}Role"] == "AWS::IAM::Role"
        role = resources[f"{function}Role"]["Properties"]
        assert {"Ref": "ReportJobResultsPolicy"} in role["ManagedPolicyArns"]
        assert (
            resources[function]["Properties"]["Runtime"]
            == template["Globals"]["Function"]["Runtime"]
        )


def test_only_cfn_deploy_may_touch_stacks_and_pass_the_one_role(
    template: dict[str, Any], translated: dict[str, Any]
) -> None:
    statements = {
        name.removesuffix("Role"): [
            statement
            for policy in resource["Properties"].get("Policies", [])
            for statement in policy["PolicyDocument"]["Statement"]
        ]
        for name, resource in translated["Resources"].items()
        if resource["Type"] == "AWS::IAM::Role"
    }
    assert statements["UrlCheckFunction"] == statements["VariablesFunction"] == []
    deploy = {statement["Sid"]: statement for statement in statements["CfnDeployFunction"]}
    assert deploy["PassTheServiceRole"]["Resource"] == {"Ref": "CloudFormationRoleArn"}
    assert "*" not in str(deploy["DeployStacks"]["Action"])
    report = template["Resources"]["ReportJobResultsPolicy"]["Properties"]["PolicyDocument"]
    assert report["Statement"] == [
        {
            "Sid": "ReportJobResults",
            "Effect": "Allow",
            "Action": ["codepipeline:PutJobSuccessResult", "codepipeline:PutJobFailureResult"],
            "Resource": "*",
        }
    ]


def test_every_handler_is_an_importable_callable_in_the_package(
    functions: dict[str, dict[str, Any]],
) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packaged = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert len(functions) == 4
    for name, properties in functions.items():
        module_name, _, attribute = properties["Handler"].rpartition(".")
        top_level = module_name.split(".")[0]
        assert any(re.fullmatch(p.replace("*", ".*"), top_level) for p in packaged), name
        handler = getattr(importlib.import_module(module_name), attribute)
        assert callable(handler), name


def test_the_package_script_builds_for_the_templates_runtime(template: dict[str, Any]) -> None:
    runtime = template["Globals"]["Function"]["Runtime"]
    script = (SAM / "package.sh").read_text()
    assert f"LAMBDA_PYTHON={runtime.removeprefix('python')} " in script
    assert template["Globals"]["Function"]["Architectures"] == ["x86_64"]
    assert "LAMBDA_PLATFORM=manylinux2014_x86_64 " in script
    assert template["Globals"]["Function"]["CodeUri"] == ".package/"


def test_samconfig_is_valid_toml() -> None:
    config = tomllib.loads((SAM / "samconfig.toml").read_text())
    assert config["default"]["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"


def _resolved(node: Any) -> Any:
    """``node`` with ``Fn::Sub``'s pseudo parameters filled in (the only intrinsic here)."""
    if isinstance(node, dict) and "Fn::Sub" in node:
        pseudo = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "1" * 12}
        return re.sub(r"\$\{([^}]+)\}", lambda m: pseudo[m[1]], node["Fn::Sub"])
    return node


def test_the_event_worker_may_poll_its_own_action_type_only(translated: dict[str, Any]) -> None:
    role = translated["Resources"][f"{EVENT_WORKER}Role"]["Properties"]
    assert {"Ref": "ReportJobResultsPolicy"} in role["ManagedPolicyArns"]
    statements = [
        statement
        for policy in role["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]
    granted = {
        action: _resolved(statement["Resource"])
        for statement in statements
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    type_id = BUILD_TYPE
    assert granted == {
        "codepipeline:PollForJobs": "arn:aws:codepipeline:eu-west-1:111111111111:actiontype:"
        f"{type_id.owner}/{type_id.category}/{type_id.provider}/{type_id.version}",
        # AcknowledgeJob supports only '*'; GetJobDetails needs no resource
        "codepipeline:AcknowledgeJob": "*",
        "codepipeline:GetJobDetails": "*",
        "events:PutEvents": "arn:aws:events:eu-west-1:111111111111:event-bus/default",
    }
    (announce,) = [s for s in statements if s["Action"] == "events:PutEvents"]
    assert announce["Condition"] == {
        "StringEquals": {
            "events:source": "cpworker",
            "events:detail-type": "cpworker Job Continued",
        }
    }


def _action_event(state: str = "STARTED", provider: str | None = None) -> dict[str, Any]:
    """CodePipeline's action state change event (the User Guide's members a rule sees)."""
    kind = BUILD_TYPE.model_dump() | ({"provider": provider} if provider else {})
    detail = {"pipeline": "release", "stage": "Build", "action": "Build", "state": state}
    return {
        "detail-type": "CodePipeline Action Execution State Change",
        "source": "aws.codepipeline",
        "account": "111122223333",
        "region": "eu-west-1",
        "detail": detail | {"type": kind},
    }


def _dead_letter_queue(resources: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    queue: dict[str, Any] = resources[target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]]
    return queue


def test_the_event_worker_rule_matches_its_types_started_and_continued_events(
    translated: dict[str, Any],
) -> None:
    resources = translated["Resources"]
    rule = resources[f"{EVENT_WORKER}ActionStarted"]["Properties"]
    pattern = EventPattern.load(json.dumps(rule["EventPattern"]))
    matches = cast(Callable[[dict[str, Any]], bool], pattern.matches_event)
    continued = FollowUp(BUILD_TYPE, "release", "Build", "Build", "c5a3b2d4").detail()
    assert matches(_action_event())
    assert matches(
        {**_action_event(), "source": "cpworker", "detail-type": "cpworker Job Continued",
         "detail": continued}
    )  # fmt: skip
    assert not matches(_action_event(state="SUCCEEDED"))
    assert not matches(_action_event(provider="SomeoneElses"))
    assert not matches({**_action_event(), "source": "aws.codebuild"})
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [EVENT_WORKER, "Arn"]}
    assert _dead_letter_queue(resources, target)["Type"] == "AWS::SQS::Queue"


def test_a_schedule_polls_in_case_an_event_was_lost(translated: dict[str, Any]) -> None:
    resources = translated["Resources"]
    schedule = resources[f"{EVENT_WORKER}SafetyPoll"]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(5 minutes)"
    (target,) = schedule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [EVENT_WORKER, "Arn"]}
    assert "Input" not in target, "the worker gets the scheduled event itself"
    assert _dead_letter_queue(resources, target)["Type"] == "AWS::SQS::Queue"
