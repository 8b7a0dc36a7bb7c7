"""A build action: run a configured shell command in the source artifact.

It follows the User Guide's two-step pattern for job workers. The first job only
names the run (so the console's execution link works at once) and returns a
continuation; the next job does the work, uploads the output directory as the
output artifact (zipped, SSE-KMS under the job's key) and publishes variables.

Serve it with ``cpworker serve handlers.build:app``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from pydantic import BaseModel

from cpworker import (
    ActionApp,
    ActionSettings,
    ConfigurationError,
    Continue,
    Failure,
    Job,
    JobFailed,
    Result,
    Success,
    lambda_handler,
    prop,
)

TAIL_CHARACTERS = 1500  # of the command's output, quoted in a failure message


class BuildConfig(BaseModel):
    ProjectName: str = prop(description="The build project; used in the console links.")
    Command: str = prop("make", description="Shell command run in the extracted source.")
    OutputDirectory: str = prop(
        ".", description="Directory, relative to the source root, uploaded as the output."
    )
    TimeoutSeconds: int = prop(900, description="Longest the command may run.")


app = ActionApp()


@app.action(
    category="Build",
    provider="CpworkerBuild",
    version="1",
    config=BuildConfig,
    inputs=(1, 1),
    outputs=(0, 1),
    settings=ActionSettings(
        entity_url_template="https://builds.example.com/{Config:ProjectName}/",
        execution_url_template="https://builds.example.com/{Config:ProjectName}/runs/{ExternalExecutionId}",
    ),
)
def build(job: Job[BuildConfig]) -> Result:
    """Step 1 names the run; step 2 builds, uploads and reports."""
    if job.continuation is None:
        run_id = f"{job.config.ProjectName}-{uuid.uuid4().hex[:12]}"
        return Continue(
            state={"run": run_id},
            summary=f"build {run_id} queued",
            external_execution_id=run_id,
            percent_complete=5,
        )
    state = job.continuation
    if not isinstance(state, dict) or not isinstance(state.get("run"), str):
        raise JobFailed("the continuation token was not written by this action")
    return _run_build(job, state["run"])


def _run_build(job: Job[BuildConfig], run_id: str) -> Result:
    source_artifact = job.inputs.one()
    source = source_artifact.extract()
    output_dir = (source / job.config.OutputDirectory).resolve()
    if not output_dir.is_relative_to(source.resolve()):
        raise ConfigurationError("OutputDirectory must stay inside the source artifact")
    timeout = min(float(job.config.TimeoutSeconds), job.remaining())
    job.log.info("build started", extra={"run_id": run_id, "timeout_s": timeout})
    started = time.monotonic()
    output_file = job.workspace / "build-output.log"
    status = _run_command(
        job.config.Command, source, _command_environment(job, run_id), timeout, output_file
    )
    if status is None:
        return Failure(f"the command timed out after {timeout:.0f} s", external_execution_id=run_id)
    duration = time.monotonic() - started
    job.log.info("build finished", extra={"run_id": run_id, "exit_code": status})
    if status != 0:
        return Failure(
            f"the command exited with status {status}; output ends with:\n{_tail(output_file)}",
            external_execution_id=run_id,
        )
    if job.outputs:
        if not output_dir.is_dir():
            raise JobFailed(f"the build did not create {job.config.OutputDirectory!r}")
        job.outputs.one().upload_dir(output_dir)
    return Success(
        summary=f"build {run_id} succeeded in {duration:.1f} s",
        external_execution_id=run_id,
        output_variables={
            "RunId": run_id,
            "DurationSeconds": f"{duration:.1f}",
            "SourceRevision": source_artifact.revision or "unknown",
        },
    )


def _run_command(
    command: str, cwd: Path, environment: dict[str, str], timeout: float, output_file: Path
) -> int | None:
    """Run ``command`` with its output in ``output_file``; its exit status, or None if it
    timed out.

    The shell gets a process group of its own, and the whole group is killed however
    this ends (exit, timeout, an exception), so nothing the build started in the
    background outlives it in a workspace about to be deleted. A group, not a session:
    ``cpworker serve`` kills the job's session at its deadline, and that must reach the
    build too. Output goes to a file, not a pipe, so a background process that keeps the
    shell's stdout open cannot hold the build past the shell's exit.
    """
    with output_file.open("wb") as output:
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(output_file: Path) -> str:
    """The last ``TAIL_CHARACTERS`` characters of the command's output."""
    with output_file.open("rb") as output:
        output.seek(max(0, output_file.stat().st_size - 4 * TAIL_CHARACTERS))
        return output.read().decode(errors="replace")[-TAIL_CHARACTERS:]


def _command_environment(job: Job[BuildConfig], run_id: str) -> dict[str, str]:
    """A small, explicit environment: never the worker's own AWS credentials."""
    environment = {
        name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL", "TZ") if name in os.environ
    }
    environment.update(
        HOME=str(job.workspace),
        TMPDIR=str(_tmp(job.workspace)),
        CPWORKER_RUN_ID=run_id,
        CPWORKER_JOB_ID=job.id,
    )
    if job.pipeline is not None:
        environment["CPWORKER_PIPELINE"] = job.pipeline.pipeline_name
    return environment


def _tmp(workspace: Path) -> Path:
    path = workspace / "tmp"
    path.mkdir(exist_ok=True)
    return path


# The same action as a Lambda invoke action: UserParameters holds the configuration
# as a JSON object, e.g. {"ProjectName": "web", "Command": "make", "OutputDirectory": "dist"}.
handler = lambda_handler(app)
