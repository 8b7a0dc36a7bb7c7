"""Chaos runs of ``cpworker serve`` against ``cpworker local``: lost, hung and doubled jobs.

Each run starts its own ``cpworker local`` (a subprocess on a free loopback port,
``--job-timeout 3600`` so that the emulator's own timeout never ends a job within
a run) and two ``cpworker serve`` workers (subprocesses, 4 slots each, one shared
``--state-dir``), on one pipeline in PARALLEL execution mode: an S3 source, then the
``CpwChaos`` action of ``tests/worker/cpw_chaos_apps.py`` (deadline 10 s per step,
``on_shutdown="continue"``). One job is one action execution; a hand-back adds a
continuation job to it.

R1  ``kill -9`` of a worker at random moments (every 1-5 s, start-up included), and
    an immediate restart with the same ``--state-dir``.
R2  SIGTERM of a worker under load (``--drain-timeout 0.5`` against 1-3 s steps, so
    running steps are handed back), then a restart; the other worker goes on.
R3  ``cpworker local --faults throttle=0.3,5xx=0.1,reset=0.05`` on every CodePipeline
    and S3 request of the workers (and of this script), each step reading the input
    artifact and the last one uploading an output artifact.

Figures, from the emulator's state, never from the workers' word:

- lost: action executions that never got a final state (the run stops waiting after
  ``--stall`` s without progress), or that the emulator timed out (JobTimedOut).
- hung: jobs a stopped worker held (acknowledged, or taken over from a dead worker,
  and not reported, by its own log) that were still open later than they may be:
  R1, ``deadline + --poll-max`` after the first restart that lived that long
  (checked every 0.5 s, the sampling interval of ``CpworkerLocal.GetResultCounts``);
  R2, when the stopped worker had exited; R3, acknowledged jobs still open at the end
  (a worker gave up reporting them: only a restart or the job timeout would end them).
- reported twice: jobs that accepted more than one result, and action executions
  that accepted more than one success or failure (``GetResultCounts``). Result
  requests that the emulator refused (a restarted worker sending again a result
  that had landed) are counted apart: they change nothing.

Run: ``.venv/bin/python bench/chaos.py [--only R1,R3] [--r1-jobs 500] ...`` (``--help``).
It prints; it asserts nothing. The default run takes about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "worker"
sys.path.insert(0, str(APPS))

from cpw_chaos_apps import CHAOS_TIMEOUT_S, FINAL, RESOLVED, TAKEN_OVER, app  # noqa: E402

from cpworker.local.private import call_private  # noqa: E402
from cpworker.testing import custom_action, pipeline_declaration, upload_source, zip_bytes  # noqa: E402

REGION = "us-east-1"
SAMPLE_S = 0.5


def aws_environment(**extra: str) -> dict[str, str]:
    """This environment without any real AWS setting: dummy keys, no profile or files."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto's dummy
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        **extra,
    )
    return env


def timestamp(line: dict[str, Any]) -> float:
    """A JSON log line's time (Powertools: ``2025-01-31 12:00:00,123+0000``), epoch s."""
    return datetime.strptime(line["timestamp"], "%Y-%m-%d %H:%M:%S,%f%z").timestamp()


# -- the emulator ------------------------------------------------------------------------------


