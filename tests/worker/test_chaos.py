"""Short chaos runs of ``cpworker serve`` (real subprocesses) against a local CodePipeline:
``kill -9`` and restart, SIGTERM under load, injected faults. Each proves, from the
emulator's own state, that no job is lost, none hangs, and none is reported twice.
``bench/chaos.py`` runs the same scenarios at size and prints the figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import boto3
import pytest
from conftest import APPS_DIR
from cpw_chaos_apps import CHAOS_TIMEOUT_S, FINAL, RESOLVED, TAKEN_OVER, app

from cpworker.local.engine import EngineSettings
from cpworker.local.faults import FaultSettings
from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline
from cpworker.testing import custom_action, pipeline_declaration, upload_source, zip_bytes

pytestmark = pytest.mark.e2e

POLL_MAX_S = 0.5


@pytest.fixture(scope="module")
def chaos_local() -> Iterator[LocalCodePipeline]:
    """A local CodePipeline whose job timeout (10 min) never rescues a job within a test,
    so that a job a worker forgot stays open and shows."""
    settings = EngineSettings(
        continuation_delay_s=0.2, redispatch_after_s=2.0, job_timeout_s=600.0, tick_s=0.05
    )
    with LocalCodePipeline(settings=settings) as server:
        app.register(_client(server, "codepipeline"))
        yield server


def _client(server: LocalCodePipeline, service: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class Chaos:
    """Executions of one pipeline (S3 source → the CpwChaos action), the workers serving
    it, and what the emulator says about its jobs."""

    def __init__(self, server: LocalCodePipeline, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.spy_dir = folder / "spy"
        self.spy_dir.mkdir()
        self.name = f"chaos-{uuid.uuid4().hex[:8]}"
        self.workers: list[Serve] = []
        self.executions = 0

    def start(self, count: int, **configuration: str) -> None:
        """``count`` PARALLEL executions of the chaos action."""
        codepipeline, s3 = _client(self.server, "codepipeline"), _client(self.server, "s3")
        upload_source(s3, f"{self.name}-src", "source.zip", zip_bytes({"README.md": "hi\n"}))
        s3.create_bucket(Bucket=f"{self.name}-store")
        action = custom_action(
            "Chaos",
            provider="CpwChaos",
            category="Test",
            configuration=configuration,
            outputs=("ChaosOutput",) if configuration.get("Artifacts") == "true" else (),
        )
        declaration = pipeline_declaration(
            self.name,
            artifact_bucket=f"{self.name}-store",
            source_bucket=f"{self.name}-src",
            source_key="source.zip",
            actions=[action],
        )
        declaration.update(pipelineType="V2", executionMode="PARALLEL")
        codepipeline.create_pipeline(pipeline=declaration)
        for _ in range(count - 1):
            codepipeline.start_pipeline_execution(name=self.name)
        self.executions = count

    def serve(self, *options: str) -> Serve:
        worker = Serve(self, self.folder / f"serve-{len(self.workers)}.log", *options)
        self.workers.append(worker)
        return worker

    def counts(self) -> dict[str, Any]:
        answer: dict[str, Any] = call_private(
            self.server.endpoint_url, "GetResultCounts", {"pipelineName": self.name}
        )
        return answer

    def final_jobs(self) -> set[str]:
        return {job["jobId"] for job in self.counts()["jobs"] if job["status"] in FINAL}

    def finished(self) -> int:
        """Action executions that accepted a success or a failure."""
        return sum(
            run["accepted"].get("success", 0) + run["accepted"].get("failure", 0) > 0
            for run in self.counts()["actionExecutions"]
        )

    def statuses(self) -> Counter[str]:
        details = _client(self.server, "codepipeline").list_action_executions(
            pipelineName=self.name, maxResults=100
        )["actionExecutionDetails"]
        return Counter(d["status"] for d in details if d["actionName"] == "Chaos")

    def failures(self) -> list[str]:
        details = _client(self.server, "codepipeline").list_action_executions(
            pipelineName=self.name, maxResults=100
        )["actionExecutionDetails"]
        return [
            d["output"]["executionResult"]["errorDetails"]["message"]
            for d in details
            if d["actionName"] == "Chaos" and d["status"] == "Failed"
        ]

    def started_handlers(self) -> Counter[str]:
        """How many times each job's handler started."""
        runs = self.spy_dir / "runs"
        lines = runs.read_text().splitlines() if runs.exists() else []
        return Counter(line.split()[0] for line in lines if line)

    def assert_none_reported_twice(self) -> None:
        counts = self.counts()
        doubled = [job for job in counts["jobs"] if sum(job["accepted"].values()) > 1]
        assert doubled == []
        runs = counts["actionExecutions"]
        ended_twice = [
            run
            for run in runs
            if run["accepted"].get("success", 0) + run["accepted"].get("failure", 0) > 1
        ]
        assert ended_twice == []
        assert [job for job, n in self.started_handlers().items() if n > 1] == []

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


