"""The custom-action worker: poll, claim, run, report — with slots, backoff and drain.

Order of a job: a slot is free → PollForJobs asks for at most that many jobs →
AcknowledgeJob with the nonce (InvalidNonce: another worker has it, skip) → the
handler runs in its own workspace → the result is reported, exactly once.
The worker knows nothing about signals: the CLI turns them into ``shutdown()``.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cpworker.api import CodePipelineAPI, error_code
from cpworker.app import ActionSpec, run_handler
from cpworker.artifacts import ArtifactSettings
from cpworker.errors import FailureType
from cpworker.logs import JobLogger, logger
from cpworker.model import JobEnvelope
from cpworker.redact import SECRETS, scrub
from cpworker.result import Failure, Result, outcome_of
from cpworker.sources.jobdata import JobContext, build_job, log_fields, secrets_of
from cpworker.workspace import job_workspace

log = logger("cpworker.worker")


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker polls and runs jobs.

    ==========================  =======  ==============================================
    setting                     default  meaning
    ==========================  =======  ==============================================
    concurrency                 4        jobs run at once (one slot each)
    poll_interval_min_s         0.5      first wait after an empty poll; doubles while idle
    poll_interval_max_s         10.0     longest wait between polls when idle
    drain_timeout_s             60.0     on shutdown, how long running jobs may finish
    job_deadline_s              3600.0   ``job.deadline`` from acknowledgement
    workspace_root              tmp      each job works in ``<root>/<job id>-<random>``
    keep_workspace              False    keep job workspaces (debugging)
    queries                     {}       action name → queryParam for PollForJobs
    region / endpoint_url       None     where the artifact store's S3 is (boto3 chain)
    ==========================  =======  ==============================================
    """

    concurrency: int = 4
    poll_interval_min_s: float = 0.5
    poll_interval_max_s: float = 10.0
    drain_timeout_s: float = 60.0
    job_deadline_s: float = 3600.0
    workspace_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "cpworker")
    keep_workspace: bool = False
    queries: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    region: str | None = None
    endpoint_url: str | None = None
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 < self.poll_interval_min_s <= self.poll_interval_max_s:
            raise ValueError("need 0 < poll_interval_min_s <= poll_interval_max_s")


class _InFlight:
    """A running job; ``claim_report`` makes sure only one result is ever sent."""

    def __init__(self, envelope: JobEnvelope, log: JobLogger) -> None:
        self.envelope = envelope
        self.log = log
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._reported = False

    def claim_report(self) -> bool:
        with self._lock:
            if self._reported:
                return False
            self._reported = True
            return True


