"""Actions for the chaos tests and the benches in ``bench/``; ``cpw_chaos_apps:app`` from
this folder.

``CPW_TEST_SPY_DIR`` (if set) gets a line per handler run in ``runs`` (job id, step),
so that a test can count the steps that ran again after a worker died.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from pydantic import BaseModel

from cpworker import ActionApp, Continue, Job, Success, prop

app = ActionApp()

# What the chaos runs (bench/chaos.py, test_chaos.py) read in the emulator and the logs.
FINAL = frozenset({"Succeeded", "Failed", "TimedOut"})
RESOLVED = frozenset(
    {
        "result reported",
        "the job had already ended in CodePipeline (timed out, or stopped) "
        "before its result arrived",
    }
)
TAKEN_OVER = frozenset(
    {
        "resolving a job of a worker that stopped unexpectedly",
        "sending the result a stopped worker had decided",
    }
)

CHAOS_TIMEOUT_S = 30.0
"""The chaos action's deadline per step: the "hung" bound of the chaos runs is built on it.
Long enough for the S3 client's backoff (8 tries, up to 20 s apart) under R3's faults:
at 10 s, one job in ten timed out there."""


@app.action(category="Test", provider="CpwNoop", inputs=(0, 1), outputs=(0, 0))
def noop(job: Job[None]) -> Success:
    """Return at once: what is left is the cost of running a job at all."""
    return Success()


class ChaosConfig(BaseModel):
    Seconds: float = prop(0.3, description="Mean duration of a step (0.5x to 1.5x, at random).")
    Steps: int = prop(1, description="Jobs per action execution (continuations between).")
    Artifacts: bool = prop(False, description="Extract the input and upload it as the output.")


@app.action(
    category="Test",
    provider="CpwChaos",
    config=ChaosConfig,
    inputs=(0, 1),
    outputs=(0, 1),
    timeout=CHAOS_TIMEOUT_S,
    on_shutdown="continue",
)
def chaos(job: Job[ChaosConfig]) -> Success | Continue:
    """``Steps`` steps of about ``Seconds`` each; with ``Artifacts`` each step reads the
    input and the last one uploads the output, so S3 faults reach the handler.

    Idempotent, as ``on_shutdown="continue"`` requires: a step handed back runs again
    from the state the previous step returned.
    """
    step = 1 + int((job.continuation or {}).get("done", 0))
    _spy(f"{job.id} {step}")
    if job.config.Artifacts:
        source = job.inputs.one().extract()
    time.sleep(job.config.Seconds * random.uniform(0.5, 1.5))
    if step < job.config.Steps:
        return Continue(state={"done": step}, summary=f"step {step} of {job.config.Steps}")
    if job.config.Artifacts:
        for output in job.outputs:
            output.upload_dir(source)
    return Success(summary=f"{job.config.Steps} steps")


def _spy(text: str) -> None:
    folder = os.environ.get("CPW_TEST_SPY_DIR")
    if folder:
        with (Path(folder) / "runs").open("a") as file:
            file.write(text + "\n")
