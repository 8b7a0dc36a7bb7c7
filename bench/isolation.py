"""Per-job cost of process isolation: no-op jobs through ``cpworker serve --isolation process``
(job processes reused, the default), ``--isolation process --jobs-per-process 1`` (a
fresh process per job, shown as "fresh") and ``--isolation thread``, against one
``cpworker local``.

Method: one ``cpworker local`` (subprocess, loopback). For each run, a PARALLEL pipeline
(S3 source → the ``CpwNoop`` action of ``tests/worker/cpw_chaos_apps.py``, whose handler
returns Success at once and touches no artifact) gets N executions, and the run waits
until all N jobs are queued, so the emulator's pipeline work is done before the clock
starts. Then one ``cpworker serve --concurrency 4 --isolation MODE`` drains them.

- wall time per job: from the worker's first "result reported" log line to its last,
  over N-1 jobs (start-up — interpreter, forkserver, first imports — left out);
- ack→result: the median, per job, from "job acknowledged" to "result reported";
- CPU per job: user+system time of the worker's process tree (the worker, its
  forkserver and the job processes they reaped, from /proc), from the first reported
  result to the last, over the jobs finished in between.

Repetitions rotate the order of the modes so that drift in the machine's load falls on
every mode alike. The ratio is the process time per job over the thread time per job,
each the median of the repetitions (the goal is for the default, "process"). The worker shares
the machine with the emulator, so on 2 cores the ratios are those of a busy host.

Run: ``.venv/bin/python bench/isolation.py [--jobs 300] [--repeat 3]``. It prints; it
asserts nothing. The default takes under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chaos import Emulator, Serve, clients, create_executions, start_emulator, timestamp
from harness import interleaved

from cpworker.testing import custom_action

GOAL = 1.3
MODES = {
    "process": ("--isolation", "process"),
    "fresh": ("--isolation", "process", "--jobs-per-process", "1"),
    "thread": ("--isolation", "thread"),
}
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    """One mode's figures for one repetition (seconds)."""

    wall_per_job: float
    ack_to_result: float
    cpu_per_job: float


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants, reaped ones included (utime, stime,
    cutime, cstime of each live process in the tree)."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            stats[int(entry)] = text.rsplit(")", 1)[1].split()
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is None:
            continue
        total += sum(int(value) for value in fields[11:15]) / TICK  # utime..cstime
        todo += [child for child, other in stats.items() if int(other[1]) == current]
    return total


def wait_until(check: Callable[[], bool], what: str, serve: Serve | None = None) -> None:
    deadline = time.monotonic() + 600
    while not check():
        if time.monotonic() > deadline or (serve is not None and serve.process.poll() is not None):
            raise RuntimeError(
                f"{what} did not happen" + (f"; see {serve.log_file}" if serve else "")
            )
        time.sleep(0.1)


def run_once(
    emulator: Emulator, folder: Path, name: str, mode: str, args: argparse.Namespace
) -> Run:
    """``args.jobs`` no-op jobs through one worker in ``mode``."""
    codepipeline, s3 = clients(emulator.endpoint_url)
    action = custom_action("Noop", provider="CpwNoop", category="Test", inputs=())
    create_executions(codepipeline, s3, name, args.jobs, action)

    def statuses() -> list[str]:
        return [job["status"] for job in emulator.counts(name)["jobs"]]

    def queued() -> bool:
        now = statuses()
        return len(now) == args.jobs and set(now) == {"Queued"}

    wait_until(queued, f"{name}: all jobs queued")
    serve = Serve(
        emulator.endpoint_url,
        folder / f"{name}.log",
        "--action", "noop", *MODES[mode], "--concurrency", str(args.concurrency),
        "--poll-min", "0.05", "--poll-max", "0.2",
        "--state-dir", str(folder / "state"), "--workspace", str(folder / "workspaces"),
    )  # fmt: skip
    try:
        serve.wait_started()
        first: list[int] = []
        wait_until(
            lambda: bool(first.append(statuses().count("Succeeded")) or first[-1]),
            "a result",
            serve,
        )
        cpu_start, done_start = tree_cpu(serve.process.pid), first[-1]
        wait_until(
            lambda: statuses().count("Succeeded") == args.jobs, f"{name}: all results", serve
        )
        cpu = (tree_cpu(serve.process.pid) - cpu_start) / (args.jobs - done_start)
    finally:
        serve.kill(signal.SIGTERM)
    lines = serve.lines()
    reported = {x["job_id"]: timestamp(x) for x in lines if x["message"] == "result reported"}
    acked = {x["job_id"]: timestamp(x) for x in lines if x["message"] == "job acknowledged"}
    assert len(reported) == args.jobs, f"{len(reported)} results reported, not {args.jobs}"
    codepipeline.delete_pipeline(name=name)  # the emulator forgets its jobs: polls stay cheap
    return Run(
        wall_per_job=(max(reported.values()) - min(reported.values())) / (args.jobs - 1),
        ack_to_result=statistics.median(reported[job] - acked[job] for job in reported),
        cpu_per_job=cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=300, help="no-op jobs per run (300)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each mode (3)")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cpw-isolation-"))
    emulator = start_emulator(folder)
    runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
    print(f"{args.jobs} no-op jobs per run, --concurrency {args.concurrency}, one cpworker local")
    print("rep  isolation   jobs/s  ms/job  ack->result ms  CPU ms/job")
    try:
        for rep, mode in interleaved(list(MODES), args.repeat):
            run = run_once(emulator, folder, f"iso-{mode}-{rep}", mode, args)
            runs[mode].append(run)
            print(
                f"{rep + 1:>3}  {mode:<9} {1 / run.wall_per_job:8.1f} {run.wall_per_job * 1e3:7.2f}"
                f" {run.ack_to_result * 1e3:15.1f} {run.cpu_per_job * 1e3:11.2f}"
            )
    finally:
        emulator.stop()

    def median(mode: str, figure: str) -> float:
        return statistics.median(getattr(run, figure) for run in runs[mode])

    process, thread = median("process", "wall_per_job"), median("thread", "wall_per_job")
    ratio = process / thread
    print(
        f"median: process {1 / process:.1f} jobs/s ({process * 1e3:.2f} ms/job), "
        f"thread {1 / thread:.1f} jobs/s ({thread * 1e3:.2f} ms/job)"
    )
    print(
        f"process/thread wall time per job: {ratio:.2f}x "
        f"({'within' if ratio <= GOAL else 'over'} the {GOAL}x goal); per repetition: "
        + ", ".join(
            f"{p.wall_per_job / t.wall_per_job:.2f}"
            for p, t in zip(runs["process"], runs["thread"], strict=True)
        )
    )
    fresh = median("fresh", "wall_per_job")
    print(f"fresh process per job/thread wall time per job: {fresh / thread:.2f}x")
    cpu = median("process", "cpu_per_job") / median("thread", "cpu_per_job")
    print(
        f"process/thread CPU per job: {cpu:.2f}x ({median('process', 'cpu_per_job') * 1e3:.1f} "
        f"vs {median('thread', 'cpu_per_job') * 1e3:.1f} ms); ack->result: "
        f"{median('process', 'ack_to_result') * 1e3:.0f} vs "
        f"{median('thread', 'ack_to_result') * 1e3:.0f} ms"
    )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
