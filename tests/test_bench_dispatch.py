"""bench/dispatch.py runs: its quick mode drains its jobs and prints the ratio line last,
here with each CodePipeline call held as a region would (``--latency``). Nothing is
asserted about speed."""

from __future__ import annotations

from cpw_bench import run_quick


def test_the_dispatch_bench_runs_and_prints_its_ratio_last() -> None:
    lines = run_quick("dispatch.py", "--latency", "0.005", timeout_s=300)
    last = lines[-1]

    assert lines[0].endswith("each CodePipeline call held 5 ms"), lines[0]
    assert last.startswith("ratio cpworker / hand-written jobs/s: no input "), last
    assert "CodePipeline calls per job: no input " in last
