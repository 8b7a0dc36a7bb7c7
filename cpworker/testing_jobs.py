"""Jobs and Lambda events for calling a handler directly, with no network.

A ``Job`` made here has real ``InputArtifact`` / ``OutputArtifact`` objects (the same
streaming, safe extraction and zipping as in production) whose S3 client is answered by
moto inside the process: an input is stored from a directory, a file map, a file or
bytes; what the handler uploads stays there, and :meth:`JobMaker.output` extracts it for
the test to inspect. Artifacts need ``cpworker[local]`` (moto); a job without any does not.

Typical use (the ``make_job`` fixture of :mod:`cpworker.pytest_plugin` is a ``JobMaker``)::

    job = make_job(app, config={"ProjectName": "web"},
                   inputs={"SourceOutput": project_dir}, outputs=["BuildOutput"])
    assert build(job) == Success(summary="built")
    assert (make_job.output(job, "BuildOutput") / "app.bin").exists()
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from cpworker.app import ActionApp, ActionSpec
from cpworker.artifacts import ArtifactCollection, InputArtifact, OutputArtifact
from cpworker.job import Job
from cpworker.logs import logger
from cpworker.model import JobEnvelope
from cpworker.result import Continue
from cpworker.sources.jobdata import JobContext, build_job, log_fields
from cpworker.sources.lambda_entry import INVOKE_EVENT_KEY
from cpworker.sources.lambda_entry import _only_action as only_action
from cpworker.testing import ArtifactSource, artifact_bytes, endpoint_client, extract_artifact

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCOUNT_ID = "123456789012"
_UNREACHABLE = "http://127.0.0.1:9"  # the discard port: the client's requests are never sent


class InProcessS3:
    """S3 answered by moto inside this process: a real boto3 client whose requests are
    handed to moto's S3 application instead of being sent, so nothing leaves the process
    and every S3 feature the artifact classes use (ranges, conditions, SSE-KMS) behaves
    as it does against ``cpworker local``. It needs ``cpworker[local]``.
    """

    def __init__(self) -> None:
        self.bucket = f"make-job-{uuid.uuid4().hex[:12]}"
        self.client: S3Client = endpoint_client(_UNREACHABLE, "s3")
        self.client.meta.events.register("before-send.s3", self._send)
        self.client.create_bucket(Bucket=self.bucket)

    def remove(self) -> None:
        """Delete the bucket and its objects: moto's state lives as long as the process."""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
        self.client.delete_bucket(Bucket=self.bucket)

    def _send(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse
        from botocore.compat import HTTPHeaders
        from moto.core.botocore_stubber import MockRawResponse

        url = urlsplit(request.url)
        answer = _moto_s3().open(
            url.path,
            query_string=url.query,
            method=request.method,
            headers=dict(request.headers),
            data=request.body or b"",
        )
        headers = HTTPHeaders.from_pairs(answer.headers.to_wsgi_list())
        raw = MockRawResponse(answer.get_data())
        return AWSResponse(request.url, answer.status_code, headers, raw)


@cache
def _moto_s3() -> Any:
    """A WSGI test client of moto's S3 application (moto's in-memory, process-wide state)."""
    from moto.moto_server.werkzeug_app import create_backend_app
    from werkzeug.test import Client

    return Client(create_backend_app("s3"))


class JobMaker:
    """Makes jobs and Lambda events; a job's workspace and extracted outputs are under
    ``root``, its artifacts in a bucket of its own in moto, in this process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._s3: InProcessS3 | None = None

    @property
    def _store(self) -> InProcessS3:
        """The artifact store, made when a first job has artifacts (moto loads then)."""
        if self._s3 is None:
            self._s3 = InProcessS3()
        return self._s3

    def close(self) -> None:
        """Drop the artifacts of every job made (the workspaces stay under ``root``)."""
        if self._s3 is not None:
            self._s3.remove()
            self._s3 = None

    def __call__(
        self,
        app: ActionApp,
        action: str | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        inputs: Mapping[str, ArtifactSource] | None = None,
        outputs: Sequence[str] = (),
        continuation: Any = None,
        job_id: str | None = None,
    ) -> Job[Any]:
        """The ``Job`` a worker would give ``action`` (the app's only one if not named).

        ``config`` is the action configuration, validated by the action's config model as
        given (strings as in a pipeline, or the JSON values of a Lambda ``UserParameters``
        object); a bad value raises ``ConfigurationError`` here.
        ``inputs`` maps artifact names to their content; ``outputs`` names the output
        artifacts. ``continuation`` is the state the previous step returned in its
        ``Continue`` (``None``: the first step).
        """
        spec = action_of(app, action)
        job_id = job_id or str(uuid.uuid4())
        data: dict[str, Any] = {
            "actionTypeId": spec.type_id.model_dump(),
            "actionConfiguration": {"configuration": _strings(config or {})},
            "pipelineContext": {
                "pipelineName": "test-pipeline",
                "stage": {"name": "Build"},
                "action": {"name": spec.name, "actionExecutionId": str(uuid.uuid4())},
                "pipelineArn": f"arn:aws:codepipeline:us-east-1:{ACCOUNT_ID}:test-pipeline",
                "pipelineExecutionId": str(uuid.uuid4()),
            },
            "inputArtifacts": [
                {"name": name, "revision": "local", "location": self._put(job_id, name, source)}
                for name, source in (inputs or {}).items()
            ],
            "outputArtifacts": [
                {"name": name, "location": self._at(f"{job_id}/outputs/{name}.zip")}
                for name in outputs
            ],
            "artifactCredentials": {"accessKeyId": "make-job", "secretAccessKey": "make-job"},
        }
        if continuation is not None:
            data["continuationToken"] = Continue(state=continuation).token
        envelope = JobEnvelope.model_validate({"id": job_id, "accountId": ACCOUNT_ID, "data": data})
        workspace = self.root / "workspaces" / job_id
        workspace.mkdir(parents=True)
        context = JobContext(
            workspace=workspace, deadline_s=spec.timeout_s, log=logger(**log_fields(envelope))
        )
        job = build_job(envelope, spec, context, config_values=config or {})
        return self._served_here(job) if inputs or outputs else job

    def event(
        self,
        *,
        config: Mapping[str, Any] | None = None,
        continuation: Any = None,
        job_id: str | None = None,
        model: Literal["invoke", "integration"] = "invoke",
        function_name: str = "test-function",
    ) -> dict[str, Any]:
        """A Lambda event for ``lambda_handler(app)``, without artifacts.

        ``model="invoke"``: the ``CodePipeline.job`` event, ``config`` as the JSON object
        in ``UserParameters``; its handler reports to CodePipeline, so give it to
        ``cpworker invoke --event``. ``model="integration"``: the integration model's
        event, ``config`` as its flat ``actionConfiguration``; its handler returns the
        result, with no network.
        """
        job_id = job_id or str(uuid.uuid4())
        token = None if continuation is None else Continue(state=continuation).token
        if model == "integration":
            data: dict[str, Any] = {
                "actionConfiguration": _strings(config or {}),
                "actionExecutionId": str(uuid.uuid4()),
                "inputArtifacts": [],
                "outputArtifacts": [],
                "continuationToken": token,
            }
            return {"jobId": job_id, "accountId": ACCOUNT_ID, "data": data}
        configuration = {"FunctionName": function_name}
        if config is not None:
            configuration["UserParameters"] = json.dumps(config)
        data = {"actionConfiguration": {"configuration": configuration}}
        if token is not None:
            data["continuationToken"] = token
        return {INVOKE_EVENT_KEY: {"id": job_id, "accountId": ACCOUNT_ID, "data": data}}

    def output(self, job: Job[Any], name: str) -> Path:
        """The output artifact ``name`` the handler uploaded, extracted into a directory.

        Raises ``LookupError`` if the handler did not upload it.
        """
        artifact = job.outputs[name]
        if not artifact.uploaded:
            raise LookupError(f"output artifact {name!r} was not uploaded")
        return extract_artifact(
            self._store.client, name, artifact.bucket, artifact.key, self.root / "outputs" / job.id
        )

    def _put(self, job_id: str, name: str, source: ArtifactSource) -> dict[str, Any]:
        """Store one input artifact and return its location (a file keeps its name in the
        key, which names the member of a single-file artifact)."""
        key = f"{job_id}/inputs/{name}"
        if isinstance(source, Path) and source.is_file():
            key = f"{key}/{source.name}"
        self._store.client.put_object(
            Bucket=self._store.bucket, Key=key, Body=artifact_bytes(source)
        )
        return self._at(key)

    def _at(self, key: str) -> dict[str, Any]:
        return {"type": "S3", "s3Location": {"bucketName": self._store.bucket, "objectKey": key}}

    def _served_here(self, job: Job[Any]) -> Job[Any]:
        """``job`` with its artifacts read and written through the in-process client."""
        client, workspace = self._store.client, job.workspace
        inputs = [
            InputArtifact(
                name=a.name,
                bucket=a.bucket,
                key=a.key,
                revision=a.revision,
                client=client,
                workspace=workspace,
            )
            for a in job.inputs
        ]
        outputs = [
            OutputArtifact(
                name=a.name, bucket=a.bucket, key=a.key, client=client, workspace=workspace
            )
            for a in job.outputs
        ]
        return replace(
            job,
            inputs=ArtifactCollection(inputs, kind="input"),
            outputs=ArtifactCollection(outputs, kind="output"),
        )


def action_of(app: ActionApp, action: str | None) -> ActionSpec:
    """``app[action]``, or the app's only action."""
    return app[action] if action is not None else only_action(app)


def _strings(config: Mapping[str, Any]) -> dict[str, str]:
    """Configuration as CodePipeline carries it: strings, other values as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
