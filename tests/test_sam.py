"""``sam/template.yaml``: it lints, translates offline, and its handlers exist in the package."""

from __future__ import annotations

import copy
import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import lint_file
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).parents[1]
SAM = ROOT / "sam"
TEMPLATE = SAM / "template.yaml"
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
PARAMETERS = {"CloudFormationRoleArn": "arn:aws:iam::123456789012:role/cfn-deployer"}


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
    for function in ("UrlCheckFunction", "CfnDeployFunction", "VariablesFunction"):
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
    assert len(functions) == 3
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
