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
from conftest import APPS_DIR, Run, assert_leaky_masked, stopped, until

from cpworker.local.server import LocalCodePipeline

pytestmark = pytest.mark.e2e
StartPipeline = Callable[..., Run]


class Serve:
    """A running ``cpworker serve`` whose JSON log lines are kept."""

    def __init__(
        self,
        local: LocalCodePipeline,
        spy_dir: Path,
        log_file: Path,
        *args: str,
        app: str = "cpw_test_apps:app",
        state_dir: Path | None = None,
    ):
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": local.endpoint_url,
            "CPW_TEST_SPY_DIR": str(spy_dir),
        }
        command = [sys.executable, "-m", "cpworker.cli", "serve", app]
        command += ["--poll-min", "0.05", "--poll-max", "0.2", "--region", "us-east-1"]
        command += ["--state-dir", str(state_dir or log_file.parent / "state"), *args]
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

    def start(*args: str, **options: Any) -> Serve:
        process = Serve(local, spy_dir, tmp_path / f"serve-{len(started)}.log", *args, **options)
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
    assert password in (spy_dir / "secrets").read_text().split()
    assert_leaky_masked(
        run.action_state()["errorDetails"]["message"], worker.log_file.read_text(), spy_dir
    )
    # The traceback crossed from the job's process, structured as for any other line
    raised = next(
        line for line in worker.lines() if line["message"] == "handler raised RuntimeError"
    )
    assert raised["exception_name"] == "RuntimeError"
    assert raised["exception"].startswith("Traceback (most recent call last):")
    assert raised["pipeline"] == run.name


# -- recovery: kill -9, restart, hand-back ---------------------------------------------------

FAULTS = "cpw_fault_apps:app"


def _lines_in(path: Path, count: int) -> list[str]:
    """Wait until the spy file ``path`` has ``count`` lines; returns them."""

    def lines() -> list[str]:
        found = path.read_text().splitlines() if path.exists() else []
        return found if len(found) >= count else []

    result: list[str] = until(lines, what=f"{path.name} to reach {count} lines")
    return result


def _kill_9_mid_job(
    serve: Callable[..., Serve], state: Path, action: str, start: Callable[[], Run], spy: Path
) -> tuple[Serve, Run]:
    """A worker on ``state`` runs the job ``start()`` makes; SIGKILL once ``spy`` says it runs."""
    worker = serve("--action", action, app=FAULTS, state_dir=state)
    run = start()
    _lines_in(spy, 1)
    worker.process.kill()
    worker.process.wait()
    return worker, run


def test_kill_9_then_restart_fails_the_orphaned_job_with_the_reason(
    serve: Callable[..., Serve],
    start_pipeline: StartPipeline,
    spy_dir: Path,
    tmp_path: Path,
    fault_types: None,
) -> None:
    # Given a worker killed with SIGKILL while its job runs
    state = tmp_path / "shared-state"
    first, run = _kill_9_mid_job(
        serve,
        state,
        "polite",
        lambda: start_pipeline("CpwPolite", {"Tag": "kill9"}),
        spy_dir / "started-kill9",
    )
    # When a worker starts again on the same state directory
    second = serve("--action", "hang", app=FAULTS, state_dir=state)
    # Then the job fails at once, saying what happened, instead of hanging for a day
    assert run.wait()["status"] == "Failed"
    error = run.action_state()["errorDetails"]
    assert error["code"] == "SystemUnavailable"
    assert error["message"].startswith("the worker stopped unexpectedly while running this job")
    assert f"pid {first.process.pid}); run the action again" in error["message"]
    second.wait_for("resolving a job of a worker that stopped unexpectedly")


def test_kill_9_then_restart_hands_an_on_shutdown_continue_step_back(
    serve: Callable[..., Serve],
    start_pipeline: StartPipeline,
    spy_dir: Path,
    tmp_path: Path,
    fault_types: None,
) -> None:
    state = tmp_path / "shared-state"
    attempts = spy_dir / "attempts-kill9"
    _, run = _kill_9_mid_job(
        serve, state, "hand_back", lambda: start_pipeline("CpwHandBack", {"Tag": "kill9"}), attempts
    )
    serve("--action", "hand_back", app=FAULTS, state_dir=state)
    assert run.wait()["status"] == "Succeeded"
    assert run.action_state()["summary"] == "finished step 2 after a hand-back"
    first_attempt, second_attempt = (line.split()[0] for line in _lines_in(attempts, 2))
    assert first_attempt != second_attempt
    until(lambda: stopped(int(first_attempt)), what="the first attempt's process to end")


def test_sigterm_hands_an_on_shutdown_continue_job_to_another_worker(
    serve: Callable[..., Serve], start_pipeline: StartPipeline, spy_dir: Path, fault_types: None
) -> None:
    # Given a worker whose job would run longer than its drain timeout
    stopping = serve("--action", "hand_back", "--drain-timeout", "0.5", app=FAULTS)
    run = start_pipeline("CpwHandBack", {"Tag": "sigterm"})
    first_pid = int(_lines_in(spy_dir / "attempts-sigterm", 1)[0].split()[0])
    other = serve("--action", "hand_back", app=FAULTS)
    other.wait_for("worker started")
    # When it is told to stop
    stopping.process.send_signal(signal.SIGTERM)
    # Then it hands the step back and exits within its drain and report budget
    assert stopping.process.wait(timeout=20) == 0
    ends = [line for line in stopping.lines() if line.get("message") == "worker stopped"]
    assert ends[0]["handed_back"] == 1
    # And the other worker runs the step again from its last state, in a new process
    assert run.wait()["status"] == "Succeeded"
    assert run.action_state()["summary"] == "finished step 2 after a hand-back"
    second_pid = int(_lines_in(spy_dir / "attempts-sigterm", 2)[1].split()[0])
    assert second_pid != first_pid
    until(lambda: stopped(first_pid), what="the handed-back job's process to end")


def test_running_jobs_see_is_shutting_down_and_can_continue_themselves(
    serve: Callable[..., Serve], start_pipeline: StartPipeline, spy_dir: Path, fault_types: None
) -> None:
    worker = serve("--action", "polite", "--drain-timeout", "20", app=FAULTS)
    run = start_pipeline("CpwPolite", {"Tag": "polite"})
    _lines_in(spy_dir / "started-polite", 1)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=20) == 0
    outcomes = [
        line.get("outcome") for line in worker.lines() if line.get("message") == "result reported"
    ]
    assert outcomes == ["continue"]
    assert run.action_state()["summary"] == "saw is_shutting_down()"


def test_a_planted_workspace_root_is_refused_with_one_line(
    local: LocalCodePipeline, tmp_path: Path, spy_dir: Path, registered: None
) -> None:
    # Given a workspace root that someone replaced with a link to their own directory
    theirs = tmp_path / "attacker"
    theirs.mkdir()
    planted = tmp_path / "root"
    planted.symlink_to(theirs)
    options = ("--action", "sleep", "--workspace", str(planted))
    worker = Serve(local, spy_dir, tmp_path / "serve.log", *options)
    # Then the worker refuses to start, says why in one line, and writes nothing there
    assert worker.process.wait(timeout=60) == 2
    text = worker.log_file.read_text().strip()
    worker.stop()
    assert text.splitlines()[-1] == (
        f"cpworker serve: workspace root {planted} is a symbolic link (to {theirs}): "
        "remove it, or choose another workspace root (--workspace)"
    )
    assert list(theirs.iterdir()) == []
