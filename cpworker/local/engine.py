"""The local CodePipeline engine: action types, pipelines, executions and jobs in memory.

All state sits behind one lock. A background scheduler thread moves executions
forward, runs the built-in S3 source action, queues jobs for custom actions, invokes
the Lambda functions of Invoke actions (:mod:`cpworker.local.lambdas`) and of action
types with a Lambda executor (:mod:`cpworker.local.integration`), and applies the timers
(continuation delay, job timeout, reply window). Whatever needs HTTP (S3, KMS, STS,
served by moto on the same endpoint) runs outside the lock. The behaviour choices
(execution modes, job states, timers) are listed in :mod:`cpworker.local`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cpworker.local import integration, views
from cpworker.local.actiontypes import (
    CUSTOM,
    LAMBDA_INVOKE,
    S3_SOURCE,
    ActionTypeRecord,
    ActionTypeRegistry,
    describe,
    key_of,
)
from cpworker.local.aws import AwsClients, SourceUnavailable
from cpworker.local.credentials import CredentialExpiries
from cpworker.local.declarations import LAMBDA, declared_type
from cpworker.local.errors import ServiceError
from cpworker.local.events import (
    EventPublisher,
    LambdaTargets,
    install_delivery,
    uninstall_delivery,
)
from cpworker.local.executions import IN_PROGRESS, SUPERSEDED, ActionRun, Execution
from cpworker.local.jobs import Job, JobBoard
from cpworker.local.lambdas import FunctionRegistry, FunctionSpec, Invocation, Invoker, Returned
from cpworker.local.pipelines import PipelineRecord, normalise, resolve_variables
from cpworker.local.thirdparty import THIRD_PARTY, ClientPair, ThirdPartyJobs

log = logging.getLogger("cpworker.local")


@dataclass(frozen=True)
class EngineSettings:
    """Where the engine says it runs, and its timings (all durations in seconds).

    ========================  =============================  ==================================
    field                     default                        why
    ========================  =============================  ==================================
    region                    ``"us-east-1"``                ARNs, and the region of the engine's
                                                             own S3/KMS/STS clients
    account_id                ``"123456789012"``             moto's default account, so ARNs and
                                                             moto resources agree
    continuation_delay_s      ``1.0``                        delay before the follow-up job of a
                                                             continuation is queued; AWS does not
                                                             document it for custom actions (30 s
                                                             for the Lambda integration model)
    redispatch_after_s        ``60.0``                       a Dispatched job not acknowledged in
                                                             this time is dispatched again, with a
                                                             new nonce, by the next poll
    job_timeout_s             ``3600.0``                     a job with no result this long after it
                                                             was created fails its action; AWS uses
                                                             24 hours for custom action jobs
    lambda_timeout_s          ``900.0``                      a function's process is killed this
                                                             long after its handler was called
                                                             (Lambda's maximum); a function may set
                                                             less. That alone does not fail the
                                                             action: the reply window does
    lambda_init_timeout_s     ``10.0``                       a function's process is killed if its
                                                             handler is not called this long after
                                                             the process started (start-up and
                                                             imports; Lambda's init limit)
    lambda_reply_window_s     ``1200.0``                     a Lambda job with no result this long
                                                             after it was created fails its action
                                                             (CodePipeline's 20 minutes); each
                                                             continuation job has its own window
    integration_job_timeout_s ``900.0``                      the longest a job of a Lambda executor
                                                             may run (the integration model's 15
                                                             minutes; a type's jobTimeout may set
                                                             less): then its function is killed
                                                             and the action fails (JobTimedOut)
    credential_ttl_s          ``None`` (never expire)        a job credential expires this long
                                                             after it was issued: S3 then refuses it
                                                             (ExpiredToken); GetJobDetails issues
                                                             fresh ones, and with a TTL so does
                                                             PollForJobs at each dispatch
    tick_s                    ``0.2``                        scheduler resolution; API calls also
                                                             wake it at once
    default_key_alias         ``"alias/cpworker-local-       the moto KMS key used for pipelines
                              artifacts"``                   without an artifactStore encryptionKey
    page_size                 ``50``                         page size of the List* operations when
                                                             the request sets no maxResults
    ========================  =============================  ==================================
    """

    region: str = "us-east-1"
    account_id: str = "123456789012"
    continuation_delay_s: float = 1.0
    redispatch_after_s: float = 60.0
    job_timeout_s: float = 3600.0
    lambda_timeout_s: float = 900.0
    lambda_init_timeout_s: float = 10.0
    lambda_reply_window_s: float = 1200.0
    integration_job_timeout_s: float = 900.0
    credential_ttl_s: float | None = None
    tick_s: float = 0.2
    default_key_alias: str = "alias/cpworker-local-artifacts"
    page_size: int = 50


class Engine:
    """The state machine behind the CodePipeline operations of ``cpworker local``."""

    def __init__(
        self, settings: EngineSettings, functions: Mapping[str, str | FunctionSpec] | None = None
    ) -> None:
        self.settings = settings
        self.functions = FunctionRegistry(functions)
        self._invoker = Invoker()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._aws: AwsClients | None = None
        self._types = ActionTypeRegistry()
        self._pipelines: dict[str, PipelineRecord] = {}
        self._executions: dict[str, Execution] = {}
        self._request_tokens: dict[tuple[str, str], str] = {}
        self._jobs = JobBoard()
        self._third_party = ThirdPartyJobs()
        self.expiries = CredentialExpiries()
        """Expiry of each job credential issued with a ``credential_ttl_s`` (the server's)."""
        self._events = EventPublisher(settings.region, settings.account_id, self._pipeline_arn)
        self._lambda_targets = LambdaTargets(
            self.functions,
            self._invoker,
            lambda: (self.settings.lambda_timeout_s, self.settings.lambda_init_timeout_s),
        )

    # -- lifecycle -----------------------------------------------------------------

    def start(self, endpoint_url: str) -> None:
        """Start the scheduler; the engine's own AWS calls go to ``endpoint_url``."""
        self._aws = AwsClients(endpoint_url, self.settings.region)
        self._invoker.start(endpoint_url, self.settings.region, self.settings.account_id)
        self._events.start()
        install_delivery(self._lambda_targets)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="cpworker-local-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the scheduler and wait for it; state is kept."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        uninstall_delivery(self._lambda_targets)
        self._events.stop()
        self._invoker.stop()

    def configure(self, **changes: Any) -> EngineSettings:
        """Swap in new settings (tests shorten timings); returns the previous ones."""
        previous = self.settings
        self.settings = dataclasses.replace(previous, **changes)
        self._wake.set()
        return previous

    def register_function(
        self,
        name: str,
        handler_ref: str,
        *,
        timeout_s: float | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        """Map a FunctionName to a handler (``module:attr`` or ``file.py:attr``), or remap it."""
        self.functions.register(name, FunctionSpec(handler_ref, timeout_s, dict(environment or {})))

    def unregister_function(self, name: str) -> None:
        self.functions.unregister(name)

    def _pipeline_arn(self, name: str) -> str:
        return f"arn:aws:codepipeline:{self.settings.region}:{self.settings.account_id}:{name}"

    # -- action types ----------------------------------------------------------------

    def create_custom_action_type(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            record = self._types.create(params)
            answer: dict[str, Any] = {"actionType": record.definition}
            if record.tags:
                answer["tags"] = record.tags
            return answer

    def delete_custom_action_type(self, category: str, provider: str, version: str) -> None:
        with self._lock:
            self._types.delete(category, provider, version)

    def list_action_types(self, owner: str | None) -> list[dict[str, Any]]:
        with self._lock:
            return [r.definition for r in self._types if owner in (None, r.key[1])]

    def register_action_type(self, declaration: Mapping[str, Any]) -> None:
        """Declare an action type with an executor (a definition file's ``actionType``),
        or replace it; a ServiceError (ValidationException) names what is wrong."""
        record = declared_type(declaration)
        with self._lock:
            self._types.declare(record, update=False)

    def update_action_type(self, declaration: Mapping[str, Any]) -> None:
        """UpdateActionType: replace a declared type; later action executions use it."""
        record = declared_type(declaration)
        with self._lock:
            self._types.declare(record, update=True)

    def get_action_type(self, type_id: Mapping[str, str]) -> dict[str, Any]:
        """GetActionType: the declaration of a declared type."""
        with self._lock:
            declaration = self._types.declared(key_of(type_id)).declaration
            assert declaration is not None
            return declaration

    # -- pipelines -------------------------------------------------------------------

    def create_pipeline(self, declaration: Mapping[str, Any]) -> dict[str, Any]:
        """Store a pipeline and start its first execution (trigger CreatePipeline)."""
        with self._lock:
            if declaration["name"] in self._pipelines:
                raise ServiceError(
                    "PipelineNameInUseException", f"Pipeline {declaration['name']!r} already exists"
                )
            now = time.time()
            record = PipelineRecord(normalise(declaration, self._types, 1), now, now)
            self._pipelines[record.name] = record
            self._start_execution(record, "CreatePipeline", [], now)
            return record.declaration

    def update_pipeline(self, declaration: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a pipeline's declaration; running executions keep their snapshot."""
        with self._lock:
            record = self._pipeline(declaration["name"])
            record.declaration = normalise(declaration, self._types, record.version + 1)
            record.history[record.version] = record.declaration
            record.updated = time.time()
            return record.declaration

    def get_pipeline(self, name: str, version: int | None) -> dict[str, Any]:
        with self._lock:
            record = self._pipeline(name)
            declaration = record.history.get(version or record.version)
            if declaration is None:
                raise ServiceError(
                    "PipelineVersionNotFoundException",
                    f"Pipeline {name!r} has no version {version}",
                )
            metadata = {
                "pipelineArn": self._pipeline_arn(name),
                "created": record.created,
                "updated": record.updated,
            }
            return {"pipeline": declaration, "metadata": metadata}

    def delete_pipeline(self, name: str) -> None:
        """Forget a pipeline, its executions and their jobs (unknown names are ignored)."""
        with self._lock:
            self._pipelines.pop(name, None)
            for ex in [ex for ex in self._executions.values() if ex.pipeline == name]:
                del self._executions[ex.id]
            for board in (self._jobs, self._third_party.board):
                for job in board:
                    if job.run is not None and job.run.execution.pipeline == name:
                        board.discard(job)

    def list_pipelines(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                views.pipeline_summary(r)
                for r in sorted(self._pipelines.values(), key=lambda r: r.name)
            ]

    # -- executions ------------------------------------------------------------------

    def start_pipeline_execution(
        self, name: str, variables: list[dict[str, str]], request_token: str | None
    ) -> str:
        """Start an execution (trigger StartPipelineExecution); a repeated token starts none."""
        with self._lock:
            record = self._pipeline(name)
            if request_token is not None and (name, request_token) in self._request_tokens:
                return self._request_tokens[(name, request_token)]
            ex = self._start_execution(record, "StartPipelineExecution", variables, time.time())
            if request_token is not None:
                self._request_tokens[(name, request_token)] = ex.id
            return ex.id

    def _start_execution(
        self, record: PipelineRecord, trigger: str, variables: list[dict[str, str]], now: float
    ) -> Execution:
        values = resolve_variables(record.declaration, variables)
        ex = Execution(record.name, record.declaration, trigger, values, now, changes=self._events)
        self._executions[ex.id] = ex
        self._wake.set()
        return ex

    def get_pipeline_execution(self, name: str, execution_id: str) -> dict[str, Any]:
        with self._lock:
            return views.execution(self._execution(name, execution_id))

    def list_pipeline_executions(self, name: str) -> list[dict[str, Any]]:
        """Summaries, newest first."""
        with self._lock:
            return [views.execution_summary(ex) for ex in self._newest_first(name)]

    def get_pipeline_state(self, name: str) -> dict[str, Any]:
        with self._lock:
            return views.pipeline_state(self._pipeline(name), self._newest_first(name))

    def list_action_executions(self, name: str, execution_id: str | None) -> list[dict[str, Any]]:
        """Action execution details, newest first, of one execution or of all."""
        with self._lock:
            if execution_id is not None:
                executions = [self._execution(name, execution_id)]
            else:
                executions = self._newest_first(name)
            runs = [run for ex in executions for run in ex.runs]
            runs.sort(key=lambda run: run.started, reverse=True)
            return [views.action_execution_detail(run) for run in runs]

    def _pipeline(self, name: str) -> PipelineRecord:
        record = self._pipelines.get(name)
        if record is None:
            raise ServiceError("PipelineNotFoundException", f"Pipeline {name!r} not found")
        return record

    def _execution(self, name: str, execution_id: str) -> Execution:
        self._pipeline(name)
        ex = self._executions.get(execution_id)
        if ex is None or ex.pipeline != name:
            raise ServiceError(
                "PipelineExecutionNotFoundException",
                f"Execution {execution_id} of pipeline {name!r} not found",
            )
        return ex

    def _newest_first(self, name: str) -> list[Execution]:
        self._pipeline(name)
        return sorted(
            (ex for ex in self._executions.values() if ex.pipeline == name),
            key=lambda ex: ex.started,
            reverse=True,
        )

    # -- jobs ------------------------------------------------------------------------

    def poll_for_jobs(
        self, type_id: Mapping[str, str], batch: int, query: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Dispatch waiting jobs of a custom action type, with nonces and secrets."""
        with self._lock:
            record = self._polled_type(type_id, CUSTOM, "PollForJobs")
            jobs = self._jobs.poll(
                record, batch, query, time.time(), self.settings.redispatch_after_s
            )
        if self.settings.credential_ttl_s is not None:
            self._renew_credentials(jobs)  # the TTL runs from the dispatch, as a worker expects
        with self._lock:
            return [job.wire(self.settings.account_id, nonce=True) for job in jobs]

    def _polled_type(
        self, type_id: Mapping[str, str], owner: str, operation: str
    ) -> ActionTypeRecord:
        """The action type a poll names: it must exist and have ``owner``."""
        key = key_of(type_id)
        if key[1] != owner:
            raise ServiceError(
                "ValidationException",
                f"{operation} is valid only for action types owned by {owner}",
            )
        record = self._types.find(key)
        if record is None:
            raise ServiceError(
                "ActionTypeNotFoundException", f"Action type {describe(key)} not found"
            )
        return record

    def acknowledge_job(self, job_id: str, nonce: str) -> str:
        with self._lock:
            return self._jobs.acknowledge(job_id, nonce)

    def get_job_details(self, job_id: str) -> dict[str, Any]:
        """The job's details with fresh artifact credentials, whatever its state (as AWS)."""
        with self._lock:
            job = self._jobs.get(job_id)
        self._renew_credentials([job])
        with self._lock:
            return job.wire(self.settings.account_id, nonce=False)

    def _renew_credentials(self, jobs: list[Job]) -> None:
        """Issue new artifact credentials to ``jobs`` (STS calls, made without the lock)."""
        issued = [self._issue_credentials(self._role_of(job)) for job in jobs]
        with self._lock:
            for job, credentials in zip(jobs, issued, strict=True):
                job.data = {**job.data, "artifactCredentials": credentials}

    def _role_of(self, job: Job) -> str:
        if job.run is None:
            return f"arn:aws:iam::{self.settings.account_id}:role/cpworker-local-invoke"
        return str(job.run.execution.declaration["roleArn"])

    def _issue_credentials(self, role_arn: str) -> dict[str, str]:
        """Job credentials from STS, with their expiry recorded when there is a TTL."""
        assert self._aws is not None
        credentials = self._aws.credentials(role_arn)
        ttl = self.settings.credential_ttl_s
        if ttl is not None:
            self.expiries.record(credentials["accessKeyId"], time.time() + ttl)
        return credentials

    def put_job_success_result(self, params: Mapping[str, Any]) -> None:
        with self._lock:
            self._jobs.succeed(params, time.time(), self.settings.continuation_delay_s)
        self._wake.set()

    def put_job_failure_result(self, params: Mapping[str, Any]) -> None:
        with self._lock:
            self._jobs.fail(params, time.time())
        self._wake.set()

    # -- third-party jobs (cpworker.local.thirdparty) ---------------------------------

    def third_party_client(
        self,
        pipeline: str,
        stage: str,
        action: str,
        *,
        client_id: str | None = None,
        client_token: str | None = None,
    ) -> ClientPair:
        """The client id and token of a pipeline action of a third-party type (made on
        first use, even before the pipeline exists); the given parts replace them."""
        with self._lock:
            return self._third_party.client((pipeline, stage, action), client_id, client_token)

    def poll_for_third_party_jobs(
        self, type_id: Mapping[str, str], batch: int
    ) -> list[dict[str, str]]:
        with self._lock:
            record = self._polled_type(type_id, THIRD_PARTY, "PollForThirdPartyJobs")
            return self._third_party.poll(
                record, batch, time.time(), self.settings.redispatch_after_s
            )

    def get_third_party_job_details(self, job_id: str, client_token: str) -> dict[str, Any]:
        """The job's details with fresh artifact credentials and its nonce."""
        with self._lock:
            job = self._third_party.authorised(job_id, client_token)
        self._renew_credentials([job])
        with self._lock:
            return self._third_party.details(job)

    def acknowledge_third_party_job(self, job_id: str, nonce: str, client_token: str) -> str:
        with self._lock:
            return self._third_party.acknowledge(job_id, nonce, client_token)

    def put_third_party_job_success_result(self, params: Mapping[str, Any]) -> None:
        with self._lock:
            self._third_party.succeed(params, time.time(), self.settings.continuation_delay_s)
        self._wake.set()

    def put_third_party_job_failure_result(self, params: Mapping[str, Any]) -> None:
        with self._lock:
            self._third_party.fail(params, time.time())
        self._wake.set()

    def create_lambda_job(self, data: Mapping[str, Any], job_id: str | None) -> dict[str, Any]:
        """A standalone Lambda job (``cpworker invoke``): fresh credentials, the default key."""
        assert self._aws is not None
        job = Job(None, dict(data), time.time(), invoke=True)
        job.data["artifactCredentials"] = self._issue_credentials(self._role_of(job))
        if "encryptionKey" not in job.data:
            key = self._aws.default_key(self.settings.default_key_alias)
            job.data["encryptionKey"] = {"id": key, "type": "KMS"}
        if job_id is not None:
            job.id = job_id
        with self._lock:
            self._jobs.add(job)
            return {"jobId": job.id, "event": job.event(self.settings.account_id)}

    def describe_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            return views.job_description(self._jobs.get(job_id))

    def result_counts(self, pipeline: str | None) -> dict[str, Any]:
        """Result requests per job and per action execution (``CpworkerLocal.GetResultCounts``)."""
        with self._lock:
            return views.result_counts(self._jobs_of(pipeline))

    def job_times(self, pipeline: str | None) -> dict[str, Any]:
        """When each job was created, dispatched, acknowledged (``CpworkerLocal.GetJobTimes``)."""
        with self._lock:
            return views.job_times(self._jobs_of(pipeline))

    def _jobs_of(self, pipeline: str | None) -> list[Job]:
        return [
            job
            for job in (*self._jobs, *self._third_party.board)
            if pipeline is None or (job.run is not None and job.run.execution.pipeline == pipeline)
        ]

    # -- scheduler -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.settings.tick_s)
            self._wake.clear()
            if not self._stopping.is_set():
                self._tick()

    def _tick(self) -> None:
        """One scheduler pass: timers, execution progress, then the I/O of due actions."""
        with self._lock:
            now = time.time()
            for board in (self._jobs, self._third_party.board):
                board.expire(now, self.settings.job_timeout_s, self.settings.lambda_reply_window_s)
            for name in self._pipelines:
                self._advance(name, now)
            due = self._claim_due_runs(now)
        for run in due:
            self._start_step(run)
        if due:
            self._wake.set()  # what just finished may let an execution move on

    def _advance(self, name: str, now: float) -> None:
        executions = [ex for ex in self._executions.values() if ex.pipeline == name]
        for ex in executions:
            if ex.status == IN_PROGRESS:
                ex.advance(now, self._stage_free, self._types)
        waiting: dict[str, list[Execution]] = {}
        for ex in executions:
            if ex.status == IN_PROGRESS and not ex.entered and ex.mode == "SUPERSEDED":
                waiting.setdefault(ex.stage["name"], []).append(ex)
        for group in waiting.values():
            for older in group[:-1]:
                older.finish(now, SUPERSEDED, f"Superseded by execution {group[-1].id}")

    def _stage_free(self, ex: Execution) -> bool:
        if ex.mode == "PARALLEL":
            return True
        stage = ex.stage["name"]
        return not any(
            other is not ex
            and other.pipeline == ex.pipeline
            and other.status == IN_PROGRESS
            and other.entered
            and other.stage["name"] == stage
            for other in self._executions.values()
        )

    def _claim_due_runs(self, now: float) -> list[ActionRun]:
        due = [
            run
            for ex in self._executions.values()
            if ex.status == IN_PROGRESS
            for run in ex.runs
            if run.status == IN_PROGRESS
            and not run.preparing
            and run.due_at is not None
            and run.due_at <= now
        ]
        for run in due:
            run.preparing = True
        return due

    def _start_step(self, run: ActionRun) -> None:
        """Run the S3 source, queue the next custom job or invoke the function for ``run``.

        The I/O happens without the lock.
        """
        assert self._aws is not None
        try:
            if run.action_type.key == S3_SOURCE:
                self._run_s3_source(run, self._aws)
            elif run.action_type.key[1] == CUSTOM:
                self._queue_job(run, self._aws)
            elif run.action_type.key == LAMBDA_INVOKE:
                self._invoke_function(run, self._aws)
            elif (run.action_type.executor or {}).get("type") == LAMBDA:
                self._invoke_executor(run, self._aws)
            elif run.action_type.key[1] == THIRD_PARTY:
                self._queue_job(run, self._aws)
            else:
                unsupported = f"cpworker local cannot run {describe(run.action_type.key)} actions"
                self._fail_step(run, "ConfigurationError", unsupported)
        except SourceUnavailable as exc:
            self._fail_step(run, "RevisionUnavailable", str(exc))
        except Exception as exc:  # any failure must end the action, never leave it hanging
            log.exception("cpworker local could not start action %s", run.name)
            message = f"cpworker local could not start the action: {type(exc).__name__}"
            self._fail_step(run, "SystemUnavailable", message)

    def _fail_step(self, run: ActionRun, code: str, message: str) -> None:
        self._finish_step(run, lambda now: run.fail(now, code, message))

    def _finish_step(self, run: ActionRun, apply: Callable[[float], None]) -> bool:
        """Apply the step's outcome unless the run ended meanwhile; whether it applied."""
        with self._lock:
            run.preparing = False
            if (
                run.status == IN_PROGRESS
                and self._executions.get(run.execution.id) is run.execution
            ):
                apply(time.time())
                run.announce()  # after apply: a custom action's job can be polled by now
                return True
            return False

    def _encryption_key(self, run: ActionRun, aws: AwsClients) -> str:
        key = run.execution.declaration["artifactStore"].get("encryptionKey")
        return str(key["id"]) if key else aws.default_key(self.settings.default_key_alias)

    def _run_s3_source(self, run: ActionRun, aws: AwsClients) -> None:
        bucket, key = run.configuration["S3Bucket"], run.configuration["S3ObjectKey"]
        output = run.outputs[0]
        obj = aws.copy_source(
            bucket, key, output.bucket, output.key, self._encryption_key(run, aws)
        )
        variables = {"ETag": obj.etag} | ({"VersionId": obj.version_id} if obj.version_id else {})

        def apply(now: float) -> None:
            summary = f"Amazon S3 object s3://{bucket}/{key}"
            run.report(now, {"summary": summary, "externalExecutionId": obj.revision})
            run.succeed(now, variables, obj.revision)

        self._finish_step(run, apply)

    def _job_data(self, run: ActionRun, aws: AwsClients, *, lambda_event: bool) -> dict[str, Any]:
        """JobData for ``run``; the Lambda event has no actionTypeId nor pipelineContext."""
        ex = run.execution
        data: dict[str, Any] = {
            "actionTypeId": dict(run.declaration["actionTypeId"]),
            "actionConfiguration": {"configuration": dict(run.configuration)},
            "pipelineContext": {
                "pipelineName": ex.pipeline,
                "stage": {"name": run.stage},
                "action": {"name": run.name, "actionExecutionId": run.id},
                "pipelineArn": self._pipeline_arn(ex.pipeline),
                "pipelineExecutionId": ex.id,
            },
            "inputArtifacts": [a.wire() for a in run.inputs],
            "outputArtifacts": [a.wire() for a in run.outputs],
            "artifactCredentials": self._issue_credentials(ex.declaration["roleArn"]),
            "encryptionKey": {"id": self._encryption_key(run, aws), "type": "KMS"},
        }
        if lambda_event:
            del data["actionTypeId"], data["pipelineContext"]
        if run.continuation_token is not None:
            data["continuationToken"] = run.continuation_token
        return data

    def _queue_job(self, run: ActionRun, aws: AwsClients) -> None:
        data = self._job_data(run, aws, lambda_event=False)

        third_party = run.action_type.key[1] == THIRD_PARTY
        board = self._third_party.board if third_party else self._jobs

        def apply(now: float) -> None:
            run.due_at = None
            board.add(Job(run=run, data=data, created=now))

        self._finish_step(run, apply)

    def _invoke_function(self, run: ActionRun, aws: AwsClients) -> None:
        """Create the Lambda job (InProgress at once) and invoke the mapped function."""
        name = run.configuration["FunctionName"]
        spec = self.functions.get(name)
        if spec is None:
            self._fail_step(run, "ConfigurationError", self.functions.unknown(name))
            return
        job = Job(run, self._job_data(run, aws, lambda_event=True), time.time(), invoke=True)

        def apply(now: float) -> None:
            run.due_at, job.created = None, now
            self._jobs.add(job)

        if self._finish_step(run, apply):
            timeout_s = spec.timeout(self.settings.lambda_timeout_s)
            event = job.event(self.settings.account_id)
            init_timeout_s = self.settings.lambda_init_timeout_s
            self._invoker.invoke(Invocation(name, spec, event, timeout_s, init_timeout_s))

    def _invoke_executor(self, run: ActionRun, aws: AwsClients) -> None:
        """Invoke the function of the type's Lambda executor with the integration-model
        event; its return value is the job's result (:mod:`cpworker.local.integration`)."""
        executor = run.action_type.executor
        assert executor is not None
        arn = executor["configuration"]["lambdaExecutorConfiguration"]["lambdaFunctionArn"]
        name = integration.function_name(arn)
        spec = self.functions.get(name)
        if spec is None:
            self._fail_step(run, "ConfigurationError", self.functions.unknown(name))
            return
        job_id = str(uuid.uuid4())
        data = self._job_data(run, aws, lambda_event=True)
        event = integration.integration_event(job_id, self.settings.account_id, data, run.id)
        job_timeout_s = min(
            executor.get("jobTimeout", math.inf), self.settings.integration_job_timeout_s
        )
        timeout_s = min(spec.timeout(self.settings.lambda_timeout_s), job_timeout_s)
        # Killed at the job timeout: the job timed out. At the function's own: it failed.
        job_timed_out = f"the Lambda function {name} returned no result within the job timeout"
        job_timed_out += f" of {job_timeout_s:g} s (job {job_id})"

        def apply(_now: float) -> None:
            run.due_at = None

        def returned(outcome: Returned) -> None:
            if outcome.timed_out and timeout_s == job_timeout_s:
                self._fail_step(run, "JobTimedOut", job_timed_out)
            elif outcome.error is not None:
                failed = f"the Lambda function {name} failed: {outcome.error}"
                self._fail_step(run, "JobFailed", failed)
            else:
                self._executor_returned(run, name, outcome.payload)
            self._wake.set()

        if self._finish_step(run, apply):
            init_timeout_s = self.settings.lambda_init_timeout_s
            self._invoker.invoke(
                Invocation(name, spec, event, timeout_s, init_timeout_s, on_return=returned)
            )

    def _executor_returned(self, run: ActionRun, name: str, payload: Any) -> None:
        """Apply the result a Lambda executor's function returned, or fail its action."""
        try:
            reply = integration.read_reply(payload)
        except integration.InvalidReply as exc:
            message = f"the Lambda function {name} returned an invalid result: {exc}"
            self._fail_step(run, "JobFailed", message)
            return
        delay = self.settings.continuation_delay_s
        self._finish_step(run, lambda now: integration.settle(run, reply, now, delay))
