"""CodePipeline's EventBridge events from the local CodePipeline, delivered by rules and
targets made through the ordinary EventBridge API: to SQS queues, and to Lambda
functions through the function runner that invoke actions use."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cpw_local_lab import Lab

FUNCTIONS_FILE = Path(__file__).with_name("cpw_lambda_functions.py")
ACCOUNT, REGION = "123456789012", "us-east-1"
ACTION_CHANGE = "CodePipeline Action Execution State Change"
Register = Callable[..., str]


class Bus:
    """Rules on the local default event bus, removed after the test."""

    def __init__(self, aws: Callable[..., Any]) -> None:
        self.events, self.sqs = aws("events"), aws("sqs")
        self.rules: list[str] = []

    def queue(self) -> tuple[str, str]:
        """A new SQS queue: (url, arn)."""
        url = self.sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:10]}")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return url, arn["Attributes"]["QueueArn"]

    def rule(
        self, pattern: dict[str, Any], *targets: dict[str, Any], state: str = "ENABLED"
    ) -> str:
        name = f"r-{uuid.uuid4().hex[:10]}"
        self.events.put_rule(Name=name, EventPattern=json.dumps(pattern), State=state)
        self.events.put_targets(
            Rule=name, Targets=[{"Id": f"t{i}", **t} for i, t in enumerate(targets)]
        )
        self.rules.append(name)
        return name

    def received(self, url: str, count: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """The bodies of the first ``count`` messages of the queue, deleted."""
        bodies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(bodies) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(bodies)} of {count} messages after {timeout_s}s")
            answer = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in answer.get("Messages", []):
                bodies.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return bodies

    def cleanup(self) -> None:
        for name in self.rules:
            targets = self.events.list_targets_by_rule(Rule=name)["Targets"]
            self.events.remove_targets(Rule=name, Ids=[t["Id"] for t in targets])
            self.events.delete_rule(Name=name)


@pytest.fixture
def bus(aws: Callable[..., Any]) -> Iterator[Bus]:
    created = Bus(aws)
    yield created
    created.cleanup()


def watched_run(lab: Lab, bus: Bus, **detail: Any) -> tuple[str, str, str, dict[str, Any]]:
    """A pipeline of one custom action whose events (those matching ``detail``) a queue
    receives, and its action's job, claimed: (queue url, pipeline, execution id, job)."""
    type_id = lab.action_type()
    url, arn = bus.queue()
    name = f"p-{lab.uid}"
    pattern = {"source": ["aws.codepipeline"], "detail": {"pipeline": [name], **detail}}
    bus.rule(pattern, {"Arn": arn})
    _, execution_id = lab.pipeline([lab.action(type_id)])
    return url, name, execution_id, lab.claim(type_id)


def test_an_sqs_rule_receives_the_started_event_of_a_custom_action_with_its_job_pollable(
    lab: Lab, bus: Bus
) -> None:
    type_id = lab.action_type()
    url, arn = bus.queue()
    bus.rule(
        {
            "source": ["aws.codepipeline"],
            "detail-type": [ACTION_CHANGE],
            "detail": {
                "state": ["STARTED"],
                "type": {"owner": ["Custom"], "provider": [type_id["provider"]]},
            },
        },
        {"Arn": arn},
    )
    name, execution_id = lab.pipeline([lab.action(type_id)])

    (event,) = bus.received(url, 1)
    jobs = lab.codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)["jobs"]

    assert len(jobs) == 1, "the job must be pollable once its STARTED event is out"
    context = jobs[0]["data"]["pipelineContext"]
    assert event["source"] == "aws.codepipeline"
    assert event["detail-type"] == ACTION_CHANGE
    assert (event["account"], event["region"]) == (ACCOUNT, REGION)
    assert event["resources"] == [f"arn:aws:codepipeline:{REGION}:{ACCOUNT}:{name}"]
    assert time.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ")
    detail = event["detail"]
    assert (detail["pipeline"], detail["execution-id"]) == (name, execution_id)
    assert (detail["stage"], detail["action"]) == ("Build", "Build")
    assert detail["action-execution-id"] == context["action"]["actionExecutionId"]
    assert (detail["state"], detail["region"]) == ("STARTED", REGION)
    assert detail["type"] == type_id
    (artifact,) = detail["input-artifacts"]
    (given,) = jobs[0]["data"]["inputArtifacts"]
    location = given["location"]["s3Location"]
    assert artifact == {
        "name": given["name"],
        "s3location": {"bucket": location["bucketName"], "key": location["objectKey"]},
    }


def test_a_run_publishes_every_pipeline_stage_and_action_change_in_order(
    lab: Lab, bus: Bus
) -> None:
    url, name, execution_id, job = watched_run(lab, bus)
    lab.codepipeline.put_job_success_result(
        jobId=job["id"], executionDetails={"summary": "built", "externalExecutionId": "b-1"}
    )
    assert lab.wait(name, execution_id)["status"] == "Succeeded"

    events = bus.received(url, 10)

    def short(event: dict[str, Any]) -> str:
        detail = event["detail"]
        kind = event["detail-type"].split()[1]
        where = detail.get("action") or detail.get("stage") or ""
        return f"{kind} {where} {detail['state']}".replace("  ", " ")

    assert [short(e) for e in events] == [
        "Pipeline STARTED",
        "Stage Source STARTED",
        "Action Source STARTED",
        "Action Source SUCCEEDED",
        "Stage Source SUCCEEDED",
        "Stage Build STARTED",
        "Action Build STARTED",
        "Action Build SUCCEEDED",
        "Stage Build SUCCEEDED",
        "Pipeline SUCCEEDED",
    ]
    assert {e["detail"]["execution-id"] for e in events} == {execution_id}
    build_succeeded = events[7]["detail"]
    assert build_succeeded["execution-result"] == {
        "external-execution-id": "b-1",
        "external-execution-summary": "built",
    }
    source_succeeded = events[3]["detail"]
    (output,) = source_succeeded["output-artifacts"]
    assert output["s3location"]["key"].startswith(f"{name}/")
    assert events[0]["detail"]["execution-trigger"] == {"trigger-type": "CreatePipeline"}


