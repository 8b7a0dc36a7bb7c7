"""``serve --wake-queue``: a worker woken by CodePipeline's own events instead of polling.

CodePipeline publishes "CodePipeline Action Execution State Change" with state STARTED
for every action once its job can be polled. An EventBridge rule sends those of the
worker's action types to an SQS queue (``templates/wake-queue.yaml``); the ``Waker``
thread long-polls that queue and tells the ``WakeSchedule`` which type to poll, so a
job is picked up within a second while an idle worker makes no CodePipeline calls.

Jobs that come without a STARTED event are polled for all the same:

- the follow-up of a continuation this worker reported: its type is polled on the
  backoff ramp until the follow-up is claimed, or the ramp reaches ``poll_max``;
- a job a woken poll did not find (CodePipeline may show it a moment after its
  event): a few more polls on the ramp;
- anything else (an event lost, a job redispatched after a worker died without
  acknowledging it, the follow-up of another worker's continuation): the safety poll,
  one per type every ``poll_max`` (60 s by default with a wake queue);
- every type, on the ramp, while the queue cannot be read.

A message is deleted after the poll it caused, and at once when it wakes nothing (not
a STARTED event of a served type, a duplicate, an event older than a poll that found
no more jobs, or a body that cannot be read), so that no message comes back for ever.
The waker receives only while a slot is free and no more messages than free slots,
so that a busy worker of a fleet leaves the events to the others.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from cpworker.api import RetryPolicy, error_code, is_retryable
from cpworker.app import ActionSpec

if TYPE_CHECKING:
    from cpworker.worker import WorkerSettings

log = logging.getLogger("cpworker.wake")

WAKE_POLL_MAX_S = 60.0  # the safety poll's period, unless --poll-max says otherwise
LONG_POLL_S = 20  # SQS's longest ReceiveMessage wait
# An event is stale when it is older than a poll that left no job of its type, by more
# than this: its ``time`` has whole seconds only, and clocks differ a little.
STALE_MARGIN_S = 5.0
# A woken poll that finds fewer jobs than it had fresh events (another worker's poll
# took them, or CodePipeline shows a job a moment after its event) is followed by this
# many more on the ramp. An event older than the last poll that left no job is not
# fresh: that poll most likely had its job (a worker that starts finds the events of
# the jobs its first poll took).
MISSED_WAKE_POLLS = 3
SEEN_EVENTS = 4096  # action executions remembered to recognise duplicates
ACTION_STARTED = ("aws.codepipeline", "CodePipeline Action Execution State Change", "STARTED")
DELETE_RETRIES = RetryPolicy(attempts=3, max_elapsed_s=5.0, backoff_max_s=1.0)
MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
DENIED = frozenset({"AccessDenied", "AccessDeniedException", "KMS.AccessDeniedException"})
# https://sqs.<region>.amazonaws.com/..., or the legacy https://<region>.queue.amazonaws.com/...
_QUEUE_HOST = re.compile(r"^https://(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com")
TypeKey = tuple[str, str, str, str]
FIXES = {
    "missing": "check --wake-queue (the QueueUrl output of templates/wake-queue.yaml) and the "
    "Region",
    "denied": "allow the worker's role sqs:ReceiveMessage, sqs:DeleteMessage and "
    "sqs:GetQueueAttributes on the queue (the WorkerPolicy of templates/wake-queue.yaml)",
}


def sqs_client(
    queue_url: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
) -> Any:
    """An SQS client from the boto3 chain, like the CodePipeline one; the Region is the
    queue URL's when it names one (a queue is read only from its own Region)."""
    import boto3
    from botocore.config import Config

    match = _QUEUE_HOST.match(queue_url)
    if match:
        region = match[1] or match[2]
    session = boto3.Session(profile_name=profile, region_name=region)
    return session.client(
        "sqs",
        endpoint_url=endpoint_url,
        # The long poll holds the connection up to LONG_POLL_S; cpworker does the retrying.
        config=Config(
            retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=LONG_POLL_S + 10
        ),
    )