class Worker:
    """Serves the custom actions ``specs`` until ``shutdown()``."""

    def __init__(
        self,
        api: CodePipelineAPI,
        specs: Sequence[ActionSpec],
        settings: WorkerSettings | None = None,
    ) -> None:
        if not specs:
            raise ValueError("a worker needs at least one action to serve")
        self.api = api
        self.specs = list(specs)
        self.settings = settings or WorkerSettings()
        self._stopping = threading.Event()
        self._slots = threading.Condition()
        self._running: dict[str, _InFlight] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Poll and run jobs until ``shutdown()``; returns once draining is over."""
        self.settings.workspace_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        log.info(
            "worker started",
            extra={
                "actions": [str(spec.type_id) for spec in self.specs],
                "concurrency": self.settings.concurrency,
            },
        )
        idle = 0
        rotation = itertools.cycle(self.specs)
        while not self._stopping.is_set():
            received = sum(self._poll(next(rotation)) for _ in self.specs)
            idle = 0 if received else idle + 1
            if idle:
                self._stopping.wait(self._idle_delay(idle))
        self._drain()

    def shutdown(self) -> None:
        """Stop polling and let running jobs finish (idempotent, safe before ``run``)."""
        if not self._stopping.is_set():
            log.info("worker stopping", extra={"running": len(self._running)})
        self._stopping.set()
        with self._slots:
            self._slots.notify_all()

    @property
    def running(self) -> int:
        """How many jobs are running now."""
        with self._slots:
            return len(self._running)

    def _idle_delay(self, idle: int) -> float:
        """Exponential backoff with full jitter, capped, while polls come back empty."""
        ceiling = min(
            self.settings.poll_interval_max_s,
            self.settings.poll_interval_min_s * 2 ** min(idle - 1, 30),
        )
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto

    def _free_slots(self) -> int:
        """Wait for at least one free slot (or shutdown); returns how many are free."""
        with self._slots:
            while len(self._running) >= self.settings.concurrency and not self._stopping.is_set():
                self._slots.wait()
            return self.settings.concurrency - len(self._running)

    # -- polling ---------------------------------------------------------------------------

    def _poll(self, spec: ActionSpec) -> int:
        free = self._free_slots()
        if self._stopping.is_set() or free <= 0:
            return 0
        try:
            jobs = self.api.poll_for_jobs(spec.type_id, free, self.settings.queries.get(spec.name))
        except Exception as exc:  # noqa: BLE001 - a failed poll must not stop the worker
            log.error(
                "polling failed",
                extra={"action_type": str(spec.type_id), "error": error_code(exc) or repr(exc)},
            )
            return 0
        for envelope in jobs:
            self._start(spec, envelope)
        return len(jobs)

    def _start(self, spec: ActionSpec, envelope: JobEnvelope) -> None:
        job_log = logger("cpworker.job", **log_fields(envelope))
        job_log.info("job received")
        flight = _InFlight(envelope, job_log)
        with self._slots:
            self._running[envelope.id] = flight
        thread = threading.Thread(
            target=self._process, args=(spec, flight), name=f"job-{envelope.id}", daemon=True
        )
        thread.start()

    # -- one job ---------------------------------------------------------------------------

    def _process(self, spec: ActionSpec, flight: _InFlight) -> None:
        try:
            if not self._acknowledge(flight):
                return
            try:
                result = self._execute(spec, flight)
            except Exception as exc:
                flight.log.exception("the job could not be run")
                result = Failure(
                    scrub(f"cpworker could not run the job: {type(exc).__name__}: {exc}"),
                    type=FailureType.SYSTEM_UNAVAILABLE,
                )
            self._report(flight, result)
        finally:
            with self._slots:
                self._running.pop(flight.envelope.id, None)
                self._slots.notify_all()

    def _acknowledge(self, flight: _InFlight) -> bool:
        envelope = flight.envelope
        try:
            self.api.acknowledge_job(envelope.id, envelope.nonce or "")
        except Exception as exc:  # noqa: BLE001 - any failure means: not ours, move on
            code = error_code(exc)
            if code in ("InvalidNonceException", "JobNotFoundException"):
                flight.log.info("job taken by another worker", extra={"error": code})
            else:
                flight.log.error("acknowledge failed", extra={"error": code or repr(exc)})
            return False
        flight.log.info("job acknowledged")
        return True

    def _execute(self, spec: ActionSpec, flight: _InFlight) -> Result:
        secrets = secrets_of(flight.envelope, spec)
        workspace_of = job_workspace(
            self.settings.workspace_root, flight.envelope.id, keep=self.settings.keep_workspace
        )
        with SECRETS.active(secrets), workspace_of as workspace:
            context = JobContext(
                workspace=workspace,
                deadline_s=self.settings.job_deadline_s,
                log=flight.log,
                artifact_settings=self.settings.artifacts,
                region=self.settings.region,
                endpoint_url=self.settings.endpoint_url,
                stopping=self._stopping,
            )
            return run_handler(
                spec, lambda: build_job(flight.envelope, spec, context), flight.log, secrets
            )

    def _report(self, flight: _InFlight, result: Result) -> None:
        if not flight.claim_report():
            flight.log.warning("result dropped: the job was already reported at shutdown")
            return
        outcome = outcome_of(result)
        try:
            self.api.put_result(flight.envelope.id, result)
        except Exception as exc:  # noqa: BLE001 - logged loudly below
            # Loud on purpose: the pipeline now waits for the job timeout.
            flight.log.critical(
                "could not report the result",
                extra={"outcome": outcome, "error": error_code(exc) or repr(exc)},
            )
            return
        flight.log.info(
            "result reported",
            extra={"outcome": outcome, "duration_s": round(time.monotonic() - flight.started, 3)},
        )

    # -- shutdown --------------------------------------------------------------------------

    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout_s
        with self._slots:
            while self._running and time.monotonic() < deadline:
                self._slots.wait(timeout=max(0.0, deadline - time.monotonic()))
            left = list(self._running.values())
        for flight in left:
            self._report(
                flight,
                Failure(
                    f"the worker stopped before the job finished (drain timeout "
                    f"{self.settings.drain_timeout_s:g} s); run the action again",
                    type=FailureType.SYSTEM_UNAVAILABLE,
                ),
            )
        log.info("worker stopped", extra={"abandoned": len(left)})
