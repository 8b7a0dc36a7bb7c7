"""Third-party jobs (owner ThirdParty): the job-worker integration model of a partner's
action type.

PollForThirdPartyJobs answers only ``{clientId, jobId}``. For each job the worker finds
the client id's token with the app's resolver (:mod:`cpworker.client_tokens`), reads the
job and its nonce with GetThirdPartyJobDetails, acknowledges it with
AcknowledgeThirdPartyJob, and reports with PutThirdPartyJobSuccessResult or
PutThirdPartyJobFailureResult — every call with the token, which is masked in logs while
the job runs and never journaled (the journal keeps the client id; a restarted worker
resolves the token again).

Third-party job data has no account id, pipeline ARN or execution id, and the API has no
output variables: a handler that returns some fails its job, saying so. An unknown
client id, a resolver that fails, or a token CodePipeline refuses
(InvalidClientTokenException) end that job's processing with one log line; CodePipeline
hands the job out again later.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from cpworker.api import (
    CodePipelineAPI,
    Delivery,
    MalformedJob,
    RetryPolicy,
    error_code,
    result_request,
)
from cpworker.app import ActionSpec
from cpworker.client_tokens import ClientTokens
from cpworker.errors import FailureType
from cpworker.logs import JobLogger
from cpworker.model import JobEnvelope, ThirdPartyJob
from cpworker.redact import SECRETS
from cpworker.result import Failure, Result, Success
from cpworker.sources.polling import BeforeAck, Claim, PolledJob, attempt

OPERATIONS = {
    "PutJobSuccessResult": "PutThirdPartyJobSuccessResult",
    "PutJobFailureResult": "PutThirdPartyJobFailureResult",
}


class NoClientToken(LookupError):  # noqa: N818 - names the condition
    """No client token for a client id: the resolver knows none, or failed."""


def client_token(tokens: ClientTokens, client_id: str) -> str:
    """The token of ``client_id``; ``NoClientToken`` says why not (never with a token)."""
    try:
        token = tokens(client_id)
    except Exception as exc:  # noqa: BLE001 - any resolver failure is reported the same way
        raise NoClientToken(
            f"the client_tokens resolver failed for client id {client_id}: "
            f"{error_code(exc) or type(exc).__name__}"
        ) from None
    if token is None:
        raise NoClientToken(
            f"no client token for client id {client_id}: the app's client_tokens resolver "
            "does not know it; the job is left to CodePipeline"
        )
    if not isinstance(token, str) or not token:
        raise NoClientToken(
            f"the client_tokens resolver gave {type(token).__name__!r}, not a token, for "
            f"client id {client_id}"
        )
    return token


@dataclass(frozen=True)
class ThirdPartyRef:
    """A claimed third-party job (a ``JobRef``), with its client token."""

    id: str
    client_id: str
    client_token: SecretStr

    def secrets(self) -> list[str]:
        return [self.client_token.get_secret_value()]

    def details(self, api: CodePipelineAPI) -> JobEnvelope:
        job = api.get_third_party_job_details(self.id, self.client_token.get_secret_value())
        if isinstance(job, MalformedJob):
            raise ValueError(f"GetThirdPartyJobDetails: {job.problem}")
        return job

    def check(self, result: Result, log: JobLogger) -> Result:
        """A ``Success`` with output variables becomes a failure naming them."""
        if not isinstance(result, Success) or not result.output_variables:
            return result
        names = sorted(result.output_variables)
        log.error(
            "the handler returned output variables, which a third-party job cannot carry",
            extra={"variables": names},
        )
        return Failure(
            f"output variables ({', '.join(names)}) are not part of the third-party job API "
            "(PutThirdPartyJobSuccessResult has none): a third-party action cannot publish "
            "them; return them only from custom or Lambda actions",
            type=FailureType.JOB_FAILED,
            external_execution_id=result.external_execution_id,
        )

    def request(self, result: Result) -> tuple[str, dict[str, Any]]:
        operation, request = result_request(result)
        return OPERATIONS[operation], request

    def put(
        self,
        api: CodePipelineAPI,
        operation: str,
        request: Mapping[str, Any],
        policy: RetryPolicy | None,
    ) -> Delivery:
        token = self.client_token.get_secret_value()
        return api.put_request(self.id, operation, request, policy, client_token=token)

    def acknowledge(self, api: CodePipelineAPI, nonce: str) -> str:
        return api.acknowledge_third_party_job(self.id, nonce, self.client_token.get_secret_value())


@dataclass(frozen=True)
class _Polled:
    """A job PollForThirdPartyJobs returned (a ``PolledJob``)."""

    api: CodePipelineAPI
    tokens: ClientTokens
    job: ThirdPartyJob

    @property
    def id(self) -> str:
        return self.job.job_id

    @property
    def fields(self) -> Mapping[str, Any]:
        return {"job_id": self.id, "client_id": self.job.client_id}

    def claim(self, log: JobLogger, before_ack: BeforeAck) -> Claim | None:
        """Resolve the client token, read the job and its nonce, acknowledge it."""
        try:
            token = client_token(self.tokens, self.job.client_id)
        except NoClientToken as exc:
            log.error(str(exc))
            return None
        with SECRETS.active([token]):
            job = attempt(
                lambda: self.api.get_third_party_job_details(self.id, token), log, "reading the job"
            )
            if job is None:
                return None
            if job.nonce is None:
                log.error("job cannot be claimed: GetThirdPartyJobDetails gave no nonce")
                return None
            nonce = job.nonce
            carried = job.data.continuation_token if isinstance(job, JobEnvelope) else None
            before_ack(nonce, self.job.client_id, carried)
            status = attempt(
                lambda: self.api.acknowledge_third_party_job(self.id, nonce, token),
                log,
                "acknowledge",
            )
        if status is None:
            return None
        log.info("job acknowledged")
        return Claim(ThirdPartyRef(self.id, self.job.client_id, SecretStr(token)), job)


class ThirdPartySource:
    """The jobs of third-party actions (a ``JobSource``), proved with ``tokens``."""

    def __init__(self, api: CodePipelineAPI, tokens: ClientTokens) -> None:
        self.api = api
        self.tokens = tokens

    def poll(self, spec: ActionSpec, count: int, abandon: threading.Event) -> list[PolledJob]:
        jobs = self.api.poll_for_third_party_jobs(spec.type_id, count, abandon)
        return [_Polled(self.api, self.tokens, job) for job in jobs]

    def reopen(self, job_id: str, client_id: str | None) -> ThirdPartyRef:
        """The ref of a journaled job, its token resolved again (``NoClientToken``)."""
        assert client_id is not None, "a third-party job is journaled with its client id"
        return ThirdPartyRef(job_id, client_id, SecretStr(client_token(self.tokens, client_id)))
