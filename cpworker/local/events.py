"""CodePipeline's EventBridge events, on the local event bus, and the rules' delivery.

:class:`EventPublisher` hears every pipeline, stage and action state change of the
engine (under its lock, so it only builds the event) and puts each event on moto's
default event bus from its own thread, in order, as CodePipeline does: ``source``
``aws.codepipeline`` and the detail types and ``detail`` members of the User Guide's
"Monitoring CodePipeline events". An action's STARTED event goes out once its job can
be polled, so that a worker woken by it finds the job. While the default bus has no
rule, changes are not published at all: EventBridge matches an event against the rules
there are when it arrives, so a rule made later gets the changes from then on.

Rules and targets are the ordinary EventBridge API's, served by moto. Delivery to SQS
and Lambda targets is this module's (:func:`install_delivery`, once per process):

* an SQS target gets the whole event (moto's own delivery drops ``account``), or what
  the target's ``Input``, ``InputPath`` or ``InputTransformer`` makes of it;
* a Lambda target's function, registered with ``cpworker local --function``, is
  invoked asynchronously by the function runner that invoke actions use; a function
  cpworker local does not know goes to the target's dead-letter queue, if any;
* a disabled rule delivers nothing; other targets (log groups, archives, buses, API
  destinations) are left to moto.

Events clients put with PutEvents are delivered the same way. The publisher calls moto
in-process: ``cpworker local`` serves moto from the process the engine runs in.
"""

from __future__ import annotations

import copy
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from moto.events.models import Rule, events_backends
from moto.events.utils import EventMessageType, EventTemplateParser
from moto.sqs.models import sqs_backends

from cpworker.local.integration import function_name
from cpworker.local.lambdas import FunctionRegistry, Invocation, Invoker

if TYPE_CHECKING:
    from cpworker.local.executions import ActionRun, Execution

log = logging.getLogger("cpworker.local")

SOURCE = "aws.codepipeline"
PIPELINE_CHANGE = "CodePipeline Pipeline Execution State Change"
STAGE_CHANGE = "CodePipeline Stage Execution State Change"
ACTION_CHANGE = "CodePipeline Action Execution State Change"
_UNREGISTERED = (
    "names a function cpworker local does not know (register it with --function NAME=module:attr)"
)
_PUT_ATTEMPTS = 3  # moto's loop over a bus's rules fails if a rule is added meanwhile


def iso(timestamp: float, *, millis: bool = False) -> str:
    """``2020-01-24T22:03:07Z`` (or with milliseconds, as ``start-time`` has them)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class EventPublisher:
    """The engine's :class:`~cpworker.local.executions.StateChanges`: each change becomes
    an event, put on the local default bus by the publisher's thread."""

    def __init__(self, region: str, account_id: str, pipeline_arn: Callable[[str], str]) -> None:
        self._region, self._account_id, self._pipeline_arn = region, account_id, pipeline_arn
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cpworker-local-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Put what was queued, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    # -- the state changes (called under the engine lock: build, queue, nothing more) --

    def _heard(self) -> bool:
        """Whether the default bus has a rule (an archive is one too): without one a
        change reaches nobody, so it is neither built nor put, and the engine (the
        emulator's CPU per job, under its lock) pays one lookup for it."""
        bus = events_backends[self._account_id][self._region].event_buses.get("default")
        return bus is not None and bool(bus.rules)

    def pipeline(self, ex: Execution, state: str) -> None:
        if not self._heard():
            return
        detail: dict[str, Any] = {**self._execution(ex), "state": state}
        if state == "STARTED":
            detail["execution-trigger"] = {"trigger-type": ex.trigger}
        self._put(PIPELINE_CHANGE, ex, detail)

    def stage(self, ex: Execution, stage: str, state: str) -> None:
        if not self._heard():
            return
        self._put(STAGE_CHANGE, ex, {**self._execution(ex), "stage": stage, "state": state})

    def action(self, run: ActionRun, state: str) -> None:
        if not self._heard():
            return
        type_id = run.declaration["actionTypeId"]
        detail: dict[str, Any] = {
            **self._execution(run.execution),
            "stage": run.stage,
            "action-execution-id": run.id,
            "action": run.name,
            "state": state,
            "region": run.declaration.get("region") or self._region,
            "type": {k: type_id[k] for k in ("owner", "category", "provider", "version")},
        }
        if state == "STARTED":
            detail["input-artifacts"] = [a.detail() for a in run.inputs]
        else:
            detail["execution-result"] = _execution_result(run)
        if state == "SUCCEEDED" and run.outputs:
            detail["output-artifacts"] = [a.detail() for a in run.outputs]
        self._put(ACTION_CHANGE, run.execution, detail)

    def _execution(self, ex: Execution) -> dict[str, Any]:
        return {
            "pipeline": ex.pipeline,
            "execution-id": ex.id,
            "start-time": iso(ex.started, millis=True),
            "version": float(ex.version),
            "pipeline-execution-attempt": 1.0,
        }

    def _put(self, detail_type: str, ex: Execution, detail: dict[str, Any]) -> None:
        self._queue.put(
            {
                "Source": SOURCE,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
                "Resources": [self._pipeline_arn(ex.pipeline)],
                "Time": time.time(),
            }
        )

    # -- the publisher's thread ----------------------------------------------------------

    def _run(self) -> None:
        while (entry := self._queue.get()) is not None:
            backend = events_backends[self._account_id][self._region]
            for attempt in range(1, _PUT_ATTEMPTS + 1):
                try:
                    backend.put_events([entry])
                    break
                except RuntimeError:  # the rules changed under moto's loop: put it again
                    if attempt == _PUT_ATTEMPTS:
                        log.warning("cpworker local could not publish a %s event", entry["Source"])
                except Exception:
                    log.exception("cpworker local could not publish a CodePipeline event")
                    break


