"""A Success whose declared output artifacts were not uploaded fails its action at once
(JobFailed), for a worker and for a Lambda function, unless the action names them in
``optional_outputs``; an empty zip counts as written, and a Continue is not checked."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import APPS_DIR, Run

from cpworker.testing import lambda_action
from cpworker.worker import Worker

APPS = APPS_DIR / "cpw_test_apps.py"


@pytest.fixture
def run_outputs(
    start_pipeline: Callable[..., Run],
    worker: Callable[..., Worker],
    function: Callable[..., str],
) -> Callable[..., Run]:
    """Factory: a pipeline running the CpwOutputs action in ``mode``, served by a worker
    or by a Lambda function, with the given output artifacts."""

    def start(mode: str, outputs: tuple[str, ...], runtime: str = "serve") -> Run:
        if runtime == "serve":
            run = start_pipeline("CpwOutputs", {"Mode": mode}, outputs=outputs)
            worker("outputs")
            return run
        action = lambda_action(
            "Act",
            function_name=function(f"{APPS}:outputs_lambda", timeout_s=60),
            user_parameters=json.dumps({"Mode": mode}),
            outputs=outputs,
        )
        return start_pipeline("lambda", action=action)

    return start


def _object(run: Run, aws: Callable[..., Any], artifact: str) -> bytes:
    """The stored object of one of the action's output artifacts."""
    (location,) = [
        a["s3location"] for a in run.action_output()["outputArtifacts"] if a["name"] == artifact
    ]
    body = aws("s3").get_object(Bucket=location["bucket"], Key=location["key"])["Body"]
    return bytes(body.read())


@pytest.mark.parametrize(
    ("runtime", "mode"), [("serve", "skip"), ("serve", "swallow"), ("lambda", "skip")]
)
def test_a_success_without_its_output_fails_the_action(
    run_outputs: Callable[..., Run], runtime: str, mode: str
) -> None:
    run = run_outputs(mode, ("Out",), runtime)

    assert run.wait()["status"] == "Failed"

    state = run.action_state()
    assert state["errorDetails"] == {
        "code": "JobFailed",
        "message": "output artifact 'Out' was not uploaded",
    }
    assert state["externalExecutionId"] == f"outputs-{mode}"


def test_only_the_outputs_not_named_optional_are_required(
    run_outputs: Callable[..., Run],
) -> None:
    run = run_outputs("skip", ("Out", "Second", "Report"))

    assert run.wait()["status"] == "Failed"

    assert run.action_state()["errorDetails"] == {
        "code": "JobFailed",
        "message": "output artifacts 'Out', 'Second' were not uploaded",
    }


def test_an_empty_zip_counts_and_an_optional_output_may_stay_unwritten(
    run_outputs: Callable[..., Run], aws: Callable[..., Any]
) -> None:
    run = run_outputs("empty", ("Out", "Report"))

    assert run.wait()["status"] == "Succeeded"

    with zipfile.ZipFile(io.BytesIO(_object(run, aws, "Out"))) as archive:
        assert archive.namelist() == []
    with pytest.raises(ClientError, match="NoSuchKey"):
        _object(run, aws, "Report")


def test_a_continue_is_not_checked_and_the_last_step_uploads(
    run_outputs: Callable[..., Run], aws: Callable[..., Any]
) -> None:
    run = run_outputs("continue", ("Out",))

    assert run.wait()["status"] == "Succeeded"

    with zipfile.ZipFile(io.BytesIO(_object(run, aws, "Out"))) as archive:
        assert archive.read("made.txt") == b"made"
