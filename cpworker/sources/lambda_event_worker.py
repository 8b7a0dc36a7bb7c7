"""The serverless custom-action worker: an EventBridge rule invokes the function, which
polls, acknowledges and runs custom-action jobs, and costs nothing while idle.

CodePipeline publishes "CodePipeline Action Execution State Change" with ``detail.state``
STARTED for every action, custom ones included, once the job can be polled. A rule on
the action type invokes the function (``handler = lambda_handler(app)``), and this
runtime:

1. polls the event's action type (``PollForJobs``, ``maxBatchSize=1``), with the value
   of the type's queryable property from ``CPWORKER_QUERY`` (the event carries no
   configuration, so the deployment says which jobs this function takes);
2. acknowledges the job with its nonce and runs it as the invoke runtime does (one
   ``LambdaRuntime``: deadline trap, ``on_timeout`` continuation, masking, metrics);
3. reports it (PutJobSuccessResult, a continuation included, or PutJobFailureResult);
4. polls again while at least ``drain_margin_s`` of the invocation remains, so that
   one invocation drains a burst; then returns a small summary.

A continuation is not lost, although CodePipeline announces no follow-up job: after
reporting one, the invocation keeps polling for up to ``follow_up_wait_s`` (the
follow-up comes after a short delay) and runs it. If it ends first, it publishes
cpworker's own event (source ``cpworker``, detail-type ``cpworker Job Continued``, the
same ``type`` and ``state`` members, so the same rule matches it), and the invocation
that event starts waits for the follow-up in its turn. A scheduled event (source
``aws.events``) polls every custom action the function serves: the safety net for a
lost event.

A poll or acknowledgement that fails is logged (ERROR, naming the permission when
access was denied) and the invocation returns normally: the job is still queued, so the
next event or the scheduled poll takes it, whereas raising would make Lambda retry the
asynchronous invocation, against the same refusal. Nothing logs credentials.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any

from pydantic import ValidationError

from cpworker.api import CodePipelineAPI, MalformedJob, RetryPolicy, error_code
from cpworker.app import ActionSpec
from cpworker.errors import FailureType
from cpworker.logs import LOGGER_NAME, JobLogger, logger
from cpworker.model import ActionTypeId, JobEnvelope
from cpworker.result import Continue, Failure
from cpworker.sources.custom import CustomSource
from cpworker.sources.lambda_invoke import DENIED, InvokeRuntime, function_client
from cpworker.sources.lambda_runtime import LambdaSettings, Received, prepare_logging, remaining_s
from cpworker.sources.polling import PolledJob

STARTED_SOURCE, ACTION_CHANGE = "aws.codepipeline", "CodePipeline Action Execution State Change"
CONTINUED_SOURCE, CONTINUED = "cpworker", "cpworker Job Continued"
SCHEDULED_SOURCE, SCHEDULED = "aws.events", "Scheduled Event"
MAX_WAIT_STEP_S = 2.0  # polls for a follow-up job at most this far apart


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


@dataclass(frozen=True)
class EventWorkerSettings(LambdaSettings):
    """How the event worker drains and hands over, besides ``LambdaSettings``.

    - ``drain_margin_s`` (20 s; env ``CPWORKER_DRAIN_MARGIN_S``): another job is polled
      only while this much of the invocation remains; a job taken later would mostly
      be cut off by the deadline trap. The first job needs only ``timeout_margin_s`` + 1 s.
    - ``follow_up_wait_s`` (30 s; env ``CPWORKER_FOLLOW_UP_WAIT_S``): how long to keep
      polling for the follow-up job of a continuation before giving up on it.
    - ``query`` (env ``CPWORKER_QUERY``): the queryable property's value,
      ``Property=value`` or ``ACTION:Property=value``, several separated by commas.
    - ``event_bus`` (``default``; env ``CPWORKER_EVENT_BUS``): where "Job Continued"
      events go. ``announce_continuations`` (True; env ``CPWORKER_ANNOUNCE_CONTINUATIONS``
      ``false`` turns it off) leaves an unfinished wait to the scheduled poll instead.
    - ``poll_attempts`` (3): tries of PollForJobs on throttling and 5xx.
    """

    drain_margin_s: float = field(
        default_factory=lambda: _env_float("CPWORKER_DRAIN_MARGIN_S", 20.0)
    )
    follow_up_wait_s: float = field(
        default_factory=lambda: _env_float("CPWORKER_FOLLOW_UP_WAIT_S", 30.0)
    )
    query: str = field(default_factory=lambda: os.environ.get("CPWORKER_QUERY", ""))
    event_bus: str = field(default_factory=lambda: os.environ.get("CPWORKER_EVENT_BUS", "default"))
    announce_continuations: bool = field(
        default_factory=lambda: (
            os.environ.get("CPWORKER_ANNOUNCE_CONTINUATIONS", "true").lower() != "false"
        )
    )
    poll_attempts: int = 3


def event_worker_settings(settings: LambdaSettings | None) -> EventWorkerSettings:
    """``settings`` as an ``EventWorkerSettings`` (the event worker's own from the
    environment, the given ``LambdaSettings`` kept)."""
    if isinstance(settings, EventWorkerSettings):
        return settings
    if settings is None:
        return EventWorkerSettings()
    given = {f.name: getattr(settings, f.name) for f in fields(LambdaSettings)}
    return EventWorkerSettings(**given)


def parse_query(text: str) -> dict[str, str]:
    """``CPWORKER_QUERY``: ``Property=value`` or ``ACTION:Property=value``, comma-separated
    (a queryable value is ``[A-Za-z0-9_-]``, so it holds no comma)."""
    found: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not (sep and key and value):
            raise ValueError(
                f"CPWORKER_QUERY {item!r}: expected Property=value or ACTION:Property=value"
            )
        found[key.strip()] = value.strip()
    return found


def query_of(spec: ActionSpec, query: Mapping[str, str]) -> dict[str, str] | None:
    """The ``queryParam`` to poll ``spec`` with: empty without a queryable property,
    ``None`` when it has one and no value is configured (CodePipeline needs one)."""
    queryable = spec.queryable
    if queryable is None:
        return {}
    value = query.get(f"{spec.name}:{queryable.name}") or query.get(queryable.name)
    return {queryable.name: value} if value else None


@dataclass(frozen=True)
class FollowUp:
    """An action execution whose follow-up job (after a continuation) is awaited."""

    type_id: ActionTypeId
    pipeline: str | None = None
    stage: str | None = None
    action: str | None = None
    execution_id: str | None = None
    pipeline_arn: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, type_id: ActionTypeId, envelope: JobEnvelope) -> FollowUp:
        context = envelope.data.pipeline_context
        if context is None:
            return cls(type_id)
        return cls(
            type_id,
            context.pipeline_name,
            context.stage.name,
            context.action.name,
            context.pipeline_execution_id,
            context.pipeline_arn,
        )

    @classmethod
    def from_detail(cls, type_id: ActionTypeId, detail: Mapping[str, Any]) -> FollowUp:
        def text(name: str) -> str | None:
            value = detail.get(name)
            return value if isinstance(value, str) else None

        return cls(type_id, text("pipeline"), text("stage"), text("action"), text("execution-id"))

    def detail(self) -> dict[str, Any]:
        """The "Job Continued" event's detail: ``state`` STARTED and ``type`` as in
        CodePipeline's action-started event, so that the same rule pattern matches."""
        members = {
            "pipeline": self.pipeline,
            "stage": self.stage,
            "action": self.action,
            "execution-id": self.execution_id,
        }
        found = {name: value for name, value in members.items() if value is not None}
        return {**found, "state": "STARTED", "type": self.type_id.model_dump()}


