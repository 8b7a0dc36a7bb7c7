"""``cpworker serve --wake-queue``: a real worker woken through SQS by the real
EventBridge events of a real ``cpworker local`` (routed by templates/wake-queue.yaml's
rule pattern), polling CodePipeline only when woken (plus the safety poll, and the ramp
after a continuation)."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import test_serve
from conftest import Run, until
from cpw_test_apps import app
from test_serve import Serve
from test_templates import TEMPLATES, wake_pattern

from cpworker.cli import _poll_max, parser
from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline
from cpworker.wake import MISSED_WAKE_POLLS, WakeSchedule, read_event, sqs_client

e2e = pytest.mark.e2e
StartPipeline = Callable[..., Run]
serve = test_serve.serve  # the fixture: real `cpworker serve` subprocesses
ACTION_CHANGE = "CodePipeline Action Execution State Change"


class WakeQueue:
    """An SQS queue, and the EventBridge rules that send it the STARTED events of action
    types; all removed after the test."""

    def __init__(self, aws: Callable[..., Any]) -> None:
        self.sqs, self.events = aws("sqs"), aws("events")
        self.url = self.sqs.create_queue(QueueName=f"wake-{uuid.uuid4().hex[:10]}")["QueueUrl"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
        self.arn = attributes["Attributes"]["QueueArn"]
        self.rules: list[str] = []

    def route(self, *providers: str) -> None:
        """Send the STARTED events of these custom action types (category Test) here,
        through templates/wake-queue.yaml's own rule pattern."""
        name = f"wake-{uuid.uuid4().hex[:10]}"
        pattern = wake_pattern(Categories=["Test"], Providers=list(providers))
        self.events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
        self.events.put_targets(Rule=name, Targets=[{"Id": "wake", "Arn": self.arn}])
        self.rules.append(name)

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.url, MessageBody=body)

    def visible(self) -> int:
        """Messages waiting to be received."""
        name = "ApproximateNumberOfMessages"
        found = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=[name])
        return int(found["Attributes"][name])

    def empty(self) -> bool:
        """No message waits nor is in flight: every one was deleted."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        found = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)
        return all(found["Attributes"][name] == "0" for name in names)

    def close(self) -> None:
        for name in self.rules:
            self.events.remove_targets(Rule=name, Ids=["wake"])
            self.events.delete_rule(Name=name)
        self.sqs.delete_queue(QueueUrl=self.url)


@pytest.fixture
def wake(aws: Callable[..., Any]) -> Iterator[WakeQueue]:
    """A wake queue (list it before ``serve``: the workers stop before it goes)."""
    queue = WakeQueue(aws)
    yield queue
    queue.close()


def polls(local: LocalCodePipeline) -> int:
    """PollForJobs calls the local CodePipeline has received (from anyone)."""
    calls = call_private(local.endpoint_url, "GetCallCounts", {})["calls"]
    return int(calls.get("PollForJobs", 0))


@pytest.fixture
def woken(
    wake: WakeQueue, serve: Callable[..., Serve], local: LocalCodePipeline
) -> Callable[..., Serve]:
    """Factory: ``cpworker serve --action ACTION`` woken by the ``wake`` queue (or
    ``queue``), its safety poll a minute away unless ``args`` say otherwise; ``route``:
    the queue gets the STARTED events of that provider. Returned once the worker has
    started and made its first poll, so that no timeout after includes its start-up."""

    def start(action: str, *args: str, route: str = "", queue: str = "") -> Serve:
        if route:
            wake.route(route)
        before = polls(local)
        worker = serve(
            "--action", action, "--wake-queue", queue or wake.url, "--poll-max", "60", *args
        )
        worker.wait_for("worker started")
        until(lambda: polls(local) > before, what="the worker's first poll")
        return worker

    return start


def acknowledged(worker: Serve) -> int:
    """Jobs the worker has acknowledged."""
    return sum(line["message"] == "job acknowledged" for line in worker.lines())


def job_times(local: LocalCodePipeline, run: Run) -> list[dict[str, Any]]:
    """When each job of the run's pipeline was created and acknowledged (the local
    CodePipeline's clock)."""
    answer = call_private(local.endpoint_url, "GetJobTimes", {"pipelineName": run.name})
    jobs: list[dict[str, Any]] = answer["jobs"]
    return jobs


