"""The Lambda entry point of an action: ``handler = lambda_handler(app)``.

An action's function may be an invoke action's (the ``CodePipeline.job`` event) or an
action type's Lambda executor (the integration model's ``jobId``/``data`` event); the
entry point tells the two apart on each call. It lives here, beside the runtimes, so
that ``ActionApp`` knows no runtime. Importing it stays cheap: the runtimes (and boto3)
load on the first call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from cpworker.app import ActionApp, ActionSpec

if TYPE_CHECKING:
    from cpworker.sources.lambda_runtime import LambdaRuntime, LambdaSettings

LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]
INVOKE_EVENT_KEY = "CodePipeline.job"


def lambda_handler(
    app: ActionApp, action: str | None = None, settings: LambdaSettings | None = None
) -> LambdaHandler:
    """The Lambda entry point of ``action``, which may be left out when the app has only
    one: it reports the result for an invoke action's event and returns it for the
    integration model's event."""
    spec = app[action] if action is not None else _only_action(app)

    def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        return runtime_for(event, spec, settings)(event, context)

    handler.__qualname__ = handler.__name__ = f"{spec.name}_lambda_handler"
    return handler


def _only_action(app: ActionApp) -> ActionSpec:
    if len(app) != 1:
        names = ", ".join(spec.name for spec in app) or "none"
        raise ValueError(
            f"the app has {len(app)} actions ({names}): name one, "
            "as in lambda_handler(app, 'build')"
        )
    return next(iter(app))


def is_integration_event(event: Any) -> bool:
    """Whether ``event`` is the integration model's (``jobId`` and ``data`` at the top)."""
    return isinstance(event, Mapping) and "jobId" in event and "data" in event


def runtime_for(
    event: Mapping[str, Any], spec: ActionSpec, settings: LambdaSettings | None = None
) -> LambdaRuntime:
    """The runtime that handles ``event`` for the action ``spec`` (only its module is
    loaded: a function serves one of the two models)."""
    if is_integration_event(event):
        from cpworker.sources.lambda_integration import IntegrationRuntime

        return IntegrationRuntime(spec, settings)
    if isinstance(event, Mapping) and INVOKE_EVENT_KEY in event:
        from cpworker.sources.lambda_invoke import InvokeRuntime

        return InvokeRuntime(spec, settings)
    raise ValueError(
        f"not a CodePipeline event: neither an invoke action's {INVOKE_EVENT_KEY!r} event "
        "nor the Lambda integration model's 'jobId'/'data' event"
    )
