"""Row P5 of issue 11: a Lambda invoke function's whole cold start — importing its module
and running its first job — against the User Guide's hand-written sample doing the same.

Each variant runs in a fresh interpreter (``harness.measure``; the clock starts after
interpreter start-up, so both pay the same) against one ``cpworker local``, each sample
on a new job made by ``CpworkerLocal.CreateLambdaJob``. The child imports only the
standard library and ``harness`` before its clock starts (the emulator's helpers load in
the parent only), so every import of boto3, pydantic or cpworker is inside the figure.
cpworker and both functions are byte-compiled first, as a deployment package installed by
pip is (an editable checkout run with ``PYTHONDONTWRITEBYTECODE`` would otherwise compile
cpworker's source on every start):

- ``guide``: import the guide's "Sample Python function that uses an AWS CloudFormation
  template" (``examples/guide/cloudformation_sample.py``, which makes its CloudFormation
  and CodePipeline clients at import) and report the job as its ``put_job_success``
  does: one PutJobSuccessResult.
- ``cpworker``: import ``bench/p5_function.py`` (a no-op action behind
  ``lambda_handler(app)``) and call its handler with the job's event: the event is
  validated, the handler runs under its deadline, the result is checked against the
  API's limits and reported with one PutJobSuccessResult.

The ratio printed last is cpworker's median over the guide's (goal ≤ 1.0). Run:
``.venv/bin/python bench/p5_cold_start.py [--repeat 15] [--quick]``. It prints; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import compileall
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Sample, child_main, interleaved, measure, report

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
EVENT_KEY = "CodePipeline.job"


class Context:
    """The few things of Lambda's context object that a function reads."""

    function_name = "cpw-bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cpw-bench"
    memory_limit_in_mb = 128
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/cpw-bench"
    log_stream_name = "bench"

    def __init__(self) -> None:
        self._deadline = time.monotonic() + 60

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def _guide(args: list[str]) -> None:
    event = json.loads(args[0])
    sys.path.insert(0, str(ROOT / "examples" / "guide"))
    import cloudformation_sample  # type: ignore[import-not-found]

    cloudformation_sample.put_job_success(event[EVENT_KEY]["id"], "done")


def _cpworker(args: list[str]) -> None:
    event = json.loads(args[0])
    sys.path.insert(0, str(BENCH))
    from p5_function import handler

    handler(event, Context())


VARIANTS: dict[str, Callable[[list[str]], None]] = {"guide": _guide, "cpworker": _cpworker}


def _new_event(endpoint_url: str) -> str:
    from cpworker.local.private import call_private

    created: dict[str, Any] = call_private(
        endpoint_url,
        "CreateLambdaJob",
        {"data": {"actionConfiguration": {"configuration": {"FunctionName": "cpw-bench"}}}},
    )
    return json.dumps(created["event"])


def main() -> None:
    child_main(VARIANTS)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="samples of each variant (15)")
    parser.add_argument("--quick", action="store_true", help="2 samples each, to prove it runs")
    args = parser.parse_args()
    repeat = 2 if args.quick else args.repeat
    from chaos import Emulator, aws_environment  # the parent's only: it imports cpworker

    for code in (ROOT / "cpworker", BENCH / "p5_function.py", ROOT / "examples" / "guide"):
        compiled = compileall.compile_dir if code.is_dir() else compileall.compile_file
        compiled(code, quiet=1)
    folder = Path(tempfile.mkdtemp(prefix="cpw-p5-"))
    emulator = Emulator(folder)
    environment = aws_environment(AWS_ENDPOINT_URL=emulator.endpoint_url)
    samples: dict[str, list[Sample]] = {name: [] for name in VARIANTS}
    try:
        for _rep, name in interleaved(list(VARIANTS), repeat):
            event = _new_event(emulator.endpoint_url)
            samples[name].append(measure(__file__, name, [event], env=environment))
    finally:
        emulator.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"P5 Lambda cold start (import + first job), {repeat} fresh interpreters each")
    report(samples, "cpworker", "guide", "<= 1.0")


if __name__ == "__main__":
    main()
