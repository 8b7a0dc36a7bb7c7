"""Pickup (issue 8, row P4): how long a job waits for an idle worker, and what an idle
worker costs in CodePipeline calls, for three ways of dispatching, in the same run.

Method: one ``cpworker local`` (subprocess, loopback), and the ``CpwNoop`` action of
``tests/worker/cpw_chaos_apps.py`` (its handler returns Success at once). Each case has
its own PARALLEL pipeline (S3 source → the action) and runs alone:

- polling: ``cpworker serve`` with its defaults (backoff to one poll every 10 s);
- wake queue: ``cpworker serve --wake-queue URL``, with an EventBridge rule sending the
  action type's STARTED events to that SQS queue (moto's, on the same endpoint);
- serverless: no worker; an EventBridge rule invokes a function (``lambda_handler(app,
  "noop")``, run by cpworker local's function runner, a fresh process per invocation as
  a cold Lambda) that polls, acknowledges and runs the job.

Each case first runs one job (warm-up), then ``--runs`` times: waits ``--idle`` s with
no job, counting the CodePipeline calls the emulator received in that time
(``CpworkerLocal.GetCallCounts``), then starts one execution. Pickup is the time from
the job's creation to its acknowledgement, both on the emulator's clock
(``CpworkerLocal.GetJobTimes``). Printed per case: p50, p90 and max pickup, and idle
CodePipeline calls per second. The last line gives the wake queue's figures against
the goals: p50 <= 0.5 s, p90 <= 1 s, 0 idle calls per second.

Run: ``.venv/bin/python bench/pickup.py [--runs 10] [--idle 20]``; ``--quick`` for a
short run that only proves the bench works. It prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos import APPS, Serve, start_emulator
from isolation import wait_until

from cpworker.local.private import call_private
from cpworker.testing import custom_action, pipeline_declaration, upload_source, zip_bytes

FUNCTION = "cpw-pickup-worker"
FUNCTION_FILE = Path(__file__).with_name("cpw_pickup_function.py")
POLLING, WAKE_QUEUE, SERVERLESS = "polling", "wake queue", "serverless"
CASES = (POLLING, WAKE_QUEUE, SERVERLESS)
P50_GOAL_S, P90_GOAL_S = 0.5, 1.0
PRIVATE = "CpworkerLocal."


@dataclass(frozen=True)
class Figures:
    """One case: each run's pickup (s) and the idle calls per second."""

    pickups: list[float]
    idle_calls_per_s: float

    def percentile(self, q: int) -> float:
        ordered = sorted(self.pickups)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    def line(self, case: str) -> str:
        return (
            f"{case:<11} pickup p50 {self.percentile(50):.2f} s, p90 {self.percentile(90):.2f} s,"
            f" max {max(self.pickups):.2f} s over {len(self.pickups)} jobs; idle CodePipeline"
            f" calls {self.idle_calls_per_s:.3f}/s"
        )


class Bench:
    """The emulator and its clients, shared by the cases."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        functions = folder / "functions.json"
        functions.write_text(
            json.dumps(
                {
                    FUNCTION: {
                        "handler": f"{FUNCTION_FILE}:handler",
                        "environment": {"PYTHONPATH": str(APPS)},
                    }
                }
            )
        )
        self.emulator = start_emulator(folder, "--functions-file", str(functions))
        endpoint = self.emulator.endpoint_url
        self.codepipeline, self.s3 = (client(s, endpoint) for s in ("codepipeline", "s3"))
        self.events, self.sqs = (client(s, endpoint) for s in ("events", "sqs"))

    def calls(self) -> int:
        """CodePipeline calls the emulator has received so far (its own ops left out)."""
        counts = call_private(self.emulator.endpoint_url, "GetCallCounts", {})["calls"]
        return sum(n for op, n in counts.items() if not op.startswith(PRIVATE))

    def pipeline(self, case: str) -> str:
        """A PARALLEL pipeline of the noop action; its first execution starts now."""
        name = f"pickup-{case.replace(' ', '-')}-{uuid.uuid4().hex[:6]}"
        upload_source(self.s3, f"{name}-src", "source.zip", zip_bytes({"README.md": "p4\n"}))
        self.s3.create_bucket(Bucket=f"{name}-store")
        declaration = pipeline_declaration(
            name,
            artifact_bucket=f"{name}-store",
            source_bucket=f"{name}-src",
            source_key="source.zip",
            actions=[custom_action("Noop", category="Test", provider="CpwNoop", inputs=())],
        )
        declaration.update(pipelineType="V2", executionMode="PARALLEL")
        self.codepipeline.create_pipeline(pipeline=declaration)
        return name

    @contextmanager
    def rule(self, target: dict[str, Any]) -> Iterator[None]:
        """An EventBridge rule sending the noop type's STARTED events to ``target``."""
        name = f"pickup-{uuid.uuid4().hex[:6]}"
        pattern = {
            "source": ["aws.codepipeline"],
            "detail-type": ["CodePipeline Action Execution State Change"],
            "detail": {
                "state": ["STARTED"],
                "type": {"owner": ["Custom"], "provider": ["CpwNoop"]},
            },
        }
        self.events.put_rule(Name=name, EventPattern=json.dumps(pattern))
        self.events.put_targets(Rule=name, Targets=[{"Id": "target", **target}])
        try:
            yield
        finally:
            self.events.remove_targets(Rule=name, Ids=["target"])
            self.events.delete_rule(Name=name)

    def queue(self) -> tuple[str, str]:
        url = self.sqs.create_queue(QueueName=f"pickup-{uuid.uuid4().hex[:6]}")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return url, arn["Attributes"]["QueueArn"]


