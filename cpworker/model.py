"""Wire shapes of CodePipeline job envelopes as pydantic models.

Field names are snake_case; the camelCase wire names are aliases. Unknown
fields are ignored so that new AWS fields never break a worker. Credentials are
``SecretStr`` so that a model printed by accident shows ``**********``. Pure.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel


class Wire(BaseModel):
    """Base of every wire model: camelCase aliases, frozen, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class ActionTypeId(Wire):
    category: str
    owner: str
    provider: str
    version: str

    def __str__(self) -> str:
        return f"{self.category}/{self.owner}/{self.provider}/{self.version}"


class S3Location(Wire):
    bucket_name: str
    object_key: str


class ArtifactLocation(Wire):
    type: str = "S3"
    s3_location: S3Location


class ArtifactRef(Wire):
    """An input or output artifact: its name, revision and S3 object."""

    name: str
    revision: str | None = None
    location: ArtifactLocation


class ArtifactCredentials(Wire):
    access_key_id: SecretStr
    secret_access_key: SecretStr
    session_token: SecretStr | None = None

    def secrets(self) -> list[str]:
        """Every secret string, for redaction."""
        values = [self.access_key_id, self.secret_access_key, self.session_token]
        return [value.get_secret_value() for value in values if value is not None]


class EncryptionKey(Wire):
    id: str
    type: str = "KMS"


class StageContext(Wire):
    name: str


class ActionContext(Wire):
    name: str
    action_execution_id: str | None = None


class PipelineContext(Wire):
    """Where the job runs; ``pipeline_arn`` and ``pipeline_execution_id`` only for custom
    jobs (third-party jobs have neither)."""

    pipeline_name: str
    stage: StageContext
    action: ActionContext
    pipeline_arn: str | None = None
    pipeline_execution_id: str | None = None


class ActionConfiguration(Wire):
    configuration: dict[str, str] = Field(default_factory=dict)


class JobData(Wire):
    """``data`` of a job: what the action is asked to do and with what."""

    action_type_id: ActionTypeId | None = None
    action_configuration: ActionConfiguration = Field(default_factory=ActionConfiguration)
    pipeline_context: PipelineContext | None = None
    input_artifacts: list[ArtifactRef] = Field(default_factory=list)
    output_artifacts: list[ArtifactRef] = Field(default_factory=list)
    artifact_credentials: ArtifactCredentials | None = None
    continuation_token: str | None = None
    encryption_key: EncryptionKey | None = None


class JobEnvelope(Wire):
    """A job as PollForJobs returns it (``nonce``) or GetJobDetails (no nonce); or a
    third-party job as GetThirdPartyJobDetails returns it (``nonce``, no ``account_id``)."""

    id: str
    data: JobData
    nonce: str | None = None
    account_id: str | None = None


class ThirdPartyJob(Wire):
    """A job as PollForThirdPartyJobs returns it: only whose it is and its id."""

    client_id: str
    job_id: str
