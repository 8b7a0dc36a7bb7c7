"""Prometheus metrics and /healthz of a worker, fetched over HTTP on 127.0.0.1; EMF lines
and text logs of a real ``cpworker serve``."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS_DIR, Run, local_codepipeline, until
from cpw_metrics_apps import app as metrics_app
from prometheus_client.parser import text_string_to_metric_families

from cpworker.api import CodePipelineAPI
from cpworker.local.faults import FaultSettings
from cpworker.local.server import LocalCodePipeline
from cpworker.prometheus import PrometheusMetrics
from cpworker.worker import Worker, WorkerSettings

StartPipeline = Callable[..., Run]
StartWorker = Callable[..., Worker]
METERED = "Test/Custom/CpwMetered/1"
OUTCOMES = ("success", "success", "continue", "fail")
# Five jobs: the continue action takes two.
EXPECTED = {
    ("cpworker_jobs_received_total", ()): 5,
    ("cpworker_jobs_succeeded_total", ()): 3,
    ("cpworker_jobs_continued_total", ()): 1,
    ("cpworker_jobs_failed_total", (("failure_type", "JobFailed"),)): 1,
    ("cpworker_handler_duration_seconds_count", ()): 5,
}


@pytest.fixture(scope="module")
def metered(local: LocalCodePipeline) -> None:
    """The metered action's type exists in the local CodePipeline."""
    metrics_app.register(local_codepipeline(local))


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and labels (``action_type`` left out)."""
    with urllib.request.urlopen(url) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {**sample.labels}
            if labels.pop("action_type", METERED) != METERED:
                continue
            samples[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return samples


def job_counts(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = scrape(url)
    return {key: samples.get(key, 0) for key in EXPECTED}


def healthz(metrics_url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(metrics_url.replace("/metrics", "/healthz")) as answer:
            return answer.status, answer.read().decode().strip()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode().strip()


def metrics_url(log: io.StringIO) -> str:
    """The metrics address the "worker started" line gives."""

    def started() -> str | None:
        for line in log.getvalue().splitlines():
            record = json.loads(line)
            if record["message"] == "worker started":
                return str(record["metrics"])
        return None

    url: str = until(started, what="the worker started")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url), url
    return url


def run_outcomes(start_pipeline: StartPipeline) -> None:
    runs = [start_pipeline("CpwMetered", {"Outcome": outcome}) for outcome in OUTCOMES]
    statuses = [run.wait()["status"] for run in runs]
    assert statuses == ["Succeeded", "Succeeded", "Succeeded", "Failed"]


def test_metrics_count_the_jobs_the_worker_ran(
    start_pipeline: StartPipeline, worker: StartWorker, metered: None, json_lines: io.StringIO
) -> None:
    worker("metered", serve=metrics_app, metrics_port=0)
    url = metrics_url(json_lines)
    run_outcomes(start_pipeline)
    # A job's result lands before the worker counts it: wait for the last one.
    until(lambda: job_counts(url) == EXPECTED, what=f"the counts {EXPECTED}")
    samples = scrape(url)
    assert samples[("cpworker_polls_total", ())] > samples[("cpworker_empty_polls_total", ())] > 0
    assert samples[("cpworker_slots", ())] == 4
    until(lambda: scrape(url)[("cpworker_slots_busy", ())] == 0, what="every slot free")
    assert healthz(url) == (200, "ok")


def test_healthz_turns_unhealthy_when_codepipeline_stops_answering(
    local: LocalCodePipeline, worker: StartWorker, metered: None, json_lines: io.StringIO
) -> None:
    worker("metered", serve=metrics_app, metrics_port=0)
    url = metrics_url(json_lines)
    assert healthz(url) == (200, "ok")
    polls = frozenset({"PollForJobs"})
    throttled = (
        "cpworker_api_errors_total",
        (("code", "ThrottlingException"), ("operation", "PollForJobs")),
    )
    retried = ("cpworker_api_retries_total", throttled[1])
    try:
        # Throttled: CodePipeline still answers, and the retries are counted
        local.set_faults(FaultSettings(throttle=1.0, operations=polls))
        until(lambda: scrape(url).get(throttled, 0) >= 1, what="a poll failed by throttling")
        assert scrape(url)[retried] >= 2, "each poll is tried 3 times"
        assert healthz(url) == (200, "ok")
        # No answer at all: every poll's connection is reset
        local.set_faults(FaultSettings(reset=1.0, operations=polls))
        status, reason = until(
            lambda: (answer := healthz(url))[0] != 200 and answer,
            timeout_s=60,
            what="/healthz unhealthy",
        )
        assert status == 503
        assert re.fullmatch(
            r"poll loop stalled: no poll answered by CodePipeline for \d+ s \(limit 11 s\)", reason
        ), reason
    finally:
        local.set_faults(None)
    until(lambda: healthz(url) == (200, "ok"), what="healthy again")


def test_healthz_is_unhealthy_when_every_slot_is_held_past_its_deadline() -> None:
    metrics = PrometheusMetrics("127.0.0.1", 0, slots=2, stall_after_s=600)
    url = metrics.start()["metrics"]
    try:
        long_ago, later = time.monotonic() - 1000, time.monotonic() + 3600
        metrics.job_received(METERED, "a", deadline=long_ago)
        metrics.job_received(METERED, "b", deadline=later)
        assert healthz(url) == (200, "ok"), "one slot is still within its deadline"
        metrics.slot_freed("b")
        metrics.job_received(METERED, "c", deadline=long_ago)
        assert healthz(url) == (503, "every slot (2) is held past its job's deadline")
        metrics.slot_freed("c")
        assert healthz(url) == (200, "ok")
        assert scrape(url)[("cpworker_slots_busy", ())] == 1
    finally:
        metrics.close()


def test_a_metrics_port_in_use_or_emf_without_namespace_is_refused_before_the_worker_starts(
    aws: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = CodePipelineAPI(aws("codepipeline"))
    specs = metrics_app.select(["metered"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = WorkerSettings(isolation="thread", metrics_port=port, state_dir=tmp_path)
        with pytest.raises(ValueError, match=rf"^cannot serve metrics on 127\.0\.0\.1:{port}: "):
            Worker(api, specs, settings)
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    with pytest.raises(ValueError, match="set POWERTOOLS_METRICS_NAMESPACE"):
        Worker(api, specs, WorkerSettings(isolation="thread", emf=True, state_dir=tmp_path))


@pytest.mark.e2e
def test_serve_with_metrics_port_0_emf_and_text_logs(
    local: LocalCodePipeline, start_pipeline: StartPipeline, metered: None, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": local.endpoint_url,
        "POWERTOOLS_METRICS_NAMESPACE": "cpworker-tests",
    }
    command = [sys.executable, "-m", "cpworker.cli", "serve", "cpw_metrics_apps:app"]
    command += ["--poll-min", "0.05", "--poll-max", "0.2", "--region", "us-east-1"]
    command += ["--state-dir", str(tmp_path / "state"), "--log-format", "text"]
    command += ["--metrics-port", "0", "--emf"]
    log, emf = tmp_path / "serve.log", tmp_path / "serve.out"
    with log.open("wb") as stderr, emf.open("wb") as stdout:
        process = subprocess.Popen(command, cwd=APPS_DIR, env=env, stdout=stdout, stderr=stderr)
    try:

        def started() -> str | None:
            assert process.poll() is None, log.read_text()
            found = re.search(r" worker started .*metrics=(\S+)", log.read_text())
            return found and found.group(1)

        url = until(started, what="the worker started")
        run_outcomes(start_pipeline)
        until(lambda: job_counts(url) == EXPECTED, what=f"the counts {EXPECTED}")
        assert healthz(url) == (200, "ok")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = log.read_text().splitlines()
    first = next(line for line in lines if " worker started " in line)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO     worker started actions=\[.*\] "
        r"concurrency=4 isolation=process worker=\S+ metrics=http://127\.0\.0\.1:\d+/metrics",
        first,
    ), first
    reported = [line for line in lines if " result reported " in line]
    assert len(reported) == 5
    assert all(re.search(r" job_id=[-0-9a-f]+ .*outcome=\S+ ", line) for line in reported)
    totals: dict[str, float] = {}
    for line in emf.read_text().splitlines():
        document = json.loads(line)
        assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "cpworker-tests"
        for name in ("Jobs", "JobSuccess", "JobContinue", "JobFailure", "ReportFailed"):
            totals[name] = totals.get(name, 0) + sum(document.get(name, []))
    assert totals == {
        "Jobs": 5,
        "JobSuccess": 3,
        "JobContinue": 1,
        "JobFailure": 1,
        "ReportFailed": 0,
    }


def test_only_serve_with_a_metrics_port_loads_prometheus_client(tmp_path: Path) -> None:
    modules = "cpworker, cpworker.cli, cpworker.worker, cpworker.sources.lambda_runtime"
    code = f"import sys, {modules}; print('prometheus_client' in sys.modules)"
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "False"
