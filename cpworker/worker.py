"""The job worker: poll, claim, run, report — and never lose or hang a job.

Jobs come from a source per action owner, through one small interface
(``cpworker.sources.polling``): custom actions (``sources.custom``: PollForJobs,
AcknowledgeJob, PutJob*Result) and third-party ones (``sources.thirdparty``:
PollForThirdPartyJobs, the app's client token resolver, GetThirdPartyJobDetails,
AcknowledgeThirdPartyJob, PutThirdPartyJob*Result). A job's life (see the README,
"Reliability"):

1. A slot is free → the source polls for at most that many jobs; a job that
   cannot be read is failed alone, never its batch. While polls come back full, a
   second poller asks for the slots freed while a poll is out (each poll reserves the
   slots it asks for). When idle, the loop backs off;
   with a wake queue (``cpworker.wake``) it polls a type when an action-started event
   says a job waits, and otherwise only once per type every ``poll_interval_max_s``.
2. The job is claimed: acknowledged with the nonce (InvalidNonce: another worker
   has it, skip; a third-party job whose client token is unknown or refused: one log
   line, skip).
3. The job is journaled (``cpworker.journal``) before its handler starts.
4. The handler runs in a child process (``cpworker.isolation``) with the
   action's deadline; at the deadline its process group is killed and the job
   fails (or continues, with ``on_timeout="continue"``).
5. The result is reported exactly once, journaled before it is sent.
6. On shutdown polling stops at once; jobs still running at the drain timeout are
   handed back (``on_shutdown="continue"``) or failed, all reports in parallel.
7. On start, jobs journaled by a worker that died are resolved first.

The worker knows nothing about signals: the CLI turns them into ``shutdown()``.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import random
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cpworker.api import SUCCESS_OPERATIONS, CodePipelineAPI, MalformedJob, RetryPolicy, error_code
from cpworker.app import ActionSpec
from cpworker.artifacts import ArtifactSettings
from cpworker.client_tokens import ClientTokens
from cpworker.errors import FailureType
from cpworker.isolation import (
    Ended,
    Isolation,
    JobTask,
    ProcessRunner,
    Running,
    ThreadRunner,
    kill_session,
)
from cpworker.journal import Entry, Identity, Journal, default_state_dir, process_start
from cpworker.logs import JobLogger, logger
from cpworker.metrics import worker_metrics
from cpworker.model import JobEnvelope
from cpworker.redact import SECRETS, scrub
from cpworker.result import Continue, Failure, Result, outcome_of, resume
from cpworker.sources.custom import CustomSource
from cpworker.sources.jobdata import DEFAULT_CREDENTIAL_REFRESH_S, log_fields, secrets_of
from cpworker.sources.polling import TAKEN, Claim, JobRef, JobSource, PolledJob
from cpworker.sources.thirdparty import NoClientToken, ThirdPartySource
from cpworker.wake import Waker, WakeSchedule, sqs_client, woken_by
from cpworker.workspace import default_workspace_root, job_workspace, prepare_root

log = logger("cpworker.worker")
GONE = frozenset({"InvalidJobStateException", "JobNotFoundException"})
REFUSED = frozenset({"ValidationException", "OutputVariablesSizeExceededException"})


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker polls and runs jobs.

    ======================  ==========  ================================================
    setting                 default     meaning
    ======================  ==========  ================================================
    concurrency             4           handlers run at once (one slot each; a
                                        job's report goes on after its slot
                                        takes the next job)
    isolation               "process"   ``process``: each job in a child process that a
                                        deadline can kill; ``thread``: in a thread
    jobs_per_process        100         jobs one child process may run, one after another,
                                        while each leaves nothing running (1: a fresh
                                        process for every job)
    poll_interval_min_s     0.5         first wait after an empty poll; doubles while idle
    poll_interval_max_s     10.0        longest wait between polls when idle
    drain_timeout_s         25.0        on shutdown, how long running jobs may finish
                                        (fits the 30 s stop grace of ECS and Kubernetes)
    report_timeout_s        4.0         on shutdown, the time for all hand-back reports
    redeliver_every_s       30.0        how often a result that could not be reported
                                        (after its retries) is sent again
    state_dir               per user    where the journal lives (must outlive the worker)
    workspace_root          per user    each job works in ``<root>/<job id>-<random>``;
                                        default ``<tmp>/cpworker-<uid>``, refused if
                                        another user could write to it
    keep_workspace          False       keep job workspaces (debugging)
    queries                 {}          action name → queryParam for PollForJobs
    credential_refresh_s    900         renew a job's artifact credentials this often
    region / endpoint_url   None        where CodePipeline and S3 are (boto3 chain)
    profile                 None        AWS profile for the job processes' own clients
    metrics_port            None        serve Prometheus ``/metrics`` and ``/healthz`` on
                                        this port (0: any free one, logged at start)
    metrics_host            127.0.0.1   the address of the metrics port
    emf                     False       write CloudWatch EMF metrics of each job to stdout
    wake_queue              None        SQS queue URL of the action-started events
                                        (``cpworker.wake``): poll when woken, else once
                                        per type every poll_interval_max_s (give it
                                        ``WAKE_POLL_MAX_S``, 60 s, as the CLI does)
    ======================  ==========  ================================================
    """

    concurrency: int = 4
    isolation: Isolation = "process"
    jobs_per_process: int = 100
    poll_interval_min_s: float = 0.5
    poll_interval_max_s: float = 10.0
    drain_timeout_s: float = 25.0
    report_timeout_s: float = 4.0
    redeliver_every_s: float = 30.0
    state_dir: Path = field(default_factory=default_state_dir)
    workspace_root: Path = field(default_factory=default_workspace_root)
    keep_workspace: bool = False
    queries: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    credential_refresh_s: float = DEFAULT_CREDENTIAL_REFRESH_S
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    emf: bool = False
    wake_queue: str | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 < self.poll_interval_min_s <= self.poll_interval_max_s:
            raise ValueError("need 0 < poll_interval_min_s <= poll_interval_max_s")
        if self.jobs_per_process < 1:
            raise ValueError("jobs_per_process must be at least 1")
        if self.isolation not in ("process", "thread"):
            raise ValueError(f"isolation={self.isolation!r} is invalid: use process or thread")


