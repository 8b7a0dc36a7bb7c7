"""Builders and waiters for tests of CodePipeline actions.

They work against ``cpworker local`` and against real AWS alike: they take boto3
clients and return plain wire dictionaries, and import nothing from the emulator.

Typical use::

    upload_source(s3, "my-source", "app.zip", zip_bytes({"main.py": "print(1)"}))
    s3.create_bucket(Bucket="my-artifacts")
    codepipeline.create_pipeline(pipeline=pipeline_declaration(
        "demo", artifact_bucket="my-artifacts", source_bucket="my-source",
        source_key="app.zip", actions=[custom_action("Build", provider="AcmeBuild")],
    ))
    execution_id = codepipeline.list_pipeline_executions(pipelineName="demo")[
        "pipelineExecutionSummaries"][0]["pipelineExecutionId"]
    assert wait_for_execution(codepipeline, "demo", execution_id)["status"] == "Succeeded"
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "SOURCE_ARTIFACT",
    "PipelineRun",
    "action_execution",
    "action_state",
    "artifact_bytes",
    "custom_action",
    "endpoint_client",
    "extract_artifact",
    "lambda_action",
    "pipeline_declaration",
    "start_pipeline",
    "upload_source",
    "wait_for_execution",
    "zip_bytes",
    "zip_directory",
]

SOURCE_ARTIFACT = "SourceOutput"
"""The name of the artifact the source action of :func:`pipeline_declaration` produces."""

REGION = "us-east-1"
DUMMY_KEY = "cpworker-testing"

ArtifactSource = Path | Mapping[str, bytes | str] | bytes
"""An artifact's content: a directory (zipped), a file (as is), a file map (zipped), bytes."""


def zip_bytes(files: Mapping[str, bytes | str]) -> bytes:
    """A zip archive of ``files`` (archive path → content; text is UTF-8 encoded)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            archive.writestr(path, content.encode() if isinstance(content, str) else content)
    return buffer.getvalue()


def zip_directory(directory: Path) -> bytes:
    """A zip archive of every file under ``directory`` (paths relative to it)."""
    return zip_bytes(
        {
            path.relative_to(directory).as_posix(): path.read_bytes()
            for path in sorted(directory.rglob("*"))
            if path.is_file()
        }
    )


def artifact_bytes(source: ArtifactSource) -> bytes:
    """The S3 object of an artifact: a directory or a file map zipped, a file as is."""
    if isinstance(source, Path):
        return zip_directory(source) if source.is_dir() else source.read_bytes()
    return source if isinstance(source, bytes) else zip_bytes(source)


def extract_artifact(client: S3Client, name: str, bucket: str, key: str, root: Path) -> Path:
    """The artifact at ``s3://bucket/key`` extracted into ``root/name``, read as a handler
    reads its inputs (streamed, with the same safe extraction)."""
    from cpworker.artifacts import InputArtifact

    reader = InputArtifact(
        name=name, bucket=bucket, key=key, revision=None, client=client, workspace=root
    )
    return reader.extract(name)


def endpoint_client(endpoint_url: str, service: str, **options: Any) -> Any:
    """A boto3 client of ``service`` at ``endpoint_url`` with dummy credentials: it can
    reach nothing else (S3: path-style, as loopback has no bucket subdomains)."""
    import boto3
    from botocore.config import Config

    if service == "s3":
        options.setdefault("config", Config(s3={"addressing_style": "path"}))
    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
        **options,
    )


def upload_source(s3: Any, bucket: str, key: str, data: bytes) -> None:
    """Put ``data`` at ``s3://bucket/key``, creating the bucket if it does not exist."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
            raise
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=data)


def custom_action(
    name: str,
    *,
    provider: str,
    category: str = "Build",
    version: str = "1",
    configuration: Mapping[str, str] | None = None,
    inputs: Sequence[str] = (SOURCE_ARTIFACT,),
    outputs: Sequence[str] = (),
    run_order: int = 1,
) -> dict[str, Any]:
    """An ``ActionDeclaration`` for a custom action type (owner ``Custom``)."""
    return {
        "name": name,
        "actionTypeId": {
            "category": category,
            "owner": "Custom",
            "provider": provider,
            "version": version,
        },
        "runOrder": run_order,
        "configuration": dict(configuration or {}),
        "inputArtifacts": [{"name": artifact} for artifact in inputs],
        "outputArtifacts": [{"name": artifact} for artifact in outputs],
    }


def lambda_action(
    name: str,
    *,
    function_name: str,
    user_parameters: str | None = None,
    inputs: Sequence[str] = (SOURCE_ARTIFACT,),
    outputs: Sequence[str] = (),
    namespace: str | None = None,
    run_order: int = 1,
) -> dict[str, Any]:
    """An ``ActionDeclaration`` for a Lambda invoke action (Invoke/AWS/Lambda/1)."""
    configuration = {"FunctionName": function_name}
    if user_parameters is not None:
        configuration["UserParameters"] = user_parameters
    action: dict[str, Any] = {
        "name": name,
        "actionTypeId": {
            "category": "Invoke",
            "owner": "AWS",
            "provider": "Lambda",
            "version": "1",
        },
        "runOrder": run_order,
        "configuration": configuration,
        "inputArtifacts": [{"name": artifact} for artifact in inputs],
        "outputArtifacts": [{"name": artifact} for artifact in outputs],
    }
    if namespace is not None:
        action["namespace"] = namespace
    return action


