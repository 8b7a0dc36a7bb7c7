"""How a worker polls: under load a slot freed while a poll is out gets a poll of its own;
idle or failing, one poll at a time on the backoff; a poll loop that fails stops its
second poller. Against a real local CodePipeline; the worker's client is watched to see
which polls are out together (and, in one test, throttled)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import Run, fast_settings, until
from cpw_test_apps import GATES, app
from pytest_mock import MockerFixture

from cpworker.api import CodePipelineAPI, RetryPolicy
from cpworker.local.server import LocalCodePipeline
from cpworker.worker import Worker

StartPipeline = Callable[..., Run]
Hold = Callable[["Polls", int], None]


class Polls:
    """Wraps a client's ``poll_for_jobs``: what each poll asked for, and the most polls
    that were out at once. ``hold(polls, n)`` runs inside poll number n (1-based) before
    it is sent."""

    def __init__(self, client: Any, hold: Hold) -> None:
        self.asked: list[int] = []
        self.out = self.most = 0
        self.together = threading.Event()  # two polls were out at once
        self._lock = threading.Lock()
        real = client.poll_for_jobs

        def poll(**request: Any) -> Any:
            with self._lock:
                self.asked.append(request["maxBatchSize"])
                number = len(self.asked)
                self.out += 1
                self.most = max(self.most, self.out)
                if self.out > 1:
                    self.together.set()
            try:
                hold(self, number)
                return real(**request)
            finally:
                with self._lock:
                    self.out -= 1

        client.poll_for_jobs = poll


def polls_take(polls: Polls, count: int) -> float:
    """Seconds from now until ``count`` more polls have started: at least ``count - 1``
    full waits between polls (a loaded machine only makes it longer)."""
    began, wanted = time.monotonic(), len(polls.asked) + count
    until(lambda: len(polls.asked) >= wanted, what=f"{count} more polls")
    return time.monotonic() - began


@pytest.fixture
def serve(
    aws: Callable[..., Any], local: LocalCodePipeline, workspace_root: Path, state_dir: Path
) -> Iterator[Callable[..., tuple[Worker, Polls]]]:
    """Factory: a worker of the test app's ``gate`` action (two slots, handlers in
    threads) whose client's polls are watched, stopped after the test."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(hold: Hold = lambda _polls, _n: None, attempts: int = 3) -> tuple[Worker, Polls]:
        client = aws("codepipeline")
        polls = Polls(client, hold)
        settings = fast_settings(
            workspace_root,
            concurrency=2,
            isolation="thread",
            endpoint_url=local.endpoint_url,
            state_dir=state_dir,
        )
        api = CodePipelineAPI(client, RetryPolicy(attempts=attempts, backoff_max_s=0.5))
        instance = Worker(api, app.select(["gate"]), settings)
        thread = threading.Thread(target=instance.run, daemon=True)
        thread.start()
        started.append((instance, thread))
        return instance, polls

    yield start
    for instance, thread in started:
        instance.shutdown()
        thread.join(timeout=15)
        assert not thread.is_alive(), "a worker did not stop"


def test_a_slot_freed_while_a_poll_is_out_gets_a_poll_of_its_own(
    start_pipeline: StartPipeline, serve: Callable[..., tuple[Worker, Polls]]
) -> None:
    # Given four queued jobs, the first of which keeps its slot until its gate opens
    GATES["held"] = threading.Event()
    runs = []
    for gate in ("held", "open", "open", "open"):
        run = start_pipeline("CpwGate", {"Gate": gate})
        until(lambda run=run: run.action_state().get("status") == "InProgress")
        runs.append(run)

    def hold(polls: Polls, number: int) -> None:
        # Poll 2 asks for the slot the second job freed: while it is out, the first job
        # ends and frees the other slot, whose poll must not wait for this one to return.
        if number == 2:
            GATES["held"].set()
            polls.together.wait(timeout=10)

    # When a worker with two slots serves them
    _, polls = serve(hold)
    # Then every job succeeds
    assert [run.wait()["status"] for run in runs] == ["Succeeded"] * 4
    # And the second freed slot was polled for while the first one's poll was out
    assert polls.most == 2
    assert polls.asked[:3] == [2, 1, 1]


def test_an_idle_worker_polls_alone_on_its_backoff(
    serve: Callable[..., tuple[Worker, Polls]],
) -> None:
    # Given a worker with nothing to do, which waits 0.05 s and then up to 0.2 s
    # (at least half of that) between polls
    _, polls = serve()
    until(lambda: len(polls.asked) >= 3, what="the first polls")
    # When it has made six more
    took = polls_take(polls, 6)
    # Then they came no more often than every 0.1 s, one at a time, for both slots
    assert took >= 0.5
    assert polls.most == 1
    assert set(polls.asked) == {2}


def test_a_worker_whose_polls_fail_polls_alone_on_its_backoff(
    start_pipeline: StartPipeline, serve: Callable[..., tuple[Worker, Polls]]
) -> None:
    # Given two queued jobs, and polls that are throttled after the first one, which
    # brings both (a full answer: jobs may wait)
    runs = []
    for _ in range(2):
        run = start_pipeline("CpwGate")
        until(lambda run=run: run.action_state().get("status") == "InProgress")
        runs.append(run)

    def hold(_polls: Polls, number: int) -> None:
        if number > 1:
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, "PollForJobs")

    # When a worker that does not retry a call itself has run both jobs
    _, polls = serve(hold, attempts=1)
    assert [run.wait()["status"] for run in runs] == ["Succeeded"] * 2
    until(lambda: len(polls.asked) >= 4, what="failed polls")
    # And six more polls have failed
    took = polls_take(polls, 6)
    # Then they came no more often than every 0.1 s, its backoff
    assert took >= 0.5


def test_a_poll_loop_that_fails_leaves_no_poller_behind(
    aws: Callable[..., Any],
    local: LocalCodePipeline,
    workspace_root: Path,
    state_dir: Path,
    mocker: MockerFixture,
) -> None:
    # Given a worker whose poll loop fails once it is idle (a fault that the local
    # CodePipeline cannot produce)
    settings = fast_settings(
        workspace_root, endpoint_url=local.endpoint_url, state_dir=state_dir, isolation="thread"
    )
    api = CodePipelineAPI(aws("codepipeline"), RetryPolicy(attempts=3, backoff_max_s=0.5))
    instance = Worker(api, app.select(["gate"]), settings)
    mocker.patch.object(instance, "_idle_delay", side_effect=RuntimeError("no backoff"))
    # When it runs, it fails
    with pytest.raises(RuntimeError, match="no backoff"):
        instance.run()
    # Then its second poller has stopped with it
    assert [t.name for t in threading.enumerate() if t.name == "cpworker-poller"] == []