class Emulator:
    """``cpworker local`` as a subprocess on a free loopback port."""

    def __init__(self, folder: Path, *options: str) -> None:
        self.log_file = folder / "local.log"
        self._log = self.log_file.open("wb")
        command = [sys.executable, "-m", "cpworker.cli", "local", "--port", "0", *options]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, env=aws_environment(), text=True
        )
        assert self.process.stdout is not None
        # No timeout here: it would cover interpreter start-up; EOF means it died.
        for line in self.process.stdout:
            if line.startswith("cpworker local ready at "):
                self.endpoint_url = line.split()[-1]
                break
        else:
            raise RuntimeError(f"cpworker local did not start:\n{self.log_file.read_text()}")

    def counts(self, pipeline: str) -> dict[str, Any]:
        """``CpworkerLocal.GetResultCounts`` of one pipeline (never faulted)."""
        answer: dict[str, Any] = call_private(
            self.endpoint_url, "GetResultCounts", {"pipelineName": pipeline}, timeout_s=60
        )
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def clients(endpoint_url: str) -> tuple[Any, Any]:
    """CodePipeline and S3 clients for this script, retrying hard (R3 faults them too;
    legacy mode, because the standard mode's retry quota runs dry at these fault rates)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "legacy", "max_attempts": 15}, read_timeout=60)
    common: dict[str, Any] = {
        "endpoint_url": endpoint_url,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    codepipeline = boto3.client("codepipeline", config=config, **common)
    s3_config = config.merge(Config(s3={"addressing_style": "path"}))
    return codepipeline, boto3.client("s3", config=s3_config, **common)


def create_executions(
    codepipeline: Any, s3: Any, name: str, count: int, action: dict[str, Any]
) -> None:
    """One PARALLEL pipeline (S3 source → ``action``) and ``count`` executions of it."""
    upload_source(s3, f"{name}-src", "source.zip", zip_bytes({"README.md": "chaos\n"}))
    s3.create_bucket(Bucket=f"{name}-store")
    declaration = pipeline_declaration(
        name,
        artifact_bucket=f"{name}-store",
        source_bucket=f"{name}-src",
        source_key="source.zip",
        actions=[action],
    )
    declaration.update(pipelineType="V2", executionMode="PARALLEL")
    codepipeline.create_pipeline(pipeline=declaration)  # starts the first execution
    for _ in range(count - 1):
        codepipeline.start_pipeline_execution(name=name)


def action_executions(codepipeline: Any, name: str, action: str) -> list[dict[str, Any]]:
    """Every execution of ``action`` in pipeline ``name`` (ListActionExecutions, all pages)."""
    found: list[dict[str, Any]] = []
    request: dict[str, Any] = {"pipelineName": name, "maxResults": 100}
    while True:
        page = codepipeline.list_action_executions(**request)
        found += [d for d in page["actionExecutionDetails"] if d["actionName"] == action]
        if not page.get("nextToken"):
            return found
        request["nextToken"] = page["nextToken"]


# -- workers -----------------------------------------------------------------------------------


class Serve:
    """One ``cpworker serve`` process; its JSON log lines are kept in a file."""

    def __init__(
        self, endpoint_url: str, log_file: Path, *options: str, spy_dir: Path | None = None
    ) -> None:
        self.log_file = log_file
        self._log: IO[bytes] = log_file.open("wb")
        command = [sys.executable, "-m", "cpworker.cli", "serve", "cpw_chaos_apps:app"]
        command += ["--endpoint-url", endpoint_url, "--region", REGION, *options]
        extra = {"CPW_TEST_SPY_DIR": str(spy_dir)} if spy_dir else {}
        self.process = subprocess.Popen(
            command,
            cwd=APPS,
            env=aws_environment(**extra),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self.stopped_at: float | None = None

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for text in self.log_file.read_text(errors="replace").splitlines():
            with suppress(ValueError):
                line = json.loads(text)
                if isinstance(line, dict) and "message" in line:
                    found.append(line)
        return found

    def started_at(self) -> float | None:
        """When it logged "worker started" (epoch s), if it has."""
        return next((timestamp(x) for x in self.lines() if x["message"] == "worker started"), None)

    def wait_started(self, timeout_s: float = 120.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            started = self.started_at()
            if started is not None:
                return started
            if self.process.poll() is not None:
                raise RuntimeError(f"cpworker serve exited:\n{self.log_file.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"no 'worker started' in {timeout_s:g} s:\n{self.log_file.read_text()}")

    def jobs(self, *messages: str) -> set[str]:
        wanted = set(messages)
        return {x["job_id"] for x in self.lines() if x["message"] in wanted and "job_id" in x}

    def held(self) -> set[str]:
        """Jobs it acknowledged or took over from a dead worker, and did not report."""
        return self.jobs("job acknowledged", *TAKEN_OVER) - self.jobs(*RESOLVED)

    def unclaimed(self) -> set[str]:
        """Jobs it polled and never acknowledged (the emulator hands them out again)."""
        claimed = ("job acknowledged", "job taken by another worker", "acknowledge failed")
        return self.jobs("job received") - self.jobs(*claimed)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status."""
        self.process.send_signal(sig)
        status = self.process.wait(timeout=120)
        self.stopped_at = time.time()
        self._log.close()
        return status