def woken_by(settings: WorkerSettings) -> dict[str, Any]:
    """Fields for the "worker started" line: the wake queue, and the safety poll."""
    if settings.wake_queue is None:
        return {}
    return {"wake_queue": settings.wake_queue, "safety_poll_s": settings.poll_interval_max_s}


@dataclass(frozen=True)
class Started:
    """A STARTED event of one of the worker's action types."""

    spec: ActionSpec
    key: str  # the action execution (the event id without one)
    time: float | None  # when CodePipeline published it (epoch seconds)


def read_event(body: str, served: Mapping[TypeKey, ActionSpec]) -> Started | str:
    """The action-started event in a message ``body``, or why it wakes nothing."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return "not JSON"
    if not isinstance(event, dict) or not isinstance(event.get("detail"), dict):
        return "not an EventBridge event"
    detail: dict[str, Any] = event["detail"]
    if (event.get("source"), event.get("detail-type"), detail.get("state")) != ACTION_STARTED:
        return "not an action-started event"
    kind = detail.get("type")
    if not isinstance(kind, dict):
        return "no action type"
    owner, category, provider, version = (
        str(kind.get(name)) for name in ("owner", "category", "provider", "version")
    )
    spec = served.get((owner, category, provider, version))
    if spec is None:
        return "an action type this worker does not serve"
    key = detail.get("action-execution-id") or event.get("id")
    if not isinstance(key, str):
        return "no action execution id"
    return Started(spec, key, _epoch(event.get("time")))


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class _Type:
    """What the schedule knows of one action type."""

    spec: ActionSpec
    last_poll: float = -math.inf  # monotonic
    receipts: list[str] = field(default_factory=list)  # wakes waiting for this type's poll
    fresh: int = 0  # of those, the events newer than the last poll that left no job
    more: bool = False  # the last poll came back full: more jobs may wait
    continued: int = 0  # continuations reported whose follow-up was not claimed yet
    missed: int = 0  # ramp polls left after a woken poll that found no job
    ramp_idle: int = 0  # empty polls in a row on the ramp
    ramp_next: float = 0.0  # monotonic
    drained_at: float = -math.inf  # wall clock: a poll that began then left no job


class WakeSchedule:
    """When each action type is polled, in a woken worker: at once when woken or after a
    full batch, on the ramp after a continuation (or while the queue is unreachable),
    else once every ``poll_max_s``.

    It shares the worker's slot condition, so that a wake, a freed slot and shutdown all
    wake the poll loop, and the waker sees free slots and waiting wakes together.
    """

    def __init__(
        self,
        specs: Sequence[ActionSpec],
        poll_min_s: float,
        poll_max_s: float,
        ramp_delay: Callable[[int], float],
        lock: threading.Condition,
    ) -> None:
        self.types = {spec.type_id: _Type(spec) for spec in specs}
        self.poll_max_s = poll_max_s
        self.ramp_delay = ramp_delay
        # Empty polls until the ramp's delay reaches poll_max: then the safety poll rules.
        self.ramp_steps = max(1, math.ceil(math.log2(poll_max_s / poll_min_s)) + 1)
        self.lock = lock
        self.unreachable = False

    def served(self) -> dict[TypeKey, ActionSpec]:
        return {(t.owner, t.category, t.provider, t.version): s.spec for t, s in self.types.items()}

    def _ramping(self, state: _Type) -> bool:
        return state.continued > 0 or state.missed > 0 or self.unreachable

    def due(self) -> list[ActionSpec]:
        """The types to poll now."""
        now = time.monotonic()
        with self.lock:
            return [
                state.spec
                for state in self.types.values()
                if state.receipts
                or state.more
                or (self._ramping(state) and now >= state.ramp_next)
                or now - state.last_poll >= self.poll_max_s
            ]

    def wait(self, stopping: threading.Event) -> None:
        """Until a type is due (or a wake, a freed slot, shutdown)."""
        with self.lock:
            if stopping.is_set() or self.due():
                return
            states = self.types.values()
            times = [state.last_poll + self.poll_max_s for state in states]
            times += [state.ramp_next for state in states if self._ramping(state)]
            self.lock.wait(max(0.0, min(times) - time.monotonic()))

    def held(self) -> int:
        """Wakes received and not yet polled for."""
        with self.lock:
            return sum(len(state.receipts) for state in self.types.values())

    def woken(self, started: Started, receipt: str) -> None:
        with self.lock:
            state = self.types[started.spec.type_id]
            state.receipts.append(receipt)
            if started.time is None or started.time >= state.drained_at:
                state.fresh += 1  # an older one's job was most likely polled already
            self.lock.notify_all()

    def stale(self, started: Started) -> bool:
        """The event is older than a poll that left no job of its type: that poll had
        its job (or another worker had), so a poll now would find nothing."""
        with self.lock:
            drained = self.types[started.spec.type_id].drained_at
        return started.time is not None and started.time < drained - STALE_MARGIN_S

    def polled(self, spec: ActionSpec, asked: int, received: int, began: float) -> list[str]:
        """Note a poll that began at ``began`` (wall clock); the receipts it answered."""
        now = time.monotonic()
        with self.lock:
            state = self.types[spec.type_id]
            receipts, state.receipts = state.receipts, []
            fresh, state.fresh = state.fresh, 0
            state.last_poll = now
            state.more = asked > 0 and received >= asked
            if asked > 0 and received < asked:
                state.drained_at = began
            state.ramp_idle = 0 if received else state.ramp_idle + 1
            if received < fresh:
                state.missed, state.ramp_idle = MISSED_WAKE_POLLS, 1
            else:
                state.missed = 0 if received else max(0, state.missed - 1)
            if state.ramp_idle > self.ramp_steps and not self.unreachable:
                state.continued = 0  # no follow-up came on the whole ramp: the safety poll's
            state.ramp_next = now + self.ramp_delay(max(1, state.ramp_idle))
            return receipts

    def continued(self, spec: ActionSpec) -> None:
        """A continuation of ``spec`` was reported: its follow-up comes without an event."""
        with self.lock:
            state = self.types[spec.type_id]
            first = time.monotonic() + self.ramp_delay(1)  # the follow-up takes a moment
            ramping = self._ramping(state)
            state.continued += 1
            state.ramp_idle = 0
            state.ramp_next = min(state.ramp_next, first) if ramping else first
            self.lock.notify_all()

    def followed_up(self, spec: ActionSpec) -> None:
        """A job of ``spec`` with a continuation token was claimed."""
        with self.lock:
            state = self.types[spec.type_id]
            state.continued = max(0, state.continued - 1)

    def reachable(self, yes: bool) -> None:
        """Whether the queue can be read; while not, every type is polled on the ramp."""
        with self.lock:
            if yes == (not self.unreachable):
                return
            self.unreachable = not yes
            now = time.monotonic()
            for state in self.types.values():
                state.ramp_idle, state.ramp_next = 0, now
            self.lock.notify_all()


class Waker:
    """The thread that long-polls the wake queue and wakes the schedule.

    ``capacity()`` blocks until the worker has a slot free for one more job (returns how
    many) or it stops (returns 0). The thread is a daemon that nobody joins: a long
    poll in flight when the worker stops is left to end on its own, and the messages
    it may bring come back to another worker after their visibility timeout.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        schedule: WakeSchedule,
        capacity: Callable[[], int],
        stopping: threading.Event,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.schedule = schedule
        self.capacity = capacity
        self.stopping = stopping
        self.served = schedule.served()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._problems: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="cpworker-waker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            free = self.capacity()
            if free <= 0:
                continue
            try:
                if failures:  # a quick answer: a long poll would tell only when it ends
                    self.sqs.get_queue_attributes(QueueUrl=self.queue_url)
                    self._answers()
                messages = self._receive(free)
            except Exception as exc:  # noqa: BLE001 - logged once per kind, then tried again
                # Tried again on the poll backoff, for ever: not with a RetryPolicy, which
                # gives up, and logs each retry where this says once what is wrong.
                if not self.stopping.is_set():
                    failures += 1
                    self._unreachable(exc)
                    self.stopping.wait(self.schedule.ramp_delay(failures))
                continue
            if self.stopping.is_set():
                return  # what came back goes to another worker after its visibility timeout
            failures = 0
            self._answers()
            for message in messages:
                try:
                    self._sort(message)
                except Exception:  # a message must never stop the waker, nor come back
                    log.exception("wake queue message cannot be read; deleted")
                    self.delete([str(message.get("ReceiptHandle", ""))])

    def _answers(self) -> None:
        """The queue answered: poll only when woken again."""
        if self._problems:
            log.info("the wake queue answers again: polling only when woken")
            self._problems.clear()
        self.schedule.reachable(True)

    def _receive(self, count: int) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, count), WaitTimeSeconds=LONG_POLL_S
        )
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        return messages

    def _sort(self, message: Mapping[str, Any]) -> None:
        """Wake the message's type, or delete a message that wakes nothing."""
        receipt = str(message.get("ReceiptHandle", ""))
        started = read_event(str(message.get("Body", "")), self.served)
        if isinstance(started, str):
            level = (
                logging.INFO if started.startswith(("not JSON", "not an Event")) else logging.DEBUG
            )
            log.log(level, "wake queue message ignored: %s", started,
                    extra={"message_id": message.get("MessageId")})  # fmt: skip
        elif started.key in self._seen:
            log.debug("wake queue message ignored: a duplicate", extra={"key": started.key})
        elif self.schedule.stale(started):
            log.debug("wake queue message ignored: its job was polled already",
                      extra={"action_type": str(started.spec.type_id)})  # fmt: skip
        else:
            self._seen[started.key] = None
            if len(self._seen) > SEEN_EVENTS:
                self._seen.popitem(last=False)
            log.debug("woken", extra={"action_type": str(started.spec.type_id)})
            self.schedule.woken(started, receipt)
            return
        self.delete([receipt])

    def delete(self, receipts: Sequence[str]) -> None:
        """Delete answered messages; one that cannot be deleted comes back as a
        duplicate, which is deleted then."""
        for start in range(0, len(receipts), 10):
            entries = [
                {"Id": str(n), "ReceiptHandle": receipt}
                for n, receipt in enumerate(receipts[start : start + 10])
            ]
            call = partial(self.sqs.delete_message_batch, QueueUrl=self.queue_url, Entries=entries)
            try:
                answer: dict[str, Any] = DELETE_RETRIES.wrap(call)
            except Exception as exc:  # noqa: BLE001 - the message comes back, harmless
                log.warning("could not delete wake queue messages",
                            extra={"error": error_code(exc) or repr(exc)})  # fmt: skip
                continue
            if answer.get("Failed"):
                log.warning("could not delete wake queue messages",
                            extra={"error": answer["Failed"][0].get("Code")})  # fmt: skip

    def _unreachable(self, exc: BaseException) -> None:
        """Poll on the ramp until the queue answers; say why, and the fix, once a kind."""
        self.schedule.reachable(False)
        code = error_code(exc) or type(exc).__name__
        kind = "missing" if code in MISSING else "denied" if code in DENIED else code
        if kind in self._problems:
            return
        self._problems.add(kind)
        busy = is_retryable(exc)
        fix = FIXES.get(kind) or ("the queue is busy or out of reach" if busy else "see the error")
        log.log(
            logging.WARNING if busy else logging.ERROR,
            f"cannot read the wake queue ({code}): {fix}; until it answers, it is tried "
            "again and CodePipeline is polled on the backoff (up to --poll-max apart)",
            extra={"queue_url": self.queue_url, "error": code},
        )
