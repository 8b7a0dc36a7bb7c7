"""``bench/p5_cold_start.py --quick`` runs and prints its ratio (no figure is asserted:
benches print, tests do not time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_cold_start_bench_runs_and_prints_its_ratio_last() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "p5_cold_start.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,  # generous: fresh interpreters and an emulator on a loaded machine
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("ratio cpworker / guide = "), done.stdout
    assert any(line.startswith("guide ") for line in lines), done.stdout
    assert any(line.startswith("cpworker ") for line in lines), done.stdout