@dataclass(frozen=True)
class _Undelivered:
    """A decided result that could not be reported yet."""

    ref: JobRef
    log: JobLogger
    operation: str
    request: dict[str, Any]


class _InFlight:
    """A polled job holding a slot; ``claim_report`` makes sure only one result is ever
    sent."""

    def __init__(self, spec: ActionSpec, polled: PolledJob) -> None:
        self.spec = spec
        self.polled = polled
        self.fields = {"action_type": str(spec.type_id), **polled.fields}
        self.log = logger("cpworker.job", **self.fields)
        self.started = time.monotonic()
        self.claim: Claim | None = None
        self._lock = threading.Lock()
        self._reported = False
        self._run: Running | None = None
        self.in_slot = True  # until its handler is done; its report needs no slot

    def claim_report(self) -> bool:
        with self._lock:
            if self._reported:
                return False
            self._reported = True
            return True

    def hold(self, claim: Claim) -> bool:
        """Keep the claimed job; ``False`` if the job was handed back while being claimed
        (the hand-back reported nothing: the job was not ours yet)."""
        with self._lock:
            if self._reported:
                return False
            self.claim = claim
            if isinstance(claim.job, JobEnvelope):  # log lines name its pipeline from now on
                self.log = logger("cpworker.job", **{**self.fields, **log_fields(claim.job)})
            return True

    def attach(self, run: Running) -> bool:
        """Remember the handler's run; ``False`` if the job was handed back meanwhile."""
        with self._lock:
            self._run = run
            return not self._reported

    def kill(self) -> None:
        with self._lock:
            run = self._run
        if run is not None:
            run.kill()