class Serve:
    """One ``cpworker serve`` of the chaos action; its JSON log lines kept in a file."""

    def __init__(self, chaos: Chaos, log_file: Path, *options: str) -> None:
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": chaos.server.endpoint_url,
            "CPW_TEST_SPY_DIR": str(chaos.spy_dir),
        }
        command = [sys.executable, "-m", "cpworker.cli", "serve", "cpw_chaos_apps:app"]
        command += ["--action", "chaos", "--region", "us-east-1"]
        command += ["--poll-min", "0.05", "--poll-max", str(POLL_MAX_S)]
        command += ["--state-dir", str(chaos.folder / "state")]
        command += ["--workspace", str(chaos.folder / "workspaces"), *options]
        self.log_file = log_file
        self._log: IO[bytes] = log_file.open("wb")
        self.process = subprocess.Popen(command, cwd=APPS_DIR, env=env, stderr=self._log)

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for text in self.log_file.read_text(errors="replace").splitlines():
            if text.startswith("{"):
                line = json.loads(text)
                if "message" in line:
                    found.append(line)
        return found

    def jobs(self, *messages: str) -> set[str]:
        wanted = set(messages)
        return {x["job_id"] for x in self.lines() if x["message"] in wanted and "job_id" in x}

    def held(self) -> set[str]:
        """Jobs it acknowledged or took over and did not report (by its own log)."""
        return self.jobs("job acknowledged", *TAKEN_OVER) - self.jobs(*RESOLVED)

    def wait_started(self) -> None:
        """Wait for "worker started" (interpreter start-up is not timed by any test)."""
        wait_until(
            lambda: any(x["message"] == "worker started" for x in self.lines()),
            60.0,
            lambda: f"no 'worker started':\n{self.log_file.read_text()}",
            self,
        )

    def signal(self, sig: signal.Signals, timeout_s: float = 30.0) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    explain: Callable[[], str],
    worker: Serve | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"the worker exited: {explain()}")
        if time.monotonic() > deadline:
            raise AssertionError(explain())
        time.sleep(0.05)


@pytest.fixture
def chaos(chaos_local: LocalCodePipeline, tmp_path: Path) -> Iterator[Chaos]:
    run = Chaos(chaos_local, tmp_path)
    yield run
    chaos_local.set_faults(None)
    run.stop()


def running_handlers(chaos: Chaos, worker: Serve) -> set[str]:
    """Jobs of ``worker`` whose handler has started and that it has not reported."""
    return worker.held() & set(chaos.started_handlers())


