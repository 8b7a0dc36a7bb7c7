"""The artifact benches run (``--quick``, small sizes): this proves they work, not how fast.

Each runs as a user would, in its own process, with its own ``cpworker local``; only the
exit status and the ratio line it prints last are checked.
"""

from __future__ import annotations

import re

import pytest
from cpw_bench import run_quick


@pytest.mark.parametrize("script", ["p1_input.py", "p2_output.py"])
def test_bench_runs_quickly_and_prints_its_ratio_last(script: str) -> None:
    last = run_quick(script, timeout_s=120)[-1]

    assert re.fullmatch(r"ratio cpworker / .+ = \d+\.\d\dx \(goal ≤ 0\.\d\)", last), last