def test_a_failed_action_publishes_its_error_code_and_fails_stage_and_pipeline(
    lab: Lab, bus: Bus
) -> None:
    url, _, execution_id, job = watched_run(lab, bus, state=["FAILED"])
    lab.codepipeline.put_job_failure_result(
        jobId=job["id"], failureDetails={"type": "JobFailed", "message": "tests failed"}
    )

    action, stage, pipeline = bus.received(url, 3)

    assert action["detail"]["action"] == "Build"
    assert action["detail"]["execution-result"] == {
        "error-code": "JobFailed",
        "external-execution-summary": "tests failed",
    }
    assert (stage["detail-type"], stage["detail"]["stage"]) == (
        "CodePipeline Stage Execution State Change",
        "Build",
    )
    assert pipeline["detail-type"] == "CodePipeline Pipeline Execution State Change"
    assert pipeline["detail"]["execution-id"] == execution_id


def test_a_lambda_target_invokes_the_registered_function_with_the_event(
    lab: Lab, bus: Bus, function: Register, tmp_path: Path
) -> None:
    events_file = tmp_path / "events.jsonl"
    name_fn = function(
        f"{FUNCTIONS_FILE}:record_event", environment={"CPW_EVENT_FILE": str(events_file)}
    )
    type_id = lab.action_type()
    started = {"state": ["STARTED"], "type": {"provider": [type_id["provider"]]}}
    bus.rule(
        {"source": ["aws.codepipeline"], "detail": started},
        {"Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name_fn}"},
    )
    name, _ = lab.pipeline([lab.action(type_id)])

    lab.wait_until(lambda: events_file.exists() and events_file.read_text().endswith("\n"))

    (event,) = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert (event["detail-type"], event["account"]) == (ACTION_CHANGE, ACCOUNT)
    assert (event["detail"]["pipeline"], event["detail"]["state"]) == (name, "STARTED")


def test_events_a_client_puts_reach_lambda_targets_with_an_input_transformer(
    bus: Bus, function: Register, tmp_path: Path
) -> None:
    events_file = tmp_path / "events.jsonl"
    name_fn = function(
        f"{FUNCTIONS_FILE}:record_event", environment={"CPW_EVENT_FILE": str(events_file)}
    )
    source = f"test.{uuid.uuid4().hex[:8]}"
    bus.rule(
        {"source": [source]},
        {
            "Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name_fn}",
            "InputTransformer": {
                "InputPathsMap": {"colour": "$.detail.colour"},
                "InputTemplate": '{"picked": "<colour>"}',
            },
        },
    )

    answer = bus.events.put_events(
        Entries=[{"Source": source, "DetailType": "Paint", "Detail": '{"colour": "red"}'}]
    )

    assert answer["FailedEntryCount"] == 0
    Lab.wait_until(lambda: events_file.exists() and events_file.read_text().endswith("\n"))
    assert json.loads(events_file.read_text()) == {"picked": "red"}


def test_an_unknown_function_sends_the_event_to_the_targets_dead_letter_queue(
    lab: Lab, bus: Bus
) -> None:
    dead_url, dead_arn = bus.queue()
    source = f"test.{uuid.uuid4().hex[:8]}"
    bus.rule(
        {"source": [source]},
        {
            "Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:nobody-{lab.uid}",
            "DeadLetterConfig": {"Arn": dead_arn},
        },
    )

    bus.events.put_events(Entries=[{"Source": source, "DetailType": "D", "Detail": "{}"}])

    (event,) = bus.received(dead_url, 1)
    assert (event["source"], event["detail-type"]) == (source, "D")


def test_a_disabled_rule_delivers_nothing(lab: Lab, bus: Bus) -> None:
    off_url, off_arn = bus.queue()
    on_url, on_arn = bus.queue()
    source = f"test.{uuid.uuid4().hex[:8]}"
    bus.rule({"source": [source]}, {"Arn": off_arn}, state="DISABLED")
    bus.rule({"source": [source]}, {"Arn": on_arn})

    bus.events.put_events(Entries=[{"Source": source, "DetailType": "D", "Detail": "{}"}])

    bus.received(on_url, 1)  # delivery is in rule order, in one pass: the other had its turn
    answer = bus.sqs.receive_message(QueueUrl=off_url, WaitTimeSeconds=0)
    assert answer.get("Messages", []) == []


def test_changes_are_built_only_while_the_default_bus_has_a_rule() -> None:
    """Without a rule EventBridge delivers a change to nobody, so the engine builds none;
    from the first rule on, every change is published again."""
    from types import SimpleNamespace

    from moto.events.models import events_backends

    from cpworker.local.events import EventPublisher

    account = f"{uuid.uuid4().int % 10**12:012d}"
    publisher = EventPublisher(REGION, account, lambda name: f"arn:pipeline:{name}")
    execution: Any = SimpleNamespace(pipeline="p", id="e", started=0.0, version=1, trigger="T")
    publisher.pipeline(execution, "STARTED")
    publisher.stage(execution, "Build", "STARTED")
    assert publisher._queue.empty()

    events_backends[account][REGION].put_rule("any", event_pattern='{"source": ["x"]}')
    publisher.pipeline(execution, "STARTED")
    publisher.stage(execution, "Build", "STARTED")
    assert publisher._queue.qsize() == 2
