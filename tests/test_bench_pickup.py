"""bench/pickup.py runs: its quick mode measures the three ways of dispatching and
prints the wake queue's figures last. Nothing is asserted about speed."""

from __future__ import annotations

from cpw_bench import run_quick


def test_the_pickup_bench_runs_its_three_cases_and_prints_the_goals_line_last() -> None:
    lines = run_quick("pickup.py")

    for case in ("polling", "wake queue", "serverless"):
        assert any(line.startswith(f"{case} ") and "over 2 jobs" in line for line in lines), lines
    assert lines[-1].startswith("wake queue: pickup p50 "), lines
    assert "idle CodePipeline calls" in lines[-1]
