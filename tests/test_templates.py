"""``templates/``: each lints, the worker role grants least privilege, one unit runs everywhere."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from cfnlint.api import lint_file
from samtranslator.yaml_helper import yaml_parse

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
        name = node["Ref"]
        return NO_VALUE if name == "AWS::NoValue" else values.get(name, f"<{name}>")  # a resource
    if "Fn::If" in node:
        name, then, otherwise = node["Fn::If"]
        return resolve(then if conditions[name] else otherwise, values, conditions)
    if "Fn::Sub" in node:
        text, names = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
        scope = {**values, **resolve(names, values, conditions)}
        text = re.sub(r"\$\{([^!}][^}]*)\}", lambda m: scope[m[1]], text)
        return text.replace("${!", "${")
    if "Fn::ImportValue" in node:
        return f"<import {resolve(node['Fn::ImportValue'], values, conditions)}>"
    if "Fn::GetAtt" in node:
        return "<{}.{}>".format(*node["Fn::GetAtt"])
    if "Fn::Equals" in node:
        left, right = resolve(node["Fn::Equals"], values, conditions)
        return left == right
    if "Fn::Not" in node:
        return not resolve(node["Fn::Not"][0], values, conditions)
    return {key: resolve(value, values, conditions) for key, value in node.items()}


def resolve_resource(template_name: str, resource: str, **parameters: str | int) -> dict[str, Any]:
    """A resource's properties as CloudFormation would see them, for these parameter values."""
    template = load(template_name)
    values = (
        {name: spec.get("Default", "") for name, spec in template["Parameters"].items()}
        | {"AWS::StackName": "stack"}
        | parameters
        | PSEUDO
    )
    conditions: dict[str, bool] = {}
    for name, condition in template.get("Conditions", {}).items():
        conditions[name] = resolve(condition, values, conditions)
    properties: dict[str, Any] = resolve(
        template["Resources"][resource]["Properties"], values, conditions
    )
    return properties


def worker_statements(**parameters: str) -> dict[str, dict[str, Any]]:
    """The worker role's policy statements by Sid, for these parameter values."""
    role = resolve_resource("worker-role.yaml", "WorkerRole", **parameters)
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
        "wake-queue.yaml",
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