def client(service: str, endpoint_url: str) -> Any:
    import boto3

    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's dummy
    )


def acknowledged(bench: Bench, pipeline: str, count: int, what: str) -> list[dict[str, Any]]:
    """The pipeline's acknowledged jobs, once there are ``count`` of them."""
    done: list[dict[str, Any]] = []

    def enough() -> bool:
        answer = call_private(
            bench.emulator.endpoint_url, "GetJobTimes", {"pipelineName": pipeline}
        )
        done[:] = [job for job in answer["jobs"] if "acknowledgedAt" in job]
        return len(done) >= count

    wait_until(enough, what)
    return done


def measure(
    bench: Bench, case: str, runs: int, idle_s: float, ready: Callable[[], None]
) -> Figures:
    """Warm up with one job, then ``runs`` times: idle ``idle_s``, then one job."""
    pipeline = bench.pipeline(case)
    ready()
    acknowledged(bench, pipeline, 1, f"{case}: warm-up job")
    pickups: list[float] = []
    idle_calls, idle_time = 0, 0.0
    for run in range(1, runs + 1):
        time.sleep(1.0)  # the last job's report lands before the idle window opens
        before, started = bench.calls(), time.monotonic()
        time.sleep(idle_s)
        idle_calls += bench.calls() - before
        idle_time += time.monotonic() - started
        bench.codepipeline.start_pipeline_execution(name=pipeline)
        jobs = acknowledged(bench, pipeline, run + 1, f"{case}: job {run}")
        newest = max(jobs, key=lambda job: job["createdAt"])
        pickups.append(newest["acknowledgedAt"] - newest["createdAt"])
    return Figures(pickups, idle_calls / idle_time)


def run_case(bench: Bench, case: str, runs: int, idle_s: float) -> Figures:
    folder = bench.folder / case.replace(" ", "-")
    folder.mkdir()
    options = ["--action", "noop", "--state-dir", str(folder / "state")]
    options += ["--workspace", str(folder / "workspaces")]
    if case == SERVERLESS:
        arn = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"
        with bench.rule({"Arn": arn}):
            return measure(bench, case, runs, idle_s, lambda: None)
    if case == WAKE_QUEUE:
        url, arn = bench.queue()
        options += ["--wake-queue", url]
        with bench.rule({"Arn": arn}):
            return serve_and_measure(bench, case, folder, options, runs, idle_s)
    return serve_and_measure(bench, case, folder, options, runs, idle_s)


def serve_and_measure(
    bench: Bench, case: str, folder: Path, options: Sequence[str], runs: int, idle_s: float
) -> Figures:
    serve = Serve(bench.emulator.endpoint_url, folder / "serve.log", *options)
    try:
        return measure(bench, case, runs, idle_s, serve.wait_started)
    finally:
        serve.kill(signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="jobs per case after warm-up")
    parser.add_argument("--idle", type=float, default=20.0, help="idle seconds before each job")
    parser.add_argument("--quick", action="store_true", help="2 runs, 2 s idle: proves it works")
    parser.add_argument("--keep", action="store_true", help="keep the logs folder")
    args = parser.parse_args()
    runs, idle_s = (2, 2.0) if args.quick else (args.runs, args.idle)
    folder = Path(tempfile.mkdtemp(prefix="cpw-pickup-"))
    print(f"P4 pickup: {runs} jobs per case, each after {idle_s:g} s idle; logs in {folder}")
    bench = Bench(folder)
    figures: dict[str, Figures] = {}
    try:
        for case in CASES:
            figures[case] = run_case(bench, case, runs, idle_s)
            print(figures[case].line(case), flush=True)
    finally:
        bench.emulator.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    wake = figures[WAKE_QUEUE]
    print(
        f"wake queue: pickup p50 {wake.percentile(50):.2f} s (goal <= {P50_GOAL_S:g}),"
        f" p90 {wake.percentile(90):.2f} s (goal <= {P90_GOAL_S:g}),"
        f" idle CodePipeline calls {wake.idle_calls_per_s:.3f}/s (goal 0);"
        f" polling p50 {figures[POLLING].percentile(50):.2f} s"
    )


if __name__ == "__main__":
    main()
