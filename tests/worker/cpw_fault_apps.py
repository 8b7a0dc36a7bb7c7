"""Actions that misbehave, for the reliability tests; ``cpw_fault_apps:app`` from this folder.

``CPW_TEST_SPY_DIR`` (if set) is where handlers leave what the tests must see:
one line per attempt, and the pids of processes they start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from pydantic import BaseModel

from cpworker import ActionApp, Continue, Job, Success

app = ActionApp()


def _spy(name: str, text: str) -> int:
    """Append ``text`` to the spy file ``name``; returns how many lines it now has."""
    path = Path(os.environ["CPW_TEST_SPY_DIR"]) / name
    with path.open("a") as file:
        file.write(text + "\n")
    return len(path.read_text().splitlines())


def _forever() -> None:
    threading.Event().wait()


class HangConfig(BaseModel):
    Tag: str = "-"


@app.action(category="Test", provider="CpwHang", config=HangConfig, timeout=1.5)
def hang(job: Job[HangConfig]) -> Success:
    """Start a grandchild, then hang until the deadline kills them both; ``Tag=quick`` returns."""
    if job.config.Tag == "quick":
        return Success(summary="quick")
    child = subprocess.Popen(["sleep", "300"], process_group=0)
    _spy("pids", str(child.pid))
    _spy("workspaces", str(job.workspace))
    _forever()
    return Success()


@app.action(
    category="Test", provider="CpwHangOnce", config=HangConfig, timeout=1.5, on_timeout="continue"
)
def hang_once(job: Job[HangConfig]) -> Success:
    """Hang on the first attempt only; the resumed step succeeds."""
    if _spy(f"attempts-{job.config.Tag}", job.id) == 1:
        _forever()
    return Success(summary=f"resumed with {job.continuation!r}")


class DieConfig(BaseModel):
    How: str = "SIGKILL"


@app.action(category="Test", provider="CpwDie", config=DieConfig)
def die(job: Job[DieConfig]) -> Success:
    """End the job's process abruptly: by a signal, or with ``os._exit(3)``."""
    if job.config.How == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.Signals[job.config.How])
    _forever()
    return Success()


class HandBackConfig(BaseModel):
    Tag: str


@app.action(
    category="Test",
    provider="CpwHandBack",
    config=HandBackConfig,
    timeout=120,
    on_shutdown="continue",
)
def hand_back(job: Job[HandBackConfig]) -> Success | Continue:
    """Step 1 returns a continuation; step 2 blocks on its first attempt (until the worker
    stops) and succeeds on the next, showing the state it resumed from."""
    if job.continuation is None:
        return Continue(state={"step": 2}, summary="step 1 done")
    if _spy(f"attempts-{job.config.Tag}", f"{os.getpid()} {job.id}") == 1:
        _forever()
    return Success(summary=f"finished step {job.continuation['step']} after a hand-back")


@app.action(category="Test", provider="CpwPolite", config=HandBackConfig, timeout=120)
def polite(job: Job[HandBackConfig]) -> Continue:
    """Wait for the worker to stop, then hand the step back itself."""
    _spy(f"started-{job.config.Tag}", job.id)
    while not job.is_shutting_down():
        time.sleep(0.05)
    return Continue(state={"seen": "shutdown"}, summary="saw is_shutting_down()")


class OutliveConfig(BaseModel):
    Seconds: float = 3.0


@app.action(
    category="Test", provider="CpwOutlive", config=OutliveConfig, inputs=(1, 1), outputs=(1, 1)
)
def outlive(job: Job[OutliveConfig]) -> Success:
    """Wait past the artifact credentials' lifetime, then read the input and write the output."""
    time.sleep(job.config.Seconds)
    source = job.inputs.one().extract()
    job.outputs.one().upload_dir(source)
    return Success(summary="uploaded after the first credentials expired")


class LeaveConfig(BaseModel):
    Leave: str = "nothing"


@app.action(category="Test", provider="CpwLeave", config=LeaveConfig)
def leave(job: Job[LeaveConfig]) -> Success:
    """Leave something running behind (``thread``, ``process``) or ``nothing``, after
    changing the environment and the working directory; the summary says which process
    ran the job and what it found of an earlier job."""
    found = os.environ.get("CPW_TEST_LEFT", "no")
    os.environ["CPW_TEST_LEFT"] = job.id
    os.chdir(job.workspace)
    if job.config.Leave == "thread":
        threading.Thread(target=_forever, daemon=True).start()
    elif job.config.Leave == "process":
        _spy("left", str(subprocess.Popen(["sleep", "300"]).pid))
    return Success(summary=f"pid {os.getpid()}, earlier job's variable: {found}")
