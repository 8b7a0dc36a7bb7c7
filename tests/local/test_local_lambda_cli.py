"""Functions for ``cpworker local``: the --function / --functions-file flags on a real
process, the runner on its own, and the parsing of function maps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from cpw_local_lab import free_port

from cpworker.local.lambda_context import LambdaContext
from cpworker.local.lambdas import FunctionSpec, parse_function_option, parse_functions_file
from cpworker.testing import (
    lambda_action,
    pipeline_declaration,
    upload_source,
    wait_for_execution,
    zip_bytes,
)

HERE = Path(__file__).parent


def test_local_runs_a_pipeline_with_functions_from_flags_and_file(tmp_path: Path) -> None:
    # Given cpworker local started in this directory, one function given as a module
    # (imported from the working directory) and one from a functions file
    port = free_port()
    functions = tmp_path / "functions.json"
    functions.write_text(
        json.dumps({"Failer": {"handler": f"{HERE}/cpw_lambda_functions.py:crash", "timeout": 5}})
    )
    command = [sys.executable, "-m", "cpworker.cli", "local", "--port", str(port)]
    command += ["--function", "Greeter=cpw_lambda_functions:report_success"]
    command += ["--functions-file", str(functions)]
    process = subprocess.Popen(
        command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("cpworker local ready")
        endpoint = f"http://127.0.0.1:{port}"
        options = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        codepipeline = boto3.client("codepipeline", **options)
        s3 = boto3.client("s3", **options)
        upload_source(s3, "cli-src", "app.zip", zip_bytes({"a.txt": "a"}))
        s3.create_bucket(Bucket="cli-art")

        # When a pipeline with a Lambda action runs
        codepipeline.create_pipeline(
            pipeline=pipeline_declaration(
                "cli-lambda",
                artifact_bucket="cli-art",
                source_bucket="cli-src",
                source_key="app.zip",
                actions=[lambda_action("Greet", function_name="Greeter", user_parameters="hi")],
            )
        )
        summaries = codepipeline.list_pipeline_executions(pipelineName="cli-lambda")
        execution_id = summaries["pipelineExecutionSummaries"][0]["pipelineExecutionId"]

        # Then the function ran with the endpoint of this process, and SIGTERM stops it cleanly
        done = wait_for_execution(codepipeline, "cli-lambda", execution_id, timeout_s=20)
        assert done["status"] == "Succeeded"
        details = codepipeline.list_action_executions(pipelineName="cli-lambda")
        outputs = {d["actionName"]: d["output"] for d in details["actionExecutionDetails"]}
        assert outputs["Greet"]["outputVariables"]["Endpoint"] == endpoint
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()
    assert "[Greeter " in stderr
    assert "secretAccessKey" not in stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--function", "NoRef"], "use NAME=module:attribute"),
        (["--function", "Fn=/nowhere/fn.py:handler"], "does not exist"),
        (["--functions-file", "/nowhere/functions.json"], "No such file"),
    ],
)
def test_local_refuses_bad_function_maps(flags: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cpworker.cli", "local", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_functions_file_forms() -> None:
    text = json.dumps(
        {
            "Plain": "pkg.mod:handler",
            "Tuned": {"handler": "pkg.mod:other", "timeout": 30, "environment": {"STAGE": "dev"}},
        }
    )
    assert parse_functions_file(text) == {
        "Plain": FunctionSpec("pkg.mod:handler"),
        "Tuned": FunctionSpec("pkg.mod:other", 30.0, {"STAGE": "dev"}),
    }
    assert parse_function_option("Fn=pkg.mod:handler") == ("Fn", FunctionSpec("pkg.mod:handler"))
    with pytest.raises(ValueError, match="reserve"):
        FunctionSpec("pkg.mod:handler", environment={"AWS_REGION": "eu-west-1"})
    with pytest.raises(ValueError, match="unknown keys"):
        parse_functions_file('{"Fn": {"handler": "m:h", "memory": 512}}')


def test_runner_reports_a_crash_in_lambda_form_and_exits_1() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, "-m", "cpworker.local.lambda_runner", "cpw_lambda_functions:crash"],
        input='{"CodePipeline.job": {"id": "j"}}',
        cwd=HERE,
        env=environ | {"AWS_LAMBDA_FUNCTION_NAME": "Crashy"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "[ERROR] RuntimeError: the handler crashed" in done.stderr
    assert "CodePipeline.job" not in done.stderr


def test_context_counts_down_from_its_timeout() -> None:
    context = LambdaContext.start("Fn", 2.0, region="eu-west-1", account_id="111122223333")

    assert 1900 < context.get_remaining_time_in_millis() <= 2000
    assert context.invoked_function_arn == "arn:aws:lambda:eu-west-1:111122223333:function:Fn"
    assert context.log_group_name == "/aws/lambda/Fn"
    assert context.memory_limit_in_mb == "128"
    context.deadline_ms = int(time.time() * 1000) - 5
    assert context.get_remaining_time_in_millis() == 0
