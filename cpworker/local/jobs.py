"""Jobs and the job APIs' state machine, for custom actions and Lambda invocations.

A custom-action job is Queued when created, Dispatched with a fresh nonce by
PollForJobs, InProgress after AcknowledgeJob, and ends Succeeded, Failed or TimedOut.
A Lambda job (``invoke=True``: an Invoke action's, or a standalone one made by
``CpworkerLocal.CreateLambdaJob``) is InProgress from its creation, is never polled,
and takes results without acknowledgement. Choices where AWS is silent:

* Results are accepted only from InProgress jobs: a worker must acknowledge before it
  reports (a Dispatched job answers InvalidJobStateException). The job owner is the
  poller that acknowledged, which is what the nonce exists for.
* A Dispatched job not acknowledged within ``redispatch_after_s`` is dispatched again,
  with a new nonce, by the next poll; the old nonce stops working then.
* AcknowledgeJob with the current nonce is idempotent and answers the job's status.
* The job timeout runs from the job's creation, whatever its state; each continuation
  job has its own. A Lambda job's timeout is the reply window (``lambda_reply_window_s``).
* A standalone job (no action execution) records its result only; a continuation
  creates its follow-up job at once (same data, plus the token), named by ``next_job_id``.
* Every result request that reaches a job is tallied (``Job.tally``: received by
  operation, accepted, refused by error code), duplicates included, so that a chaos
  run can prove that no job took two results (``CpworkerLocal.GetResultCounts``).

Callers hold the engine lock; nothing here does I/O.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cpworker.local.actiontypes import ActionKey, ActionTypeRecord
from cpworker.local.errors import ServiceError
from cpworker.local.executions import IN_PROGRESS, ActionRun

QUEUED, DISPATCHED, JOB_IN_PROGRESS = "Queued", "Dispatched", "InProgress"
JOB_SUCCEEDED, JOB_FAILED, TIMED_OUT = "Succeeded", "Failed", "TimedOut"
OUTPUT_VARIABLES_MAX_BYTES = 122880


@dataclass
class ResultTally:
    """The result requests a job received (by operation), accepted (by result type:
    success, continuation, failure) and refused (by error code)."""

    received: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)


@dataclass(eq=False)
class Job:
    """One job of one action execution, or a standalone Lambda job (``run`` None).

    A continuation makes a new job.
    """

    run: ActionRun | None = field(repr=False)
    data: dict[str, Any] = field(repr=False)  # carries credentials: never log it
    created: float
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoke: bool = False
    """A Lambda job: InProgress from the start, never polled, no acknowledgement."""
    status: str = QUEUED
    nonce: str | None = None
    dispatched_at: float | None = None
    acknowledged_at: float | None = None
    result: dict[str, Any] | None = None
    """What PutJobSuccessResult/PutJobFailureResult reported (CpworkerLocal.DescribeJob)."""
    next_job_id: str | None = None
    tally: ResultTally = field(default_factory=ResultTally)

    def __post_init__(self) -> None:
        if self.invoke:
            self.status = JOB_IN_PROGRESS

    def wire(self, account_id: str, *, nonce: bool) -> dict[str, Any]:
        """The ``Job`` (with nonce) or ``JobDetails`` (without) structure."""
        job: dict[str, Any] = {"id": self.id, "data": self.data, "accountId": account_id}
        if nonce:
            job["nonce"] = self.nonce
        return job

    def event(self, account_id: str) -> dict[str, Any]:
        """The ``CodePipeline.job`` event a Lambda function is invoked with."""
        return {"CodePipeline.job": self.wire(account_id, nonce=False)}

    def matches(self, record: ActionTypeRecord, query: Mapping[str, str]) -> bool:
        if self.invoke or self.run is None or self.run.action_type.key != record.key:
            return False
        configuration = self.data["actionConfiguration"]["configuration"]
        return all(configuration.get(k) == v for k, v in query.items())


@dataclass
class _Queue:
    """The live jobs of one action type: waiting ones oldest first, and dispatched ones
    in the order of their dispatch, so that those overdue for redispatch lead."""

    queued: dict[str, Job] = field(default_factory=dict)
    dispatched: dict[str, Job] = field(default_factory=dict)

    def overdue(self, now: float, redispatch_after_s: float) -> list[Job]:
        """The dispatched jobs not acknowledged within ``redispatch_after_s``, oldest first."""
        late: list[Job] = []
        for job in self.dispatched.values():
            assert job.dispatched_at is not None
            if now - job.dispatched_at < redispatch_after_s:
                break
            late.append(job)
        return sorted(late, key=lambda j: j.created)

    def remove(self, job: Job) -> None:
        self.queued.pop(job.id, None)
        self.dispatched.pop(job.id, None)


class JobBoard:
    """Every job the engine has created, by id; and, so that polls and timers cost what
    they return rather than every job ever made, the unfinished ones and a queue of
    live (Queued or Dispatched) jobs per action type."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._unfinished: dict[str, Job] = {}
        self._queues: dict[ActionKey, _Queue] = {}

    def add(self, job: Job) -> None:
        if job.id in self._jobs:
            raise ServiceError("ConflictException", f"Job {job.id} already exists")
        self._jobs[job.id] = job
        self._unfinished[job.id] = job
        if job.status == QUEUED and job.run is not None:
            self._queues.setdefault(job.run.action_type.key, _Queue()).queued[job.id] = job

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def discard(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        self._retire(job)

    def _retire(self, job: Job) -> None:
        """Drop a job that has ended (or is forgotten) from the live indexes."""
        self._unfinished.pop(job.id, None)
        self._unqueue(job)

    def _unqueue(self, job: Job) -> None:
        if job.run is not None and (queue := self._queues.get(job.run.action_type.key)):
            queue.remove(job)

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise ServiceError("JobNotFoundException", f"Job {job_id} not found")
        return job

    def poll(
        self,
        record: ActionTypeRecord,
        batch: int,
        query: Mapping[str, str],
        now: float,
        redispatch_after_s: float,
    ) -> list[Job]:
        """Dispatch up to ``batch`` waiting jobs of this type, oldest first, fresh nonces.

        Waiting: Queued, or Dispatched and not acknowledged within ``redispatch_after_s``.
        """
        _check_query(record, query)
        queue = self._queues.get(record.key)
        if queue is None:
            return []
        waiting = heapq.merge(
            queue.overdue(now, redispatch_after_s),
            queue.queued.values(),
            key=lambda j: j.created,
        )
        picked = list(itertools.islice((j for j in waiting if j.matches(record, query)), batch))
        for job in picked:
            queue.remove(job)
            job.status, job.nonce, job.dispatched_at = DISPATCHED, secrets.token_hex(16), now
            queue.dispatched[job.id] = job
        return picked

    def acknowledge(self, job_id: str, nonce: str) -> str:
        job = self.get(job_id)
        if job.nonce is None or not secrets.compare_digest(job.nonce, nonce):
            raise ServiceError("InvalidNonceException", f"The nonce does not match job {job_id}")
        if job.status == DISPATCHED:
            job.status, job.acknowledged_at = JOB_IN_PROGRESS, time.time()
            self._unqueue(job)
        return job.status

    def _report(
        self,
        operation: str,
        job_id: str,
        apply: Callable[[Job], None],
        guard: Callable[[Job], None] | None = None,
    ) -> None:
        """Apply a result request to its job, if ``guard`` lets it (a third-party job's
        client token) and the job is InProgress; tally it either way."""
        job = self.get(job_id)
        job.tally.received[operation] += 1
        try:
            if guard is not None:
                guard(job)
            if job.status != JOB_IN_PROGRESS:
                hint = " (acknowledge it first)" if job.status == DISPATCHED else ""
                raise ServiceError(
                    "InvalidJobStateException",
                    f"Job {job_id} is {job.status}, not InProgress{hint}",
                )
            apply(job)
        except ServiceError as exc:
            job.tally.refused[exc.code] += 1
            raise
        self._retire(job)
        assert job.result is not None
        job.tally.accepted[job.result["type"]] += 1

    def succeed(
        self,
        params: Mapping[str, Any],
        now: float,
        continuation_delay_s: float,
        operation: str = "PutJobSuccessResult",
        guard: Callable[[Job], None] | None = None,
    ) -> None:
        """PutJobSuccessResult (or ``operation``, its third-party twin); a rejected request
        changes nothing."""
        self._report(
            operation,
            params["jobId"],
            lambda job: self._succeed(job, params, now, continuation_delay_s),
            guard,
        )

    def _succeed(
        self, job: Job, params: Mapping[str, Any], now: float, continuation_delay_s: float
    ) -> None:
        token = params.get("continuationToken")
        variables: dict[str, str] = params.get("outputVariables") or {}
        _check_variables(token, variables)
        job.status = JOB_SUCCEEDED
        job.result = _result(
            params,
            "success" if token is None else "continuation",
            "currentRevision",
            "continuationToken",
            "executionDetails",
            "outputVariables",
        )
        run = job.run
        if run is None:
            if token is not None:
                follow_up = Job(None, {**job.data, "continuationToken": token}, now, invoke=True)
                self.add(follow_up)
                job.next_job_id = follow_up.id
            return
        run.report(now, params.get("executionDetails", {}))
        if token is not None:
            run.continuation_token, run.due_at = token, now + continuation_delay_s
        else:
            revision = params.get("currentRevision", {}).get("revision")
            run.succeed(now, variables, revision)

    def fail(
        self,
        params: Mapping[str, Any],
        now: float,
        operation: str = "PutJobFailureResult",
        guard: Callable[[Job], None] | None = None,
    ) -> None:
        """PutJobFailureResult (or ``operation``): the job and its action execution fail."""
        job_id = params["jobId"]
        self._report(operation, job_id, lambda job: self._fail(job, params, now), guard)

    @staticmethod
    def _fail(job: Job, params: Mapping[str, Any], now: float) -> None:
        job.status = JOB_FAILED
        job.result = _result(params, "failure", "failureDetails")
        details = params["failureDetails"]
        if job.run is not None:
            job.run.fail(
                now, details["type"], details["message"], details.get("externalExecutionId")
            )

    def expire(self, now: float, timeout_s: float, reply_window_s: float) -> None:
        """Time out unfinished jobs older than their limit, failing their action.

        Custom jobs have ``timeout_s``; Lambda jobs the reply window ``reply_window_s``.
        """
        for job in list(self._unfinished.values()):
            limit = reply_window_s if job.invoke else timeout_s
            if now - job.created >= limit:
                job.status = TIMED_OUT
                self._retire(job)
                if job.run is not None and job.run.status == IN_PROGRESS:
                    message = (
                        f"the Lambda function did not report a result within {limit:g} s"
                        f" (job {job.id})"
                        if job.invoke
                        else f"Job {job.id} timed out: no result within {limit:g} seconds"
                    )
                    job.run.fail(now, "JobTimedOut", message)


def _result(params: Mapping[str, Any], kind: str, *members: str) -> dict[str, Any]:
    """The result a job recorded: its kind and the request members that were given."""
    return {"type": kind} | {m: params[m] for m in members if params.get(m) is not None}


def _check_query(record: ActionTypeRecord, query: Mapping[str, str]) -> None:
    """As AWS: a type with a queryable property is polled only with a value for it."""
    queryable = record.queryable
    if query and queryable is None:
        raise ServiceError(
            "ValidationException",
            "queryParam must be empty: this action type has no queryable property",
        )
    if not query and queryable is not None:
        raise ServiceError(
            "ValidationException",
            f"queryParam is required: this action type has the queryable property "
            f"{queryable!r}; you must supply that property as a key in the map",
        )
    if query and set(query) != {queryable}:
        raise ServiceError(
            "ValidationException", f"queryParam may only name the queryable property {queryable!r}"
        )


def _check_variables(token: str | None, variables: Mapping[str, str]) -> None:
    if token is not None and variables:
        raise ServiceError(
            "ValidationException",
            "outputVariables can be included only when there is no continuation token",
        )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
    if size > OUTPUT_VARIABLES_MAX_BYTES:
        raise ServiceError(
            "OutputVariablesSizeExceededException",
            f"Output variables total {size} bytes; the limit is {OUTPUT_VARIABLES_MAX_BYTES}",
        )
