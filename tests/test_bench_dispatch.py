"""bench/dispatch.py runs: its quick mode drains its jobs and prints the ratio line last.
Nothing is asserted about speed."""

from __future__ import annotations

from cpw_bench import run_quick


def test_the_dispatch_bench_runs_and_prints_its_ratio_last() -> None:
    last = run_quick("dispatch.py", timeout_s=300)[-1]

    assert last.startswith("ratio cpworker / hand-written jobs/s: no input "), last
    assert "CodePipeline calls per job: no input " in last
