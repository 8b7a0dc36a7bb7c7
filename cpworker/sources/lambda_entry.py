"""The Lambda entry point of an action: ``handler = lambda_handler(app)``.

An action's function may be an invoke action's (the ``CodePipeline.job`` event), an
action type's Lambda executor (the integration model's ``jobId``/``data`` event), or a
serverless custom-action worker invoked by an EventBridge rule (an action-started
event, cpworker's own "Job Continued" event, or a scheduled event); the entry point
tells them apart on each call. It lives here, beside the runtimes, so that
``ActionApp`` knows no runtime. Importing it stays cheap: the runtimes (and botocore)
load on the first call, and only the one the event needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cpworker.app import ActionApp, ActionSpec

if TYPE_CHECKING:
    from cpworker.sources.lambda_runtime import LambdaSettings

LambdaHandler = Callable[[Mapping[str, Any], Any], dict[str, Any]]
INVOKE_EVENT_KEY = "CodePipeline.job"


class EntryPointError(ValueError):
    """The entry point cannot serve this event: a job event for an app of several
    actions (name one), or an event that is not CodePipeline's."""


def lambda_handler(
    app: ActionApp, action: str | None = None, settings: LambdaSettings | None = None
) -> LambdaHandler:
    """The Lambda entry point of ``action``, which may be left out when the app has only
    one: it reports the result for an invoke action's event and returns it for the
    integration model's event.

    As an event worker (EventBridge events) it serves ``action``, or every custom action
    of the app when ``action`` is left out: the event's action type picks the one. A job
    event for an app of several actions needs ``action``.
    """
    specs = [app[action]] if action is not None else list(app)
    if not specs:
        raise ValueError("the app has no actions: decorate a handler with @app.action(...)")

    def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        return runtime_for(event, specs, settings)(event, context)

    name = specs[0].name if len(specs) == 1 else "app"
    handler.__qualname__ = handler.__name__ = f"{name}_lambda_handler"
    return handler


def _only_action(app: ActionApp) -> ActionSpec:
    return _only(list(app))


def _only(specs: Sequence[ActionSpec]) -> ActionSpec:
    if len(specs) != 1:
        names = ", ".join(spec.name for spec in specs) or "none"
        raise EntryPointError(
            f"the app has {len(specs)} actions ({names}): name one, "
            "as in lambda_handler(app, 'build')"
        )
    return specs[0]


def is_integration_event(event: Any) -> bool:
    """Whether ``event`` is the integration model's (``jobId`` and ``data`` at the top)."""
    return isinstance(event, Mapping) and "jobId" in event and "data" in event


def is_eventbridge_event(event: Any) -> bool:
    """Whether ``event`` came from an EventBridge rule (``source`` and ``detail-type``)."""
    return isinstance(event, Mapping) and "source" in event and "detail-type" in event


def runtime_for(
    event: Mapping[str, Any],
    spec: ActionSpec | Sequence[ActionSpec],
    settings: LambdaSettings | None = None,
) -> LambdaHandler:
    """The runtime that handles ``event`` for the action ``spec`` (or one of ``spec``s,
    by the event's action type). Only its module is loaded: a function serves one model."""
    specs = [spec] if isinstance(spec, ActionSpec) else list(spec)
    if is_eventbridge_event(event):
        from cpworker.sources.lambda_event_worker import EventWorker

        return EventWorker(specs, settings)
    if is_integration_event(event):
        from cpworker.sources.lambda_integration import IntegrationRuntime

        return IntegrationRuntime(_only(specs), settings)
    if isinstance(event, Mapping) and INVOKE_EVENT_KEY in event:
        from cpworker.sources.lambda_invoke import InvokeRuntime

        return InvokeRuntime(_only(specs), settings)
    raise EntryPointError(
        f"not a CodePipeline event: neither an invoke action's {INVOKE_EVENT_KEY!r} event, "
        "the Lambda integration model's 'jobId'/'data' event, nor an EventBridge event"
    )
