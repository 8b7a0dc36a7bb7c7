"""Custom-action jobs (owner Custom): PollForJobs, AcknowledgeJob with the nonce,
GetJobDetails, PutJobSuccessResult / PutJobFailureResult."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cpworker.api import CodePipelineAPI, Delivery, MalformedJob, RetryPolicy, result_request
from cpworker.app import ActionSpec
from cpworker.logs import JobLogger, logger
from cpworker.model import JobEnvelope
from cpworker.result import Result
from cpworker.sources.jobdata import log_fields
from cpworker.sources.polling import BeforeAck, Claim, PolledJob, attempt


@dataclass(frozen=True)
class CustomRef:
    """A claimed custom-action job (a ``JobRef``)."""

    id: str
    client_id: None = None

    def secrets(self) -> list[str]:
        return []

    def details(self, api: CodePipelineAPI) -> JobEnvelope:
        return api.get_job_details(self.id)

    def check(self, result: Result, log: JobLogger) -> Result:
        """Custom jobs take every result."""
        return result

    def request(self, result: Result) -> tuple[str, dict[str, Any]]:
        return result_request(result)

    def put(
        self,
        api: CodePipelineAPI,
        operation: str,
        request: Mapping[str, Any],
        policy: RetryPolicy | None,
    ) -> Delivery:
        return api.put_request(self.id, operation, request, policy)

    def acknowledge(self, api: CodePipelineAPI, nonce: str) -> str:
        return api.acknowledge_job(self.id, nonce)


@dataclass(frozen=True)
class _Polled:
    """A job PollForJobs returned, with its nonce (a ``PolledJob``)."""

    api: CodePipelineAPI
    job: JobEnvelope | MalformedJob
    id: str
    nonce: str

    @property
    def fields(self) -> Mapping[str, Any]:
        return log_fields(self.job) if isinstance(self.job, JobEnvelope) else {"job_id": self.id}

    def claim(self, log: JobLogger, before_ack: BeforeAck) -> Claim | None:
        """AcknowledgeJob with the nonce; InvalidNonce means another worker has it."""
        token = self.job.data.continuation_token if isinstance(self.job, JobEnvelope) else None
        before_ack(self.nonce, None, token)
        status = attempt(lambda: self.api.acknowledge_job(self.id, self.nonce), log, "acknowledge")
        if status is None:
            return None
        log.info("job acknowledged")
        return Claim(CustomRef(self.id), self.job)


class CustomSource:
    """The jobs of custom actions (a ``JobSource``); ``queries`` maps an action name to
    its PollForJobs ``queryParam``."""

    def __init__(self, api: CodePipelineAPI, queries: Mapping[str, Mapping[str, str]]) -> None:
        self.api = api
        self.queries = queries

    def poll(self, spec: ActionSpec, count: int, abandon: threading.Event) -> list[PolledJob]:
        """Polled jobs; one that cannot be read is claimed too (to be failed alone),
        unless it lacks the id or nonce that would let anyone claim it."""
        jobs = self.api.poll_for_jobs(spec.type_id, count, self.queries.get(spec.name), abandon)
        polled: list[PolledJob] = []
        for job in jobs:
            if job.id is None or job.nonce is None:
                problem = job.problem if isinstance(job, MalformedJob) else "no nonce"
                job_log = logger("cpworker.job", job_id=job.id, action_type=str(spec.type_id))
                job_log.error("job cannot be read", extra={"problem": problem})
                continue
            polled.append(_Polled(self.api, job, job.id, job.nonce))
        return polled

    def reopen(self, job_id: str, client_id: str | None) -> CustomRef:
        return CustomRef(job_id)
