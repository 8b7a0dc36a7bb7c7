"""Deadlines, crashed handlers and the worker's fault paths, against a real local CodePipeline.

Handlers run in child processes (the default isolation). Faults the local
CodePipeline cannot produce (a poll that raises, a success refused for good, a
malformed job) are injected with pytest-mock on the worker's boto3 client.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from conftest import Run, fast_settings, local_codepipeline, stopped, until
from cpw_fault_apps import app as fault_app
from pytest_mock import MockerFixture

from cpworker.api import CodePipelineAPI, RetryPolicy
from cpworker.journal import Identity, Journal
from cpworker.local.faults import FaultSettings
from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline
from cpworker.worker import Worker, WorkerSettings

StartPipeline = Callable[..., Run]
StartWorker = Callable[..., Worker]


pytestmark = pytest.mark.usefixtures("fault_types")


def serve(worker: StartWorker, *actions: str, **overrides: Any) -> Worker:
    return worker(*actions, serve=fault_app, **overrides)


def test_hung_handler_fails_at_its_deadline_and_the_worker_serves_the_next_job(
    start_pipeline: StartPipeline, worker: StartWorker, spy_dir: Path, workspace_root: Path
) -> None:
    # Given one slot, and a handler that starts a command and then hangs
    hung = start_pipeline("CpwHang")
    serve(worker, "hang", concurrency=1)
    # Then at the action's 1.5 s deadline the job fails with the reason
    assert hung.wait()["status"] == "Failed"
    error = hung.action_state()["errorDetails"]
    assert (error["code"], error["message"]) == ("JobFailed", "timed out after 1.5 s")
    # And the handler's own command was killed with it, and its workspace removed
    grandchild = int((spy_dir / "pids").read_text().split()[0])
    until(lambda: stopped(grandchild), what="the handler's child to be killed")
    workspace = Path((spy_dir / "workspaces").read_text().split()[0])
    until(lambda: not workspace.exists(), what="the workspace to be removed")
    # And the slot is free again: the next job runs
    quick = start_pipeline("CpwHang", {"Tag": "quick"})
    assert quick.wait()["status"] == "Succeeded"


def test_on_timeout_continue_runs_the_step_again_instead_of_failing(
    start_pipeline: StartPipeline, worker: StartWorker, spy_dir: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    run = start_pipeline("CpwHangOnce", {"Tag": tag})
    serve(worker, "hang_once")
    assert run.wait()["status"] == "Succeeded"
    attempts = (spy_dir / f"attempts-{tag}").read_text().split()
    assert len(set(attempts)) == 2, "the resumed step is a new job"
    assert run.action_state()["summary"] == "resumed with None"


@pytest.mark.parametrize(
    ("how", "death"),
    [
        ("SIGKILL", "was killed by SIGKILL (the OOM killer sends it when memory runs out)"),
        ("SIGSEGV", "was killed by SIGSEGV"),
        ("exit", "exited with status 3"),
    ],
)
def test_a_handler_process_that_dies_fails_only_its_job(
    how: str, death: str, start_pipeline: StartPipeline, worker: StartWorker
) -> None:
    dead = start_pipeline("CpwDie", {"How": how})
    serve(worker, "die", "hang", concurrency=1)
    assert dead.wait()["status"] == "Failed"
    error = dead.action_state()["errorDetails"]
    assert error["code"] == "JobFailed"
    assert error["message"] == f"the handler's process {death} before the job finished"
    assert start_pipeline("CpwHang", {"Tag": "quick"}).wait()["status"] == "Succeeded"


def _leave(start_pipeline: StartPipeline, what: str = "nothing") -> tuple[int, str]:
    """Run one CpwLeave job: the pid that ran it, and the variable it found."""
    run = start_pipeline("CpwLeave", {"Leave": what})
    assert run.wait()["status"] == "Succeeded"
    pid, found = (
        run.action_state()["summary"].removeprefix("pid ").split(", earlier job's variable: ")
    )
    return int(pid), found


def test_a_process_runs_the_next_job_only_when_the_last_left_nothing_running(
    start_pipeline: StartPipeline, worker: StartWorker, spy_dir: Path
) -> None:
    serve(worker, "leave", concurrency=1)
    first, found = _leave(start_pipeline)
    # A clean job's process runs the next job, with the worker's environment again
    assert _leave(start_pipeline) == (first, "no")
    assert found == "no"
    # A job that leaves a process running: the process is killed after the job...
    assert _leave(start_pipeline, "process")[0] == first
    left = int((spy_dir / "left").read_text())
    until(lambda: stopped(left), what="the process the job left behind to be killed")
    # ...and the next job gets a fresh process; so does the one after a leftover thread
    fresh, _ = _leave(start_pipeline, "thread")
    assert fresh != first
    assert _leave(start_pipeline)[0] not in (first, fresh)


def test_jobs_per_process_bounds_how_many_jobs_a_process_runs(
    start_pipeline: StartPipeline, worker: StartWorker
) -> None:
    serve(worker, "leave", concurrency=1, jobs_per_process=2)
    pids = [_leave(start_pipeline)[0] for _ in range(3)]
    assert pids[0] == pids[1] != pids[2]


def test_a_slot_takes_the_next_job_while_the_last_result_is_being_reported(
    local: LocalCodePipeline,
    start_pipeline: StartPipeline,
    worker: StartWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given one slot, two queued jobs, and reports refused (throttled) for now
    runs = [start_pipeline("CpwLeave"), start_pipeline("CpwLeave")]
    local.set_faults(FaultSettings(throttle=1.0, operations=frozenset({"PutJobSuccessResult"})))
    try:
        serve(worker, "leave", concurrency=1)

        # Then the second job is acknowledged while the first one's report is retried
        def statuses() -> list[str]:
            return [
                job["status"]
                for run in runs
                for job in call_private(
                    local.endpoint_url, "GetResultCounts", {"pipelineName": run.name}
                )["jobs"]
            ]

        until(lambda: statuses() == ["InProgress", "InProgress"], what="both jobs acknowledged")
        gave_up = [r for r in caplog.records if r.getMessage() == "could not report the result"]
        assert not gave_up, "the slot waited for the first report's retries to run out"
    finally:
        local.set_faults(None)
    # And both results land once CodePipeline takes them again
    assert [run.wait()["status"] for run in runs] == ["Succeeded", "Succeeded"]


def test_thread_isolation_still_enforces_the_deadline_on_the_report(
    start_pipeline: StartPipeline, worker: StartWorker, spy_dir: Path
) -> None:
    run = start_pipeline("CpwHangOnce", {"Tag": uuid.uuid4().hex[:8]})
    serve(worker, "hang_once", isolation="thread")
    assert run.wait()["status"] == "Succeeded"
    assert run.action_state()["summary"] == "resumed with None"


def test_a_malformed_job_is_failed_alone_and_the_rest_of_its_batch_runs(
    start_pipeline: StartPipeline,
    worker: StartWorker,
    local: LocalCodePipeline,
    mocker: MockerFixture,
) -> None:
    # Given two queued jobs, one of which arrives without its input's location
    bad, good = (start_pipeline("CpwHang", {"Tag": "quick"}) for _ in range(2))
    for run in (bad, good):
        until(lambda run=run: run.action_state().get("status") == "InProgress")
    batches: list[list[str]] = []

    def corrupt(poll: Callable[..., Any], **request: Any) -> Any:
        answer = poll(**request)
        for job in answer["jobs"]:
            if job["data"]["pipelineContext"]["pipelineName"] == bad.name:
                del job["data"]["inputArtifacts"][0]["location"]
        batches.append([job["data"]["pipelineContext"]["pipelineName"] for job in answer["jobs"]])
        return answer

    instance = serve(worker, "hang")
    real_poll = instance.api.client.poll_for_jobs
    mocker.patch.object(
        instance.api.client, "poll_for_jobs", side_effect=lambda **r: corrupt(real_poll, **r)
    )
    # Then the malformed job fails with what is wrong, and its batch mate succeeds
    assert bad.wait()["status"] == "Failed"
    assert good.wait()["status"] == "Succeeded"
    error = bad.action_state()["errorDetails"]
    assert error["code"] == "JobFailed"
    assert error["message"] == (
        "cpworker could not read this job: data.inputArtifacts.0.location: Field required"
    )
    assert [sorted(b) for b in batches if b] == [sorted([bad.name, good.name])]


def test_a_success_refused_for_good_becomes_a_failure_that_says_why(
    start_pipeline: StartPipeline, worker: StartWorker, mocker: MockerFixture
) -> None:
    instance = serve(worker, "hang")
    refusal = ClientError(
        {"Error": {"Code": "ValidationException", "Message": "summary is not allowed here"}},
        "PutJobSuccessResult",
    )
    mocker.patch.object(instance.api.client, "put_job_success_result", side_effect=refusal)
    run = start_pipeline("CpwHang", {"Tag": "quick"})
    assert run.wait()["status"] == "Failed"
    error = run.action_state()["errorDetails"]
    assert error["code"] == "JobFailed"
    assert error["message"] == (
        "CodePipeline refused the action's result: ValidationException: summary is not allowed here"
    )


def test_an_ambiguous_retried_report_is_not_logged_as_lost(
    start_pipeline: StartPipeline,
    local: LocalCodePipeline,
    workspace_root: Path,
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given reports that land but whose answers are lost (the local CodePipeline's
    # "lost" fault resets the connection after processing the request)
    local.set_faults(FaultSettings(lost=1.0, operations=frozenset({"PutJobSuccessResult"})))
    try:
        run = start_pipeline("CpwHang", {"Tag": "quick"})
        # One attempt per call at the botocore level, as cpworker's own client makes it:
        # cpworker must see the lost answer itself.
        client = local_codepipeline(local, config=Config(retries={"total_max_attempts": 1}))
        api = CodePipelineAPI(client, RetryPolicy(attempts=30, backoff_max_s=0.5))
        settings = fast_settings(
            workspace_root, endpoint_url=local.endpoint_url, state_dir=state_dir
        )
        instance = Worker(api, [fault_app["hang"]], settings)
        thread = threading.Thread(target=instance.run, daemon=True)
        thread.start()
        try:
            # When the first attempt has landed, the answers stop being lost
            assert run.wait()["status"] == "Succeeded"
            local.set_faults(None)
            # Then the retry's InvalidJobState is recognised as "already reported"
            reported = until(
                lambda: [r for r in caplog.records if r.getMessage() == "result reported"]
            )
        finally:
            instance.shutdown()
            thread.join(timeout=30)
    finally:
        local.set_faults(None)
    assert reported[0].__dict__["delivery"] == "accepted by an earlier attempt"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    counts = call_private(local.endpoint_url, "GetResultCounts", {"pipelineName": run.name})
    job = next(j for j in counts["jobs"] if j["pipelineName"] == run.name and j["accepted"])
    assert sum(job["accepted"].values()) == 1
    assert sum(job["received"].values()) >= 2, "the retry reached the server"


def test_a_poll_that_raises_is_logged_and_polling_goes_on(
    start_pipeline: StartPipeline,
    worker: StartWorker,
    mocker: MockerFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = start_pipeline("CpwHang", {"Tag": "quick"})
    instance = serve(worker, "hang")
    real_poll = instance.api.client.poll_for_jobs
    calls: list[int] = []

    def broken_then_fine(**request: Any) -> Any:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("a bug in a dependency")
        return real_poll(**request)

    mocker.patch.object(instance.api.client, "poll_for_jobs", side_effect=broken_then_fine)
    assert run.wait()["status"] == "Succeeded"
    failures = [r for r in caplog.records if r.getMessage() == "polling failed"]
    assert len(failures) >= 1
    assert failures[0].__dict__["error"] == "RuntimeError('a bug in a dependency')"


def test_a_report_that_cannot_be_sent_is_critical_journaled_and_sent_again_later(
    start_pipeline: StartPipeline,
    worker: StartWorker,
    mocker: MockerFixture,
    caplog: pytest.LogCaptureFixture,
    state_dir: Path,
) -> None:
    # Given a worker whose reports cannot reach CodePipeline for a while
    instance = serve(worker, "hang", redeliver_every_s=0.5)
    real_put = instance.api.client.put_job_success_result
    unreachable = threading.Event()
    unreachable.set()

    def put(**request: Any) -> Any:
        if unreachable.is_set():
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return real_put(**request)

    mocker.patch.object(instance.api.client, "put_job_success_result", side_effect=put)
    run = start_pipeline("CpwHang", {"Tag": "quick"})
    # Then, after its retries, the report is CRITICAL and the result stays journaled
    critical = until(lambda: [r for r in caplog.records if r.levelno == logging.CRITICAL])
    assert critical[0].getMessage() == "could not report the result"
    assert run.action_state()["status"] == "InProgress"
    with sqlite3.connect(state_dir / "journal.sqlite3") as db:
        rows = db.execute("SELECT state, operation FROM jobs").fetchall()
    assert rows == [("decided", "PutJobSuccessResult")], "a restart sends it again"
    # And once CodePipeline can be reached again, the live worker sends it
    unreachable.clear()
    assert run.wait()["status"] == "Succeeded"
    with sqlite3.connect(state_dir / "journal.sqlite3") as db:
        assert db.execute("SELECT state FROM jobs").fetchall() == [("reported",)]


def test_invalid_nonce_means_another_worker_has_the_job(
    start_pipeline: StartPipeline,
    worker: StartWorker,
    local: LocalCodePipeline,
    aws: Callable[..., Any],
    mocker: MockerFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a job that is dispatched again to a competitor before our worker acknowledges it
    original = local.engine.settings
    local.engine.configure(redispatch_after_s=0.2)
    try:
        run = start_pipeline("CpwHang", {"Tag": "quick"})
        codepipeline = aws("codepipeline")
        type_id = {"category": "Test", "owner": "Custom", "provider": "CpwHang", "version": "1"}
        instance = serve(worker, "hang")
        real_ack = instance.api.client.acknowledge_job

        def competitor_first(**request: Any) -> Any:
            jobs = until(lambda: codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)[
                "jobs"])  # fmt: skip
            codepipeline.acknowledge_job(jobId=jobs[0]["id"], nonce=jobs[0]["nonce"])
            codepipeline.put_job_success_result(
                jobId=jobs[0]["id"], executionDetails={"summary": "done by the competitor"}
            )
            return real_ack(**request)

        mocker.patch.object(instance.api.client, "acknowledge_job", side_effect=competitor_first)
        assert run.wait()["status"] == "Succeeded"
    finally:
        local.engine.configure(redispatch_after_s=original.redispatch_after_s)
    # Then our worker stood back quietly: no error, no second result
    taken = until(
        lambda: [r for r in caplog.records if r.getMessage() == "job taken by another worker"]
    )
    assert taken[0].__dict__["error"] == "InvalidNonceException"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert run.action_state()["summary"] == "done by the competitor"


def test_idle_backoff_doubles_with_jitter_up_to_the_cap(tmp_path: Path) -> None:
    settings = WorkerSettings(
        poll_interval_min_s=0.5, poll_interval_max_s=10.0, state_dir=tmp_path, isolation="thread"
    )
    instance = Worker(object(), list(fault_app), settings)  # type: ignore[arg-type]
    for idle, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (50, 10.0)]:
        delays = [instance._idle_delay(idle) for _ in range(200)]
        assert ceiling / 2 <= min(delays) <= max(delays) <= ceiling


def test_process_isolation_refuses_a_handler_a_child_cannot_import(tmp_path: Path) -> None:
    from cpworker import ActionApp

    local_app = ActionApp()

    @local_app.action(category="Test", provider="CpwInline")
    def inline(job: Any) -> None:
        return None

    with pytest.raises(ValueError, match="define its handler and config model at module level"):
        Worker(object(), list(local_app), WorkerSettings(state_dir=tmp_path))  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


@pytest.fixture
def short_lived_credentials(local: LocalCodePipeline) -> Iterator[None]:
    """Job credentials that S3 refuses (ExpiredToken) 1.5 s after they are issued."""
    original = local.engine.settings.credential_ttl_s
    local.engine.configure(credential_ttl_s=1.5)
    yield
    local.engine.configure(credential_ttl_s=original)


@pytest.mark.usefixtures("short_lived_credentials")
def test_a_job_outliving_its_credentials_still_reads_and_uploads_with_fresh_ones(
    start_pipeline: StartPipeline, worker: StartWorker, caplog: pytest.LogCaptureFixture
) -> None:
    run = start_pipeline("CpwOutlive", {"Seconds": "3"}, outputs=("Out",))
    serve(worker, "outlive", credential_refresh_s=0.5)
    assert run.wait()["status"] == "Succeeded"
    assert run.action_state()["summary"] == "uploaded after the first credentials expired"
    assert [r for r in caplog.records if r.getMessage() == "artifact credentials refreshed"]


@pytest.mark.usefixtures("short_lived_credentials")
def test_without_refresh_the_expired_credentials_are_refused(
    start_pipeline: StartPipeline, worker: StartWorker
) -> None:
    # The control for the test above: the local CodePipeline's TTL really bites.
    run = start_pipeline("CpwOutlive", {"Seconds": "3"}, outputs=("Out",))
    serve(worker, "outlive", credential_refresh_s=900)
    assert run.wait()["status"] == "Failed"
    assert "ExpiredToken" in run.action_state()["errorDetails"]["message"]


def test_shutdown_abandons_a_poll_that_is_being_retried(
    local: LocalCodePipeline,
    workspace_root: Path,
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a worker whose every poll is throttled, so each poll retries with backoff
    local.set_faults(FaultSettings(throttle=1.0, operations=frozenset({"PollForJobs"})))
    try:
        api = CodePipelineAPI(
            local_codepipeline(local, config=Config(retries={"total_max_attempts": 1})),
            RetryPolicy(attempts=50, max_elapsed_s=600, backoff_base_s=2.0, backoff_max_s=60),
        )
        settings = fast_settings(
            workspace_root, endpoint_url=local.endpoint_url, state_dir=state_dir
        )
        instance = Worker(api, [fault_app["hang"]], settings)
        thread = threading.Thread(target=instance.run, daemon=True)
        thread.start()
        until(lambda: [r for r in caplog.records if "ThrottlingException" in r.getMessage()])
        # When it is told to stop, in the middle of the retries
        instance.shutdown()
        # Then it stops at once instead of finishing a minutes-long retry schedule
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        local.set_faults(None)
    assert not [r for r in caplog.records if r.getMessage() == "polling failed"]


def _poll_for(
    codepipeline: Any, type_id: dict[str, str], wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll until the job ``wanted`` picks comes (jobs that other tests left queued
    are passed over: CodePipeline dispatches them again later)."""

    def found() -> dict[str, Any] | None:
        jobs = codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=10)["jobs"]
        return next((job for job in jobs if wanted(job)), None)

    job: dict[str, Any] = until(found, what="the test's own job")
    return job


