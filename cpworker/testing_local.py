"""A local CodePipeline for tests, and one action run through a real pipeline on it.

``LocalAWS`` is an in-process ``cpworker local`` on a free loopback port with boto3
clients that name it explicitly and carry dummy credentials, an artifact bucket and a
KMS key: nothing reaches AWS. ``run_action`` creates a pipeline (S3 source → the
action), serves the action with an in-process ``Worker`` until the execution ends, and
returns what a pipeline user would see: ``ActionRun``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpworker import testing
from cpworker.testing import ArtifactSource, endpoint_client, extract_artifact
from cpworker.testing_jobs import action_of

if TYPE_CHECKING:
    from cpworker.app import ActionApp, ActionSpec
    from cpworker.isolation import Isolation
    from cpworker.local.server import LocalCodePipeline

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": testing.DUMMY_KEY,
    "AWS_SECRET_ACCESS_KEY": testing.DUMMY_KEY,
    "AWS_REGION": testing.REGION,
    "AWS_DEFAULT_REGION": testing.REGION,
}
"""What ``AWS_*`` becomes while an action runs (plus ``AWS_ENDPOINT_URL``), so that the
handler's own boto3 clients reach the local endpoint, never AWS."""


@dataclass(frozen=True)
class LocalAWS:
    """A running local CodePipeline and what a test needs to talk to it."""

    server: LocalCodePipeline
    codepipeline: Any
    s3: Any
    kms: Any
    bucket: str
    key_id: str

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def client(self, service: str, **options: Any) -> Any:
        """A boto3 client of ``service`` bound to the local endpoint, dummy credentials."""
        return endpoint_client(self.endpoint_url, service, **options)


@contextmanager
def local_aws() -> Iterator[LocalAWS]:
    """Start a local CodePipeline with short timings, a bucket and a key; stop it on exit."""
    from cpworker.local.engine import EngineSettings
    from cpworker.local.server import LocalCodePipeline

    settings = EngineSettings(continuation_delay_s=0.2, redispatch_after_s=5.0, tick_s=0.05)
    with LocalCodePipeline(settings=settings) as server:
        endpoint = server.endpoint_url
        s3, kms = endpoint_client(endpoint, "s3"), endpoint_client(endpoint, "kms")
        bucket = f"cpworker-test-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        key_id = kms.create_key(Description="cpworker test artifacts")["KeyMetadata"]["Arn"]
        yield LocalAWS(server, endpoint_client(endpoint, "codepipeline"), s3, kms, bucket, key_id)


@dataclass(frozen=True)
class ActionRun:
    """The end of a one-action pipeline run.

    ``status`` is the execution's (Succeeded, Failed, ...); ``summary`` and ``error``
    (``{"code", "message"}``, or ``None``) are the action's as the console shows them;
    ``variables`` its output variables; ``outputs`` each output artifact extracted into
    a directory (absent if the action wrote none).
    """

    status: str
    summary: str | None
    error: Mapping[str, str] | None
    variables: Mapping[str, str]
    outputs: Mapping[str, Path]
    external_execution_id: str | None


def run_action(
    local: LocalAWS,
    app: ActionApp,
    action: str | None = None,
    *,
    workdir: Path,
    config: Mapping[str, str] | None = None,
    source: ArtifactSource | None = None,
    outputs: Sequence[str] = (),
    isolation: Isolation = "thread",
    timeout_s: float = 60.0,
) -> ActionRun:
    """Run ``action`` (the app's only one if not named) in a new pipeline and wait.

    The pipeline is S3 source → the action, named after it, with ``config`` as its
    configuration; ``source`` is the source artifact (a directory, a file, a file map
    or bytes; default one README). The action's type is registered if it is not yet, and
    the worker polls with the configuration's value of a queryable property.
    """
    spec = action_of(app, action)
    if spec.type_id.owner != "Custom":
        raise ValueError(f"run_action runs custom actions; {spec.name!r} is {spec.type_id}")
    app.register(local.codepipeline, [spec.name])
    declared = testing.custom_action(
        spec.name,
        provider=spec.type_id.provider,
        category=spec.type_id.category,
        version=spec.type_id.version,
        configuration=config,
        inputs=(testing.SOURCE_ARTIFACT,) if spec.inputs[1] else (),
        outputs=outputs,
    )
    queryable = spec.queryable
    query = {queryable.name: (config or {})[queryable.name]} if queryable else None
    with _serving(local, spec, workdir, isolation, query):
        run = testing.start_pipeline(
            local.codepipeline,
            local.s3,
            f"run-{uuid.uuid4().hex[:12]}",
            source=testing.artifact_bytes(
                source if source is not None else {"README.md": "test\n"}
            ),
            actions=[declared],
            encryption_key_id=local.key_id,
        )
        status = run.wait(timeout_s)["status"]
    state, output = run.action_state(), run.action_output()
    result = output.get("executionResult", {})
    return ActionRun(
        status=status,
        summary=state.get("summary"),
        error=state.get("errorDetails"),
        variables=output.get("outputVariables", {}),
        outputs={
            artifact["name"]: _extracted(local, artifact, workdir / "outputs")
            for artifact in output.get("outputArtifacts", [])
            if status == "Succeeded"
        },
        external_execution_id=result.get("externalExecutionId"),
    )


@contextmanager
def _serving(
    local: LocalAWS,
    spec: ActionSpec,
    workdir: Path,
    isolation: Isolation,
    query: Mapping[str, str] | None,
) -> Iterator[None]:
    """An in-process worker serving ``spec`` on ``local`` until the block ends; ``query``
    is its PollForJobs ``queryParam`` (required for an action with a queryable property)."""
    from cpworker.api import CodePipelineAPI, RetryPolicy
    from cpworker.worker import Worker, WorkerSettings

    settings = WorkerSettings(
        concurrency=1,
        isolation=isolation,
        poll_interval_min_s=0.05,
        poll_interval_max_s=0.2,
        drain_timeout_s=5.0,
        state_dir=workdir / "state",
        workspace_root=workdir / "workspaces",
        region=testing.REGION,
        endpoint_url=local.endpoint_url,
        queries={spec.name: query} if query else {},
    )
    worker = Worker(CodePipelineAPI(local.codepipeline, RetryPolicy()), [spec], settings)
    thread = threading.Thread(target=worker.run, name=f"run-action-{spec.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.shutdown()
        thread.join(timeout=30)


def _extracted(local: LocalAWS, artifact: Mapping[str, Any], root: Path) -> Path:
    """An output artifact of the run, read and extracted safely as an input would be."""
    location = artifact["s3location"]
    return extract_artifact(local.s3, artifact["name"], location["bucket"], location["key"], root)
