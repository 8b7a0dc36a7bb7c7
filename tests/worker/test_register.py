"""``cpworker register`` creates the app's missing action types, from the user's own module."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cpworker.local.server import LocalCodePipeline

APP = """
from pydantic import BaseModel
from cpworker import ActionApp, Job, prop

class Config(BaseModel):
    Stage: str = prop(description="Where to deploy.", queryable=True)
    Token: str = prop(None, secret=True)

app = ActionApp()

@app.action(category="Deploy", provider="{provider}", config=Config, inputs=(1, 1), outputs=(0, 0))
def deploy(job: Job[Config]) -> None: ...
"""


def _register(local: LocalCodePipeline, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cpworker.cli", "register", "my_actions:app"],
        cwd=folder,
        env={**os.environ, "AWS_ENDPOINT_URL": local.endpoint_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_register_creates_missing_types_once(
    local: LocalCodePipeline, aws: Callable[..., Any], tmp_path: Path
) -> None:
    provider = f"Reg-{uuid.uuid4().hex[:8]}"
    (tmp_path / "my_actions.py").write_text(APP.format(provider=provider))

    first = _register(local, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"created custom action type Deploy/Custom/{provider}/1\n"
    second = _register(local, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout == ""

    types = aws("codepipeline").list_action_types(actionOwnerFilter="Custom")["actionTypes"]
    created = next(t for t in types if t["id"]["provider"] == provider)
    assert created["actionConfigurationProperties"] == [
        {"name": "Stage", "required": True, "key": True, "secret": False,
         "queryable": True, "description": "Where to deploy.", "type": "String"},
        {"name": "Token", "required": False, "key": False, "secret": True,
         "queryable": False, "type": "String"},
    ]  # fmt: skip
    assert created["inputArtifactDetails"] == {"minimumCount": 1, "maximumCount": 1}