def _claim_as_a_dead_worker(
    codepipeline: Any, state_dir: Path, run: Run, *, acknowledge: bool
) -> dict[str, Any]:
    """Poll ``run``'s job and journal its claim as a worker that has since died (as if it
    was killed between the journal entry and AcknowledgeJob, or just after it)."""
    type_id = {"category": "Test", "owner": "Custom", "provider": "CpwHang", "version": "1"}
    job = _poll_for(
        codepipeline, type_id, lambda j: j["data"]["pipelineContext"]["pipelineName"] == run.name
    )
    dead = Identity(socket.gethostname(), 2**22 + 7, "0")  # no such process
    journal = Journal(state_dir, dead)
    journal.claiming(job["id"], "hang", job["nonce"], None, None)
    journal.close()
    if acknowledge:
        codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
    return job


def test_a_job_acknowledged_by_a_worker_that_died_before_running_it_is_resolved(
    start_pipeline: StartPipeline,
    worker: StartWorker,
    aws: Callable[..., Any],
    state_dir: Path,
) -> None:
    run = start_pipeline("CpwHang", {"Tag": "quick"})
    _claim_as_a_dead_worker(aws("codepipeline"), state_dir, run, acknowledge=True)
    serve(worker, "hang")
    assert run.wait()["status"] == "Failed"
    error = run.action_state()["errorDetails"]
    assert error["code"] == "SystemUnavailable"
    assert error["message"].startswith("the worker stopped unexpectedly while running this job")


