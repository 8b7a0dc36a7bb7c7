"""bench/pickup.py runs: its quick mode measures the three ways of dispatching and
prints the wake queue's figures last. Nothing is asserted about speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_the_pickup_bench_runs_its_three_cases_and_prints_the_goals_line_last() -> None:
    done = subprocess.run(
        [sys.executable, "pickup.py", "--quick"],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    for case in ("polling", "wake queue", "serverless"):
        assert any(line.startswith(f"{case} ") and "over 2 jobs" in line for line in lines), (
            done.stdout
        )
    assert lines[-1].startswith("wake queue: pickup p50 "), done.stdout
    assert "idle CodePipeline calls" in lines[-1]
