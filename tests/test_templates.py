"""``templates/``: each lints, the worker role grants least privilege, one unit runs everywhere."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint_file
from samtranslator.yaml_helper import yaml_parse

from cpworker.cli import parser
from cpworker.systemd import unit_text
from cpworker.worker import WorkerSettings

ROOT = Path(__file__).parents[1]
TEMPLATES = ROOT / "templates"
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": "111122223333"}
NO_VALUE = object()
# CodePipeline permissions reference: "Supports only a wildcard (*)" for AcknowledgeJob and
# PutJob*Result, "No resource required" for GetJobDetails. Only PollForJobs takes an ARN.
JOB_OPERATIONS_WITHOUT_RESOURCE_TYPE = {
    "codepipeline:AcknowledgeJob",
    "codepipeline:GetJobDetails",
    "codepipeline:PutJobSuccessResult",
    "codepipeline:PutJobFailureResult",
}


def load(name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = yaml_parse((TEMPLATES / name).read_text())
    return parsed


def resolve(node: Any, values: dict[str, str], conditions: dict[str, bool]) -> Any:
    """The value CloudFormation would give ``node``, for the few intrinsics the tests meet."""
    if isinstance(node, list):
        items = [resolve(item, values, conditions) for item in node]
        return [item for item in items if item is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if "Ref" in node:
        return NO_VALUE if node["Ref"] == "AWS::NoValue" else values[node["Ref"]]
    if "Fn::If" in node:
        name, then, otherwise = node["Fn::If"]
        return resolve(then if conditions[name] else otherwise, values, conditions)
    if "Fn::Sub" in node:
        text, names = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
        scope = {**values, **resolve(names, values, conditions)}
        return re.sub(r"\$\{([^!}][^}]*)\}", lambda m: scope[m[1]], text)
    if "Fn::GetAtt" in node:
        return "<{}.{}>".format(*node["Fn::GetAtt"])
    if "Fn::Equals" in node:
        left, right = resolve(node["Fn::Equals"], values, conditions)
        return left == right
    if "Fn::Not" in node:
        return not resolve(node["Fn::Not"][0], values, conditions)
    return {key: resolve(value, values, conditions) for key, value in node.items()}


def worker_statements(**parameters: str) -> dict[str, dict[str, Any]]:
    """The worker role's policy statements by Sid, for these parameter values."""
    template = load("worker-role.yaml")
    values = (
        {name: spec.get("Default", "") for name, spec in template["Parameters"].items()}
        | parameters
        | PSEUDO
    )
    conditions: dict[str, bool] = {}
    for name, condition in template["Conditions"].items():
        conditions[name] = resolve(condition, values, conditions)
    role = resolve(template["Resources"]["WorkerRole"]["Properties"], values, conditions)
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    return {statement["Sid"]: statement for statement in statements}


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def serve_flags(command: list[str]) -> list[str]:
    """The fixed ``cpworker serve`` flags of a command line: those after ``serve`` and options."""
    flags = command[command.index("serve") + 1 :]
    return [flag for flag in flags if not flag.startswith("$")]


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key, []).append(value)
    return settings


def test_every_template_passes_cfn_lint() -> None:
    names = sorted(path.name for path in TEMPLATES.glob("*.yaml"))
    assert names == [
        "build-action.yaml",
        "pipeline-example.yaml",
        "worker-fleet.yaml",
        "worker-role.yaml",
    ]
    problems = {name: [str(m) for m in lint_file(TEMPLATES / name)] for name in names}
    assert problems == {name: [] for name in names}


@pytest.mark.parametrize(
    "action_types",
    [["Build/CpworkerBuild/1"], ["Build/CpworkerBuild/1", "Test/AcmeScan/2", "Deploy/X/3"]],
)
def test_the_worker_polls_only_its_own_action_types(action_types: list[str]) -> None:
    parameters = {f"ActionType{n}": name for n, name in enumerate(action_types, start=1)}
    poll = worker_statements(**parameters)["PollOwnActionTypes"]
    assert as_list(poll["Action"]) == ["codepipeline:PollForJobs"]
    assert poll["Resource"] == [
        f"arn:aws:codepipeline:eu-west-1:111122223333:actiontype:Custom/{name}"
        for name in action_types
    ]