@dataclass(frozen=True)
class Trigger:
    """What the event asks: poll ``type_id`` (all served types when ``None``), awaiting
    ``follow_up``; or nothing (``kind`` "ignored", and why)."""

    kind: str
    type_id: ActionTypeId | None = None
    follow_up: FollowUp | None = None
    reason: str = ""


def trigger_of(event: Mapping[str, Any]) -> Trigger:
    """Read an EventBridge event: action started, cpworker's job continued, scheduled."""
    source, kind, detail = event.get("source"), event.get("detail-type"), event.get("detail")
    if (source, kind) == (SCHEDULED_SOURCE, SCHEDULED):
        return Trigger("scheduled")
    started = (source, kind) == (STARTED_SOURCE, ACTION_CHANGE)
    if not (started or (source, kind) == (CONTINUED_SOURCE, CONTINUED)):
        return Trigger("ignored", reason=f"not an action-started event: {source} {kind}")
    if not isinstance(detail, Mapping):
        return Trigger("ignored", reason="the event has no detail")
    if started and detail.get("state") != "STARTED":
        return Trigger("ignored", reason=f"the action's state is {detail.get('state')}")
    try:
        type_id = ActionTypeId.model_validate(detail.get("type"))
    except ValidationError:
        return Trigger("ignored", reason="the event's detail has no action type")
    if type_id.owner != "Custom":
        return Trigger("ignored", reason=f"{type_id} is not a custom action type")
    if started:
        return Trigger("started", type_id)
    return Trigger("continued", type_id, FollowUp.from_detail(type_id, detail))