def started_event(provider: str, execution: str, *, when: str | None = None) -> str:
    """The body EventBridge gives an SQS target for a custom action's STARTED event."""
    moment = when or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": ACTION_CHANGE,
            "source": "aws.codepipeline",
            "account": "123456789012",
            "time": moment,
            "region": "us-east-1",
            "resources": ["arn:aws:codepipeline:us-east-1:123456789012:hand-made"],
            "detail": {
                "pipeline": "hand-made",
                "execution-id": str(uuid.uuid4()),
                "stage": "Act",
                "action-execution-id": execution,
                "action": "Act",
                "state": "STARTED",
                "region": "us-east-1",
                "type": {
                    "owner": "Custom",
                    "category": "Test",
                    "provider": provider,
                    "version": "1",
                },
                "version": 1.0,
            },
        }
    )


@e2e
def test_a_woken_worker_acknowledges_a_job_within_a_second_and_never_polls_while_idle(
    wake: WakeQueue,
    woken: Callable[..., Serve],
    start_pipeline: StartPipeline,
    local: LocalCodePipeline,
) -> None:
    # Given an idle worker woken by the STARTED events of its type
    worker = woken("sleep", route="CpwSleep")
    # When it has been idle for a while
    before = polls(local)
    time.sleep(3)  # the idle period itself: the old worker polled ~15 times in it
    idle_polls = polls(local) - before
    # and a job comes
    run = start_pipeline("CpwSleep", {"Seconds": "0"})
    assert run.wait()["status"] == "Succeeded"

    # Then it made no poll while idle, one for the job, and took the job within a second
    assert idle_polls == 0
    assert polls(local) - before == 1
    (job,) = job_times(local, run)
    assert job["acknowledgedAt"] - job["createdAt"] < 1.0
    worker.wait_for("result reported")
    until(wake.empty, what="the wake message deleted")


@e2e
def test_a_lost_event_is_covered_by_the_safety_poll(
    woken: Callable[..., Serve], start_pipeline: StartPipeline
) -> None:
    # Given a woken worker whose queue gets no event (no rule: every event is lost)
    worker = woken("sleep", "--poll-max", "2", "--log-level", "DEBUG")
    started = next(line for line in worker.lines() if line["message"] == "worker started")
    assert started["safety_poll_s"] == 2
    # When a job comes, then the safety poll finds it
    run = start_pipeline("CpwSleep", {"Seconds": "0"})
    assert run.wait(timeout_s=30)["status"] == "Succeeded"
    assert not [line for line in worker.lines() if line["message"] == "woken"]


