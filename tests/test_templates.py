"""``templates/``: each lints, the worker role grants least privilege, one unit runs everywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cpworker.systemd import unit_text

ROOT = Path(__file__).parents[1]
TEMPLATES = ROOT / "templates"


def test_cpworker_systemd_unit_prints_the_shipped_unit() -> None:
    cli = Path(sys.executable).with_name("cpworker")
    done = subprocess.run(
        [str(cli), "systemd-unit"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == unit_text()
    assert done.stdout == (TEMPLATES / "cpworker.service").read_text()
    assert "ExecStart=/opt/cpworker/bin/cpworker serve $CPWORKER_APP" in done.stdout