class EventWorker:
    """Runs the custom actions of ``specs`` for one EventBridge event (see the module)."""

    def __init__(self, specs: Sequence[ActionSpec], settings: LambdaSettings | None = None) -> None:
        self.specs = [spec for spec in specs if spec.type_id.owner == "Custom"]
        self.settings = event_worker_settings(settings)

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        prepare_logging()
        trigger = trigger_of(event)
        request_id = str(getattr(context, "aws_request_id", "") or "")
        fields_ = {"trigger": trigger.kind, "function_request_id": request_id}
        if trigger.type_id is not None:
            fields_["action_type"] = str(trigger.type_id)
        log = logger(LOGGER_NAME, **fields_)
        summary: dict[str, Any] = {"trigger": trigger.kind, "polls": 0, "jobs": []}
        if trigger.kind == "ignored":
            log.info("event ignored: %s", trigger.reason)
            return summary | {"ignored": trigger.reason}
        specs = [s for s in self.specs if trigger.type_id in (None, s.type_id)]
        if not specs:
            served = ", ".join(str(s.type_id) for s in self.specs) or "none"
            log.warning("no action of this function has the event's type (served: %s)", served)
            return summary | {"ignored": "action type not served"}
        _Drain(self.settings, specs, context, log, summary).run(trigger.follow_up)
        log.info("event worker done", extra={k: v for k, v in summary.items() if k != "jobs"})
        return summary