@e2e
def test_messages_that_wake_nothing_are_deleted_without_a_poll(
    wake: WakeQueue, woken: Callable[..., Serve], local: LocalCodePipeline
) -> None:
    # Given an idle woken worker (no rule: the test sends the messages)
    worker = woken("sleep", "--log-level", "DEBUG")
    before = polls(local)
    # When its queue gets garbage, events it does not serve, a stale event, and one
    # event for its type three times over
    for body in (
        "not json {",
        "[" * 100_000,
        json.dumps(["a", "list"]),
        json.dumps({"detail": {"state": "STARTED"}}),
        started_event("SomeoneElses", str(uuid.uuid4())),
        started_event("CpwSleep", str(uuid.uuid4())).replace('"STARTED"', '"SUCCEEDED"'),
        started_event("CpwSleep", str(uuid.uuid4()), when="2020-01-01T00:00:00Z"),
    ):
        wake.send(body)
    execution = str(uuid.uuid4())
    # (dated a second on: an event's time has whole seconds, and one from the second of
    # the worker's first poll would count as that poll's)
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    for _ in range(3):
        wake.send(started_event("CpwSleep", execution, when=later))

    # Then every message is deleted, and only the one real wake cost polls: one, and
    # since it found no job, a few more on the ramp
    until(wake.empty, what="every message deleted")
    expected = 1 + MISSED_WAKE_POLLS
    until(lambda: polls(local) - before >= expected, what="the woken polls")
    time.sleep(1)  # the ramp is over (poll-min 0.05 s): no further poll comes
    assert polls(local) - before == expected
    assert worker.process.poll() is None
    ignored = [line["message"] for line in worker.lines() if "ignored" in line["message"]]
    assert sorted(ignored) == sorted(
        [
            "wake queue message ignored: not JSON",
            "wake queue message ignored: not JSON",
            "wake queue message ignored: not an EventBridge event",
            "wake queue message ignored: not an action-started event",
            "wake queue message ignored: an action type this worker does not serve",
            "wake queue message ignored: not an action-started event",
            "wake queue message ignored: its job was polled already",
            "wake queue message ignored: a duplicate",
            "wake queue message ignored: a duplicate",
        ]
    )


@e2e
def test_the_follow_up_of_a_continued_job_comes_without_waiting_for_the_safety_poll(
    woken: Callable[..., Serve], start_pipeline: StartPipeline, local: LocalCodePipeline
) -> None:
    # Given a woken worker whose safety poll is a minute away
    woken("steps", route="CpwSteps")
    # When its job continues twice (no event announces a follow-up job)
    run = start_pipeline("CpwSteps", {"Steps": "3"})
    # Then the follow-ups are polled for on the backoff ramp, well before the safety poll
    assert run.wait(timeout_s=30)["status"] == "Succeeded"
    assert len(job_times(local, run)) == 3


@e2e
def test_sigterm_stops_a_woken_worker_without_waiting_for_its_long_poll(
    woken: Callable[..., Serve],
) -> None:
    worker = woken("sleep")
    time.sleep(0.5)  # the long poll (20 s) is under way
    stopping = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=10) == 0
    assert time.monotonic() - stopping < 5
    assert worker.lines()[-1]["message"] == "worker stopped"


