"""Running a bench's ``--quick`` mode, as the ``test_bench_*`` tests do: the benches print
and assert nothing, so a test checks only that one runs and what it prints last."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_quick(script: str, *options: str, timeout_s: float = 600) -> list[str]:
    """The stdout lines of ``bench/<script> --quick [options]``, run in its own process from the
    bench folder (generous timeout: fresh interpreters and an emulator on a loaded
    machine); fails the test with the end of stderr if it does not exit 0."""
    done = subprocess.run(
        [sys.executable, script, "--quick", *options],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()
