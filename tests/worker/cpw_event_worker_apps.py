"""Custom actions served by the serverless event worker, for ``test_event_worker``.

Each test registers the function with its own provider (``CPW_EVENT_PROVIDER``), so
that no other test's jobs reach it, and a spy file (``CPW_EVENT_SPY``) where every
invocation appends its summary as one JSON line.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pydantic import BaseModel

from cpworker import ActionApp, Continue, Job, Success, lambda_handler, prop

PROVIDER = os.environ.get("CPW_EVENT_PROVIDER", "CpwEventWorker")


class EventConfig(BaseModel):
    Mode: str = prop("copy", description="copy, steps (Steps continuations) or slow.")
    Steps: int = prop(2, description="How many jobs a 'steps' action takes.")


app = ActionApp()


@app.action(
    category="Build", provider=PROVIDER, config=EventConfig, inputs=(1, 1), outputs=(0, 1),
    on_timeout="continue",
)  # fmt: skip
def copy(job: Job[EventConfig]) -> Success | Continue:
    """Copy the input to the output; ``steps`` continues first, ``slow`` outlives the
    function's timeout on its first step (and is resumed by the deadline trap)."""
    if job.config.Mode == "slow" and job.continuation_token is None:
        time.sleep(120)
    if job.config.Mode == "steps":
        seen = [*(job.continuation or []), job.id]
        if len(seen) < job.config.Steps:
            return Continue(state=seen, summary=f"step {len(seen)}")
    source = job.inputs.one().extract()
    for output in job.outputs:
        output.upload_dir(source)
    return Success(summary=f"copied by the event worker ({job.config.Mode})")


class StagedConfig(BaseModel):
    Stage: str = prop(description="Which environment; the function polls one.", queryable=True)


@app.action(
    category="Deploy", provider=PROVIDER, config=StagedConfig, inputs=(1, 1), outputs=(0, 0)
)
def staged(job: Job[StagedConfig]) -> Success:
    """A second action (so the event's type picks one) with a queryable property."""
    return Success(summary=f"deployed to {job.config.Stage}")


worker = lambda_handler(app)


def spied(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``worker``, recording each invocation's summary in ``CPW_EVENT_SPY``."""
    summary = worker(event, context)
    with open(os.environ["CPW_EVENT_SPY"], "a") as spy:
        spy.write(json.dumps(summary) + "\n")
    return summary
