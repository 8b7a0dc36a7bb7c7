"""The Lambda integration model: CodePipeline invokes the function of an action type's
Lambda executor with a ``jobId``/``data`` event, and the function *returns* the result.

The event (User Guide, "Lambda integration model")::

    {"jobId", "accountId", "data": {"actionConfiguration": {k: v}, "encryptionKey",
     "inputArtifacts", "outputArtifacts", "actionExecutionId", "actionCredentials",
     "continuationToken"}}

``actionConfiguration`` is flat (no ``configuration`` level) and the typed config is
validated against it; ``actionCredentials`` are the artifact credentials. There is no
action type and no pipeline context in it, so ``job.action_type`` and ``job.pipeline``
are ``None``; the action execution id goes on every log line.

The result is the return value, never a job API call::

    Success  {"result": "Success", "status": {...}, "outputVariables": {...}}
    Continue {"result": "Continue", "continuation": {"State": token}, "status": {...}}
    Failure  {"result": "Fail", "failureType": type, "status": {"Summary": message, ...}}

``status`` holds ``ExternalExecutionId`` and ``Summary`` when the result has them. The
model has no currentRevision and no percentComplete: a result's are not delivered.
A job may run at most 15 minutes, so the deadline trap fires ``timeout_margin_s``
before the earliest of Lambda's timeout, the action's ``timeout`` and 15 minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from cpworker.errors import FailureType
from cpworker.limits import INTEGRATION_JOB_TIMEOUT_MAX_S
from cpworker.logs import JobLogger
from cpworker.model import (
    ActionConfiguration,
    ArtifactCredentials,
    ArtifactRef,
    EncryptionKey,
    JobData,
    JobEnvelope,
    Wire,
)
from cpworker.result import Continue, Failure, Result
from cpworker.sources.lambda_entry import is_integration_event
from cpworker.sources.lambda_runtime import LambdaRuntime, Received

# The User Guide lists the integration model's failure types; one is spelt differently
# from the job API's FailureType.
FAILURE_TYPE_NAMES = {FailureType.PERMISSION_ERROR: "PermissionsError"}


class IntegrationData(Wire):
    """``data`` of an integration-model event."""

    action_configuration: dict[str, str] = Field(default_factory=dict)
    encryption_key: EncryptionKey | None = None
    input_artifacts: list[ArtifactRef] = Field(default_factory=list)
    output_artifacts: list[ArtifactRef] = Field(default_factory=list)
    action_execution_id: str | None = None
    action_credentials: ArtifactCredentials | None = None
    continuation_token: str | None = None

    @field_validator("action_configuration", "input_artifacts", "output_artifacts", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        """Members the guide marks "optionally present" may come as null."""
        if value is not None:
            return value
        return {} if info.field_name == "action_configuration" else []


class IntegrationEvent(Wire):
    """The event CodePipeline invokes a Lambda executor's function with."""

    job_id: str
    account_id: str | None = None
    data: IntegrationData

    def envelope(self) -> JobEnvelope:
        """The job in the shape every runtime builds a ``Job`` from."""
        data = self.data
        return JobEnvelope(
            id=self.job_id,
            account_id=self.account_id,
            data=JobData(
                action_configuration=ActionConfiguration(configuration=data.action_configuration),
                input_artifacts=data.input_artifacts,
                output_artifacts=data.output_artifacts,
                artifact_credentials=data.action_credentials,
                continuation_token=data.continuation_token,
                encryption_key=data.encryption_key,
            ),
        )


def payload_of(result: Result) -> dict[str, Any]:
    """The value the function returns to CodePipeline for ``result``."""
    if isinstance(result, Failure):
        return {
            "result": "Fail",
            "failureType": FAILURE_TYPE_NAMES.get(result.type, result.type.value),
            "status": _status(result.message, result.external_execution_id),
        }
    if isinstance(result, Continue):
        return {
            "result": "Continue",
            "continuation": {"State": result.token},
            "status": _status(result.summary, result.external_execution_id),
        }
    return {
        "result": "Success",
        "status": _status(result.summary, result.external_execution_id),
        "outputVariables": dict(result.output_variables),
    }


def _status(summary: str | None, external_execution_id: str | None) -> dict[str, str]:
    status = {"ExternalExecutionId": external_execution_id, "Summary": summary}
    return {name: value for name, value in status.items() if value is not None}


class IntegrationRuntime(LambdaRuntime):
    """Runs one action's handler for one integration-model event and returns the result."""

    delivered = "result returned"

    def receive(self, event: Mapping[str, Any]) -> Received:
        if not is_integration_event(event):
            raise ValueError("not a Lambda integration-model event: it has no 'jobId' and 'data'")
        parsed = IntegrationEvent.model_validate(event)
        envelope = parsed.envelope()
        execution_id = parsed.data.action_execution_id
        fields = {"action_execution_id": execution_id} if execution_id else {}
        return Received(envelope, envelope.data.action_configuration.configuration, fields)

    def deadline_s(self, context: Any) -> float:
        return min(super().deadline_s(context), self.spec.timeout_s, INTEGRATION_JOB_TIMEOUT_MAX_S)

    def deliver(self, job_id: str, result: Result, log: JobLogger) -> tuple[dict[str, Any], bool]:
        return payload_of(result), True
