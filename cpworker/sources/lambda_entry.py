"""The Lambda entry point of an action: which runtime an event is for.

An action's function may be an invoke action's (the ``CodePipeline.job`` event) or an
action type's Lambda executor (the integration model's ``jobId``/``data`` event).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cpworker.app import ActionSpec
from cpworker.sources.lambda_integration import IntegrationRuntime, is_integration_event
from cpworker.sources.lambda_invoke import EVENT_KEY, InvokeRuntime
from cpworker.sources.lambda_runtime import LambdaRuntime, LambdaSettings


def runtime_for(
    event: Mapping[str, Any], spec: ActionSpec, settings: LambdaSettings | None = None
) -> LambdaRuntime:
    """The runtime that handles ``event`` for the action ``spec``."""
    if is_integration_event(event):
        return IntegrationRuntime(spec, settings)
    if isinstance(event, Mapping) and EVENT_KEY in event:
        return InvokeRuntime(spec, settings)
    raise ValueError(
        f"not a CodePipeline event: neither an invoke action's {EVENT_KEY!r} event nor "
        "the Lambda integration model's 'jobId'/'data' event"
    )
