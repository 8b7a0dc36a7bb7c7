"""From a job envelope (``JobData``) to the ``Job`` a handler sees.

Custom-action jobs (PollForJobs) and Lambda invoke events carry the same ``data``
shape; this module turns it into a ``Job``. ``config_values`` is what the config
model is validated against: the action configuration by default (a source may
choose otherwise, see ``lambda_invoke``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpworker.app import ActionSpec
from cpworker.artifacts import (
    ArtifactCollection,
    ArtifactSettings,
    InputArtifact,
    LazyClient,
    OutputArtifact,
    artifact_s3_client,
)
from cpworker.config import parse_config, secret_values
from cpworker.credentials import Fetch, refreshing
from cpworker.errors import PermissionError
from cpworker.job import Flag, Job
from cpworker.logs import JobLogger
from cpworker.model import ArtifactCredentials, JobEnvelope

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_CREDENTIAL_REFRESH_S = 900.0


class JobAbandoned(RuntimeError):  # noqa: N818 - names the job's state
    """The runtime gave up on this job (its outcome is reported without the handler):
    a handler still running must not upload or report anything more for it."""


@dataclass(frozen=True)
class JobContext:
    """What the runtime gives every job besides its envelope.

    ``refresh_credentials`` fetches the job's current artifact credentials
    (GetJobDetails); with it, the job's S3 client renews them every
    ``credential_refresh_s`` seconds.
    """

    workspace: Path
    deadline_s: float
    log: JobLogger
    artifact_settings: ArtifactSettings = field(default_factory=ArtifactSettings)
    region: str | None = None
    endpoint_url: str | None = None
    stopping: Flag = field(default_factory=threading.Event)
    refresh_credentials: Fetch | None = None
    credential_refresh_s: float = DEFAULT_CREDENTIAL_REFRESH_S
    # Set by a runtime that reports the outcome without waiting for the handler (the
    # Lambda timeout trap): from then on, ensure_active() raises.
    abandoned: threading.Event = field(default_factory=threading.Event)

    def ensure_active(self) -> None:
        """Raise ``JobAbandoned`` once the runtime has given up on the job."""
        if self.abandoned.is_set():
            raise JobAbandoned(
                "the job was abandoned at its deadline (its outcome is reported without "
                "this handler): nothing more is uploaded or reported for it"
            )


def log_fields(envelope: JobEnvelope) -> dict[str, Any]:
    """The fields every log line about this job carries (never credentials)."""
    data = envelope.data
    fields: dict[str, Any] = {"job_id": envelope.id}
    if data.action_type_id is not None:
        fields["action_type"] = str(data.action_type_id)
    if (context := data.pipeline_context) is not None:
        fields.update(
            pipeline=context.pipeline_name,
            stage=context.stage.name,
            action=context.action.name,
            pipeline_execution_id=context.pipeline_execution_id,
        )
    return {name: value for name, value in fields.items() if value is not None}


def secrets_of(
    envelope: JobEnvelope, spec: ActionSpec, config_values: Mapping[str, Any] | None = None
) -> list[str]:
    """The job's artifact credentials and secret configuration values."""
    data = envelope.data
    found = data.artifact_credentials.secrets() if data.artifact_credentials else []
    if spec.config_model is not None:
        values = data.action_configuration.configuration if config_values is None else config_values
        found += secret_values(spec.config_model, values)
    return found


def build_job(
    envelope: JobEnvelope,
    spec: ActionSpec,
    context: JobContext,
    config_values: Mapping[str, Any] | None = None,
) -> Job[Any]:
    """The ``Job`` a handler sees; a bad configuration raises ``ConfigurationError``."""
    data = envelope.data
    configuration = data.action_configuration.configuration
    values = configuration if config_values is None else config_values
    config = parse_config(spec.config_model, values) if spec.config_model else None
    inputs: ArtifactCollection[InputArtifact] = ArtifactCollection([], kind="input")
    outputs: ArtifactCollection[OutputArtifact] = ArtifactCollection([], kind="output")
    if data.input_artifacts or data.output_artifacts:
        inputs, outputs = _artifacts(envelope, context)
    return Job(
        id=envelope.id,
        config=config,
        configuration=configuration,
        inputs=inputs,
        outputs=outputs,
        workspace=context.workspace,
        log=context.log,
        deadline=time.monotonic() + context.deadline_s,
        envelope=envelope,
        account_id=envelope.account_id,
        action_type=data.action_type_id,
        pipeline=data.pipeline_context,
        continuation_token=data.continuation_token,
        _stopping=context.stopping,
    )


def _artifacts(
    envelope: JobEnvelope, context: JobContext
) -> tuple[ArtifactCollection[InputArtifact], ArtifactCollection[OutputArtifact]]:
    data = envelope.data
    credentials = data.artifact_credentials
    if credentials is None:
        raise PermissionError("the job carries no artifact credentials")
    received = time.monotonic()
    client = LazyClient(lambda: _artifact_client(credentials, context, received))
    settings, workspace = context.artifact_settings, context.workspace
    inputs = [
        InputArtifact(
            name=ref.name,
            bucket=ref.location.s3_location.bucket_name,
            key=ref.location.s3_location.object_key,
            revision=ref.revision,
            client=client,
            workspace=workspace,
            settings=settings,
        )
        for ref in data.input_artifacts
    ]
    key_id = data.encryption_key.id if data.encryption_key else None
    outputs = [
        OutputArtifact(
            name=ref.name,
            bucket=ref.location.s3_location.bucket_name,
            key=ref.location.s3_location.object_key,
            client=client,
            workspace=workspace,
            encryption_key_id=key_id,
            settings=settings,
            guard=context.ensure_active,
        )
        for ref in data.output_artifacts
    ]
    return ArtifactCollection(inputs, kind="input"), ArtifactCollection(outputs, kind="output")


def _artifact_client(
    credentials: ArtifactCredentials, context: JobContext, received: float
) -> S3Client:
    """The job's S3 client, renewing its credentials when the runtime can fetch them.

    It is made on first use: when that comes a refresh period after the job was received,
    it starts from fresh credentials, since the job's first ones may have expired.
    """
    fetch = context.refresh_credentials
    if fetch is not None and time.monotonic() - received >= context.credential_refresh_s:
        credentials = fetch()
    client = artifact_s3_client(
        access_key_id=credentials.access_key_id.get_secret_value(),
        secret_access_key=credentials.secret_access_key.get_secret_value(),
        session_token=(
            credentials.session_token.get_secret_value() if credentials.session_token else None
        ),
        region=context.region,
        endpoint_url=context.endpoint_url,
    )
    if fetch is not None:
        client = refreshing(client, credentials, fetch, context.credential_refresh_s)
    return client
