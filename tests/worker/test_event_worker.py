"""The serverless custom-action worker in the local CodePipeline: EventBridge rules made
with the ordinary API (the SAM example's own pattern) deliver CodePipeline's
action-started events, cpworker's "Job Continued" events and a scheduled event to a
registered function, which polls, acknowledges, runs and reports the jobs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS_DIR, until
from cpw_event_worker_apps import app
from samtranslator.yaml_helper import yaml_parse

from cpworker import testing
from cpworker.testing import PipelineRun, custom_action, zip_bytes

REF = f"{APPS_DIR / 'cpw_event_worker_apps.py'}:spied"
TEMPLATE = Path(__file__).parents[2] / "sam" / "template.yaml"
REGION, ACCOUNT = "us-east-1", "123456789012"
SOURCE = {"README.md": "hello\n", "src/main.py": "print('hi')\n"}
SCHEDULED = {
    "version": "0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": ACCOUNT,
    "time": "2026-11-26T21:50:00Z",
    "region": REGION,
    "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/cpworker-safety-poll"],
    "detail": {},
}


def template_pattern(provider: str) -> dict[str, Any]:
    """The SAM example's EventBridge pattern, for the action type of ``provider``."""
    template = yaml_parse(TEMPLATE.read_text())
    events = template["Resources"]["BuildEventWorkerFunction"]["Properties"]["Events"]
    pattern: dict[str, Any] = json.loads(
        json.dumps(events["ActionStarted"]["Properties"]["Pattern"])
    )
    pattern["detail"]["type"]["provider"] = [provider]
    return pattern


