"""What both Lambda runtimes share: one handler run per invocation, under a deadline trap.

The two Lambda models differ only at their ends: how the job arrives (the
``CodePipeline.job`` event of an invoke action, or the integration model's
``jobId``/``data`` event) and how the result leaves (PutJob*Result, or the return
value). ``LambdaRuntime`` is everything in between: logging, secret masking, the
job's workspace, tracing, metrics, and the deadline trap.

The trap: the handler runs in a thread, and if it has not returned
``timeout_margin_s`` before the runtime's deadline (Lambda's timeout, or less), the
runtime delivers a failure (or, with ``on_timeout="continue"``, a continuation that
runs the step again) itself, so the pipeline never waits for CodePipeline to give up.

Python cannot stop that thread, and on a warm container it wakes up again during
later invocations. So the job is *abandoned*: its output uploads raise
``JobAbandoned``, its late result is dropped, its secrets stay masked and its
workspace stays until the thread has actually ended (then both go), and every
invocation logs a warning while such a thread is alive.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from cpworker import emf
from cpworker.app import ActionSpec, run_handler
from cpworker.logs import LOGGER_NAME, JobLogger, RedactingFormatter, limit_sdk_loggers, logger
from cpworker.model import JobEnvelope
from cpworker.redact import SECRETS
from cpworker.result import Failure, Result, outcome_of, resume
from cpworker.sources.jobdata import JobContext, build_job, log_fields, secrets_of
from cpworker.workspace import job_workspace

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

LAMBDA_MAX_TIMEOUT_S = 900.0  # Lambda stops any function at 15 minutes


@dataclass(frozen=True)
class LambdaSettings:
    """How the Lambda runtimes guard the job.

    - ``timeout_margin_s`` (5 s; env ``CPWORKER_TIMEOUT_MARGIN_S``): the result is
      delivered this long before the deadline if the handler has not returned.
    - ``workspace_root`` (``/tmp/cpworker``): job workspaces (Lambda's writable disk).
    - ``report_attempts`` (4): tries of PutJob*Result on throttling and 5xx (invoke actions).
    """

    timeout_margin_s: float = field(
        default_factory=lambda: float(os.environ.get("CPWORKER_TIMEOUT_MARGIN_S", "5"))
    )
    workspace_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "cpworker")
    report_attempts: int = 4


@dataclass(frozen=True)
class Received:
    """A job as a runtime read it from its event: the envelope, what the config model is
    validated against, and log fields the envelope cannot carry."""

    envelope: JobEnvelope
    config_values: Mapping[str, Any]
    log_fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Handled:
    """What one job's run came to: the invocation's answer, the result, and whether it
    was delivered."""

    answer: dict[str, Any]
    result: Result
    delivered: bool


class LambdaRuntime(ABC):
    """Runs one action's handler for one Lambda event and delivers its result."""

    delivered = "result reported"
    """The log message once the result is delivered."""

    def __init__(self, spec: ActionSpec, settings: LambdaSettings | None = None) -> None:
        self.spec = spec
        self.settings = settings or LambdaSettings()

    @abstractmethod
    def receive(self, event: Mapping[str, Any]) -> Received:
        """The job in ``event``; ValueError if the event is not this runtime's."""

    @abstractmethod
    def deliver(self, job_id: str, result: Result, log: JobLogger) -> tuple[dict[str, Any], bool]:
        """Deliver ``result``: what the invocation returns, and whether it was delivered
        (False has been logged, never raised)."""

    def deadline_s(self, context: Any) -> float:
        """Seconds from now until the result must be delivered, before the margin."""
        return remaining_s(context)

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        prepare_logging()
        return self.handle(self.receive(event), context).answer

    def handle(self, received: Received, context: Any) -> Handled:
        """Run the handler for a job already received (from this runtime's event, or
        polled by the event worker) and deliver its result."""
        prepare_logging()
        started = time.monotonic()
        envelope = received.envelope
        secrets = secrets_of(envelope, self.spec, received.config_values)
        request_id = str(getattr(context, "aws_request_id", "") or "")
        log = logger(
            "cpworker.job",
            **log_fields(envelope),
            **received.log_fields,
            function_request_id=request_id,
        )
        log.info("job received")
        _warn_about_abandoned(log)
        with SECRETS.active(secrets), _traced(self.spec.name, envelope.id) as annotate:
            budget = self.deadline_s(context) - self.settings.timeout_margin_s
            result = self._run(received, secrets, budget, log)
            outcome = outcome_of(result)
            answer, delivered = self.deliver(envelope.id, result, log)
            annotate("outcome", outcome)
        duration_ms = (time.monotonic() - started) * 1000
        if delivered:
            log.info(self.delivered, extra={"outcome": outcome, "duration_s": duration_ms / 1000})
        if emf.enabled():
            emf.emit_job_metrics(outcome, duration_ms, delivered)
        return Handled(answer, result, delivered)

    def _run(self, received: Received, secrets: list[str], budget: float, log: JobLogger) -> Result:
        envelope = received.envelope
        stopping = threading.Event()
        with ExitStack() as held:
            # The handler's own hold on its secrets and workspace: an abandoned handler
            # takes it over and lets go when its thread ends.
            held.enter_context(SECRETS.active(secrets))
            workspace = held.enter_context(job_workspace(self.settings.workspace_root, envelope.id))
            job_context = JobContext(
                workspace=workspace,
                deadline_s=max(budget, 0.0),
                log=log,
                region=os.environ.get("AWS_REGION"),
                stopping=stopping,
            )
            handler = _HandlerThread(
                envelope.id,
                log,
                lambda: run_handler(
                    self.spec,
                    lambda: build_job(envelope, self.spec, job_context, received.config_values),
                    log,
                    secrets,
                ),
            )
            result = handler.run(budget)
            if result is None:
                result = handler.abandon(held, (stopping, job_context.abandoned))
            if result is None:
                log.error(
                    "handler still running at the timeout margin: the job is abandoned",
                    extra={"budget_s": budget},
                )
                result = self._timed_out(envelope, budget)
        return result

    def _timed_out(self, envelope: JobEnvelope, budget: float) -> Result:
        if self.spec.on_timeout == "continue":
            return resume(
                envelope.data.continuation_token,
                summary=f"step cut off after {budget:.0f} s by the Lambda timeout; resuming",
            )
        margin = self.settings.timeout_margin_s
        return Failure(
            f"timed out after {budget:.0f} s, {margin:g} s before the Lambda timeout; "
            "use a continuation for long work"
        )


# Container-wide on purpose: an abandoned handler's thread outlives its invocation.
_abandoned: set[_HandlerThread] = set()
_abandoned_lock = threading.Lock()


class _HandlerThread:
    """The handler's thread. Once abandoned, it owns the job's secrets and workspace
    and releases them when it ends: not before, since it may still use both."""

    def __init__(self, job_id: str, log: JobLogger, call: Callable[[], Result]) -> None:
        self.job_id = job_id
        self._log = log
        self._call = call
        self._lock = threading.Lock()
        self._result: Result | None = None
        self._ended = False
        self._leftovers: ExitStack | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"cpworker-handler-{job_id}", daemon=True
        )

    def run(self, budget_s: float) -> Result | None:
        """Start the handler; its result, or ``None`` if it has not returned in ``budget_s``."""
        self._thread.start()
        self._thread.join(timeout=max(budget_s, 0.0))
        with self._lock:
            return self._result

    def abandon(self, held: ExitStack, flags: tuple[threading.Event, ...]) -> Result | None:
        """Give up on the handler, unless it has returned meanwhile (then its result).

        ``flags`` are set (uploads raise ``JobAbandoned`` from then on) and what ``held``
        holds is released when the thread ends instead of when the invocation does.
        """
        with self._lock:
            if self._ended:
                return self._result
            for flag in flags:
                flag.set()
            self._leftovers = held.pop_all()
            with _abandoned_lock:  # under self._lock: _main cannot discard it before
                _abandoned.add(self)
        return None

    def _main(self) -> None:
        result: Result | None = None
        try:
            result = self._call()
        finally:
            with self._lock:
                self._ended, self._result = True, result
                leftovers, self._leftovers = self._leftovers, None
            if leftovers is not None:
                self._log.warning(
                    "an abandoned handler ended: its result is dropped, its workspace removed",
                    extra={"outcome": outcome_of(result) if result is not None else None},
                )
                leftovers.close()
                with _abandoned_lock:
                    _abandoned.discard(self)


