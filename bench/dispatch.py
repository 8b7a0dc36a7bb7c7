"""Dispatch cost (issue 11, row P3): no-op jobs through ``cpworker serve --concurrency 4``
against a hand-written boto3 worker loop, on one ``cpworker local``, in the same run.

Method: one ``cpworker local`` (subprocess, loopback). For each run, a PARALLEL pipeline
(S3 source → the ``CpwNoop`` action of ``tests/worker/cpw_chaos_apps.py``, whose handler
returns Success at once and touches no artifact) gets N executions, and the run waits
until all N jobs are queued, so that the emulator's pipeline work is done before the
clock starts. Two cases: the action takes no input artifact, or it takes the source
(the handler does not read it). Then one variant drains the N jobs:

- hand-written (the anchor): 4 threads in this process, each a tight loop of
  PollForJobs (one job) → AcknowledgeJob → PutJobSuccessResult on one boto3 client;
- cpworker: ``cpworker serve --concurrency 4`` (default isolation);
- cpworker thread: the same with ``--isolation thread``.

Throughput: (N-1) jobs over the time from the first reported result to the last (the
worker's "result reported" log lines; the loop's own clock after each
PutJobSuccessResult), so that start-up is left out of both. CodePipeline calls per job:
the calls the emulator received during the run (``CpworkerLocal.GetCallCounts``, a
worker's start-up included) over N. Variants alternate their order each repetition;
figures are medians of the repetitions. The last line is the ratio of cpworker's
throughput to the hand-written loop's in each case (goal >= 1.0) and cpworker's calls
per job (goal <= 2.1).

On one machine every call costs CPU and no wait, and the worker's process and the
emulator share two cores. ``--latency 0.02`` has ``cpworker local`` hold each of a job's
CodePipeline calls (poll, acknowledge, report) 20 ms, as a region's network and service
would (``--faults latency=...``), so that both variants are measured as they run against
AWS, where each call's round trip rather than its CPU sets the pace.

Run: ``.venv/bin/python bench/dispatch.py [--jobs 1000] [--repeat 3] [--latency S]``;
``--quick`` for a short run that only proves the bench works. It prints; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chaos import Emulator, Serve, clients, create_executions, start_emulator, timestamp
from cpw_chaos_apps import app  # importable once chaos has put its folder on the path
from harness import interleaved
from isolation import wait_until

from cpworker.local.private import call_private
from cpworker.testing import SOURCE_ARTIFACT, custom_action

CONCURRENCY = 4
ANCHOR, CPWORKER, THREAD = "hand-written", "cpworker", "cpworker thread"
VARIANTS = (ANCHOR, CPWORKER, THREAD)
CASES = {"no input": (), "one input": (SOURCE_ARTIFACT,)}
THROUGHPUT_GOAL, CALLS_GOAL = 1.0, 2.1
LATENT = "|".join(("PollForJobs", "AcknowledgeJob", "PutJobSuccessResult", "GetJobDetails"))
"""The calls ``--latency`` holds: a job's own, not the bench's set-up."""


@dataclass(frozen=True)
class Run:
    """One variant's figures for one case and repetition."""

    jobs_per_s: float
    calls: Counter[str]
    """CodePipeline calls during the run, by operation."""
    jobs: int

    @property
    def calls_per_job(self) -> float:
        return sum(self.calls.values()) / self.jobs


def call_counts(emulator: Emulator) -> Counter[str]:
    answer = call_private(emulator.endpoint_url, "GetCallCounts", {}, timeout_s=60)
    return Counter(answer["calls"])


def throughput(reported: Sequence[float]) -> float:
    """Jobs per second from the first reported result to the last."""
    return (len(reported) - 1) / (max(reported) - min(reported))


def queue_jobs(emulator: Emulator, name: str, jobs: int, inputs: Sequence[str]) -> None:
    """A pipeline with ``jobs`` executions of the no-op action, all its jobs queued."""
    codepipeline, s3 = clients(emulator.endpoint_url)
    action = custom_action("Noop", provider="CpwNoop", category="Test", inputs=inputs)
    create_executions(codepipeline, s3, name, jobs, action)

    def queued() -> bool:
        statuses = [job["status"] for job in emulator.counts(name)["jobs"]]
        return len(statuses) == jobs and set(statuses) == {"Queued"}

    wait_until(queued, f"{name}: all jobs queued")