def cpworker(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``cpworker`` command."""
    cli = Path(sys.executable).with_name("cpworker")
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=60)


def test_cpworker_systemd_unit_prints_the_shipped_unit() -> None:
    done = cpworker("systemd-unit")
    assert done.returncode == 0, done.stderr
    assert done.stdout == unit_text()
    assert done.stdout == (TEMPLATES / "cpworker.service").read_text()
    assert "ExecStart=/opt/cpworker/bin/cpworker serve $CPWORKER_APP" in done.stdout


def fleet_user_data() -> tuple[str, dict[str, str]]:
    """The hosts' user data script for an example deploy, and the files it writes by path."""
    launch = resolve_resource(
        "worker-fleet.yaml",
        "WorkerLaunchTemplate",
        RoleStackName="cpworker-role",
        App="handlers.build:app",
        Packages="cpworker",
    )
    script: str = launch["LaunchTemplateData"]["UserData"]["Fn::Base64"]
    heredocs = re.findall(r"cat > (\S+) <<'(\w+)'\n(.*?\n)\2\n", script, re.DOTALL)
    return script, {path: body for path, _tag, body in heredocs}


def test_the_fleet_user_data_installs_the_shipped_unit_verbatim() -> None:
    _script, files = fleet_user_data()
    assert files["/etc/systemd/system/cpworker.service"] == unit_text()
    assert "${" not in unit_text()  # Fn::Sub would rewrite it
    assert "CPWORKER_APP=handlers.build:app\n" in files["/etc/cpworker/cpworker.env"]


def test_the_fleet_user_data_is_valid_bash_and_agent_json() -> None:
    script, files = fleet_user_data()
    for program in (script, files["/usr/local/sbin/cpworker-lifecycle"]):
        checked = subprocess.run(["bash", "-n"], input=program, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
    agent = json.loads(files["/opt/aws/amazon-cloudwatch-agent/etc/cpworker.json"])
    [log] = agent["logs"]["logs_collected"]["files"]["collect_list"]
    assert log["log_group_name"] == "<import cpworker-role-LogGroupName>"
    assert agent["metrics"]["append_dimensions"] == {"InstanceId": "${aws:InstanceId}"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "cpworker.service"
    unit.write_text(unit_text())
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    missing = "Command /opt/cpworker/bin/cpworker is not executable"  # not installed here
    assert [line for line in verified.stderr.splitlines() if missing not in line] == []


def test_the_unit_drains_before_systemd_kills_and_keeps_the_journal() -> None:
    settings = unit_settings()
    command = shlex.split(settings["ExecStart"][0])
    flags = serve_flags(command)
    options = dict(zip(flags[::2], flags[1::2], strict=True))
    grace = float(options["--drain-timeout"]) + WorkerSettings().report_timeout_s
    assert int(settings["TimeoutStopSec"][0]) >= grace + 5
    assert settings["KillSignal"] == ["SIGTERM"]
    assert settings["KillMode"] == ["mixed"]  # SIGTERM to the worker alone
    assert settings["Restart"] == ["on-failure"]  # a drained worker exits 0 and stays down
    assert settings["StateDirectory"] == ["cpworker"]
    assert options["--state-dir"] == "/var/lib/cpworker"
    hook = load("worker-fleet.yaml")["Resources"]["WorkerGroup"]["Properties"]
    [terminating] = hook["LifecycleHookSpecificationList"]
    assert terminating["HeartbeatTimeout"] > int(settings["TimeoutStopSec"][0])


def test_cpworker_serve_knows_the_units_flags() -> None:
    flags = serve_flags(shlex.split(unit_settings()["ExecStart"][0]))
    help_text = cpworker("serve", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert [flag for flag in flags[::2] if flag not in help_text.stdout.split()] == []


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


def wake_pattern(**types: list[str]) -> dict[str, Any]:
    """The wake queue rule's event pattern, for these Categories/Providers (and Versions,
    ``1`` by default: the parameter's default is a list in CloudFormation)."""
    lists = {"Versions": ["1"], **types}
    rule = resolve_resource("wake-queue.yaml", "WakeRule", **lists)  # type: ignore[arg-type]
    pattern: dict[str, Any] = rule["EventPattern"]
    return pattern


def action_started(
    category: str = "Build", provider: str = "CpworkerBuild", state: str = "STARTED"
) -> dict[str, Any]:
    """CodePipeline's action state change event (the User Guide's shape) of a custom action."""
    return {
        "version": "0",
        "id": "0f6bc0a8-5bd8-4d70-9b4b-42f0e2c3e1a0",
        "detail-type": "CodePipeline Action Execution State Change",
        "source": "aws.codepipeline",
        "account": "111122223333",
        "time": "2026-11-26T21:50:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:codepipeline:eu-west-1:111122223333:release"],
        "detail": {
            "pipeline": "release",
            "execution-id": "c5a3b2d4-1111-2222-3333-444455556666",
            "stage": "Build",
            "action-execution-id": "a1b2c3d4-7777-8888-9999-000011112222",
            "action": "Build",
            "state": state,
            "region": "eu-west-1",
            "type": {"owner": "Custom", "category": category, "provider": provider, "version": "1"},
            "version": 1.0,
            "pipeline-execution-attempt": 1.0,
            "input-artifacts": [],
        },
    }


def test_the_wake_rule_matches_the_started_events_of_the_workers_types_only() -> None:
    from moto.events.models import EventPattern

    pattern = EventPattern.load(
        json.dumps(wake_pattern(Categories=["Build", "Test"], Providers=["CpworkerBuild"]))
    )
    matches = cast(Callable[[dict[str, Any]], bool], pattern.matches_event)
    assert matches(action_started())
    assert matches(action_started(category="Test"))
    assert not matches(action_started(provider="SomeoneElses"))
    assert not matches(action_started(category="Deploy"))
    assert not matches(action_started(state="SUCCEEDED"))
    assert not matches({**action_started(), "source": "aws.codebuild"})


def test_only_the_wake_rule_may_send_to_the_queue_and_workers_may_only_read_it() -> None:
    policy = resolve_resource("wake-queue.yaml", "QueuePolicy")["PolicyDocument"]
    (send,) = policy["Statement"]
    assert send["Principal"] == {"Service": "events.amazonaws.com"}
    assert as_list(send["Action"]) == ["sqs:SendMessage"]
    assert send["Condition"] == {"ArnEquals": {"aws:SourceArn": "<WakeRule.Arn>"}}
    worker = resolve_resource("wake-queue.yaml", "WorkerPolicy", WorkerRoleName="role")
    assert worker["Roles"] == ["role"]
    (read,) = worker["PolicyDocument"]["Statement"]
    assert sorted(read["Action"]) == [
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert read["Resource"] == "<WakeQueue.Arn>"
    target = resolve_resource("wake-queue.yaml", "WakeRule")["Targets"][0]
    assert target["Arn"] == "<WakeQueue.Arn>"
    assert target["DeadLetterConfig"] == {"Arn": "<DeadLetterQueue.Arn>"}
