"""bench/dispatch.py runs: its quick mode drains its jobs and prints the ratio line last.
Nothing is asserted about speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_the_dispatch_bench_runs_and_prints_its_ratio_last() -> None:
    done = subprocess.run(
        [sys.executable, "dispatch.py", "--quick"],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio cpworker / hand-written jobs/s: no input "), done.stdout
    assert "CodePipeline calls per job: no input " in last