def pipeline_declaration(
    name: str,
    *,
    artifact_bucket: str,
    source_bucket: str,
    source_key: str,
    actions: Sequence[Mapping[str, Any]],
    encryption_key_id: str | None = None,
    role_arn: str = "arn:aws:iam::123456789012:role/cpworker-local",
) -> dict[str, Any]:
    """A two-stage ``PipelineDeclaration``: an S3 source, then a "Build" stage of ``actions``.

    The source action produces the artifact ``SourceOutput`` from
    ``s3://source_bucket/source_key``; ``encryption_key_id`` sets the artifact store's
    KMS key (without it CodePipeline uses its default key).
    """
    artifact_store: dict[str, Any] = {"type": "S3", "location": artifact_bucket}
    if encryption_key_id is not None:
        artifact_store["encryptionKey"] = {"id": encryption_key_id, "type": "KMS"}
    source = {
        "name": "Source",
        "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
        "runOrder": 1,
        "configuration": {
            "S3Bucket": source_bucket,
            "S3ObjectKey": source_key,
            "PollForSourceChanges": "false",
        },
        "outputArtifacts": [{"name": SOURCE_ARTIFACT}],
    }
    return {
        "name": name,
        "roleArn": role_arn,
        "artifactStore": artifact_store,
        "stages": [
            {"name": "Source", "actions": [source]},
            {"name": "Build", "actions": [dict(action) for action in actions]},
        ],
    }


def wait_for_execution(
    codepipeline: Any,
    pipeline_name: str,
    execution_id: str,
    *,
    timeout_s: float = 30.0,
    poll_s: float = 0.1,
) -> dict[str, Any]:
    """The final ``pipelineExecution`` once its status is no longer InProgress.

    Raises TimeoutError, carrying the last state seen, if it is still InProgress
    after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        execution: dict[str, Any] = codepipeline.get_pipeline_execution(
            pipelineName=pipeline_name, pipelineExecutionId=execution_id
        )["pipelineExecution"]
        if execution["status"] not in ("InProgress", "Stopping"):
            return execution
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"Execution {execution_id} of {pipeline_name} still {execution['status']} "
                f"after {timeout_s:g} s: {execution}"
            )
        time.sleep(poll_s)


def action_state(codepipeline: Any, pipeline_name: str, action: str) -> dict[str, Any]:
    """GetPipelineState's ``latestExecution`` of the action named ``action`` ({} if none yet)."""
    for stage in codepipeline.get_pipeline_state(name=pipeline_name)["stageStates"]:
        for state in stage.get("actionStates", []):
            if state["actionName"] == action:
                return dict(state.get("latestExecution", {}))
    raise KeyError(f"pipeline {pipeline_name} has no action {action!r}")


def action_execution(
    codepipeline: Any, pipeline_name: str, execution_id: str, action: str
) -> dict[str, Any]:
    """ListActionExecutions' latest detail of ``action`` in one pipeline execution.

    ``["output"]`` holds ``outputVariables``, ``executionResult`` and ``outputArtifacts``.
    """
    details = codepipeline.list_action_executions(
        pipelineName=pipeline_name, filter={"pipelineExecutionId": execution_id}
    )["actionExecutionDetails"]
    for detail in details:
        if detail["actionName"] == action:
            return dict(detail)
    raise KeyError(f"execution {execution_id} of {pipeline_name} has no action {action!r}")


@dataclass(frozen=True)
class PipelineRun:
    """One execution of a pipeline, and what its actions did.

    ``action`` names the action that ``action_state`` / ``action_output`` look at
    when called without one.
    """

    codepipeline: Any
    name: str
    execution_id: str
    action: str | None = None

    def wait(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """The final ``pipelineExecution`` (see :func:`wait_for_execution`)."""
        return wait_for_execution(
            self.codepipeline, self.name, self.execution_id, timeout_s=timeout_s
        )

    def action_state(self, action: str | None = None) -> dict[str, Any]:
        """GetPipelineState's ``latestExecution`` of the action (summary, errorDetails...)."""
        return action_state(self.codepipeline, self.name, self._named(action))

    def action_output(self, action: str | None = None) -> dict[str, Any]:
        """ListActionExecutions' ``output`` of the action (outputVariables, executionResult)."""
        detail = action_execution(
            self.codepipeline, self.name, self.execution_id, self._named(action)
        )
        return dict(detail.get("output", {}))

    def _named(self, action: str | None) -> str:
        name = action or self.action
        if name is None:
            raise ValueError("name the action: this run has no default action")
        return name


def start_pipeline(
    codepipeline: Any,
    s3: Any,
    name: str,
    *,
    source: bytes,
    actions: Sequence[Mapping[str, Any]],
    encryption_key_id: str | None = None,
) -> PipelineRun:
    """Create buckets ``<name>-src`` / ``<name>-store``, the source object and the pipeline.

    Returns its first execution, which CreatePipeline starts.
    """
    upload_source(s3, f"{name}-src", "source.zip", source)
    s3.create_bucket(Bucket=f"{name}-store")
    codepipeline.create_pipeline(
        pipeline=pipeline_declaration(
            name,
            artifact_bucket=f"{name}-store",
            source_bucket=f"{name}-src",
            source_key="source.zip",
            actions=actions,
            encryption_key_id=encryption_key_id,
        )
    )
    summaries = codepipeline.list_pipeline_executions(pipelineName=name)
    execution_id = summaries["pipelineExecutionSummaries"][0]["pipelineExecutionId"]
    only = actions[0]["name"] if len(actions) == 1 else None
    return PipelineRun(codepipeline, name, execution_id, only)