class Fleet:
    """Worker slots, each running one ``cpworker serve`` at a time; every instance kept."""

    def __init__(self, emulator: Emulator, folder: Path, slots: int, *options: str) -> None:
        self.emulator = emulator
        self.folder = folder
        self.options = options
        self.spy_dir = folder / "spy"
        self.spy_dir.mkdir(exist_ok=True)
        self.instances: list[Serve] = []
        self.current = [self._spawn(slot) for slot in range(slots)]

    def _spawn(self, slot: int) -> Serve:
        log_file = self.folder / f"serve-{slot}-{len(self.instances)}.log"
        serve = Serve(self.emulator.endpoint_url, log_file, *self.options, spy_dir=self.spy_dir)
        self.instances.append(serve)
        return serve

    def restart(self, slot: int) -> Serve:
        self.current[slot] = self._spawn(slot)
        return self.current[slot]

    def stop_all(self) -> None:
        for serve in self.current:
            if serve.process.poll() is None:
                serve.wait_started()
                serve.kill(signal.SIGTERM)

    def close(self) -> None:
        """SIGKILL whatever still runs (after an error)."""
        for serve in self.current:
            if serve.process.poll() is None:
                serve.kill()

    def grep(self, message: str) -> list[dict[str, Any]]:
        return [x for serve in self.instances for x in serve.lines() if x["message"] == message]

    def handler_runs(self) -> Counter[str]:
        """How many times each job's handler started (the spy file of the chaos action)."""
        runs = self.spy_dir / "runs"
        text = runs.read_text() if runs.exists() else ""
        return Counter(line.split()[0] for line in text.splitlines() if line)


# -- watching the emulator -----------------------------------------------------------------------


