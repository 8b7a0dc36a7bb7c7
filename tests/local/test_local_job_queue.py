"""The job queue of the local CodePipeline, on a JobBoard with explicit clocks: polls hand
out waiting jobs oldest first, hand out again those not acknowledged in time, never
finished ones, and cost what they return however many jobs came before."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from cpworker.local.actiontypes import ActionTypeRecord
from cpworker.local.errors import ServiceError
from cpworker.local.executions import ActionRun, Execution
from cpworker.local.jobs import Job, JobBoard

REDISPATCH_S = 60.0


def action_type(provider: str) -> ActionTypeRecord:
    type_id = {"category": "Build", "owner": "Custom", "provider": provider, "version": "1"}
    return ActionTypeRecord({"id": type_id}, tags=[])


def queue(board: JobBoard, record: ActionTypeRecord, created: float) -> Job:
    """A Queued job of ``record``, as the engine adds one for a pipeline action."""
    execution = Execution("p", {}, "StartPipelineExecution", {}, created)
    declaration = {"name": "Build", "runOrder": 1}
    run = ActionRun(execution, "Build", declaration, record, {}, [], [], created)
    job = Job(run, {"actionConfiguration": {"configuration": {}}}, created)
    board.add(job)
    return job


def poll(board: JobBoard, record: ActionTypeRecord, now: float, batch: int = 10) -> list[Job]:
    return board.poll(record, batch, {}, now, REDISPATCH_S)


def nonce(job: Job) -> str:
    """The nonce of a dispatched job."""
    assert job.nonce is not None
    return job.nonce


def finish(board: JobBoard, job: Job) -> None:
    """Acknowledge a dispatched job and report its success, as a worker does."""
    board.acknowledge(job.id, nonce(job))
    board.succeed({"jobId": job.id}, job.created, continuation_delay_s=0.0)


def test_polls_hand_out_waiting_jobs_oldest_first() -> None:
    board, record = JobBoard(), action_type("Order")
    jobs = [queue(board, record, created) for created in (1.0, 2.0, 3.0)]

    first = poll(board, record, now=10.0, batch=2)
    second = poll(board, record, now=11.0, batch=2)

    assert first == jobs[:2]
    assert second == jobs[2:]
    assert poll(board, record, now=12.0) == []


def test_a_job_not_acknowledged_in_time_is_handed_out_again_before_younger_ones() -> None:
    board, record = JobBoard(), action_type("Again")
    old, acked = queue(board, record, 1.0), queue(board, record, 2.0)
    poll(board, record, now=10.0)
    first_nonce = nonce(old)
    board.acknowledge(acked.id, nonce(acked))
    young = queue(board, record, 20.0)

    assert poll(board, record, now=10.0 + REDISPATCH_S - 1) == [young]
    assert poll(board, record, now=10.0 + REDISPATCH_S) == [old]
    assert nonce(old) != first_nonce
    with pytest.raises(ServiceError) as refused:
        board.acknowledge(old.id, first_nonce)
    assert refused.value.code == "InvalidNonceException"
    assert board.acknowledge(old.id, nonce(old)) == "InProgress"


def test_finished_jobs_are_never_handed_out_again() -> None:
    board, record = JobBoard(), action_type("Done")
    succeeded, failed, expired = (queue(board, record, c) for c in (1.0, 2.0, 3.0))
    poll(board, record, now=4.0)
    finish(board, succeeded)
    board.acknowledge(failed.id, nonce(failed))
    board.fail({"jobId": failed.id, "failureDetails": {"type": "JobFailed", "message": "x"}}, 5.0)
    board.expire(now=3.0 + 100.0, timeout_s=100.0, reply_window_s=100.0)

    assert [succeeded.status, failed.status, expired.status] == [
        "Succeeded",
        "Failed",
        "TimedOut",
    ]
    assert poll(board, record, now=1000.0) == []


def lines_run(call: Callable[[], object]) -> int:
    """How many lines of Python ``call`` executes (its work, whatever the machine's speed)."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        count += event == "line"
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count


def poll_work(history: int) -> int:
    """The work of one poll of two jobs after ``history`` finished jobs, as many still
    in progress and as many waiting jobs of another type."""
    board, record, other = JobBoard(), action_type("Busy"), action_type("Other")
    for created in range(history):
        queue(board, other, float(created))
        queue(board, record, float(created))
    for job in poll(board, record, now=float(history), batch=history):
        finish(board, job)
    for created in range(history):
        queue(board, record, float(history + created))
    poll(board, record, now=float(2 * history), batch=history)  # in progress from now on
    for job in board:
        if job.status == "Dispatched":
            board.acknowledge(job.id, nonce(job))
    for created in range(3):
        queue(board, record, float(3 * history + created))
    return lines_run(lambda: poll(board, record, now=float(4 * history), batch=2))


def test_a_poll_costs_what_it_returns_not_the_jobs_before_it() -> None:
    assert poll_work(2000) == poll_work(10)
