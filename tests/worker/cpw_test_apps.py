"""Actions used by the worker tests; importable as ``cpw_test_apps:app`` from this folder.

``CPW_TEST_SPY_DIR`` (if set) is where handlers leave what the tests must know
and cannot see otherwise: the job's secrets (to prove they never leak) and a
line per run (to prove each job runs exactly once).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from pydantic import BaseModel, SecretStr

from cpworker import ActionApp, Continue, Job, Success, lambda_handler, prop

app = ActionApp()


def _spy(name: str, text: str) -> None:
    folder = os.environ.get("CPW_TEST_SPY_DIR")
    if folder:
        with (Path(folder) / name).open("a") as file:
            file.write(text + "\n")


@app.action(category="Test", provider="CpwExtract", inputs=(1, 1), outputs=(0, 1))
def extract(job: Job[None]) -> Success:
    """Extract the input, list it, and upload it again as the output."""
    source = job.inputs.one().extract()
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    for output in job.outputs:
        output.upload_dir(source)
    return Success(summary=f"{len(files)} files", output_variables={"Files": ",".join(files)})


class StepsConfig(BaseModel):
    Steps: int = prop(3, description="How many jobs the action takes.")


@app.action(category="Test", provider="CpwSteps", config=StepsConfig, inputs=(0, 1))
def steps(job: Job[StepsConfig]) -> Success | Continue:
    """Take ``Steps`` jobs, carrying the job ids seen so far in the continuation."""
    seen = [*(job.continuation or []), job.id]
    _spy("runs", job.id)
    if len(seen) < job.config.Steps:
        return Continue(
            state=seen,
            summary=f"step {len(seen)}",
            percent_complete=100 * len(seen) // job.config.Steps,
            external_execution_id="steps-run",
        )
    return Success(summary="all steps done", output_variables={"Jobs": ",".join(seen)})


class LoginConfig(BaseModel):
    Target: str
    Password: SecretStr = prop(description="Never shown.")


@app.action(category="Test", provider="CpwLeaky", config=LoginConfig, inputs=(0, 1))
def leaky(job: Job[LoginConfig]) -> None:
    """A careless handler: logs its secrets and raises with them in the message."""
    password = job.config.Password.get_secret_value()
    credentials = job.envelope.data.artifact_credentials
    secrets = credentials.secrets() if credentials else []
    for value in [password, *secrets]:
        _spy("secrets", value)
    job.log.info("logging in to %s with %s, credentials %s", job.config.Target, password, secrets)
    job.log.info("configuration", extra={"configuration": dict(job.configuration)})
    raise RuntimeError(f"login to {job.config.Target} with {password} using {secrets} failed")


class SleepConfig(BaseModel):
    Seconds: float = 1.0


@app.action(category="Test", provider="CpwSleep", config=SleepConfig, inputs=(0, 1))
def sleep(job: Job[SleepConfig]) -> Success:
    """Sleep, then succeed: for drain and race tests."""
    _spy("runs", job.id)
    time.sleep(job.config.Seconds)
    return Success(summary=f"slept {job.config.Seconds:g} s")


GATES: dict[str, threading.Event] = {}
"""The ``gate`` action's gates, by name; a test makes one and opens it to let its job
finish (with ``isolation="thread"``, where the handler runs in the test's process)."""


class GateConfig(BaseModel):
    Gate: str = "open"


@app.action(category="Test", provider="CpwGate", config=GateConfig, inputs=(0, 1))
def gate(job: Job[GateConfig]) -> Success:
    """Succeed once the job's gate is open (``open``: at once)."""
    name = job.config.Gate
    if name != "open" and not GATES[name].wait(timeout=60):
        raise RuntimeError(f"gate {name} was never opened")
    return Success(summary=f"passed gate {name}")


@app.action(category="Test", provider="CpwBoom", inputs=(0, 1))
def boom(job: Job[None]) -> None:
    """Fail with a very long, unexpected exception."""
    raise ValueError("disk on fire " + "!" * 6000)


class StagedConfig(BaseModel):
    Stage: str = prop(description="Which fleet runs the job.", queryable=True)


@app.action(category="Test", provider="CpwStaged", config=StagedConfig, inputs=(0, 1))
def staged(job: Job[StagedConfig]) -> Success:
    """Succeed, naming the stage: for queryParam tests."""
    return Success(summary=f"ran for {job.config.Stage}")


@app.action(
    category="Test",
    provider="CpwResumable",
    config=SleepConfig,
    inputs=(0, 1),
    on_timeout="continue",
)
def resumable(job: Job[SleepConfig]) -> Success:
    """Overrun the Lambda timeout on the first attempt only; report the attempt that finished."""
    _spy("attempts", job.id)
    attempts = len((Path(os.environ["CPW_TEST_SPY_DIR"]) / "attempts").read_text().split())
    if attempts == 1:
        time.sleep(job.config.Seconds)
    return Success(summary=f"done on attempt {attempts}, continuation {job.continuation!r}")


# Lambda entry points of the same actions.
sleep_lambda = lambda_handler(app, "sleep")
leaky_lambda = lambda_handler(app, "leaky")
resumable_lambda = lambda_handler(app, "resumable")


class OutputsConfig(BaseModel):
    Mode: str = prop(
        "skip",
        description="skip: upload nothing; swallow: an upload that fails, its error "
        "swallowed; empty: an empty zip; continue: a Continue first, the upload next step.",
    )


@app.action(
    category="Test",
    provider="CpwOutputs",
    config=OutputsConfig,
    inputs=(0, 1),
    outputs=(0, 3),
    optional_outputs=("Report",),
)
def outputs(job: Job[OutputsConfig]) -> Success | Continue:
    """Return Success with the outputs written, or not, as ``Mode`` says; ``Report``
    may always stay unwritten."""
    mode = job.config.Mode
    if mode == "continue" and job.continuation is None:
        return Continue(state="upload next", summary="outputs come in the next step")
    for output in job.outputs:
        if output.name == "Report" or mode == "skip":
            continue
        if mode == "swallow":
            with contextlib.suppress(OSError):
                output.upload_dir("no-such-directory")
        else:
            output.upload_files({} if mode == "empty" else {"made.txt": "made"})
    return Success(summary=f"mode {mode}", external_execution_id=f"outputs-{mode}")


outputs_lambda = lambda_handler(app, "outputs")
