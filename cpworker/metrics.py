"""What a worker tells about its work: the hooks ``Worker`` calls, and which metrics
they feed.

The worker calls a few hooks (a poll answered, a job received, its handler's run, its
result reported, a slot freed, a CodePipeline call failed or retried) on one
``WorkerMetrics``. The base class does nothing but the per-job EMF lines of
``serve --emf``; ``--metrics-port`` adds Prometheus metrics and ``/healthz``
(``cpworker.prometheus``, the only module that imports prometheus-client, so that
neither ``import cpworker`` nor the Lambda runtime loads it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cpworker import emf
from cpworker.health import stall_bound_s

if TYPE_CHECKING:
    from cpworker.api import CodePipelineAPI
    from cpworker.worker import WorkerSettings


class WorkerMetrics:
    """The worker's hooks; each is called from the thread where it happens."""

    def __init__(self, emf_lines: bool = False) -> None:
        self.emf_lines = emf_lines

    def start(self) -> dict[str, Any]:
        """Start serving (if anything is served); fields for the "worker started" line."""
        return {}

    def close(self) -> None:
        """Stop serving."""

    def polled(self, action_type: str, jobs: int) -> None:
        """CodePipeline answered a poll with ``jobs`` jobs."""

    def job_received(self, action_type: str, job_id: str, deadline: float) -> None:
        """A polled job holds a slot until ``slot_freed``; ``deadline`` (monotonic) is when
        its handler's time is up."""

    def slot_freed(self, job_id: str) -> None:
        """The job's slot is free again."""

    def handler_ran(self, action_type: str, seconds: float) -> None:
        """A handler ran for ``seconds`` (until it returned, died or met its deadline)."""

    def job_reported(
        self, action_type: str, outcome: str, duration_s: float, reported: bool
    ) -> None:
        """The job's result (``outcome_of``'s word) was reported ``duration_s`` after the job
        was received, or could not be (``reported=False``)."""
        if self.emf_lines:
            emf.emit_job_metrics(outcome, duration_s * 1000, reported)

    def api_failed(self, operation: str, error: BaseException) -> None:
        """A CodePipeline call failed, after its retries."""

    def api_retried(self, operation: str, error: BaseException) -> None:
        """A CodePipeline call failed with ``error`` and is tried again."""


def worker_metrics(settings: WorkerSettings, api: CodePipelineAPI) -> WorkerMetrics:
    """The metrics ``settings`` ask for, told about ``api``'s failed and retried calls when
    they count them. ValueError: EMF without a namespace, or a metrics port that cannot be
    used."""
    if settings.emf and not emf.enabled():
        raise ValueError(
            f"EMF metrics (serve --emf) need a namespace: set {emf.NAMESPACE_VARIABLE}"
        )
    if settings.metrics_port is None:
        return WorkerMetrics(settings.emf)
    from cpworker.prometheus import PrometheusMetrics

    stall_after_s = stall_bound_s(settings.poll_interval_max_s, api.policy.backoff_max_s)
    metrics = PrometheusMetrics(
        settings.metrics_host,
        settings.metrics_port,
        settings.concurrency,
        stall_after_s,
        settings.emf,
    )
    api.observer = metrics
    return metrics
