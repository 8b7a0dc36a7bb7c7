"""Third-party jobs: the job-worker integration model of action types owned by ThirdParty.

A third-party action type (declared with a ``JobWorker`` executor,
:mod:`cpworker.local.declarations`) has its jobs polled with the third-party job APIs,
which prove the caller with a *client token*:

* PollForThirdPartyJobs dispatches waiting jobs of the type (as PollForJobs does, with a
  fresh nonce) but answers only ``{clientId, jobId}``: no data, no nonce.
* GetThirdPartyJobDetails(jobId, clientToken) answers ``{id, data, nonce}``, with fresh
  artifact credentials; the data has no accountId, and its pipelineContext no
  pipelineArn nor pipelineExecutionId.
* AcknowledgeThirdPartyJob(jobId, nonce, clientToken), PutThirdPartyJobSuccessResult
  (no output variables in the API: members it does not model are dropped) and
  PutThirdPartyJobFailureResult then work as their custom-action twins.

Every pipeline action of a third-party type has its own client id (a lowercase UUID)
and client token, made when first needed and settable for tests
(``Engine.third_party_client``). A token that is not the action's current one answers
InvalidClientTokenException, whose message never echoes it. Third-party jobs live on a
board of their own, so the custom-action job APIs do not know their ids (and the
third-party APIs do not know custom jobs): JobNotFoundException.

Callers hold the engine lock; nothing here does I/O.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cpworker.local.actiontypes import ActionTypeRecord
from cpworker.local.errors import ServiceError
from cpworker.local.jobs import Job, JobBoard

THIRD_PARTY = "ThirdParty"
SUCCESS_MEMBERS = ("jobId", "currentRevision", "continuationToken", "executionDetails")
# Only for custom-action jobs: "the last two only for custom jobs" (PipelineContext).
CUSTOM_ONLY_CONTEXT = ("pipelineArn", "pipelineExecutionId")

ClientKey = tuple[str, str, str]
"""(pipeline, stage, action): the pipeline action a client id and token belong to."""


@dataclass
class ClientPair:
    """The client id and token of one pipeline action of a third-party type."""

    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)


class ThirdPartyJobs:
    """The third-party jobs of the engine, and the client pair of each action."""

    def __init__(self) -> None:
        self.board = JobBoard()
        self._clients: dict[ClientKey, ClientPair] = {}

    def client(
        self,
        key: ClientKey,
        client_id: str | None = None,
        client_token: str | None = None,
    ) -> ClientPair:
        """The action's client pair (made on first use), with the given parts replaced."""
        pair = self._clients.setdefault(key, ClientPair())
        pair.client_id = client_id or pair.client_id
        pair.client_token = client_token or pair.client_token
        return pair

    def _pair_of(self, job: Job) -> ClientPair:
        assert job.run is not None  # third-party jobs belong to a pipeline action
        run = job.run
        return self.client((run.execution.pipeline, run.stage, run.name))

    def poll(
        self, record: ActionTypeRecord, batch: int, now: float, redispatch_after_s: float
    ) -> list[dict[str, str]]:
        """PollForThirdPartyJobs: dispatch up to ``batch`` waiting jobs, ids only."""
        jobs = self.board.poll(record, batch, {}, now, redispatch_after_s)
        return [{"clientId": self._pair_of(job).client_id, "jobId": job.id} for job in jobs]

    def authorised(self, job_id: str, client_token: str) -> Job:
        """The job, if ``client_token`` is its action's; else InvalidClientTokenException."""
        job = self.board.get(job_id)
        self._check_token(job, client_token)
        return job

    def _check_token(self, job: Job, client_token: str) -> None:
        if not secrets.compare_digest(self._pair_of(job).client_token, client_token):
            raise ServiceError(
                "InvalidClientTokenException",
                f"The client token is not valid for job {job.id}",
            )

    @staticmethod
    def details(job: Job) -> dict[str, Any]:
        """The ``ThirdPartyJobDetails`` structure: id, data without what only custom jobs
        carry, and the nonce of the job's dispatch."""
        data = copy.deepcopy(job.data)
        for member in CUSTOM_ONLY_CONTEXT:
            data.get("pipelineContext", {}).pop(member, None)
        details: dict[str, Any] = {"id": job.id, "data": data}
        if job.nonce is not None:
            details["nonce"] = job.nonce
        return details

    def acknowledge(self, job_id: str, nonce: str, client_token: str) -> str:
        self.authorised(job_id, client_token)
        return self.board.acknowledge(job_id, nonce)

    def succeed(self, params: Mapping[str, Any], now: float, continuation_delay_s: float) -> None:
        """PutThirdPartyJobSuccessResult; a rejected request changes nothing."""
        members = {m: params[m] for m in SUCCESS_MEMBERS if m in params}
        self.board.succeed(
            members,
            now,
            continuation_delay_s,
            "PutThirdPartyJobSuccessResult",
            lambda job: self._check_token(job, params["clientToken"]),
        )

    def fail(self, params: Mapping[str, Any], now: float) -> None:
        """PutThirdPartyJobFailureResult: the job and its action execution fail."""
        self.board.fail(
            params,
            now,
            "PutThirdPartyJobFailureResult",
            lambda job: self._check_token(job, params["clientToken"]),
        )