class Monitor(threading.Thread):
    """Samples GetResultCounts every ``SAMPLE_S``: when each job was first seen final,
    and when the number of finished action executions last changed."""

    def __init__(self, emulator: Emulator, pipeline: str) -> None:
        super().__init__(daemon=True)
        self.emulator = emulator
        self.pipeline = pipeline
        self.first_final: dict[str, float] = {}
        self.progress_at = time.time()
        self._finished = 0
        self._halt = threading.Event()
        self._sampled = threading.Condition()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(SAMPLE_S)

    def sample(self) -> dict[str, Any]:
        counts = self.emulator.counts(self.pipeline)
        now = time.time()
        with self._sampled:
            for job in counts["jobs"]:
                if job["status"] in FINAL:
                    self.first_final.setdefault(job["jobId"], now)
            finished = len(finished_executions(counts))
            if finished != self._finished:
                self._finished, self.progress_at = finished, now
            self._sampled.notify_all()
        return counts

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def finished(self) -> int:
        """Action executions with a final result (success, failure, or a timed-out job)."""
        return self._finished

    def over(self, total: int, stall_s: float) -> bool:
        """All ``total`` executions finished, or none finished for ``stall_s``."""
        return self._finished >= total or time.time() - self.progress_at > stall_s

    def wait(self, done: Callable[[], bool], timeout_s: float | None = None) -> bool:
        """Until ``done()`` (checked at each sample) or ``timeout_s``; whether it is done."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._sampled:
            while not done():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._sampled.wait(left)
        return True

    def wait_all(self, total: int, stall_s: float) -> None:
        self.wait(lambda: self.over(total, stall_s))

    def disrupt(
        self,
        total: int,
        stall_s: float,
        every: tuple[float, float],
        rng: random.Random,
        act: Callable[[], None],
    ) -> None:
        """``act()`` every ``every`` s (uniform at random) until the run is over."""
        while not self.wait(lambda: self.over(total, stall_s), rng.uniform(*every)):
            act()


def finished_executions(counts: dict[str, Any]) -> set[str]:
    done = {
        run["actionExecutionId"]
        for run in counts["actionExecutions"]
        if run["accepted"].get("success", 0) + run["accepted"].get("failure", 0) > 0
    }
    timed_out = {j["actionExecutionId"] for j in counts["jobs"] if j["status"] == "TimedOut"}
    return done | timed_out


# -- figures -----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What a run found; ``lost``, ``hung``, ``twice`` and failed executions must be 0."""

    name: str
    executions: int
    statuses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    hung: int = 0
    twice: int = 0
    refused: int = 0
    jobs: int = 0
    ran_twice: int = 0
    abandoned: int = 0  # open at the end, acknowledged: no worker will ever report them
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def print(self) -> None:
        failed = self.statuses["Failed"]
        ok = "ok" if self.lost == self.hung == self.twice == failed == 0 else "NOT OK"
        print(
            f"{self.name}: lost {self.lost}, hung {self.hung}, reported twice {self.twice}, "
            f"failed {failed}  [{ok}]"
        )
        for note in self.notes:
            print(f"    {note}")
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(self.statuses.items()))
        print(f"    final action executions: {statuses or 'none'} (of {self.executions})")
        for failure, n in self.failures.most_common(5):
            print(f"      {n} x {failure}")
        print(
            f"    jobs {self.jobs}; result requests refused as duplicates {self.refused}; "
            f"jobs whose handler ran twice {self.ran_twice}"
        )
        print(f"    took {self.seconds:.0f} s")


def settle(
    figures: Figures, emulator: Emulator, fleet: Fleet, pipeline: str, action: str
) -> dict[str, Any]:
    """The final figures from the emulator: statuses, lost, doubled; returns the counts."""
    counts = emulator.counts(pipeline)
    codepipeline, _ = clients(emulator.endpoint_url)
    runs = action_executions(codepipeline, pipeline, action)
    figures.statuses = Counter(run["status"] for run in runs)
    for run in runs:
        error = run.get("output", {}).get("executionResult", {}).get("errorDetails")
        if run["status"] == "Failed" and error:
            message = re.sub(r"s3://\S+", "s3://...", error["message"])
            figures.failures[f"{error['code']}: {message[:110]}"] += 1
    timed_out = {j["actionExecutionId"] for j in counts["jobs"] if j["status"] == "TimedOut"}
    finished = finished_executions(counts)
    open_runs = figures.executions - len(finished)
    figures.lost = open_runs + len(timed_out)
    if figures.lost:
        last: dict[str, dict[str, Any]] = {}
        for job in counts["jobs"]:  # oldest first: the last one is the current job
            last[job["actionExecutionId"]] = job
        stuck = [job for run, job in last.items() if run not in finished or run in timed_out]
        states = Counter(job["status"] for job in stuck)
        figures.abandoned = states["InProgress"]
        figures.notes.append(
            f"lost: the last job of each is {dict(states)}; "
            f"e.g. {', '.join(job['jobId'] for job in stuck[:3])}"
        )
    figures.jobs = len(counts["jobs"])
    figures.twice = sum(sum(j["accepted"].values()) > 1 for j in counts["jobs"]) + sum(
        run["accepted"].get("success", 0) + run["accepted"].get("failure", 0) > 1
        for run in counts["actionExecutions"]
    )
    figures.refused = sum(sum(j["refused"].values()) for j in counts["jobs"])
    figures.ran_twice = sum(n > 1 for n in fleet.handler_runs().values())
    return counts