def test_a_claim_that_went_to_another_worker_is_left_to_it(
    start_pipeline: StartPipeline,
    worker: StartWorker,
    aws: Callable[..., Any],
    local: LocalCodePipeline,
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a dead worker's claim whose job CodePipeline then gave to another worker
    original = local.engine.settings.redispatch_after_s
    local.engine.configure(redispatch_after_s=0.2)
    try:
        codepipeline = aws("codepipeline")
        run = start_pipeline("CpwHang", {"Tag": "quick"})
        first = _claim_as_a_dead_worker(codepipeline, state_dir, run, acknowledge=False)
        type_id = first["data"]["actionTypeId"]
        again = _poll_for(codepipeline, type_id, lambda j: j["id"] == first["id"])
        codepipeline.acknowledge_job(jobId=again["id"], nonce=again["nonce"])
    finally:
        local.engine.configure(redispatch_after_s=original)
    # When a worker starts on the dead worker's journal
    serve(worker, "hang")
    until(lambda: [r for r in caplog.records if "went to another worker" in r.getMessage()])
    # Then it leaves the job to the worker that has it, which finishes it
    assert run.action_state()["status"] == "InProgress"
    codepipeline.put_job_success_result(
        jobId=again["id"], executionDetails={"summary": "finished by the other worker"}
    )
    assert run.wait()["status"] == "Succeeded"
    assert run.action_state()["summary"] == "finished by the other worker"


def test_a_step_claimed_by_a_worker_that_died_is_handed_back_with_its_state(
    start_pipeline: StartPipeline,
    worker: StartWorker,
    aws: Callable[..., Any],
    local: LocalCodePipeline,
    state_dir: Path,
    spy_dir: Path,
) -> None:
    # Given the second step of an on_shutdown="continue" action, acknowledged by a
    # worker that died before it ran the handler
    codepipeline = aws("codepipeline")
    type_id = {"category": "Test", "owner": "Custom", "provider": "CpwHandBack", "version": "1"}
    run = start_pipeline("CpwHandBack", {"Tag": "claimed"})
    first = until(lambda: codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)["jobs"])
    codepipeline.acknowledge_job(jobId=first[0]["id"], nonce=first[0]["nonce"])
    codepipeline.put_job_success_result(jobId=first[0]["id"], continuationToken='{"step": 2}')
    second = until(
        lambda: codepipeline.poll_for_jobs(actionTypeId=type_id, maxBatchSize=1)["jobs"]
    )[0]
    dead = Journal(state_dir, Identity(socket.gethostname(), 2**22 + 9, "0"))
    dead.claiming(second["id"], "hand_back", second["nonce"], None, '{"step": 2}')
    dead.close()
    codepipeline.acknowledge_job(jobId=second["id"], nonce=second["nonce"])
    (spy_dir / "attempts-claimed").write_text("the attempt that died\n")
    # When a worker starts on its journal
    worker("hand_back", serve=fault_app)
    # Then the step is handed back with its state: one more job, step 2, not step 1 again
    assert run.wait()["status"] == "Succeeded"
    assert run.action_state()["summary"] == "finished step 2 after a hand-back"
    counts = call_private(local.endpoint_url, "GetResultCounts", {"pipelineName": run.name})
    (execution,) = [e for e in counts["actionExecutions"] if e["actionName"] == "Act"]
    assert execution["steps"] == 3, "step 1, the handed-back step 2, and its re-run"