class _Drain:
    """One invocation's polling: jobs run one at a time until none is left, or time."""

    def __init__(
        self,
        settings: EventWorkerSettings,
        specs: list[ActionSpec],
        context: Any,
        log: JobLogger,
        summary: dict[str, Any],
    ) -> None:
        self.settings, self.specs, self.context = settings, specs, context
        self.log, self.summary = log, summary
        self.region = os.environ.get("AWS_REGION")
        self.api = CodePipelineAPI(
            function_client(self.region),
            RetryPolicy(attempts=settings.poll_attempts, max_elapsed_s=10.0),
        )
        self.owed: dict[FollowUp, FollowUp] = {}  # continuations reported, follow-up not run

    def run(self, awaited: FollowUp | None) -> None:
        try:
            queries = self._queries()
        except ValueError as exc:
            self.log.error(str(exc))
            self._stop("error", "bad CPWORKER_QUERY")
            return
        source = CustomSource(self.api, queries)
        specs = [spec for spec in self.specs if spec.name in queries]
        waiting = {awaited} if awaited is not None else set()
        wait_until = time.monotonic() + self.settings.follow_up_wait_s
        step = 0.25
        first = True
        while specs:
            floor = self.settings.timeout_margin_s + 1 if first else self.settings.drain_margin_s
            if remaining_s(self.context) < floor:
                self._stop("time", "too little of the invocation is left to take a job")
                break
            first = False
            ran = self._round(source, specs, waiting)
            if ran is None:
                break
            if ran:
                step = 0.25
                if self.owed:
                    wait_until = time.monotonic() + self.settings.follow_up_wait_s
                continue
            if not (waiting or self.owed) or time.monotonic() + step > wait_until:
                self.summary.setdefault("stopped", "no job")
                break
            if remaining_s(self.context) - step < self.settings.drain_margin_s:
                self._stop("time", "a follow-up job is awaited, but time is short")
                break
            time.sleep(step)  # the follow-up of a continuation comes after a short delay
            step = min(step * 2, MAX_WAIT_STEP_S)
        self._announce()

    def _queries(self) -> dict[str, dict[str, str]]:
        """The queryParam of each action that can be polled; the others are logged."""
        given = parse_query(self.settings.query)
        queries: dict[str, dict[str, str]] = {}
        for spec in self.specs:
            query = query_of(spec, given)
            if query is None:
                name = spec.queryable.name if spec.queryable else ""
                self.log.error(
                    f"action {spec.name!r} has the queryable property {name!r}: set "
                    f"CPWORKER_QUERY={name}=VALUE in the function's environment"
                )
                self.summary["error"] = "no query"
                continue
            queries[spec.name] = query
        return queries

    def _round(
        self, source: CustomSource, specs: list[ActionSpec], waiting: set[FollowUp]
    ) -> bool | None:
        """Poll each action once and run what comes: whether a job ran, None on an error."""
        ran = False
        for spec in specs:
            try:
                polled = source.poll(spec, 1, threading.Event())
            except Exception as exc:  # noqa: BLE001 - raising would make Lambda retry the event
                self._poll_failed(spec, exc)
                return None
            self.summary["polls"] += 1
            if polled:
                if not self._run(spec, polled[0], waiting):
                    self._stop("not claimed", "")
                    return None
                ran = True
        return ran

    def _poll_failed(self, spec: ActionSpec, exc: Exception) -> None:
        code = error_code(exc) or type(exc).__name__
        resource = f"actiontype:{spec.type_id.owner}/{spec.type_id.category}"
        resource += f"/{spec.type_id.provider}/{spec.type_id.version}"
        hint = (
            f": the function's role needs codepipeline:PollForJobs on the type's ARN "
            f"(arn:aws:codepipeline:REGION:ACCOUNT:{resource})"
            if code in DENIED
            else ""
        )
        self.log.error(
            f"PollForJobs failed{hint}; the job stays queued for the next event or the "
            "scheduled poll",
            extra={"error": code, "action_type": str(spec.type_id)},
        )
        self._stop("error", code)

    def _run(self, spec: ActionSpec, polled: PolledJob, waiting: set[FollowUp]) -> bool:
        """Acknowledge the job, run it under the deadline trap and report it; False if it
        could not be claimed (another worker took it, or the acknowledgement failed:
        logged), which ends the drain, as another worker is at it or the next would fail
        too."""
        job_log = logger("cpworker.job", **polled.fields, **_request(self.context))
        claim = polled.claim(job_log, lambda *_: None)
        if claim is None:
            return False
        runtime = InvokeRuntime(spec, self.settings)
        if isinstance(claim.job, MalformedJob):
            job_log.error("job cannot be read", extra={"problem": claim.job.problem})
            failure = Failure(
                f"cpworker could not read this job: {claim.job.problem}",
                type=FailureType.JOB_FAILED,
            )
            answer, _ = runtime.deliver(claim.ref.id, failure, job_log)
            self.summary["jobs"].append(answer)
            return True
        envelope = claim.job
        received = Received(envelope, envelope.data.action_configuration.configuration)
        handled = runtime.handle(received, self.context)
        self.summary["jobs"].append(handled.answer)
        follow_up = FollowUp.of(spec.type_id, envelope)
        waiting.discard(follow_up)
        self.owed.pop(follow_up, None)
        if isinstance(handled.result, Continue) and handled.delivered:
            self.owed[follow_up] = follow_up
        return True

    def _announce(self) -> None:
        """Publish "Job Continued" for each continuation whose follow-up did not run here."""
        if not self.owed:
            return
        if not self.settings.announce_continuations:
            self.log.warning(
                "continuations left to the scheduled poll", extra={"count": len(self.owed)}
            )
            return
        announced = 0
        for follow_up in self.owed:
            entry: dict[str, Any] = {
                "Source": CONTINUED_SOURCE,
                "DetailType": CONTINUED,
                "Detail": json.dumps(follow_up.detail()),
                "EventBusName": self.settings.event_bus,
            }
            if follow_up.pipeline_arn:
                entry["Resources"] = [follow_up.pipeline_arn]
            try:
                answer = _events_client(self.region).put_events(Entries=[entry])
                failed = answer.get("Entries", [{}])[0].get("ErrorCode")
            except Exception as exc:  # noqa: BLE001 - the scheduled poll is the fallback
                failed = error_code(exc) or type(exc).__name__
            if failed:
                hint = (
                    ": the function's role needs events:PutEvents on the event bus"
                    if failed in DENIED
                    else ""
                )
                self.log.error(
                    f"could not publish the Job Continued event{hint}; the scheduled poll "
                    "will run the follow-up job",
                    extra={"error": failed, "pipeline": follow_up.pipeline},
                )
                continue
            announced += 1
        self.summary["announced"] = announced

    def _stop(self, why: str, detail: str) -> None:
        self.summary.setdefault("stopped", why)
        if why == "error":
            self.summary["error"] = detail
        elif why == "time":
            self.log.info(detail, extra={"remaining_s": round(remaining_s(self.context), 1)})


def _request(context: Any) -> dict[str, str]:
    request_id = str(getattr(context, "aws_request_id", "") or "")
    return {"function_request_id": request_id} if request_id else {}


@cache
def _events_client(region: str | None) -> Any:
    """One EventBridge client per container, in the function's own Region (botocore's,
    as cpworker's other clients: boto3 would load s3transfer too)."""
    import botocore.session
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 3}, connect_timeout=5, read_timeout=10)
    return botocore.session.Session().create_client("events", region_name=region, config=config)
