"""``cpworker invoke`` as a real process: a Lambda handler run once, continuations followed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from cpworker.local.server import LocalCodePipeline

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[Any], str]:
    done = subprocess.run(
        [sys.executable, "-m", "cpworker.cli", "invoke", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    documents, decoder, text = [], json.JSONDecoder(), done.stdout.strip()
    while text:
        document, end = decoder.raw_decode(text)
        documents.append(document)
        text = text[end:].strip()
    return done.returncode, documents, done.stderr


def test_invoke_builds_the_event_follows_continuations_and_emits_metrics(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "build.sh").write_text("mkdir -p dist && echo ok > dist/out.txt\n")
    parameters = {"ProjectName": "cli", "Command": "sh build.sh", "OutputDirectory": "dist"}
    code, documents, stderr = _invoke(
        "handlers.build:handler", "--build-event", "--user-parameters", json.dumps(parameters),
        "--input", f"SourceOutput={project}", "--output", "BuildOutput",
        env={"POWERTOOLS_METRICS_NAMESPACE": "cpworker-tests"},
    )  # fmt: skip
    assert code == 0, stderr
    steps = [d for d in documents if "step" in d]
    assert [s["result"]["type"] for s in steps] == ["continuation", "success"]
    assert steps[1]["status"] == "Succeeded"
    assert steps[1]["result"]["outputVariables"]["RunId"].startswith("cli-")
    metrics = [d for d in documents if "_aws" in d]
    names = {m["Name"] for d in metrics for m in d["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Jobs", "JobContinue", "JobSuccess", "JobDuration"} <= names
    assert '"message":"result reported"' in stderr, "logs go to stderr, results to stdout"


def test_invoke_with_an_event_file_and_a_failing_handler(tmp_path: Path) -> None:
    event = {
        "CodePipeline.job": {
            "id": str(uuid.uuid4()),
            "accountId": "123456789012",
            "data": {
                "actionConfiguration": {
                    "configuration": {"FunctionName": "fn", "UserParameters": '{"Steps": "x"}'}
                }
            },
        }
    }
    (tmp_path / "event.json").write_text(json.dumps(event))
    apps = ROOT / "tests" / "worker" / "cpw_test_apps.py"
    loader = (
        "import runpy\nfrom cpworker import lambda_handler\n"
        f"app = runpy.run_path({str(apps)!r})['app']\n"
    )
    (tmp_path / "steps.py").write_text(loader + "handler = lambda_handler(app, 'steps')\n")
    code, documents, stderr = _invoke(
        f"{tmp_path / 'steps.py'}:handler", "--event", str(tmp_path / "event.json")
    )
    assert code == 1, stderr
    (step,) = documents
    assert step["jobId"] == event["CodePipeline.job"]["id"]
    assert step["status"] == "Failed"
    assert step["result"]["failureDetails"]["type"] == "ConfigurationError"
    assert step["result"]["failureDetails"]["message"].startswith(
        "configuration property 'Steps': input should be a valid integer"
    )


def test_invoke_against_a_running_local(local: LocalCodePipeline, tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text(
        "from cpworker import ActionApp, Success, lambda_handler\napp = ActionApp()\n"
        "@app.action(category='Invoke', provider='Ok')\n"
        "def ok(job):\n"
        "    return Success(summary='fine', output_variables={'Seen': job.user_parameters})\n"
        "handler = lambda_handler(app)\n"
    )
    code, documents, stderr = _invoke(
        f"{tmp_path / 'ok.py'}:handler", "--build-event", "--user-parameters", "hello",
        "--endpoint-url", local.endpoint_url,
    )  # fmt: skip
    assert code == 0, stderr
    assert documents[-1]["result"]["outputVariables"] == {"Seen": "hello"}


SAMPLE_PARAMETERS = {
    "handlers.url_check.handler": ("http://127.0.0.1:9/", "Failed"),
    "handlers.cfn_deploy.handler": (
        '{"stack": "sample", "artifact": "Missing", "file": "template.json"}',
        "Failed",
    ),
    "handlers.variables.handler": (None, "Succeeded"),
    "handlers.build.handler": ('{"ProjectName": "sample", "Command": "exit 3"}', "Failed"),
}


def _template_handlers() -> list[str]:
    from samtranslator.yaml_helper import yaml_parse

    template = yaml_parse((ROOT / "sam" / "template.yaml").read_text())
    return sorted(
        resource["Properties"]["Handler"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    )


@pytest.mark.parametrize("handler", _template_handlers())
def test_every_sam_handler_answers_a_sample_event(handler: str, local: LocalCodePipeline) -> None:
    """Each ``Handler`` of sam/template.yaml, called with an event, reports a result."""
    parameters, expected = SAMPLE_PARAMETERS[handler]
    module, _, attribute = handler.rpartition(".")
    flags = ["--user-parameters", parameters] if parameters is not None else []
    code, documents, stderr = _invoke(
        f"{module}:{attribute}", "--build-event", *flags, "--endpoint-url", local.endpoint_url
    )
    assert documents, stderr
    final = documents[-1]
    assert final["status"] == expected, stderr
    if expected == "Failed":
        assert code == 1
        assert final["result"]["failureDetails"]["message"]


def test_invoke_explains_an_event_the_local_codepipeline_refuses() -> None:
    code, documents, stderr = _invoke(
        "handlers.variables:handler", "--build-event", "--user-parameters", ""
    )
    assert code == 1
    assert documents == []
    assert "cpworker invoke: ValidationException:" in stderr
    assert "UserParameters' failed to satisfy constraint" in stderr