def _execution_result(run: ActionRun) -> dict[str, str]:
    result: dict[str, str] = {}
    if run.external_id is not None:
        result["external-execution-id"] = run.external_id
    if run.summary is not None:
        result["external-execution-summary"] = run.summary
    if run.external_url is not None:
        result["external-execution-url"] = run.external_url
    if run.error is not None:
        result["error-code"] = run.error["code"]
        result.setdefault("external-execution-summary", run.error["message"])
    return result


# -- delivery -------------------------------------------------------------------------


class LambdaTargets:
    """The functions of one running engine, as EventBridge Lambda targets."""

    def __init__(
        self,
        functions: FunctionRegistry,
        invoker: Invoker,
        timeouts: Callable[[], tuple[float, float]],
    ) -> None:
        self._functions, self._invoker, self._timeouts = functions, invoker, timeouts

    def invoke(self, arn: str, payload: Any) -> bool:
        """Invoke the function of ``arn`` asynchronously; False if it is not registered."""
        name = function_name(arn)
        spec = self._functions.get(name)
        if spec is None:
            return False
        limit_s, init_timeout_s = self._timeouts()
        self._invoker.invoke(Invocation(name, spec, payload, spec.timeout(limit_s), init_timeout_s))
        return True


_lock = threading.Lock()
_engines: list[LambdaTargets] = []
_moto_send: Callable[..., None] | None = None


def install_delivery(targets: LambdaTargets) -> None:
    """Deliver the rules' events to SQS and to ``targets``' functions from now on."""
    global _moto_send
    with _lock:
        if _moto_send is None:
            _moto_send = Rule.send_to_targets
            Rule.send_to_targets = _send_to_targets  # type: ignore[method-assign,assignment]
        _engines.append(targets)


def uninstall_delivery(targets: LambdaTargets) -> None:
    with _lock:
        if targets in _engines:
            _engines.remove(targets)


def _send_to_targets(rule: Rule, event: EventMessageType, transform_input: bool = True) -> None:
    """moto's ``Rule.send_to_targets``, with SQS and Lambda targets delivered here."""
    if rule.state == "DISABLED" or not rule.event_pattern.matches_event(event):
        return
    ours = [t for t in rule.targets if _service(t["Arn"]) in ("sqs", "lambda")]
    if len(ours) < len(rule.targets) and _moto_send is not None:
        others = copy.copy(rule)
        others.targets = [t for t in rule.targets if t not in ours]
        _moto_send(others, event, transform_input)
    delivered = _as_delivered(event)
    for target in ours:
        try:
            payload = _payload(target, delivered) if transform_input else delivered
            if not _deliver(target["Arn"], payload, target):
                _dead_letter(rule, target, delivered, _UNREGISTERED)
        except Exception as exc:  # noqa: BLE001 - one target must not stop the others
            log.warning(
                "EventBridge rule %s could not deliver to %s: %s", rule.name, target["Arn"], exc
            )
            _dead_letter(rule, target, delivered, f"failed: {type(exc).__name__}")


def _service(arn: str) -> str:
    parts = arn.split(":")
    return parts[2] if len(parts) > 2 else ""


def _as_delivered(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as a target receives it: ``time`` in ISO 8601, no moto bookkeeping."""
    delivered = {k: v for k, v in event.items() if k != "ingestion-time"}
    if isinstance(delivered.get("time"), int | float):
        delivered["time"] = iso(float(delivered["time"]))
    return delivered


def _payload(target: Mapping[str, Any], event: dict[str, Any]) -> Any:
    if "Input" in target:
        return json.loads(target["Input"])
    if "InputPath" in target:
        from jsonpath_ng.ext import parse  # type: ignore[attr-defined]  # moto's dependency

        found = parse(target["InputPath"]).find(event)
        return found[0].value if found else None
    transformer = target.get("InputTransformer")
    if transformer:
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=cast(EventMessageType, {**event, "ingestion-time": event.get("time")}),
        )
    return event


def _deliver(arn: str, payload: Any, target: Mapping[str, Any]) -> bool:
    """Send ``payload`` to one SQS or Lambda target; False if there is no such target."""
    parts = arn.split(":")
    account, region, resource = parts[4], parts[3], parts[5]
    if _service(arn) == "sqs":
        body = payload if isinstance(payload, str) else json.dumps(payload)
        group = target.get("SqsParameters", {}).get("MessageGroupId")
        sqs_backends[account][region].send_message(
            queue_name=resource,
            message_body=body,
            group_id=group,
            deduplication_id=str(uuid.uuid4()) if group else None,
        )
        return True
    with _lock:
        engines = list(_engines)
    return any(engine.invoke(arn, payload) for engine in engines)


def _dead_letter(rule: Rule, target: Mapping[str, Any], event: dict[str, Any], why: str) -> None:
    """EventBridge's dead-letter queue: the event a target could not take, or a warning."""
    queue_arn = target.get("DeadLetterConfig", {}).get("Arn")
    if queue_arn is None:
        log.warning(
            "EventBridge rule %s: target %s %s, and it has no dead-letter queue: event dropped",
            rule.name,
            target["Arn"],
            why,
        )
        return
    try:
        _deliver(queue_arn, event, {})
    except Exception as exc:  # noqa: BLE001 - a dead letter that cannot be kept is logged
        log.warning("EventBridge rule %s: dead-letter queue %s: %s", rule.name, queue_arn, exc)
