"""Cold-start cost of a handler module's Lambda entry point, against boto3's own.

Prints, for each measurement, the best of N fresh interpreters (the floor, which
is what the code costs; the rest is machine noise), and the ratio of the handler
import to the baseline ``import boto3`` plus creating a CodePipeline client —
the work any Python Lambda invoke action does. The last line adds what the first
invocation loads (the runtime and the client), for the whole cold start. Run: ``.venv/bin/python
bench/import_time.py [--runs N] [module:attribute ...]``. It prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "import boto3; boto3.client('codepipeline', region_name='us-east-1')"
DEFAULT_HANDLERS = ["handlers.url_check:handler", "handlers.cfn_deploy:handler"]


def best_of(code: str, runs: int) -> float:
    """The fastest wall time, in seconds, of ``python -c code`` over ``runs`` fresh interpreters."""
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "AWS_REGION": "us-east-1"}
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, check=True)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("handlers", nargs="*", default=DEFAULT_HANDLERS)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    empty = best_of("pass", args.runs)
    baseline = best_of(BASELINE, args.runs) - empty
    print(f"interpreter start             {empty * 1000:8.1f} ms (subtracted below)")
    print(f"import boto3 + client         {baseline * 1000:8.1f} ms  1.00x  (baseline)")
    for reference in args.handlers:
        module, _, attribute = reference.partition(":")
        code = f"from {module} import {attribute or 'handler'}"
        cost = best_of(code, args.runs) - empty
        print(f"{reference:<30}{cost * 1000:8.1f} ms  {cost / baseline:.2f}x")
    # What the first invocation adds: the runtime module and the CodePipeline client.
    first_call = f"{code}; from cpworker.sources import lambda_invoke as l; l._client('us-east-1')"
    cost = best_of(first_call, args.runs) - empty
    print(f"{'  + first call (last handler)':<30}{cost * 1000:8.1f} ms  {cost / baseline:.2f}x")


if __name__ == "__main__":
    main()
