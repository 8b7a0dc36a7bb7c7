"""The artifact benches run (``--quick``, small sizes): this proves they work, not how fast.

Each runs as a user would, in its own process, with its own ``cpworker local``; only the
exit status and the ratio line it prints last are checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", ["p1_input.py", "p2_output.py"])
def test_bench_runs_quickly_and_prints_its_ratio_last(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ratio cpworker / .+ = \d+\.\d\dx \(goal ≤ 0\.\d\)", last), last
