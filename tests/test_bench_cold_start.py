"""``bench/p5_cold_start.py --quick`` runs and prints its ratio (no figure is asserted:
benches print, tests do not time)."""

from __future__ import annotations

from cpw_bench import run_quick


def test_the_cold_start_bench_runs_and_prints_its_ratio_last() -> None:
    lines = run_quick("p5_cold_start.py")

    assert lines[-1].startswith("ratio cpworker / guide = "), lines
    assert any(line.startswith("guide ") for line in lines), lines
    assert any(line.startswith("cpworker ") for line in lines), lines
