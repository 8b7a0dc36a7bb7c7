"""The plugin reaches a user's project through its entry point: the user's action and
tests (``wordcount.py``, ``test_wordcount.py``), copied to a directory outside this
repository, pass under a fresh pytest with no conftest and no AWS settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_a_user_project_gets_the_fixtures_from_the_entry_point(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("wordcount.py", "test_wordcount.py"):
        shutil.copy(HERE / name, project / name)
    (project / "pytest.ini").write_text("[pytest]\n")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "PYTHON", "PYTEST_"))
    }

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^\d+ passed", done.stdout, re.MULTILINE), done.stdout
