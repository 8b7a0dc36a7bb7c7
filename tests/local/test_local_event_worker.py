"""The SAM example's serverless worker on a real ``cpworker local`` process: the
function ``handlers.build.handler`` registered with ``--function``, the template's own
EventBridge pattern as a rule, and handlers/build.py's two steps (a continuation, then
the build) run by the action-started event's one invocation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
from cpw_local_lab import local_process
from samtranslator.yaml_helper import yaml_parse

from cpworker.testing import custom_action, start_pipeline, wait_for_execution, zip_bytes
from handlers.build import app as build_app

ROOT = Path(__file__).parents[2]
FUNCTION = "cpworker-build-event-worker"
PROJECT = {"build.sh": "mkdir -p dist && echo built > dist/out.txt\n"}
CONFIG = {"ProjectName": "demo", "Command": "sh build.sh", "OutputDirectory": "dist"}


def _template_rule() -> tuple[dict[str, Any], str]:
    """The SAM example's event pattern and its function's handler."""
    template = yaml_parse((ROOT / "sam" / "template.yaml").read_text())
    function = template["Resources"]["BuildEventWorkerFunction"]["Properties"]
    pattern: dict[str, Any] = function["Events"]["ActionStarted"]["Properties"]["Pattern"]
    module, _, attribute = function["Handler"].rpartition(".")
    return pattern, f"{module}:{attribute}"


def test_the_sam_examples_build_worker_runs_both_steps_on_a_real_cpworker_local() -> None:
    pattern, handler = _template_rule()
    with local_process("--function", f"{FUNCTION}={handler}", cwd=ROOT) as (_, ready, port):
        assert ready.startswith("cpworker local ready")
        options = {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}
        codepipeline, s3 = boto3.client("codepipeline", **options), boto3.client("s3", **options)
        events = boto3.client("events", **options)
        build_app.register(codepipeline)
        events.put_rule(Name="build-worker", EventPattern=json.dumps(pattern))
        target = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"
        events.put_targets(Rule="build-worker", Targets=[{"Id": "worker", "Arn": target}])

        run = start_pipeline(
            codepipeline,
            s3,
            "sam-build",
            source=zip_bytes(PROJECT),
            actions=[
                custom_action(
                    "Build", provider="CpworkerBuild", configuration=CONFIG, outputs=("Out",)
                )
            ],
        )

        done = wait_for_execution(codepipeline, "sam-build", run.execution_id, timeout_s=60)
        assert done["status"] == "Succeeded"
        output = run.action_output()
        assert output["outputVariables"]["RunId"].startswith("demo-")
        location = output["outputArtifacts"][0]["s3location"]
        assert s3.head_object(Bucket=location["bucket"], Key=location["key"])["ContentLength"] > 0