@contextmanager
def scenario(name: str, keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=f"cpw-{name.lower()}-"))
    try:
        yield folder
    except BaseException:
        print(f"    (logs kept in {folder})")
        raise
    else:
        if keep:
            print(f"    (logs in {folder})")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def worker_options(args: argparse.Namespace, folder: Path, *extra: str) -> tuple[str, ...]:
    return (
        "--action", "chaos", "--concurrency", str(args.concurrency),
        "--poll-min", "0.1", "--poll-max", str(args.poll_max),
        "--state-dir", str(folder / "state"), "--workspace", str(folder / "workspaces"),
        *extra,
    )  # fmt: skip


def chaos_action(seconds: float, steps: int, artifacts: bool = False) -> dict[str, Any]:
    return custom_action(
        "Chaos",
        provider="CpwChaos",
        category="Test",
        configuration={
            "Seconds": str(seconds),
            "Steps": str(steps),
            "Artifacts": str(artifacts).lower(),
        },
        outputs=("ChaosOutput",) if artifacts else (),
    )


def start_jobs(emulator: Emulator, name: str, jobs: int, action: dict[str, Any]) -> Monitor:
    """Pipeline ``name`` with ``jobs`` executions of ``action``, watched by a monitor."""
    codepipeline, s3 = clients(emulator.endpoint_url)
    create_executions(codepipeline, s3, name, jobs, action)
    monitor = Monitor(emulator, name)
    monitor.start()
    return monitor


def start_emulator(folder: Path, *options: str) -> Emulator:
    emulator = Emulator(folder, "--job-timeout", "3600", "--continuation-delay", "0.2", *options)
    codepipeline, _ = clients(emulator.endpoint_url)
    app.register(codepipeline)
    return emulator


# -- R1 ----------------------------------------------------------------------------------------


def r1(args: argparse.Namespace) -> Figures:
    """kill -9 at random moments; every held job resolved soon after the restart."""
    figures = Figures("R1 kill -9 and restart", args.r1_jobs)
    rng = random.Random(args.seed)  # noqa: S311 - chaos, not security
    bound = CHAOS_TIMEOUT_S + args.poll_max
    with scenario("R1", args.keep) as folder:
        emulator = start_emulator(folder, "--redispatch-after", str(args.redispatch_after))
        fleet: Fleet | None = None
        try:
            fleet = Fleet(emulator, folder, args.workers, *worker_options(args, folder))
            started = time.monotonic()
            monitor = start_jobs(emulator, "r1", args.r1_jobs, chaos_action(args.r1_seconds, 1))
            kills: list[Serve] = []

            def kill() -> None:
                slot = rng.randrange(args.workers)
                fleet.current[slot].kill()
                kills.append(fleet.current[slot])
                fleet.restart(slot)

            monitor.disrupt(args.r1_jobs, args.stall, args.kill_every, rng, kill)
            for serve in fleet.current:
                serve.wait_started()
            monitor.wait_all(args.r1_jobs, args.stall)
            monitor.sample()
            monitor.stop()
            fleet.stop_all()
            figures.seconds = time.monotonic() - started
            settle(figures, emulator, fleet, "r1", "Chaos")
            held_total, late, delays = 0, 0, []
            for victim in kills:
                held = victim.held()
                held_total += len(held)
                assert victim.stopped_at is not None
                restarts = sorted(
                    (
                        (start, serve)
                        for serve in fleet.instances
                        if (start := serve.started_at()) is not None and start > victim.stopped_at
                    ),
                    key=lambda pair: pair[0],
                )
                for job in held:
                    delay = _resolution_delay(monitor.first_final.get(job), restarts, kills, bound)
                    if delay is None:
                        late += 1
                    else:
                        delays.append(delay)
            figures.hung = late
            unclaimed = sum(len(victim.unclaimed()) for victim in kills)
            figures.notes += [
                f"{len(kills)} workers killed with SIGKILL (one every {args.kill_every[0]:g}-"
                f"{args.kill_every[1]:g} s at random, start-up and recovery included), each "
                f"restarted at once; {args.workers} workers x {args.concurrency} slots, "
                f"steps of {args.r1_seconds:g} s +-50%",
                f"{held_total} jobs held by a killed worker (acknowledged or taken over, not "
                f"reported); resolved after the next restart's 'worker started': "
                f"{_spread(delays)} (bound: deadline {CHAOS_TIMEOUT_S:g} s + poll "
                f"{args.poll_max:g} s, sampled every {SAMPLE_S:g} s)",
                f"{len(fleet.grep('resolving a job of a worker that stopped unexpectedly'))} "
                "handed back on restart, "
                f"{len(fleet.grep('sending the result a stopped worker had decided'))} decided "
                f"results sent again; {unclaimed} polled but not acknowledged at a kill "
                f"(handed out again by the emulator after --redispatch-after "
                f"{args.redispatch_after:g} s)",
            ]
        finally:
            if fleet is not None:
                fleet.close()
            emulator.stop()
    return figures