@e2e
def test_a_queue_that_cannot_be_read_is_one_line_and_the_worker_polls_on_the_backoff(
    woken: Callable[..., Serve],
    start_pipeline: StartPipeline,
    local: LocalCodePipeline,
    aws: Callable[..., Any],
) -> None:
    # Given a worker whose wake queue does not exist
    name = f"created-late-{uuid.uuid4().hex[:8]}"
    worker = woken("sleep", queue=f"{local.endpoint_url}/123456789012/{name}")
    # When jobs come, then it still runs them, polling on the backoff ramp
    runs = [start_pipeline("CpwSleep", {"Seconds": "0"}) for _ in range(2)]
    assert [run.wait(timeout_s=30)["status"] for run in runs] == ["Succeeded"] * 2
    # and said once what is wrong, and how to fix it
    errors = [line for line in worker.lines() if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["message"].startswith("cannot read the wake queue (")
    assert "check --wake-queue" in errors[0]["message"]
    # When the queue is created, then the worker reads it (tried again on the backoff)
    sqs = aws("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    try:
        worker.wait_for("the wake queue answers again: polling only when woken", timeout_s=30)
    finally:
        sqs.delete_queue(QueueUrl=url)


@e2e
def test_a_busy_worker_leaves_the_wake_messages_to_other_workers(
    wake: WakeQueue, woken: Callable[..., Serve], start_pipeline: StartPipeline
) -> None:
    # Given a woken worker with one slot, busy with a job
    worker = woken("sleep", "--concurrency", "1", route="CpwSleep")
    busy = start_pipeline("CpwSleep", {"Seconds": "6"})
    worker.wait_for("job acknowledged")
    until(wake.empty, what="the first job's message deleted")
    # When another job's event comes, then it stays in the queue for another worker
    waiting = start_pipeline("CpwSleep", {"Seconds": "0"})
    until(lambda: wake.visible() == 1, what="the second job's event")
    time.sleep(1)  # the worker's long poll would have taken it by now
    assert wake.visible() == 1
    # until the worker is free again
    assert busy.wait()["status"] == "Succeeded"
    assert waiting.wait()["status"] == "Succeeded"
    until(wake.empty, what="the second job's message deleted")


@e2e
def test_of_two_woken_workers_the_free_one_takes_the_job_at_once(
    woken: Callable[..., Serve], start_pipeline: StartPipeline, local: LocalCodePipeline
) -> None:
    # Given two workers of one slot each on one wake queue, one of them busy
    first = woken("sleep", "--concurrency", "1", route="CpwSleep")
    second = woken("sleep", "--concurrency", "1")
    busy = start_pipeline("CpwSleep", {"Seconds": "6"})
    until(lambda: acknowledged(first) + acknowledged(second), what="the first job taken")
    # When another job comes, then the free worker takes it within a second
    run = start_pipeline("CpwSleep", {"Seconds": "0"})
    assert run.wait()["status"] == "Succeeded"
    (job,) = job_times(local, run)
    assert job["acknowledgedAt"] - job["createdAt"] < 1.0
    assert busy.wait()["status"] == "Succeeded"
    assert sorted([acknowledged(first), acknowledged(second)]) == [1, 1]


@pytest.fixture
def wake_stack(aws: Callable[..., Any]) -> Iterator[dict[str, str]]:
    """templates/wake-queue.yaml deployed in the local CloudFormation (moto's) for the
    CpwSleep type; its outputs. (moto applies no queue policy: it has no IAM to check.)"""
    cloudformation = aws("cloudformation")
    name = f"wake-{uuid.uuid4().hex[:8]}"
    given = {"Categories": "Test", "Providers": "CpwSleep", "Versions": "1"}
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=(TEMPLATES / "wake-queue.yaml").read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
        Capabilities=["CAPABILITY_IAM"],
    )

    def created() -> dict[str, Any] | None:
        stack: dict[str, Any] = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        return None if stack["StackStatus"].endswith("_IN_PROGRESS") else stack

    stack = until(created, what="the wake-queue stack")
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    yield {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}
    cloudformation.delete_stack(StackName=name)


@e2e
@pytest.mark.filterwarnings("ignore:Tried to parse AWS..SQS..QueuePolicy:UserWarning")
def test_the_template_s_rule_and_queue_wake_a_worker_given_its_serve_args(
    wake_stack: dict[str, str],
    woken: Callable[..., Serve],
    start_pipeline: StartPipeline,
    local: LocalCodePipeline,
) -> None:
    flag, url = wake_stack["ServeArgs"].split()
    assert (flag, url) == ("--wake-queue", wake_stack["QueueUrl"])
    woken("sleep", queue=url)
    run = start_pipeline("CpwSleep", {"Seconds": "0"})
    assert run.wait()["status"] == "Succeeded"
    (job,) = job_times(local, run)
    assert job["acknowledgedAt"] - job["createdAt"] < 1.0


# -- the schedule, alone --------------------------------------------------------------------

STEPS = app.select(["steps"])[0]


def schedule(poll_max_s: float = 60.0) -> WakeSchedule:
    """A schedule of the steps action whose ramp waits no time at all."""
    return WakeSchedule([STEPS], 0.5, poll_max_s, lambda idle: 0.0, threading.Condition())


def test_after_a_continuation_the_ramp_polls_until_poll_max_then_only_the_safety_poll() -> None:
    plan = schedule()
    assert plan.due() == [STEPS]  # the first poll
    plan.polled(STEPS, 4, 0, time.time())
    assert plan.due() == []
    plan.continued(STEPS)
    ramp = 0
    while plan.due():
        plan.polled(STEPS, 4, 0, time.time())
        ramp += 1
    assert ramp == 9  # delays 0.5, 1, 2, ... 32, then 60 = poll_max: given up
    plan.continued(STEPS)
    plan.polled(STEPS, 4, 1, time.time())  # a job came on the ramp
    assert plan.due() == [STEPS]  # and the ramp goes on until its follow-up is claimed
    plan.followed_up(STEPS)
    assert plan.due() == []


def test_a_woken_poll_that_finds_no_job_looks_again_a_few_times() -> None:
    plan = schedule()
    plan.polled(STEPS, 4, 0, time.time() - 10)  # left no job, 10 s ago
    served = {("Custom", "Test", "CpwSteps", "1"): STEPS}
    for execution, receipt in (("e1", "r1"), ("e2", "r2")):
        started = read_event(started_event("CpwSteps", execution), served)
        assert not isinstance(started, str)
        plan.woken(started, receipt)
    assert plan.held() == 2
    assert plan.due() == [STEPS]
    assert plan.polled(STEPS, 4, 1, time.time()) == ["r1", "r2"]  # deleted after the poll
    again = 0
    while plan.due():
        plan.polled(STEPS, 4, 0, time.time())
        again += 1
    assert again == MISSED_WAKE_POLLS
    # An event older than that last poll: its job was taken by it; one poll, no more
    older = read_event(started_event("CpwSteps", "e3", when="2020-01-01T00:00:00Z"), served)
    assert not isinstance(older, str)
    plan.woken(older, "r3")
    assert plan.polled(STEPS, 4, 0, time.time()) == ["r3"]
    assert plan.due() == []


def test_an_event_older_than_a_poll_that_left_no_job_is_stale() -> None:
    plan = schedule()
    served = {("Custom", "Test", "CpwSteps", "1"): STEPS}
    plan.polled(STEPS, 4, 1, time.time())  # left no job
    fresh = read_event(started_event("CpwSteps", "e1"), served)
    old = read_event(started_event("CpwSteps", "e2", when="2020-01-01T00:00:00Z"), served)
    assert not isinstance(fresh, str)
    assert not isinstance(old, str)
    assert not plan.stale(fresh)
    assert plan.stale(old)
    plan.polled(STEPS, 4, 4, time.time())  # a full batch: jobs may be left
    assert plan.due() == [STEPS]


def test_with_a_wake_queue_the_safety_poll_comes_every_minute_unless_poll_max_says() -> None:
    def poll_max(*args: str) -> float:
        return _poll_max(parser().parse_args(["serve", "m:app", *args]))

    assert poll_max() == 10.0
    assert poll_max("--wake-queue", "https://sqs.eu-west-1.amazonaws.com/1/q") == 60.0
    assert (
        poll_max("--wake-queue", "https://sqs.eu-west-1.amazonaws.com/1/q", "--poll-max", "5") == 5
    )


def test_the_wake_queue_is_read_in_its_own_region() -> None:
    def region(url: str) -> str:
        return str(sqs_client(url, region="us-east-1").meta.region_name)

    assert region("https://sqs.eu-west-2.amazonaws.com/111122223333/wake") == "eu-west-2"
    assert region("https://ap-south-1.queue.amazonaws.com/111122223333/wake") == "ap-south-1"
    assert region("https://sqs.cn-north-1.amazonaws.com.cn/111122223333/wake") == "cn-north-1"
    assert region("https://queue.amazonaws.com/111122223333/wake") == "us-east-1"
    assert region("http://127.0.0.1:4566/111122223333/wake") == "us-east-1"


def test_serve_wants_the_queue_url_not_its_name_or_arn(capsys: pytest.CaptureFixture[str]) -> None:
    for given in ("wake", "arn:aws:sqs:eu-west-1:111122223333:wake"):
        with pytest.raises(SystemExit):
            parser().parse_args(["serve", "m:app", "--wake-queue", given])
        assert "expected the queue's URL" in capsys.readouterr().err
