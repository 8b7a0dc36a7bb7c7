"""CloudWatch EMF metrics of one job, through Powertools Metrics.

One definition for both runtimes that write them — the Lambda runtime (when
POWERTOOLS_METRICS_NAMESPACE is set) and ``cpworker serve --emf`` — so a dashboard
built on one reads the other. Each job is one EMF line on stdout, flushed at once:
``Jobs``, ``JobSuccess`` / ``JobContinue`` / ``JobFailure``, ``JobDuration`` (ms)
and ``ReportFailed`` when its result could not be reported.
"""

from __future__ import annotations

import os
import threading
from functools import cache

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

NAMESPACE_VARIABLE = "POWERTOOLS_METRICS_NAMESPACE"
# Powertools keeps one metric set per process: a worker's job threads take turns.
_lock = threading.Lock()


def enabled() -> bool:
    """Whether a namespace is set: EMF lines without one are refused by CloudWatch."""
    return bool(os.environ.get(NAMESPACE_VARIABLE))


def emit_job_metrics(outcome: str, duration_ms: float, reported: bool) -> None:
    """Write the metrics of a job whose outcome is ``outcome`` (``outcome_of``'s word)."""
    with _lock:
        metrics = _metrics()
        metrics.add_metric(name="Jobs", unit=MetricUnit.Count, value=1)
        metrics.add_metadata(key="outcome", value=outcome)
        kind = outcome.split(":")[0].capitalize()
        metrics.add_metric(name=f"Job{kind}", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="JobDuration", unit=MetricUnit.Milliseconds, value=duration_ms)
        if not reported:
            metrics.add_metric(name="ReportFailed", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()


@cache
def _metrics() -> Metrics:
    return Metrics()