def test_the_worker_role_has_nothing_on_s3_or_kms_and_no_other_wildcard() -> None:
    statements = worker_statements(ActionType1="Build/CpworkerBuild/1")
    actions = [a for s in statements.values() for a in as_list(s["Action"])]
    assert all(s["Effect"] == "Allow" for s in statements.values())
    assert not [a for a in actions if a.split(":")[0] in {"s3", "kms"} or "*" in a]
    # The job operations IAM has no resource type for must name "*" (an ARN denies them),
    # and nothing else does but PutMetricData, confined to the namespace.
    wildcard = {
        a for s in statements.values() if s["Resource"] == "*" for a in as_list(s["Action"])
    }
    assert wildcard == JOB_OPERATIONS_WITHOUT_RESOURCE_TYPE | {"cloudwatch:PutMetricData"}
    claim = statements["ClaimAndReportPolledJobs"]
    assert claim["Condition"] == {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}
    metrics = statements["PutWorkerMetrics"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "cpworker"}}
    assert statements["WriteWorkerLogs"]["Resource"] == "<WorkerLogGroup.Arn>"


def test_cpworker_systemd_unit_prints_the_shipped_unit() -> None:
    cli = Path(sys.executable).with_name("cpworker")
    done = subprocess.run(
        [str(cli), "systemd-unit"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == unit_text()
    assert done.stdout == (TEMPLATES / "cpworker.service").read_text()
    assert "ExecStart=/opt/cpworker/bin/cpworker serve $CPWORKER_APP" in done.stdout


def test_the_fleet_user_data_installs_the_shipped_unit_verbatim() -> None:
    data = load("worker-fleet.yaml")["Resources"]["WorkerLaunchTemplate"]["Properties"]
    script, _names = data["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    embedded = script.split("cat > /etc/systemd/system/cpworker.service <<'UNIT'\n")[1]
    assert embedded.split("\nUNIT\n")[0] + "\n" == unit_text()
    assert "${" not in unit_text()  # Fn::Sub would rewrite it


def test_the_unit_drains_before_systemd_kills_and_keeps_the_journal() -> None:
    settings = unit_settings()
    command = shlex.split(settings["ExecStart"][0])
    args = parser().parse_args(["serve", "handlers.build:app", *serve_flags(command)])
    grace = args.drain_timeout + WorkerSettings().report_timeout_s
    assert int(settings["TimeoutStopSec"][0]) >= grace + 5
    assert settings["KillSignal"] == ["SIGTERM"]
    assert settings["KillMode"] == ["mixed"]  # SIGTERM to the worker alone
    assert settings["Restart"] == ["on-failure"]  # a drained worker exits 0 and stays down
    assert settings["StateDirectory"] == ["cpworker"]
    assert args.state_dir == Path("/var/lib/cpworker")
    hook = load("worker-fleet.yaml")["Resources"]["WorkerGroup"]["Properties"]
    [terminating] = hook["LifecycleHookSpecificationList"]
    assert terminating["HeartbeatTimeout"] > int(settings["TimeoutStopSec"][0])


def test_the_container_image_runs_serve_as_the_unit_does() -> None:
    lines = (TEMPLATES / "Dockerfile").read_text().splitlines()
    instructions = {
        line.split()[0]: line.split(maxsplit=1)[1] for line in lines if line[:1].isupper()
    }
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    unit_command = shlex.split(unit_settings()["ExecStart"][0])
    assert serve_flags(entrypoint) == serve_flags(unit_command)
    assert entrypoint[:2] == ["tini", "--"]  # no -g: SIGTERM to the worker alone
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    assert instructions["USER"] not in {"root", "0"}
    assert json.loads(instructions["VOLUME"]) == ["/var/lib/cpworker"]
    stop_timeout = int(unit_settings()["TimeoutStopSec"][0])
    text = "\n".join(lines)
    assert f"stopTimeout: {stop_timeout}" in text
    assert f"terminationGracePeriodSeconds: {stop_timeout}" in text


def test_the_example_pipeline_uses_the_custom_action_and_a_customer_managed_key() -> None:
    resources = load("pipeline-example.yaml")["Resources"]
    pipeline = resources["Pipeline"]["Properties"]
    store = pipeline["ArtifactStore"]
    assert store["EncryptionKey"] == {"Type": "KMS", "Id": {"Fn::GetAtt": ["ArtifactKey", "Arn"]}}
    assert resources["ArtifactKey"]["Type"] == "AWS::KMS::Key"
    actions = {a["Name"]: a for stage in pipeline["Stages"] for a in stage["Actions"]}
    build_type = load("build-action.yaml")["Resources"]["BuildActionType"]["Properties"]
    build = actions["Build"]
    assert build["ActionTypeId"]["Owner"] == "Custom"
    assert build["ActionTypeId"]["Category"] == build_type["Category"]
    assert build["ActionTypeId"]["Provider"] == build_type["Provider"]
    declared = {p["Name"]: p["Required"] for p in build_type["ConfigurationProperties"]}
    assert set(build["Configuration"]) <= set(declared)
    assert {name for name, required in declared.items() if required} <= set(build["Configuration"])
    invoke = actions["Variables"]["ActionTypeId"]
    assert (invoke["Owner"], invoke["Provider"]) == ("AWS", "Lambda")
