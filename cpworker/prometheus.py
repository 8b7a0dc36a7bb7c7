"""``serve --metrics-port``: Prometheus metrics and ``/healthz`` on one loopback port.

Each worker has a registry of its own (not prometheus-client's global one), so several
workers in one process do not collide. Served on ``host:port`` by a small threaded
WSGI server: ``/metrics`` is prometheus-client's own exposition, ``/healthz`` answers
200 ``ok`` or 503 with the reason (``cpworker.health``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from cpworker.api import error_code
from cpworker.health import Health
from cpworker.metrics import WorkerMetrics

POLL_OPERATIONS = frozenset({"PollForJobs", "PollForThirdPartyJobs"})
# From a no-op job to the default one-hour deadline.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class PrometheusMetrics(WorkerMetrics):
    """The worker's Prometheus metrics and health, served once ``start`` is called; the
    port is bound at once, so that a port in use is refused before the worker starts."""

    def __init__(
        self, host: str, port: int, slots: int, stall_after_s: float, emf_lines: bool = False
    ) -> None:
        super().__init__(emf_lines)
        self.health = Health(slots, stall_after_s)
        self.registry = CollectorRegistry()
        by_type = ["action_type"]
        by_call = ["operation", "code"]
        self._received = self._counter("jobs_received", "Jobs polled", by_type)
        self._succeeded = self._counter("jobs_succeeded", "Jobs reported as succeeded", by_type)
        self._failed = self._counter(
            "jobs_failed", "Jobs reported as failed, by failure type", [*by_type, "failure_type"]
        )
        self._continued = self._counter(
            "jobs_continued", "Jobs reported with a continuation", by_type
        )
        self._unreported = self._counter(
            "results_unreported", "Results that could not be reported (sent again later)", by_type
        )
        self._polls = self._counter("polls", "Polls CodePipeline answered", by_type)
        self._empty_polls = self._counter("empty_polls", "Polls answered with no job", by_type)
        self._api_errors = self._counter(
            "api_errors", "CodePipeline calls that failed after their retries", by_call
        )
        self._api_retries = self._counter(
            "api_retries", "CodePipeline call errors that were retried", by_call
        )
        self._duration = Histogram(
            "cpworker_handler_duration_seconds",
            "How long handlers ran (until they returned, died or met their deadline)",
            by_type,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        Gauge("cpworker_slots", "Jobs the worker runs at once", registry=self.registry).set(slots)
        busy = Gauge("cpworker_slots_busy", "Slots holding a job", registry=self.registry)
        busy.set_function(lambda: self.health.busy)
        self._exposition = make_wsgi_app(self.registry)
        self._host = host
        self._server = _bind(host, port, self._app)
        self._thread: threading.Thread | None = None

    def _counter(self, name: str, documentation: str, labels: list[str]) -> Counter:
        return Counter(f"cpworker_{name}", documentation, labels, registry=self.registry)

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cpworker-metrics", daemon=True
        )
        self._thread.start()
        host = f"[{self._host}]" if ":" in self._host else self._host
        return {"metrics": f"http://{host}:{self._server.server_port}/metrics"}

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            answer: Iterable[bytes] = self._exposition(environ, start_response)
            return answer
        if path == "/healthz":
            problem = self.health.problem()
            status = "200 OK" if problem is None else "503 Service Unavailable"
            return _text(start_response, status, "ok" if problem is None else problem)
        return _text(start_response, "404 Not Found", "not found: try /metrics or /healthz")

    # -- the worker's hooks ----------------------------------------------------------------

    def polled(self, action_type: str, jobs: int) -> None:
        self.health.answered()
        self._polls.labels(action_type).inc()
        if jobs == 0:
            self._empty_polls.labels(action_type).inc()

    def job_received(self, action_type: str, job_id: str, deadline: float) -> None:
        self.health.held(job_id, deadline)
        self._received.labels(action_type).inc()

    def slot_freed(self, job_id: str) -> None:
        self.health.freed(job_id)

    def handler_ran(self, action_type: str, seconds: float) -> None:
        self._duration.labels(action_type).observe(seconds)

    def job_reported(
        self, action_type: str, outcome: str, duration_s: float, reported: bool
    ) -> None:
        super().job_reported(action_type, outcome, duration_s, reported)
        if not reported:
            self._unreported.labels(action_type).inc()
        kind, _, failure_type = outcome.partition(":")
        if kind == "success":
            self._succeeded.labels(action_type).inc()
        elif kind == "continue":
            self._continued.labels(action_type).inc()
        else:
            self._failed.labels(action_type, failure_type).inc()

    def api_failed(self, operation: str, error: BaseException) -> None:
        self._api_errors.labels(operation, _code(error)).inc()
        self._heard(operation, error)

    def api_retried(self, operation: str, error: BaseException) -> None:
        self._api_retries.labels(operation, _code(error)).inc()
        self._heard(operation, error)

    def _heard(self, operation: str, error: BaseException) -> None:
        """An error answer to a poll (throttling, say) still shows CodePipeline answers."""
        if operation in POLL_OPERATIONS and isinstance(error, ClientError):
            self.health.answered()


def _code(error: BaseException) -> str:
    """The AWS error code, or the exception's name for an error without an answer."""
    return error_code(error) or type(error).__name__


def _text(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = f"{text}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    """No access log on stderr: a scraper every 15 s would drown the worker's lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _bind(host: str, port: int, app: Any) -> WSGIServer:
    try:
        return make_server(
            host, port, app, server_class=_Server6 if ":" in host else _Server, handler_class=_Quiet
        )
    except OSError as exc:
        raise ValueError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