def _resolution_delay(
    resolved: float | None, restarts: list[tuple[float, Serve]], kills: list[Serve], bound: float
) -> float | None:
    """How long after a restart a held job was seen final (0: already final then), or
    ``None`` if it was not final within ``bound`` of a restart that lived that long."""
    for start, serve in restarts:
        if resolved is not None and resolved <= start + bound + SAMPLE_S:
            return max(0.0, resolved - start)
        if serve not in kills or (serve.stopped_at or 0.0) > start + bound:
            return None  # this restart had the time, and did not resolve it
    return None


def _spread(values: list[float]) -> str:
    if not values:
        return "none to resolve"
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s (n={len(values)})"


# -- R2 ----------------------------------------------------------------------------------------


def r2(args: argparse.Namespace) -> Figures:
    """SIGTERM under load: running steps handed back, none failed, the others go on."""
    figures = Figures("R2 SIGTERM under load", args.r2_jobs)
    rng = random.Random(args.seed + 1)  # noqa: S311 - chaos, not security
    with scenario("R2", args.keep) as folder:
        emulator = start_emulator(folder, "--redispatch-after", str(args.redispatch_after))
        try:
            drain = ("--drain-timeout", str(args.drain_timeout))
            fleet = Fleet(emulator, folder, args.workers, *worker_options(args, folder, *drain))
            started = time.monotonic()
            monitor = start_jobs(emulator, "r2", args.r2_jobs, chaos_action(args.r2_seconds, 2))
            statuses: list[int] = []
            left_open = 0

            def stop() -> None:
                nonlocal left_open
                slot = rng.randrange(args.workers)
                victim = fleet.current[slot]
                victim.wait_started()  # its signal handler is in place
                statuses.append(victim.kill(signal.SIGTERM))
                open_jobs = {
                    j["jobId"] for j in monitor.sample()["jobs"] if j["status"] not in FINAL
                }
                left_open += len(victim.jobs("job acknowledged", *TAKEN_OVER) & open_jobs)
                fleet.restart(slot)

            monitor.disrupt(args.r2_jobs, args.stall, args.term_every, rng, stop)
            for serve in fleet.current:
                serve.wait_started()
            monitor.wait_all(args.r2_jobs, args.stall)
            monitor.stop()
            fleet.stop_all()
            figures.seconds = time.monotonic() - started
            settle(figures, emulator, fleet, "r2", "Chaos")
            figures.hung = left_open
            handed_back = sum(x.get("handed_back", 0) for x in fleet.grep("worker stopped"))
            stopped = [s for s in fleet.instances if s.stopped_at is not None]
            unclaimed = sum(len(s.unclaimed()) for s in stopped)
            shutdown_failures = sum(
                n for failure, n in figures.failures.items() if "stopped" in failure
            )
            figures.notes += [
                f"{len(statuses)} workers stopped with SIGTERM (one every {args.term_every[0]:g}-"
                f"{args.term_every[1]:g} s at random), exit statuses {dict(Counter(statuses))}, "
                f"each restarted; --drain-timeout {args.drain_timeout:g} s, 2 steps of "
                f"{args.r2_seconds:g} s +-50% per job",
                f"{handed_back} running steps handed back (continuation) and run again by a "
                f"worker; failed because of a shutdown: {shutdown_failures}; jobs of a "
                f"stopped worker still open when it had exited: {left_open}",
                f"{unclaimed} polled but not acknowledged at a stop (handed out again after "
                f"--redispatch-after {args.redispatch_after:g} s)",
            ]
        finally:
            if fleet is not None:
                fleet.close()
            emulator.stop()
    return figures


