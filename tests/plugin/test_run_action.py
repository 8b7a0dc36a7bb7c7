"""What ``run_action`` promises beyond the user-style tests: an action with a queryable
property gets its job (CodePipeline refuses polls without ``queryParam`` for it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from cpworker import ActionApp, Job, Success, prop


class TargetConfig(BaseModel):
    Target: str = prop(description="Whose jobs a worker takes.", queryable=True)


app = ActionApp()


@app.action(category="Test", provider="CpwPluginQuery", config=TargetConfig, outputs=(0, 0))
def greet(job: Job[TargetConfig]) -> Success:
    return Success(summary=f"hello {job.config.Target}")


def test_an_action_with_a_queryable_property_gets_its_job(
    run_action: Callable[..., Any],
) -> None:
    run = run_action(app, config={"Target": "alpha"})

    assert run.status == "Succeeded"
    assert run.summary == "hello alpha"
