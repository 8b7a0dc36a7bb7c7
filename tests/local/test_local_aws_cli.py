"""A person with only the AWS CLI drives the local CodePipeline by hand, errors included."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from cpw_local_lab import Lab, aws_cli

from cpworker.local.server import LocalCodePipeline
from cpworker.testing import custom_action, pipeline_declaration, upload_source, zip_bytes

EVENTS = Path(__file__).parent.parent / "events"


def _poll(endpoint: str, type_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        code, answer, stderr = aws_cli(
            endpoint, "codepipeline", "poll-for-jobs",
            "--action-type-id", type_id, "--max-batch-size", "1",
        )  # fmt: skip
        assert code == 0, stderr
        if answer["jobs"]:
            return dict(answer["jobs"][0])
        time.sleep(0.2)
    raise AssertionError(f"no job for {type_id}")


def test_manual_job_worker_with_the_aws_cli(
    local: LocalCodePipeline, lab: Lab, tmp_path: Path
) -> None:
    endpoint = local.endpoint_url
    # Given the User Guide's custom action type, created with the CLI
    definition = json.loads((EVENTS / "custom_action_type.json").read_text())
    definition["provider"] = f"Cli-{lab.uid}"
    (tmp_path / "action.json").write_text(json.dumps(definition))
    code, _, stderr = aws_cli(
        endpoint, "codepipeline", "create-custom-action-type",
        "--cli-input-json", f"file://{tmp_path / 'action.json'}",
    )  # fmt: skip
    assert code == 0, stderr
    lab.action_types.append(
        {"category": "Build", "owner": "Custom", "provider": definition["provider"], "version": "1"}
    )
    # and a pipeline using it, created with the CLI
    name = f"cli-{lab.uid}"
    upload_source(lab.s3, f"src-{name}", "app.zip", zip_bytes({"a.txt": "a"}))
    lab.s3.create_bucket(Bucket=f"art-{name}")
    action = custom_action(
        "Build", provider=definition["provider"], configuration={"ProjectName": "demo"},
    )  # fmt: skip
    declaration = pipeline_declaration(
        name, artifact_bucket=f"art-{name}", source_bucket=f"src-{name}", source_key="app.zip",
        actions=[action],
    )  # fmt: skip
    (tmp_path / "pipeline.json").write_text(json.dumps({"pipeline": declaration}))
    code, _, stderr = aws_cli(
        endpoint, "codepipeline", "create-pipeline",
        "--cli-input-json", f"file://{tmp_path / 'pipeline.json'}",
    )  # fmt: skip
    assert code == 0, stderr
    lab.pipelines.append(name)
    type_id = f"category=Build,owner=Custom,provider={definition['provider']},version=1"

    # When the job is polled and claimed by hand
    job = _poll(endpoint, type_id)
    assert job["data"]["pipelineContext"]["pipelineName"] == name
    assert set(job["data"]["artifactCredentials"]) == {
        "accessKeyId", "secretAccessKey", "sessionToken",
    }  # fmt: skip
    cp = ("codepipeline",)
    code, _, stderr = aws_cli(
        endpoint, *cp, "acknowledge-job", "--job-id", job["id"], "--nonce", "0"
    )
    assert code != 0
    assert "InvalidNonceException" in stderr
    code, answer, stderr = aws_cli(
        endpoint, *cp, "acknowledge-job", "--job-id", job["id"], "--nonce", job["nonce"]
    )
    assert code == 0, stderr
    assert answer == {"status": "InProgress"}

    # Then the documented errors come back, and a rejected request changes nothing
    code, _, stderr = aws_cli(
        endpoint, *cp, "put-job-success-result", "--job-id", job["id"],
        "--continuation-token", "step-2", "--output-variables", "A=b",
    )  # fmt: skip
    assert "ValidationException" in stderr
    code, _, stderr = aws_cli(
        endpoint, *cp, "put-job-success-result", "--job-id", job["id"],
        "--execution-details", "summary=done,percentComplete=101",
    )  # fmt: skip
    assert "ValidationException" in stderr
    assert "percentComplete" in stderr
    code, _, stderr = aws_cli(endpoint, *cp, "get-job-details", "--job-id", str(uuid.uuid4()))
    assert "JobNotFoundException" in stderr
    code, _, stderr = aws_cli(
        endpoint, *cp, "poll-for-jobs", "--max-batch-size", "1",
        "--action-type-id", type_id.replace("owner=Custom", "owner=AWS"),
    )  # fmt: skip
    assert "ValidationException" in stderr

    # and the job completes, after which a second result is refused
    code, _, stderr = aws_cli(
        endpoint, *cp, "put-job-success-result", "--job-id", job["id"],
        "--execution-details", "summary=built by hand,percentComplete=100",
    )  # fmt: skip
    assert code == 0, stderr
    code, _, stderr = aws_cli(
        endpoint, *cp, "put-job-failure-result", "--job-id", job["id"],
        "--failure-details", "type=JobFailed,message=too late",
    )  # fmt: skip
    assert "InvalidJobStateException" in stderr
    execution_id = lab.executions(name)[0]["pipelineExecutionId"]
    assert lab.wait(name, execution_id)["status"] == "Succeeded"
    code, answer, stderr = aws_cli(endpoint, *cp, "get-pipeline-state", "--name", name)
    build = answer["stageStates"][1]["actionStates"][0]["latestExecution"]
    assert build["summary"] == "built by hand"
    assert build["status"] == "Succeeded"