class Lab:
    """One test's action type, event worker function, rules and pipeline."""

    def __init__(self, aws: Callable[..., Any], function: Callable[..., str]) -> None:
        self.codepipeline, self.s3, self.events = aws("codepipeline"), aws("s3"), aws("events")
        self.sqs = aws("sqs")
        self._function = function
        self.uid = uuid.uuid4().hex[:8]
        self.provider = f"CpwEvents-{self.uid}"
        self.rules: list[str] = []
        self.pipelines: list[str] = []
        for spec in app:
            request = spec.custom_action_type() | {"provider": self.provider}
            self.codepipeline.create_custom_action_type(**request)

    def worker(self, spy: Path, timeout_s: float = 60, **environment: str) -> str:
        """The event worker as a function with this lab's provider; its ARN."""
        name = self._function(
            REF,
            timeout_s=timeout_s,
            environment={
                "CPW_EVENT_PROVIDER": self.provider,
                "CPW_EVENT_SPY": str(spy),
                **environment,
            },
        )
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"

    def rule(self, pattern: dict[str, Any], *targets: dict[str, Any]) -> None:
        name = f"r-{self.uid}-{len(self.rules)}"
        self.events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
        self.events.put_targets(
            Rule=name, Targets=[{"Id": f"t{i}", **t} for i, t in enumerate(targets)]
        )
        self.rules.append(name)

    def dead_letter_queue(self) -> str:
        url = self.sqs.create_queue(QueueName=f"dlq-{self.uid}")["QueueUrl"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    def pipeline(self, *configurations: dict[str, str], category: str = "Build") -> PipelineRun:
        """A pipeline running one action of this lab's type of ``category`` per
        configuration, in parallel (a Build one with an output artifact); its first
        execution."""
        actions = [
            custom_action(
                f"Act{i}",
                provider=self.provider,
                category=category,
                configuration=configuration,
                outputs=(f"Out{i}",) if category == "Build" else (),
            )
            for i, configuration in enumerate(configurations)
        ]
        name = f"ew-{self.uid}"
        self.pipelines.append(name)
        return testing.start_pipeline(
            self.codepipeline, self.s3, name, source=zip_bytes(SOURCE), actions=actions
        )

    def cleanup(self) -> None:
        for name in self.rules:
            targets = self.events.list_targets_by_rule(Rule=name)["Targets"]
            self.events.remove_targets(Rule=name, Ids=[t["Id"] for t in targets])
            self.events.delete_rule(Name=name)
        for name in self.pipelines:
            self.codepipeline.delete_pipeline(name=name)
        for spec in app:
            self.codepipeline.delete_custom_action_type(
                category=spec.type_id.category, provider=self.provider, version="1"
            )


@pytest.fixture
def lab(aws: Callable[..., Any], function: Callable[..., str]) -> Iterator[Lab]:
    created = Lab(aws, function)
    yield created
    created.cleanup()


def summaries(spy: Path, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The first ``count`` invocations' summaries, once they have all ended."""

    def read() -> list[dict[str, Any]] | None:
        lines = spy.read_text().splitlines() if spy.exists() else []
        return [json.loads(line) for line in lines] if len(lines) >= count else None

    found: list[dict[str, Any]] = until(read, timeout_s, f"{count} invocations")
    return found


def outcomes(invocations: list[dict[str, Any]]) -> list[list[str]]:
    return [[job["outcome"] for job in summary["jobs"]] for summary in invocations]


def test_the_event_worker_runs_a_custom_action_end_to_end(lab: Lab, tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    target = {"Arn": lab.worker(spy), "DeadLetterConfig": {"Arn": lab.dead_letter_queue()}}
    lab.rule(template_pattern(lab.provider), target)

    run = lab.pipeline({"Mode": "copy"})

    assert run.wait(timeout_s=60)["status"] == "Succeeded"
    assert run.action_state("Act0")["summary"] == "copied by the event worker (copy)"
    location = run.action_output("Act0")["outputArtifacts"][0]["s3location"]
    head = lab.s3.head_object(Bucket=location["bucket"], Key=location["key"])
    assert head["ServerSideEncryption"] == "aws:kms"
    (invocation,) = summaries(spy, 1)
    assert invocation["trigger"] == "started"
    assert outcomes([invocation]) == [["success"]]
    assert "error" not in invocation


def test_a_continuation_is_followed_up_by_the_same_invocation(lab: Lab, tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    lab.rule(template_pattern(lab.provider), {"Arn": lab.worker(spy)})

    run = lab.pipeline({"Mode": "steps", "Steps": "3"})

    assert run.wait(timeout_s=60)["status"] == "Succeeded"
    assert run.action_state("Act0")["summary"] == "copied by the event worker (steps)"
    assert outcomes(summaries(spy, 1)) == [["continue", "continue", "success"]]


def test_a_job_that_outlives_the_function_is_continued_then_finished_by_the_next_invocation(
    lab: Lab, tmp_path: Path
) -> None:
    # Given a function whose timeout the job's first step outlives, and which cannot
    # wait for the follow-up job itself (too little time is left after the trap)
    spy = tmp_path / "spy.jsonl"
    arn = lab.worker(
        spy,
        timeout_s=8,
        CPWORKER_TIMEOUT_MARGIN_S="2",
        CPWORKER_DRAIN_MARGIN_S="4",
    )
    lab.rule(template_pattern(lab.provider), {"Arn": arn})

    run = lab.pipeline({"Mode": "slow"})

    # Then the deadline trap reports a continuation, the "Job Continued" event invokes
    # the function again, and that invocation runs the follow-up job
    assert run.wait(timeout_s=90)["status"] == "Succeeded"
    assert run.action_state("Act0")["summary"] == "copied by the event worker (slow)"
    first, second = summaries(spy, 2)
    assert (first["trigger"], outcomes([first]), first["announced"]) == (
        "started",
        [["continue"]],
        1,
    )
    assert (second["trigger"], outcomes([second])) == ("continued", [["success"]])


def test_lost_events_leave_a_burst_to_the_scheduled_poll_which_drains_it_in_one_invocation(
    lab: Lab, tmp_path: Path
) -> None:
    # Given four jobs whose action-started events reached no function (only a queue)
    url = lab.sqs.create_queue(QueueName=f"started-{lab.uid}")["QueueUrl"]
    queue_arn = lab.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    lab.rule(template_pattern(lab.provider), {"Arn": queue_arn["Attributes"]["QueueArn"]})
    run = lab.pipeline(*({"Mode": "copy"} for _ in range(4)))
    received: list[str] = []

    def all_started() -> bool:
        answer = lab.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        received.extend(m["Body"] for m in answer.get("Messages", []))
        return len(received) >= 4

    until(all_started, 30, "four STARTED events")

    # When the schedule's event invokes the worker (a rule whose target sends the
    # scheduled event's shape, as a schedule rule does)
    spy = tmp_path / "spy.jsonl"
    source = f"test.schedule.{lab.uid}"
    lab.rule({"source": [source]}, {"Arn": lab.worker(spy), "Input": json.dumps(SCHEDULED)})
    lab.events.put_events(Entries=[{"Source": source, "DetailType": "Tick", "Detail": "{}"}])

    # Then one invocation runs all four
    assert run.wait(timeout_s=60)["status"] == "Succeeded"
    (invocation,) = summaries(spy, 1)
    assert invocation["trigger"] == "scheduled"
    assert outcomes([invocation]) == [["success"] * 4]
    assert invocation["stopped"] == "no job"


def test_a_duplicate_event_finds_no_job_and_ends_quietly(lab: Lab, tmp_path: Path) -> None:
    # Given a rule that delivers each event twice (two targets: EventBridge delivers at
    # least once)
    spy = tmp_path / "spy.jsonl"
    arn = lab.worker(spy)
    lab.rule(template_pattern(lab.provider), {"Arn": arn}, {"Arn": arn})

    run = lab.pipeline({"Mode": "copy"})

    assert run.wait(timeout_s=60)["status"] == "Succeeded"
    invocations = summaries(spy, 2)
    assert sorted(outcomes(invocations)) == [[], ["success"]]
    quiet = next(summary for summary in invocations if not summary["jobs"])
    assert quiet["stopped"] == "no job"
    assert "error" not in quiet


def test_the_event_picks_the_action_and_the_function_takes_only_its_query_value(
    lab: Lab, tmp_path: Path
) -> None:
    # Given a function of two actions that polls the queryable one with Stage=blue
    spy = tmp_path / "spy.jsonl"
    pattern = template_pattern(lab.provider)
    pattern["detail"]["type"]["category"] = ["Build", "Deploy"]
    lab.rule(pattern, {"Arn": lab.worker(spy, CPWORKER_QUERY="Stage=blue")})

    run = lab.pipeline({"Stage": "blue"}, {"Stage": "green"}, category="Deploy")

    # Then it runs the blue job, and the green one waits for a worker that polls green
    until(lambda: run.action_state("Act0").get("status") == "Succeeded", 60, "the blue job")
    assert run.action_state("Act0")["summary"] == "deployed to blue"
    invocations = summaries(spy, 2)
    assert sorted(outcomes(invocations)) == [[], ["success"]]
    assert run.action_state("Act1")["status"] == "InProgress"
    (green,) = lab.codepipeline.poll_for_jobs(
        actionTypeId={"category": "Deploy", "owner": "Custom", "provider": lab.provider,
                      "version": "1"},
        maxBatchSize=1, queryParam={"Stage": "green"},
    )["jobs"]  # fmt: skip
    assert green["data"]["actionConfiguration"]["configuration"] == {"Stage": "green"}