# -- R3 ----------------------------------------------------------------------------------------


def r3(args: argparse.Namespace) -> Figures:
    """Throttling, 5xx and resets on every request: all jobs end once, none twice."""
    figures = Figures("R3 injected faults", args.r3_jobs)
    with scenario("R3", args.keep) as folder:
        faults = f"{args.faults},seed={args.seed}"
        emulator = start_emulator(folder, "--faults", faults)
        fleet: Fleet | None = None
        try:
            fleet = Fleet(emulator, folder, args.workers, *worker_options(args, folder))
            started = time.monotonic()
            monitor = start_jobs(
                emulator, "r3", args.r3_jobs, chaos_action(args.r3_seconds, 2, True)
            )
            monitor.wait_all(args.r3_jobs, args.stall)
            monitor.stop()
            fleet.stop_all()
            figures.seconds = time.monotonic() - started
            counts = settle(figures, emulator, fleet, "r3", "Chaos")
            figures.hung = figures.abandoned
            retried = [
                x for s in fleet.instances for x in s.lines() if x["message"].startswith("Retrying")
            ]
            critical = fleet.grep("could not report the result")
            received = sum(sum(j["received"].values()) for j in counts["jobs"])
            figures.notes += [
                f"faults {faults} on every CodePipeline and S3 request of the workers; "
                f"{args.workers} workers x {args.concurrency} slots; 2 steps per job, each "
                "reading the input artifact, the last uploading an output artifact",
                f"{len(retried)} CodePipeline calls retried by the workers; {received} result "
                f"requests reached the emulator; {len(critical)} results the workers gave up "
                "reporting",
            ]
        finally:
            if fleet is not None:
                fleet.close()
            emulator.stop()
    return figures


# -- main --------------------------------------------------------------------------------------


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    return float(low), float(high or low)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="R1,R2,R3", help="scenarios to run (R1,R2,R3)")
    parser.add_argument("--r1-jobs", type=int, default=500)
    parser.add_argument("--r2-jobs", type=int, default=120)
    parser.add_argument("--r3-jobs", type=int, default=100)
    parser.add_argument("--r1-seconds", type=float, default=0.3, help="R1 step length (0.3)")
    parser.add_argument("--r2-seconds", type=float, default=2.0, help="R2 step length (2.0)")
    parser.add_argument("--r3-seconds", type=float, default=0.05, help="R3 step length (0.05)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--poll-max", type=float, default=1.0, help="workers' --poll-max (1)")
    parser.add_argument("--kill-every", type=_pair, default=(1.0, 5.0), help="R1, s (1-5)")
    parser.add_argument("--term-every", type=_pair, default=(2.0, 6.0), help="R2, s (2-6)")
    parser.add_argument("--drain-timeout", type=float, default=0.5, help="R2 (0.5 s)")
    parser.add_argument(
        "--faults", default="throttle=0.3,5xx=0.1,reset=0.05", help="R3's cpworker local --faults"
    )
    parser.add_argument(
        "--redispatch-after", type=float, default=5.0, help="cpworker local's, s (5)"
    )
    parser.add_argument("--stall", type=float, default=60.0, help="give up after s w/o progress")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    args = parser.parse_args(list(argv) if argv is not None else None)
    runs = {"R1": r1, "R2": r2, "R3": r3}
    for name in (part.strip().upper() for part in args.only.split(",") if part.strip()):
        runs[name](args).print()


if __name__ == "__main__":
    main()