class Worker:
    """Serves the actions ``specs`` until ``shutdown()``; third-party ones need
    ``client_tokens`` (the app's resolver)."""

    def __init__(
        self,
        api: CodePipelineAPI,
        specs: Sequence[ActionSpec],
        settings: WorkerSettings | None = None,
        client_tokens: ClientTokens | None = None,
    ) -> None:
        if not specs:
            raise ValueError("a worker needs at least one action to serve")
        self.api = api
        self.specs = list(specs)
        self.settings = settings or WorkerSettings()
        self._sources: dict[str, JobSource] = {"Custom": CustomSource(api, self.settings.queries)}
        if client_tokens is not None:
            self._sources["ThirdParty"] = ThirdPartySource(api, client_tokens)
        unserved = [spec.name for spec in self.specs if spec.type_id.owner not in self._sources]
        if unserved:
            raise ValueError(
                f"{', '.join(unserved)}: third-party actions need the client token of each "
                "job's client id; give the app a resolver, ActionApp(client_tokens=...) "
                "(see cpworker.client_tokens)"
            )
        self._stopping = threading.Event()
        self._slots = threading.Condition()
        self._running: dict[str, _InFlight] = {}
        self._reserved = 0  # slots a poll in flight has asked jobs for
        self._loaded = threading.Event()  # the last poll came back full: more jobs wait
        self._undelivered: dict[str, _Undelivered] = {}
        self._identity = Identity.of(os.getpid())
        self._journal: Journal | None = None
        if self.settings.isolation == "process":
            _check_picklable(self.specs)
        self._runner: ProcessRunner | ThreadRunner = (
            ProcessRunner(
                self.specs,
                spares=min(self.settings.concurrency, 4),
                jobs_per_process=self.settings.jobs_per_process,
            )
            if self.settings.isolation == "process"
            else ThreadRunner(api)
        )
        self._metrics = worker_metrics(self.settings, api)
        self._schedule: WakeSchedule | None = None
        if self.settings.wake_queue is not None:
            self._schedule = WakeSchedule(
                self.specs,
                self.settings.poll_interval_min_s,
                self.settings.poll_interval_max_s,
                self._idle_delay,
                self._slots,
            )

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Resolve what a dead worker left, then poll and run jobs until ``shutdown()``;
        returns once draining is over. An unsafe workspace root raises
        ``WorkspaceRootError`` before anything starts."""
        prepare_root(self.settings.workspace_root)
        self._journal = Journal(self.settings.state_dir, self._identity)
        try:
            served = self._metrics.start()
            log.info(
                "worker started",
                extra={
                    "actions": [str(spec.type_id) for spec in self.specs],
                    "concurrency": self.settings.concurrency,
                    "isolation": self.settings.isolation,
                    "worker": str(self._identity),
                    **served,
                    **woken_by(self.settings),
                },
            )
            self._runner.prepare()
            self._recover()
            redelivery = threading.Thread(
                target=self._redeliver, name="cpworker-redelivery", daemon=True
            )
            redelivery.start()
            if self._schedule is None:
                self._poll_on_backoff()
            else:
                self._poll_when_woken(self._schedule)
            self._drain()
            redelivery.join(timeout=self.settings.report_timeout_s)
        finally:
            self._metrics.close()
            self._runner.close()
            self._journal.close()

    def shutdown(self) -> None:
        """Stop polling now and tell running jobs (idempotent, safe before ``run``)."""
        if not self._stopping.is_set():
            log.info("worker stopping", extra={"running": len(self._running)})
        self._stopping.set()
        self._runner.stopping.set()
        with self._slots:
            self._slots.notify_all()

    @property
    def running(self) -> int:
        """How many jobs hold a slot now."""
        with self._slots:
            return self._busy()

    def _busy(self) -> int:
        return sum(1 for flight in self._running.values() if flight.in_slot)

    def _idle_delay(self, idle: int) -> float:
        """Exponential backoff with full jitter, capped, while polls come back empty."""
        ceiling = min(
            self.settings.poll_interval_max_s,
            self.settings.poll_interval_min_s * 2 ** min(idle - 1, 30),
        )
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto

    def _unreserved(self) -> int:
        """Free slots that no poll in flight has asked a job for."""
        return self.settings.concurrency - self._busy() - self._reserved

    def _reserve_slots(self) -> int:
        """Wait for at least one free slot that no poll in flight asks for (or shutdown);
        reserves and returns them all."""
        with self._slots:
            while self._unreserved() <= 0 and not self._stopping.is_set():
                self._slots.wait()
            free = max(0, self._unreserved())
            self._reserved += free
            return free

    def _unreserve(self, count: int) -> None:
        """Give back slots a poll asked for and got no job for."""
        with self._slots:
            self._reserved -= count
            self._slots.notify_all()

    def _free_slot(self, flight: _InFlight) -> None:
        """The job's handler is done: its slot takes the next job while the result is
        reported, so that polling for the next job overlaps the report."""
        with self._slots:
            if flight.in_slot:
                flight.in_slot = False
                self._metrics.slot_freed(flight.polled.id)
            self._slots.notify_all()

    def _release(self, flight: _InFlight) -> None:
        """The job is over, reported included (the drain waits for this)."""
        self._free_slot(flight)
        with self._slots:
            if self._running.get(flight.polled.id) is flight:
                del self._running[flight.polled.id]
            self._slots.notify_all()

    # -- polling ---------------------------------------------------------------------------

    def _poll_on_backoff(self) -> None:
        second = threading.Thread(target=self._poll_under_load, name="cpworker-poller", daemon=True)
        second.start()
        try:
            idle = 0
            rotation = itertools.cycle(self.specs)
            while not self._stopping.is_set():
                received = sum(self._poll(next(rotation))[1] for _ in self.specs)
                idle = 0 if received else idle + 1
                if idle:
                    self._stopping.wait(self._idle_delay(idle))
        finally:
            self.shutdown()  # already done, unless this loop failed: the second one stops too
            self._loaded.set()
            second.join()

    def _poll_under_load(self) -> None:
        """The second poller: while polls come back full (jobs wait), a slot freed while a
        poll is out is polled for at once instead of after that poll returns (a whole
        round trip against a remote CodePipeline). Idle, it waits for the main loop, so
        an idle worker's polls stay one at a time, on the backoff."""
        rotation = itertools.cycle(self.specs)
        while not self._stopping.is_set():
            self._loaded.wait()
            if not self._stopping.is_set():
                self._poll(next(rotation))

    def _poll_when_woken(self, schedule: WakeSchedule) -> None:
        """Poll the types the schedule says are due: woken by an event, after a full
        batch or a continuation, or the safety poll; the wake messages are deleted after
        their type's poll."""
        settings, queue = self.settings, self.settings.wake_queue
        assert queue is not None
        sqs = sqs_client(
            queue,
            region=settings.region,
            endpoint_url=settings.endpoint_url,
            profile=settings.profile,
        )
        waker = Waker(sqs, queue, schedule, self._wake_capacity, self._stopping)
        waker.start()
        while not self._stopping.is_set():
            for spec in schedule.due():
                began = time.time()
                asked, received = self._poll(spec)
                answered = schedule.polled(spec, asked, received, began)
                if not self._stopping.is_set():  # else they go to another worker
                    waker.delete(answered)
            schedule.wait(self._stopping)

    def _wake_capacity(self) -> int:
        """Wait until a slot is free for one more woken job (or shutdown): how many."""
        assert self._schedule is not None
        with self._slots:
            while not self._stopping.is_set():
                free = self._unreserved() - self._schedule.held()
                if free > 0:
                    return free
                self._slots.wait()
            return 0

    def _poll(self, spec: ActionSpec) -> tuple[int, int]:
        """Poll ``spec`` for as many jobs as slots are free and not asked for by another
        poll in flight, and start them: how many were asked for, and how many came (none
        asked for when the poll failed). A full answer keeps the second poller going."""
        free = self._reserve_slots()
        started = 0
        try:
            jobs = self._ask(spec, free) if free > 0 and not self._stopping.is_set() else None
            if jobs is None:
                self._loaded.clear()  # a failing poll is retried on the main loop's backoff
                return 0, 0
            if len(jobs) >= free:
                self._loaded.set()
            else:
                self._loaded.clear()
            self._metrics.polled(str(spec.type_id), len(jobs))
            for job in jobs:
                if self._stopping.is_set():
                    break  # never claim a job that cannot start: CodePipeline dispatches it again
                started += 1  # counted first: a slot is never given back twice
                self._start(spec, job)
            return free, len(jobs)
        finally:
            self._unreserve(free - started)

    def _ask(self, spec: ActionSpec, count: int) -> list[PolledJob] | None:
        """Up to ``count`` jobs of ``spec``; ``None`` (logged) when the poll failed."""
        try:
            return self._sources[spec.type_id.owner].poll(spec, count, self._stopping)
        except Exception as exc:  # noqa: BLE001 - a failed poll must not stop the worker
            if not self._stopping.is_set():
                log.error(
                    "polling failed",
                    extra={"action_type": str(spec.type_id), "error": error_code(exc) or repr(exc)},
                )
            return None

    def _start(self, spec: ActionSpec, polled: PolledJob) -> None:
        flight = _InFlight(spec, polled)
        flight.log.info("job received")
        with self._slots:  # one step: the reserved slot becomes the job's
            self._running[polled.id] = flight
            self._reserved -= 1
        self._metrics.job_received(str(spec.type_id), polled.id, flight.started + spec.timeout_s)
        thread = threading.Thread(
            target=self._process, args=(flight,), name=f"job-{polled.id}", daemon=True
        )
        thread.start()

    # -- one job ---------------------------------------------------------------------------

    def _process(self, flight: _InFlight) -> None:
        """Claim the job, then run it; a job that cannot be read is failed alone, so that
        it is not polled again for ever."""
        try:
            claim = flight.polled.claim(flight.log, partial(self._claiming, flight))
            if claim is None:
                flight.claim_report()  # nothing to report for a job that is not ours
                self._journal_of().reported(flight.polled.id)
                return
            if not flight.hold(claim):
                self._give_back(flight.spec, claim, flight.log, flight.started)
                return
            if self._schedule is not None and _follows_up(claim):
                self._schedule.followed_up(flight.spec)
            if isinstance(claim.job, MalformedJob):
                flight.log.error("job cannot be read", extra={"problem": claim.job.problem})
                problem = f"cpworker could not read this job: {claim.job.problem}"
                self._report(flight, Failure(problem, type=FailureType.JOB_FAILED))
                return
            self._run(flight, claim.ref, claim.job)
        except Exception as exc:
            flight.log.exception("the job could not be run")
            if flight.claim is not None:
                self._report(
                    flight,
                    Failure(
                        scrub(f"cpworker could not run the job: {type(exc).__name__}: {exc}"),
                        type=FailureType.SYSTEM_UNAVAILABLE,
                    ),
                )
        finally:
            self._release(flight)

    def _journal_of(self) -> Journal:
        assert self._journal is not None, "the journal opens when the worker runs"
        return self._journal

    def _claiming(
        self, flight: _InFlight, nonce: str, client_id: str | None, token: str | None
    ) -> None:
        self._journal_of().claiming(flight.polled.id, flight.spec.name, nonce, client_id, token)

    def _run(self, flight: _InFlight, ref: JobRef, envelope: JobEnvelope) -> None:
        """Run the job's handler with its deadline and report its outcome.

        A finished job's workspace is gone before its result is reported; a job
        past its deadline is reported first (the pipeline should not wait for a
        large workspace to be deleted), then its workspace is removed.
        """
        spec = flight.spec
        root, keep = self.settings.workspace_root, self.settings.keep_workspace
        with SECRETS.active(secrets_of(envelope, spec) + ref.secrets()):
            with job_workspace(root, envelope.id, keep=keep) as workspace:
                ended = self._wait_for_handler(flight, ref, envelope, workspace)
            if ended is None:
                return  # reported at the deadline
            if ended.result is None:
                flight.log.error("the handler's process died", extra={"death": ended.death})
                result: Result = Failure(
                    f"the handler's process {ended.death} before the job finished",
                    type=FailureType.JOB_FAILED,
                )
            else:
                result = ended.result
            self._free_slot(flight)
            self._report(flight, result)

    def _wait_for_handler(
        self, flight: _InFlight, ref: JobRef, envelope: JobEnvelope, workspace: Path
    ) -> Ended | None:
        """Journal the job, start its handler and wait for it until its deadline;
        ``None`` when the deadline came first (the job is reported, its slot freed)."""
        spec = flight.spec
        assert self._journal is not None
        self._journal.started(
            ref.id,
            spec.name,
            time.time() + spec.timeout_s,
            envelope.data.continuation_token,
            workspace,
            ref.client_id,
        )
        began = time.monotonic()
        run = self._runner.start(self._task(spec, envelope, ref, workspace))
        if run.pid is not None:
            self._journal.child(ref.id, Identity.of(run.pid))
        if not flight.attach(run):
            run.kill()  # handed back while it started
        ended = run.wait(spec.timeout_s)
        self._metrics.handler_ran(str(spec.type_id), time.monotonic() - began)
        if ended is not None:
            return ended
        run.kill()
        flight.log.error(
            "handler still running at its deadline", extra={"timeout_s": spec.timeout_s}
        )
        self._report(flight, _timed_out(spec, envelope))
        self._release(flight)
        run.wait(None)  # a thread runs on until its handler returns
        return None

    def _task(
        self, spec: ActionSpec, envelope: JobEnvelope, ref: JobRef, workspace: Path
    ) -> JobTask:
        settings = self.settings
        return JobTask(
            spec=spec,
            envelope=envelope,
            job=ref,
            workspace=workspace,
            timeout_s=spec.timeout_s,
            artifacts=settings.artifacts,
            region=settings.region,
            endpoint_url=settings.endpoint_url,
            profile=settings.profile,
            credential_refresh_s=settings.credential_refresh_s,
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    # -- reporting -------------------------------------------------------------------------

    def _report(self, flight: _InFlight, result: Result, policy: RetryPolicy | None = None) -> None:
        if not flight.claim_report():
            flight.log.debug("result dropped: the job was already reported")
            return
        assert flight.claim is not None, "only a claimed job has a result"
        landed = self._send(flight.claim.ref, flight.log, result, policy, flight.started)
        self._count(flight.spec, result, landed, flight.started)

    def _count(self, spec: ActionSpec, result: Result, landed: str | None, started: float) -> None:
        """Tell the metrics a job's outcome: the one that landed, else the one decided; a
        continuation that landed has the schedule look for its follow-up job."""
        if landed == "continue" and self._schedule is not None:
            self._schedule.continued(spec)
        self._metrics.job_reported(
            str(spec.type_id),
            landed or outcome_of(result),
            time.monotonic() - started,
            reported=landed is not None,
        )

    def _send(
        self,
        ref: JobRef,
        job_log: JobLogger,
        result: Result,
        policy: RetryPolicy | None = None,
        started: float | None = None,
    ) -> str | None:
        """Report ``result`` once: journaled before it is sent, and after it landed.
        Returns the outcome that landed, ``None`` if none did.

        A success CodePipeline refuses for good becomes a failure that says why.
        """
        operation, request = ref.request(result)
        return self._deliver(ref, job_log, operation, request, outcome_of(result), policy, started)

    def _deliver(
        self,
        ref: JobRef,
        job_log: JobLogger,
        operation: str,
        request: dict[str, Any],
        outcome: str,
        policy: RetryPolicy | None = None,
        started: float | None = None,
    ) -> str | None:
        if self._journal is not None:
            self._journal.decided(ref.id, operation, request)
        try:
            delivery = ref.put(self.api, operation, request, policy)
        except Exception as exc:  # noqa: BLE001 - each case is logged below
            code = error_code(exc)
            if code in GONE:
                job_log.warning(
                    "the job had already ended in CodePipeline (timed out, or stopped) "
                    "before its result arrived",
                    extra={"outcome": outcome, "error": code},
                )
                landed = None
            elif operation in SUCCESS_OPERATIONS and code in REFUSED:
                message = _refusal(exc)
                job_log.error("CodePipeline refused the result", extra={"error": code})
                return self._send(ref, job_log, Failure(message), policy, started)
            else:
                # Loud on purpose: until it lands, the pipeline waits. The worker tries
                # again every redeliver_every_s, and a restarted worker sends the
                # journaled result again.
                job_log.critical(
                    "could not report the result",
                    extra={"outcome": outcome, "error": code or repr(exc)},
                )
                with self._slots:
                    self._undelivered[ref.id] = _Undelivered(ref, job_log, operation, request)
                return None
        else:
            landed = outcome
            fields: dict[str, Any] = {"outcome": outcome, "delivery": delivery.value}
            if started is not None:
                fields["duration_s"] = round(time.monotonic() - started, 3)
            job_log.info("result reported", extra=fields)
        if self._journal is not None:
            self._journal.reported(ref.id)
        return landed

    def _redeliver(self) -> None:
        """Send the results that could not be reported again, every ``redeliver_every_s``,
        until they land or the job is gone (one pass more when the worker stops)."""
        while True:
            stopping = self._stopping.wait(self.settings.redeliver_every_s)
            with self._slots:
                waiting, self._undelivered = list(self._undelivered.values()), {}
            for item in waiting:
                item.log.info("sending a result that could not be reported again")
                self._deliver(item.ref, item.log, item.operation, item.request, "redelivered")
            if stopping:
                return

    # -- shutdown --------------------------------------------------------------------------

    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout_s
        with self._slots:
            while self._running and time.monotonic() < deadline:
                self._slots.wait(timeout=max(0.0, deadline - time.monotonic()))
            left = list(self._running.values())
        if left:
            # All at once: the stop grace (ECS, Kubernetes) leaves no time for one by one.
            with ThreadPoolExecutor(max_workers=len(left)) as pool:
                list(pool.map(self._hand_back, left))
            self._await_cleanup(time.monotonic() + self.settings.report_timeout_s)
        log.info("worker stopped", extra={"handed_back": len(left)})

    def _hand_back(self, flight: _InFlight) -> None:
        if not flight.claim_report():
            return
        claim = flight.claim
        if claim is None:
            return  # still being claimed: its thread hands it back once it is ours
        flight.kill()  # before the report: nothing of the job may happen after it
        self._give_back(flight.spec, claim, flight.log, flight.started)

    def _give_back(
        self, spec: ActionSpec, claim: Claim, job_log: JobLogger, started: float
    ) -> None:
        """Report a job the stopping worker will not finish: handed back with a
        continuation (``on_shutdown="continue"``), or failed."""
        timeout = self.settings.drain_timeout_s
        result: Result
        if spec.on_shutdown == "continue":
            token = (
                claim.job.data.continuation_token if isinstance(claim.job, JobEnvelope) else None
            )
            result = resume(
                token,
                summary=f"handed back: the worker stopped ({timeout:g} s drain); "
                "the step runs again",
            )
        else:
            result = Failure(
                f"the worker stopped before the job finished (drain timeout {timeout:g} s); "
                "run the action again",
                type=FailureType.SYSTEM_UNAVAILABLE,
            )
        policy = RetryPolicy(
            attempts=4, max_elapsed_s=self.settings.report_timeout_s, backoff_max_s=1.0
        )
        self._count(spec, result, self._send(claim.ref, job_log, result, policy, started), started)

    def _await_cleanup(self, deadline: float) -> None:
        """Give job threads whose process was killed a moment to remove their workspaces."""
        with self._slots:
            while self._running and time.monotonic() < deadline:
                self._slots.wait(timeout=max(0.0, deadline - time.monotonic()))

    # -- recovery --------------------------------------------------------------------------

    def _recover(self) -> None:
        """Resolve the jobs of workers that died: report what they decided, else fail the
        job (or hand it back, for ``on_shutdown="continue"``)."""
        assert self._journal is not None
        for entry in self._journal.orphans():
            job_log = logger("cpworker.job", job_id=entry.job_id, action=entry.action)
            self._clean_up_after(entry)
            ref = self._reopen(entry, job_log)
            if ref is None:
                continue
            with SECRETS.active(ref.secrets()):
                if entry.state == "claiming":
                    ours = self._was_claimed(ref, entry, job_log)
                    if ours is None:
                        continue  # unknown: the entry waits for the next start
                    if not ours:
                        self._journal.reported(entry.job_id)
                        continue
                if entry.operation and entry.request is not None:
                    job_log.warning("sending the result a stopped worker had decided")
                    self._deliver(ref, job_log, entry.operation, entry.request, "recovered")
                    continue
                job_log.warning(
                    "resolving a job of a worker that stopped unexpectedly",
                    extra={"dead_worker": str(entry.worker)},
                )
                spec = self._spec_named(entry.action)
                landed = self._send(ref, job_log, self._orphan_result(spec, entry))
                if landed == "continue" and spec is not None and self._schedule is not None:
                    self._schedule.continued(spec)

    def _was_claimed(self, ref: JobRef, entry: Entry, job_log: JobLogger) -> bool | None:
        """Whether a job a dead worker was acknowledging is its own to resolve: acknowledged
        again with the journaled nonce, it is ``InProgress``; InvalidNonce means CodePipeline
        gave it to another worker, a final status that it has ended. ``None``: cannot tell."""
        try:
            status = ref.acknowledge(self.api, entry.nonce or "")
        except Exception as exc:  # noqa: BLE001 - each case is logged
            code = error_code(exc)
            if code in TAKEN or code == "InvalidJobStateException":
                job_log.info("a job a stopped worker was claiming went to another worker",
                             extra={"error": code})  # fmt: skip
                return False
            job_log.error("cannot check a job a stopped worker was claiming",
                          extra={"error": code or repr(exc)})  # fmt: skip
            return None
        return status == "InProgress"

    def _reopen(self, entry: Entry, job_log: JobLogger) -> JobRef | None:
        """The journaled job's ref from its source; a third-party job's token is resolved
        again. ``None`` (logged) when it cannot be: the entry waits for another restart."""
        source = self._sources.get("Custom" if entry.client_id is None else "ThirdParty")
        try:
            if source is None:
                raise NoClientToken("this worker has no client_tokens resolver")
            return source.reopen(entry.job_id, entry.client_id)
        except NoClientToken as exc:
            job_log.critical(
                "cannot report the job of a worker that stopped unexpectedly",
                extra={"reason": str(exc), "client_id": entry.client_id},
            )
            return None

    def _spec_named(self, name: str) -> ActionSpec | None:
        return next((spec for spec in self.specs if spec.name == name), None)

    def _orphan_result(self, spec: ActionSpec | None, entry: Entry) -> Continue | Failure:
        if spec is not None and spec.on_shutdown == "continue":
            return resume(
                entry.token,
                summary="handed back: the worker running this step stopped unexpectedly; "
                "the step runs again",
            )
        return Failure(
            f"the worker stopped unexpectedly while running this job (worker "
            f"{entry.worker.host}, pid {entry.worker.pid}); run the action again",
            type=FailureType.SYSTEM_UNAVAILABLE,
        )

    def _clean_up_after(self, entry: Entry) -> None:
        """Stop what a dead worker's job left running and remove its workspace."""
        child = entry.child
        if child is not None and process_start(child.pid) in (None, child.start):
            kill_session(child.pid)
        if entry.workspace and not self.settings.keep_workspace:
            path = Path(entry.workspace)
            if path.parent == self.settings.workspace_root and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _follows_up(claim: Claim) -> bool:
    """The job carries a continuation token: the follow-up of a continued one."""
    return isinstance(claim.job, JobEnvelope) and claim.job.data.continuation_token is not None


def _timed_out(spec: ActionSpec, envelope: JobEnvelope) -> Continue | Failure:
    if spec.on_timeout == "continue":
        return resume(
            envelope.data.continuation_token,
            summary=f"step stopped at its {spec.timeout_s:g} s deadline; resuming",
        )
    return Failure(f"timed out after {spec.timeout_s:g} s", type=FailureType.JOB_FAILED)


def _refusal(exc: BaseException) -> str:
    """A failure message naming why CodePipeline refused a success."""
    text = ""
    if isinstance(exc, ClientError):
        text = str(exc.response.get("Error", {}).get("Message", ""))
    return scrub(f"CodePipeline refused the action's result: {error_code(exc)}: {text}")[:5000]


def _check_picklable(specs: Sequence[ActionSpec]) -> None:
    """Process isolation sends the action to a child: refuse, at start, one that cannot go."""
    for spec in specs:
        try:
            if spec.handler.__module__ == "__main__":
                raise TypeError("it is defined in the script run as __main__")
            pickle.dumps(spec)
        except Exception as exc:  # noqa: BLE001 - reported with its fix
            raise ValueError(
                f"action {spec.name!r} cannot run in a child process ({type(exc).__name__}: "
                f"{exc}); define its handler and config model at module level in an "
                "importable module, or use isolation='thread'"
            ) from None
