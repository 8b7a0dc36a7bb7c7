"""``handlers/variables`` as a Lambda invoke action whose variables a later action consumes,
as in the User Guide's tutorial (namespace ``TestVariables``, ``#{TestVariables.testRunId}``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import Register, Run

from cpworker.testing import custom_action, lambda_action


def test_a_downstream_action_sees_the_variables_resolved(
    function: Register, start_pipeline: Callable[..., Run], aws: Callable[..., Any]
) -> None:
    # Given a custom action type whose jobs this test takes by hand
    codepipeline = aws("codepipeline")
    provider = f"Consume-{uuid.uuid4().hex[:8]}"
    type_id = {"category": "Test", "owner": "Custom", "provider": provider, "version": "1"}
    codepipeline.create_custom_action_type(
        category="Test",
        provider=provider,
        version="1",
        configurationProperties=[
            {"name": name, "required": True, "key": False, "secret": False}
            for name in ("RunId", "Stamp")
        ],
        inputArtifactDetails={"minimumCount": 0, "maximumCount": 1},
        outputArtifactDetails={"minimumCount": 0, "maximumCount": 0},
    )
    try:
        # When the variables action (namespace TestVariables) runs before it
        started = datetime.now(UTC).replace(microsecond=0)
        run = start_pipeline(
            [
                lambda_action(
                    "Variables",
                    function_name=function("handlers.variables:handler"),
                    namespace="TestVariables",
                    inputs=(),
                ),
                custom_action(
                    "Consume",
                    provider=provider,
                    category="Test",
                    run_order=2,
                    configuration={
                        "RunId": "#{TestVariables.testRunId}",
                        "Stamp": "#{TestVariables.region} #{TestVariables.dateTime}",
                    },
                ),
            ]
        )
        job = _claim(codepipeline, type_id)
        codepipeline.put_job_success_result(jobId=job["id"])

        # Then the downstream job carried the values the variables action published
        assert run.wait()["status"] == "Succeeded"
        variables = run.action_output("Variables")["outputVariables"]
        assert set(variables) == {"testRunId", "dateTime", "region"}
        assert uuid.UUID(variables["testRunId"]).version == 4
        assert variables["region"] == "us-east-1"
        stamp = datetime.fromisoformat(variables["dateTime"])
        assert stamp.utcoffset() == timedelta(0)
        assert started <= stamp <= datetime.now(UTC)
        configuration = job["data"]["actionConfiguration"]["configuration"]
        assert configuration == {
            "RunId": variables["testRunId"],
            "Stamp": f"us-east-1 {variables['dateTime']}",
        }
    finally:
        codepipeline.delete_custom_action_type(category="Test", provider=provider, version="1")


def _claim(codepipeline: Any, type_id: dict[str, str], timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll for the action's job and acknowledge it, as a job worker does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)["jobs"]
        if jobs:
            codepipeline.acknowledge_job(jobId=jobs[0]["id"], nonce=jobs[0]["nonce"])
            return dict(jobs[0])
        time.sleep(0.05)
    raise TimeoutError(f"no job for {type_id} after {timeout_s} s")