def test_kill_9_at_random_moments_loses_hangs_and_doubles_no_job(chaos: Chaos) -> None:
    rng = random.Random()
    worker = chaos.serve()
    worker.wait_started()
    chaos.start(10, Seconds="2", Steps="1")
    held: set[str] = set()
    for _ in range(2):
        # A random moment once the worker holds a job: claiming, acknowledging, starting
        # its handler or running it.
        wait_until(lambda worker=worker: bool(worker.held()), 30.0, lambda: "no job", worker)
        time.sleep(rng.uniform(0.0, 0.3))
        worker.signal(signal.SIGKILL)
        victim_held = worker.held()
        held |= victim_held
        worker = chaos.serve()  # the same --state-dir
        worker.wait_started()
        # Each job the dead worker held ends by its deadline plus a poll interval.
        bound = CHAOS_TIMEOUT_S + POLL_MAX_S + 1.0
        wait_until(
            lambda victim_held=victim_held: victim_held <= chaos.final_jobs(),
            bound,
            lambda victim_held=victim_held: f"hung: {victim_held - chaos.final_jobs()}",
        )
    assert held, "no kill caught a running job"
    wait_until(lambda: chaos.finished() == 10, 60.0, lambda: f"lost: {10 - chaos.finished()} of 10")
    assert chaos.statuses() == {"Succeeded": 10}
    taken_over = {job for w in chaos.workers for job in w.jobs(*TAKEN_OVER)}
    assert held <= taken_over | chaos.final_jobs()
    assert taken_over, "a restart resolved the jobs of a killed worker"
    chaos.assert_none_reported_twice()


def test_sigterm_under_load_hands_steps_to_another_worker_and_fails_none(
    chaos: Chaos,
) -> None:
    first = chaos.serve("--drain-timeout", "0.5")
    first.wait_started()
    chaos.start(6, Seconds="3", Steps="1")
    wait_until(lambda: bool(running_handlers(chaos, first)), 30.0, lambda: "no job started", first)
    second = chaos.serve()
    second.wait_started()
    held = first.held()
    assert first.signal(signal.SIGTERM) == 0
    # Every job of the stopped worker is resolved by the time it has exited.
    assert held <= chaos.final_jobs()
    stopped = [x for x in first.lines() if x["message"] == "worker stopped"]
    assert stopped[0]["handed_back"] >= 1
    handed = {
        x["job_id"]
        for x in first.lines()
        if x["message"] == "result reported" and x["outcome"] == "continue"
    }
    assert len(handed) == stopped[0]["handed_back"]
    wait_until(lambda: chaos.finished() == 6, 60.0, lambda: f"lost: {6 - chaos.finished()} of 6")
    assert chaos.statuses() == {"Succeeded": 6}, chaos.failures()
    # The handed-back steps ran again on the other worker (a continuation job each).
    jobs = chaos.counts()["jobs"]
    handed_back = {job["actionExecutionId"] for job in jobs if job["jobId"] in handed}
    resumed = second.jobs("job acknowledged")
    assert handed_back <= {job["actionExecutionId"] for job in jobs if job["jobId"] in resumed}
    chaos.assert_none_reported_twice()


def test_throttling_5xx_and_resets_on_every_request_end_each_job_once(
    chaos: Chaos, chaos_local: LocalCodePipeline
) -> None:
    chaos.start(10, Seconds="0.05", Steps="2", Artifacts="true")
    chaos_local.set_faults(FaultSettings(throttle=0.2, server_error=0.05, reset=0.05))
    workers = [chaos.serve(), chaos.serve()]
    for worker in workers:
        worker.wait_started()
    wait_until(lambda: chaos.finished() == 10, 50.0, lambda: f"lost: {10 - chaos.finished()} of 10")
    chaos_local.set_faults(None)
    chaos.assert_none_reported_twice()
    # A fault answers before the engine sees the request: a job that received two result
    # requests was reported twice by the worker.
    received = [sum(job["received"].values()) for job in chaos.counts()["jobs"]]
    assert set(received) == {1}
    retried = [x for w in workers for x in w.lines() if x["message"].startswith("Retrying")]
    assert retried, "faults were injected"
    assert chaos.statuses() == {"Succeeded": 10}, chaos.failures()