def hand_written(emulator: Emulator) -> list[float]:
    """The anchor: ``CONCURRENCY`` threads polling one job at a time, acknowledging it
    and reporting success, until a poll finds none; when each result was reported."""
    codepipeline, _ = clients(emulator.endpoint_url)
    type_id = app["noop"].type_id.model_dump()
    reported: list[float] = []

    def loop() -> None:
        while found := codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)["jobs"]:
            job = found[0]
            codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
            codepipeline.put_job_success_result(jobId=job["id"])
            reported.append(time.time())

    threads = [threading.Thread(target=loop) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return reported


def cpworker(emulator: Emulator, folder: Path, name: str, jobs: int, *options: str) -> list[float]:
    """``cpworker serve --concurrency 4`` until it has reported ``jobs`` results; when
    each was reported, by its log."""
    serve = Serve(
        emulator.endpoint_url,
        folder / f"{name}.log",
        "--action", "noop", "--concurrency", str(CONCURRENCY), *options,
        "--state-dir", str(folder / "state"), "--workspace", str(folder / "workspaces"),
    )  # fmt: skip
    try:
        serve.wait_started()
        wait_until(lambda: len(serve.jobs("result reported")) >= jobs, f"{name}: results", serve)
    finally:
        serve.kill(signal.SIGTERM)
    return [timestamp(x) for x in serve.lines() if x["message"] == "result reported"]


def run_once(
    emulator: Emulator, folder: Path, name: str, variant: str, case: str, jobs: int
) -> Run:
    """``jobs`` no-op jobs of ``case`` through ``variant``; the pipeline is deleted after,
    so that the emulator forgets its jobs."""
    queue_jobs(emulator, name, jobs, CASES[case])
    before = call_counts(emulator)
    if variant == ANCHOR:
        reported = hand_written(emulator)
    else:
        isolation = ("--isolation", "thread") if variant == THREAD else ()
        reported = cpworker(emulator, folder, name, jobs, *isolation)
    calls = call_counts(emulator) - before
    statuses = Counter(job["status"] for job in emulator.counts(name)["jobs"])
    assert statuses == {"Succeeded": jobs}, f"{name}: {dict(statuses)}"
    codepipeline, _ = clients(emulator.endpoint_url)
    codepipeline.delete_pipeline(name=name)
    return Run(throughput(reported), calls, jobs)


def median(runs: Sequence[Run], figure: str) -> float:
    return float(statistics.median(getattr(run, figure) for run in runs))


def breakdown(runs: Sequence[Run]) -> str:
    """Calls per job by operation, summed over the runs."""
    calls: Counter[str] = sum((run.calls for run in runs), Counter())
    jobs = sum(run.jobs for run in runs)
    return ", ".join(f"{op} {n / jobs:.2f}" for op, n in sorted(calls.items()))


def summary(runs: dict[tuple[str, str], list[Run]]) -> None:
    """Medians per case and variant, then the ratios line (last)."""
    print("\ncase       variant          jobs/s  calls/job  calls per job by operation")
    ratios, calls = [], []
    for case in CASES:
        for variant in VARIANTS:
            mine = runs[case, variant]
            print(
                f"{case:<10} {variant:<15} {median(mine, 'jobs_per_s'):7.1f}"
                f" {median(mine, 'calls_per_job'):10.2f}  {breakdown(mine)}"
            )
        anchor = median(runs[case, ANCHOR], "jobs_per_s")
        ratios.append(f"{case} {median(runs[case, CPWORKER], 'jobs_per_s') / anchor:.2f}x")
        calls.append(f"{case} {median(runs[case, CPWORKER], 'calls_per_job'):.2f}")
    print(
        f"ratio cpworker / hand-written jobs/s: {', '.join(ratios)} (goal >= {THROUGHPUT_GOAL});"
        f" CodePipeline calls per job: {', '.join(calls)} (goal <= {CALLS_GOAL})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000, help="no-op jobs per run (1000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--quick", action="store_true", help="12 jobs, once: proves it runs")
    parser.add_argument(
        "--latency", type=float, default=0.0,
        help="seconds cpworker local holds each CodePipeline call, as a region would (0)",
    )  # fmt: skip
    args = parser.parse_args()
    jobs, repeat = (12, 1) if args.quick else (args.jobs, args.repeat)
    folder = Path(tempfile.mkdtemp(prefix="cpw-dispatch-"))
    latency = ("--faults", f"latency={args.latency},ops={LATENT}") if args.latency else ()
    emulator = start_emulator(folder, *latency)
    runs: dict[tuple[str, str], list[Run]] = {(c, v): [] for c in CASES for v in VARIANTS}
    held = f", each CodePipeline call held {args.latency * 1000:g} ms" if args.latency else ""
    print(f"{jobs} no-op jobs per run, concurrency {CONCURRENCY}, one cpworker local{held}")
    print("rep  case       variant          jobs/s  calls/job")
    try:
        for rep, variant in interleaved(VARIANTS, repeat):
            for index, case in enumerate(CASES):
                name = f"dispatch-{rep}-{VARIANTS.index(variant)}-{index}"
                run = run_once(emulator, folder, name, variant, case, jobs)
                runs[case, variant].append(run)
                print(
                    f"{rep + 1:>3}  {case:<10} {variant:<15} {run.jobs_per_s:7.1f}"
                    f" {run.calls_per_job:10.2f}",
                    flush=True,
                )
    finally:
        emulator.stop()
    summary(runs)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