def _warn_about_abandoned(log: JobLogger) -> None:
    """One warning per abandoned handler still running in this container."""
    with _abandoned_lock:
        running = [handler.job_id for handler in _abandoned]
    for job_id in running:
        log.warning(
            "a handler abandoned at an earlier timeout is still running in this container",
            extra={"abandoned_job_id": job_id},
        )


def remaining_s(context: Any) -> float:
    """Seconds until Lambda stops the invocation (15 minutes without a Lambda context)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else LAMBDA_MAX_TIMEOUT_S


def prepare_logging() -> None:
    """Powertools' JSON logging inside Lambda (once) and quiet SDK loggers."""
    _configure_logging()
    limit_sdk_loggers()


@cache
def _configure_logging() -> None:
    """Powertools' Logger (JSON, masked) for cpworker's loggers, once per container.

    Only inside Lambda: elsewhere (``cpworker invoke``, tests) the host's logging stays.
    """
    if "AWS_LAMBDA_FUNCTION_NAME" not in os.environ:
        return
    level = os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("CPWORKER_LOG_LEVEL") or "INFO"
    power = Logger(
        service=os.environ.get("POWERTOOLS_SERVICE_NAME", LOGGER_NAME),
        level=level,
        logger_formatter=RedactingFormatter(),
    )
    names = {
        LOGGER_NAME,
        "cpworker.job",
        "cpworker.api",
        "cpworker.artifacts",
        "cpworker.workspace",
    }
    for name in names:
        logging.getLogger(name)
    copy_config_to_registered_loggers(source_logger=power, include=names)


@cache
def _tracer() -> Tracer | None:
    """Powertools' Tracer when ``CPWORKER_TRACING=true`` (it needs aws-xray-sdk)."""
    if os.environ.get("CPWORKER_TRACING", "").lower() != "true":
        return None
    from aws_lambda_powertools import Tracer

    return Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", LOGGER_NAME))


@contextmanager
def _traced(action: str, job_id: str) -> Iterator[Callable[[str, str], None]]:
    """An X-Ray subsegment ``## <action>`` around the job, annotated with its id and outcome."""
    tracer = _tracer()
    if tracer is None:
        yield lambda _key, _value: None
        return
    with tracer.provider.in_subsegment(name=f"## {action}") as subsegment:
        subsegment.put_annotation(key="job_id", value=job_id)
        yield lambda key, value: subsegment.put_annotation(key=key, value=value)
