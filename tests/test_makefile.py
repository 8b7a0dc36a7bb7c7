"""``make demo`` on a fresh checkout says what it is installing, and shows pip's progress,
instead of minutes of silence."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_first_install_announces_itself_and_shows_progress(tmp_path: Path) -> None:
    fresh = tmp_path / "venv"  # as on a fresh checkout: nothing installed yet
    done = subprocess.run(
        ["make", "-n", "demo", f"VENV={fresh}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    commands = done.stdout.splitlines()
    install = next(i for i, line in enumerate(commands) if "install" in line and "[dev]" in line)
    announced = [line for line in commands[:install] if line.startswith("echo ")]
    assert announced, "a line says what is coming before the long install"
    assert "a few minutes" in announced[0]
    assert "--quiet" not in commands[install]
