"""An action whose outcome its configuration picks, for the metrics tests;
``cpw_metrics_apps:app`` from this folder."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from cpworker import ActionApp, Continue, Failure, Job, Success

app = ActionApp()


class MeteredConfig(BaseModel):
    # continue: one continuation, then a success
    Outcome: Literal["success", "continue", "fail"] = "success"


@app.action(category="Test", provider="CpwMetered", config=MeteredConfig, inputs=(0, 1))
def metered(job: Job[MeteredConfig]) -> Success | Continue | Failure:
    if job.config.Outcome == "fail":
        return Failure("failed on purpose")
    if job.config.Outcome == "continue" and job.continuation is None:
        return Continue(state={"step": 1})
    return Success()
