"""The event worker's pure parts, and its error paths with a stubbed CodePipeline client:
which events it takes, which action a multi-action app's event picks, the queryable
property's value, and failures that are logged instead of raised."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import BaseModel
from pytest_mock import MockerFixture

from cpworker import ActionApp, Job, lambda_handler, prop
from cpworker.model import ActionTypeId
from cpworker.sources import lambda_event_worker
from cpworker.sources.lambda_event_worker import (
    EventWorkerSettings,
    FollowUp,
    parse_query,
    query_of,
    trigger_of,
)

TYPE = {"owner": "Custom", "category": "Build", "provider": "Two", "version": "1"}


def started(state: str = "STARTED", **type_members: str) -> dict[str, Any]:
    return {
        "source": "aws.codepipeline",
        "detail-type": "CodePipeline Action Execution State Change",
        "detail": {"pipeline": "p", "stage": "Build", "action": "Build", "state": state}
        | {"type": TYPE | type_members},
    }


class Staged(BaseModel):
    Stage: str = prop(queryable=True)


def two_actions() -> ActionApp:
    app = ActionApp()

    @app.action(category="Build", provider="One")
    def one(job: Job[None]) -> None: ...

    @app.action(category="Build", provider="Two", config=Staged)
    def two(job: Job[Staged]) -> None: ...

    return app


class _Context:
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def client(mocker: MockerFixture) -> Any:
    stub = mocker.Mock()
    stub.poll_for_jobs.return_value = {"jobs": []}
    mocker.patch.object(lambda_event_worker, "function_client", return_value=stub)
    return stub


def test_the_events_it_takes_and_the_ones_it_ignores() -> None:
    assert trigger_of(started()).kind == "started"
    assert trigger_of(started()).type_id == ActionTypeId.model_validate(TYPE)
    assert trigger_of(started(state="SUCCEEDED")).reason == "the action's state is SUCCEEDED"
    assert trigger_of(started(owner="ThirdParty")).kind == "ignored"
    assert trigger_of({**started(), "detail": {"state": "STARTED"}}).kind == "ignored"
    assert trigger_of({"source": "aws.events", "detail-type": "Scheduled Event"}).kind == (
        "scheduled"
    )
    follow_up = FollowUp(ActionTypeId.model_validate(TYPE), "p", "Build", "Build", "e-1")
    continued = {"source": "cpworker", "detail-type": "cpworker Job Continued"}
    trigger = trigger_of(continued | {"detail": follow_up.detail()})
    assert (trigger.kind, trigger.follow_up) == ("continued", follow_up)
    assert trigger_of({"source": "aws.s3", "detail-type": "Object Created"}).kind == "ignored"


def test_the_queryable_value_comes_from_cpworker_query() -> None:
    app = two_actions()
    assert parse_query("Stage=blue, one:Colour=red") == {"Stage": "blue", "one:Colour": "red"}
    assert query_of(app["one"], {}) == {}
    assert query_of(app["two"], {}) is None
    assert query_of(app["two"], parse_query("Stage=blue")) == {"Stage": "blue"}
    assert query_of(app["two"], parse_query("Stage=blue,two:Stage=green")) == {"Stage": "green"}
    with pytest.raises(ValueError, match="expected Property=value"):
        parse_query("Stage")


def test_the_events_type_picks_the_action_of_a_multi_action_app(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CPWORKER_QUERY", "Stage=blue")
    summary = lambda_handler(two_actions())(started(), _Context())
    client.poll_for_jobs.assert_called_once_with(
        actionTypeId=TYPE, maxBatchSize=1, queryParam={"Stage": "blue"}
    )
    assert summary == {"trigger": "started", "polls": 1, "jobs": [], "stopped": "no job"}


def test_an_ignored_event_or_a_type_not_served_calls_nothing(client: Any) -> None:
    handler = lambda_handler(two_actions())
    assert handler(started(state="FAILED"), _Context())["ignored"] == "the action's state is FAILED"
    assert handler(started(provider="Three"), _Context())["ignored"] == "action type not served"
    client.poll_for_jobs.assert_not_called()


@pytest.mark.parametrize(
    ("query", "error", "said"),
    [
        ("", "no query", "set CPWORKER_QUERY=Stage=VALUE"),
        ("Stage", "bad CPWORKER_QUERY", "CPWORKER_QUERY 'Stage': expected Property=value"),
    ],
)
def test_a_queryable_action_without_a_good_value_is_not_polled_and_says_why(
    client: Any, caplog: pytest.LogCaptureFixture, query: str, error: str, said: str
) -> None:
    settings = EventWorkerSettings(query=query)
    summary = lambda_handler(two_actions(), "two", settings)(started(), _Context())
    assert summary["error"] == error
    assert said in caplog.text
    client.poll_for_jobs.assert_not_called()


def test_a_denied_poll_is_logged_with_the_permission_and_not_raised(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    denied = {"Error": {"Code": "AccessDeniedException", "Message": "no"}}
    client.poll_for_jobs.side_effect = ClientError(denied, "PollForJobs")  # type: ignore[arg-type]
    caplog.set_level(logging.INFO)
    summary = lambda_handler(two_actions(), "one")(started(provider="One"), _Context())
    assert summary["error"] == "AccessDeniedException"
    assert summary["stopped"] == "error"
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "codepipeline:PollForJobs on the type's ARN" in line.getMessage()
    assert "actiontype:Custom/Build/One/1" in line.getMessage()


def test_too_little_time_takes_no_job(client: Any) -> None:
    class Late(_Context):
        def get_remaining_time_in_millis(self) -> int:
            return 2_000

    settings = EventWorkerSettings(timeout_margin_s=5)
    summary = lambda_handler(two_actions(), "one", settings)(started(provider="One"), Late())
    assert summary["stopped"] == "time"
    client.poll_for_jobs.assert_not_called()


def test_a_handler_module_loads_no_runtime_until_an_event_comes() -> None:
    code = (
        "import sys, handlers.build; "
        "print(sorted(m for m in sys.modules if m.startswith('cpworker.sources.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "['cpworker.sources.lambda_entry']"


def test_a_failed_acknowledgement_ends_the_drain_without_raising(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.poll_for_jobs.return_value = {"jobs": [{"id": "j-1", "nonce": "n-1", "data": {}}]}
    denied = {"Error": {"Code": "AccessDeniedException", "Message": "no"}}
    client.acknowledge_job.side_effect = ClientError(denied, "AcknowledgeJob")  # type: ignore[arg-type]
    summary = lambda_handler(two_actions(), "one")(started(provider="One"), _Context())
    assert (summary["polls"], summary["jobs"], summary["stopped"]) == (1, [], "not claimed")
    assert "acknowledge failed" in caplog.text
    client.put_job_success_result.assert_not_called()
