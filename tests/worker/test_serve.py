"""``cpworker serve`` as a real subprocess: drain on SIGTERM, racing workers, no leaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import APPS_DIR, Run

from cpworker.local.server import LocalCodePipeline

pytestmark = pytest.mark.e2e
StartPipeline = Callable[..., Run]


class Serve:
    """A running ``cpworker serve`` whose JSON log lines are kept."""

    def __init__(self, local: LocalCodePipeline, spy_dir: Path, log_file: Path, *args: str):
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": local.endpoint_url,
            "CPW_TEST_SPY_DIR": str(spy_dir),
        }
        command = [sys.executable, "-m", "cpworker.cli", "serve", "cpw_test_apps:app"]
        command += ["--poll-min", "0.05", "--poll-max", "0.2", "--region", "us-east-1"]
        command += ["--state-dir", str(log_file.parent / "state"), *args]
        self.log_file = log_file
        self._log: IO[bytes] = log_file.open("wb")
        self.process = subprocess.Popen(command, cwd=APPS_DIR, env=env, stderr=self._log)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]

    def wait_for(self, message: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(line.get("message") == message for line in self.lines()):
                return
            assert self.process.poll() is None, self.log_file.read_text()
            time.sleep(0.05)
        raise AssertionError(f"no {message!r} in:\n{self.log_file.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def serve(
    local: LocalCodePipeline, spy_dir: Path, tmp_path: Path, registered: None
) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        process = Serve(local, spy_dir, tmp_path / f"serve-{len(started)}.log", *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_sigterm_lets_the_running_job_finish_then_exits_zero(
    serve: Callable[..., Serve], start_pipeline: StartPipeline
) -> None:
    worker = serve("--action", "sleep", "--drain-timeout", "20")
    run = start_pipeline("CpwSleep", {"Seconds": "2"})
    worker.wait_for("job acknowledged")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=20) == 0
    assert run.wait()["status"] == "Succeeded"
    messages = [line["message"] for line in worker.lines()]
    assert messages.index("worker stopping") < messages.index("result reported")
    assert messages[-1] == "worker stopped"


def test_drain_timeout_fails_the_unfinished_job_instead_of_leaving_it_hanging(
    serve: Callable[..., Serve], start_pipeline: StartPipeline
) -> None:
    worker = serve("--action", "sleep", "--drain-timeout", "0.5")
    run = start_pipeline("CpwSleep", {"Seconds": "30"})
    worker.wait_for("job acknowledged")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=10) == 0
    assert run.wait()["status"] == "Failed"
    error = run.action_state()["errorDetails"]
    assert error["code"] == "SystemUnavailable"
    assert "drain timeout" in error["message"]


def test_second_signal_exits_at_once(
    serve: Callable[..., Serve], start_pipeline: StartPipeline
) -> None:
    worker = serve("--action", "sleep", "--drain-timeout", "60")
    start_pipeline("CpwSleep", {"Seconds": "30"})
    worker.wait_for("job acknowledged")
    worker.process.send_signal(signal.SIGTERM)
    worker.wait_for("worker stopping")
    started = time.monotonic()
    worker.process.send_signal(signal.SIGINT)
    assert worker.process.wait(timeout=5) == 128 + signal.SIGINT
    assert time.monotonic() - started < 5


def test_two_workers_race_and_each_job_runs_exactly_once(
    serve: Callable[..., Serve], start_pipeline: StartPipeline, spy_dir: Path
) -> None:
    workers = [serve("--action", "sleep", "--concurrency", "3") for _ in range(2)]
    runs = [start_pipeline("CpwSleep", {"Seconds": "0.3"}) for _ in range(8)]
    assert [run.wait(timeout_s=60)["status"] for run in runs] == ["Succeeded"] * 8
    job_ids = (spy_dir / "runs").read_text().split()
    assert len(job_ids) == 8
    assert len(set(job_ids)) == 8
    reported = [
        line["job_id"]
        for worker in workers
        for line in worker.lines()
        if line.get("message") == "result reported"
    ]
    assert sorted(reported) == sorted(job_ids)


def test_credentials_and_secret_configuration_never_reach_logs_or_messages(
    serve: Callable[..., Serve], start_pipeline: StartPipeline, spy_dir: Path
) -> None:
    worker = serve("--action", "leaky", "--log-level", "DEBUG")
    password = "correct-horse-battery-staple"
    run = start_pipeline("CpwLeaky", {"Target": "db.internal", "Password": password})
    assert run.wait()["status"] == "Failed"
    worker.wait_for("result reported")
    secrets = (spy_dir / "secrets").read_text().split()
    assert password in secrets
    assert len(secrets) == 4, "the password and the three artifact credentials"
    message = run.action_state()["errorDetails"]["message"]
    assert message.startswith("RuntimeError: login to db.internal with ****")
    log_text = worker.log_file.read_text()
    assert "logging in to db.internal with ****" in log_text
    for secret in secrets:
        assert secret not in log_text
        assert secret not in message
