"""A thin CodePipeline client: the job calls cpworker makes (custom and third-party jobs),
with the right retries.

Retries (tenacity: exponential backoff with full jitter, bounded in attempts and
time) happen on throttling, 5xx answers and connection errors only. Answers
that mean "this job is not yours any more" — InvalidNonce, JobNotFound,
InvalidJobState, Validation, InvalidClientToken — are never retried: repeating
them cannot help.

A retried report is *ambiguous* when an earlier attempt may have landed (the
connection broke after the request was sent, or a 5xx came back): an
InvalidJobState answer to a later attempt then usually means the first one was
accepted. ``put_request`` checks such a job with GetJobDetails (a third-party job:
GetThirdPartyJobDetails) and says so (``Delivery.EARLIER_ATTEMPT``) instead of failing.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from pydantic import ValidationError

from cpworker.model import ActionTypeId, JobEnvelope, ThirdPartyJob
from cpworker.result import Continue, Failure, Result, Success

if TYPE_CHECKING:
    from tenacity import RetryCallState

log = logging.getLogger("cpworker.api")
T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
    }
)
NETWORK_ERRORS = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
)
# Errors after which the request may have been processed although no answer came.
MAYBE_LANDED = (ConnectionClosedError, ReadTimeoutError)


def is_retryable(exc: BaseException) -> bool:
    """True for throttling, 5xx and network errors; never for a modelled client error."""
    if isinstance(exc, NETWORK_ERRORS):
        return True
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in THROTTLING_CODES or status >= 500
    return False


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ``ClientError``, else ``None``."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry a retryable call: attempts, total time, and backoff bounds."""

    attempts: int = 8
    max_elapsed_s: float = 120.0
    backoff_base_s: float = 0.2
    backoff_max_s: float = 20.0

    def wrap(
        self,
        call: Callable[[], T],
        abandon: threading.Event | None = None,
        retried: Callable[[BaseException], None] | None = None,
    ) -> T:
        """``call()`` with retries; once ``abandon`` is set, no further attempt is made.
        ``retried`` is told each error that is retried (for metrics).

        The first attempt is a plain call: tenacity (tens of microseconds per call, and
        milliseconds to import in a Lambda cold start) only takes over once an attempt
        has failed with a retryable error, and counts that attempt and its time as its
        first.
        """
        started = time.monotonic()
        try:
            return call()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            failed = [exc]

        def attempt() -> T:
            if failed:
                raise failed.pop()  # tenacity's attempt 1: the one that just failed
            return call()

        from tenacity import (
            retry,
            retry_if_exception,
            stop_after_attempt,
            stop_after_delay,
            stop_never,
            stop_when_event_set,
            wait_random_exponential,
        )

        elapsed = time.monotonic() - started
        stop = stop_after_attempt(self.attempts) | stop_after_delay(self.max_elapsed_s - elapsed)
        stop = stop | (stop_when_event_set(abandon) if abandon is not None else stop_never)
        retrying = retry(
            retry=retry_if_exception(is_retryable),
            stop=stop,
            wait=wait_random_exponential(multiplier=self.backoff_base_s, max=self.backoff_max_s),
            sleep=_sleeper(abandon),
            before_sleep=_before_sleep(retried),
            reraise=True,
        )
        return retrying(attempt)()


def _before_sleep(
    retried: Callable[[BaseException], None] | None,
) -> Callable[[RetryCallState], None]:
    """Log the retried error, and tell ``retried`` about it."""
    from tenacity import before_sleep_log

    logged = before_sleep_log(log, logging.WARNING)
    if retried is None:
        return logged

    def before_sleep(state: RetryCallState) -> None:
        logged(state)
        error = state.outcome.exception() if state.outcome is not None else None
        if error is not None:
            retried(error)

    return before_sleep


def _sleeper(abandon: threading.Event | None) -> Callable[[float], None]:
    """Backoff waits that end early once ``abandon`` is set."""
    flag = abandon or threading.Event()

    def sleep(seconds: float) -> None:
        flag.wait(seconds)

    return sleep


def _maybe_landed(exc: BaseException) -> bool:
    if isinstance(exc, MAYBE_LANDED):
        return True
    return (
        isinstance(exc, ClientError)
        and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
    )


class Delivery(enum.Enum):
    """How a reported result reached CodePipeline."""

    ACCEPTED = "accepted"
    # A retry was refused with InvalidJobState after an attempt that may have landed,
    # and the job exists: the earlier attempt was the one accepted.
    EARLIER_ATTEMPT = "accepted by an earlier attempt"


@dataclass(frozen=True)
class MalformedJob:
    """A polled job that cpworker cannot read; it is failed alone, never its batch."""

    id: str | None
    nonce: str | None
    problem: str


def malformed(job: Any, exc: ValidationError) -> MalformedJob:
    """What is wrong with ``job``, naming fields only (values may hold secrets)."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'the job'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)[:5]
    ]
    raw = job if isinstance(job, Mapping) else {}
    job_id, nonce = raw.get("id"), raw.get("nonce")
    return MalformedJob(
        job_id if isinstance(job_id, str) else None,
        nonce if isinstance(nonce, str) else None,
        "; ".join(problems),
    )


def codepipeline_client(
    *, region: str | None = None, endpoint_url: str | None = None, profile: str | None = None
) -> Any:
    """A CodePipeline client from the usual credential and Region chain (boto3's);
    cpworker does the retrying.

    Made with botocore alone: importing boto3 loads s3transfer too (about 18 ms of a
    Lambda function's cold start), and a job without artifacts needs neither.
    """
    session = botocore.session.Session(profile=profile)
    return session.create_client(
        "codepipeline",
        region_name=region,
        endpoint_url=endpoint_url,
        # One attempt at the botocore level: tenacity decides what is worth repeating.
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=70),
    )


class CallObserver(Protocol):
    """Told about the CodePipeline calls that fail (after their retries) and the errors
    that are retried, by operation; a worker's metrics."""

    def api_failed(self, operation: str, error: BaseException) -> None: ...

    def api_retried(self, operation: str, error: BaseException) -> None: ...


class CodePipelineAPI:
    """The job calls of custom and third-party jobs, retried per ``RetryPolicy``.

    A client token is a secret: it is passed through, never kept nor logged.
    """

    def __init__(
        self, client: Any, policy: RetryPolicy | None = None, observer: CallObserver | None = None
    ) -> None:
        self.client = client
        self.policy = policy or RetryPolicy()
        self.observer = observer

    def _call(
        self,
        operation: str,
        call: Callable[[], T],
        abandon: threading.Event | None = None,
        policy: RetryPolicy | None = None,
    ) -> T:
        """``call()`` with retries, its errors and retries told to the observer."""
        policy = policy or self.policy
        observer = self.observer
        if observer is None:
            return policy.wrap(call, abandon)
        try:
            return policy.wrap(call, abandon, partial(observer.api_retried, operation))
        except Exception as exc:
            observer.api_failed(operation, exc)
            raise

    def poll_for_jobs(
        self,
        type_id: ActionTypeId,
        max_batch_size: int,
        query: Mapping[str, str] | None = None,
        abandon: threading.Event | None = None,
    ) -> list[JobEnvelope | MalformedJob]:
        """The polled jobs; one that cannot be read comes back as a ``MalformedJob``."""
        request: dict[str, Any] = {
            "actionTypeId": type_id.model_dump(),
            "maxBatchSize": max_batch_size,
        }
        if query:
            request["queryParam"] = dict(query)
        answer = self._call("PollForJobs", lambda: self.client.poll_for_jobs(**request), abandon)
        jobs: list[JobEnvelope | MalformedJob] = []
        for job in answer.get("jobs", []):
            try:
                jobs.append(JobEnvelope.model_validate(job))
            except ValidationError as exc:
                jobs.append(malformed(job, exc))
        return jobs

    def acknowledge_job(self, job_id: str, nonce: str) -> str:
        answer = self._call(
            "AcknowledgeJob", lambda: self.client.acknowledge_job(jobId=job_id, nonce=nonce)
        )
        return str(answer.get("status", ""))

    def get_job_details(self, job_id: str) -> JobEnvelope:
        answer = self._call("GetJobDetails", lambda: self.client.get_job_details(jobId=job_id))
        return JobEnvelope.model_validate(answer["jobDetails"])

    def poll_for_third_party_jobs(
        self,
        type_id: ActionTypeId,
        max_batch_size: int,
        abandon: threading.Event | None = None,
    ) -> list[ThirdPartyJob]:
        """The polled third-party jobs: whose each is (client id) and its id, nothing more.

        One that cannot be read is logged and left to CodePipeline: without its id it
        cannot even be failed.
        """
        request = {"actionTypeId": type_id.model_dump(), "maxBatchSize": max_batch_size}
        answer = self._call(
            "PollForThirdPartyJobs",
            lambda: self.client.poll_for_third_party_jobs(**request),
            abandon,
        )
        jobs = []
        for job in answer.get("jobs", []):
            try:
                jobs.append(ThirdPartyJob.model_validate(job))
            except ValidationError as exc:
                problem = malformed(job, exc).problem
                log.error("a polled third-party job cannot be read: %s", problem)
        return jobs

    def get_third_party_job_details(
        self, job_id: str, client_token: str
    ) -> JobEnvelope | MalformedJob:
        """The third-party job's details and nonce, or what makes them unreadable."""
        answer = self._call(
            "GetThirdPartyJobDetails",
            lambda: self.client.get_third_party_job_details(jobId=job_id, clientToken=client_token),
        )
        details = answer["jobDetails"]
        try:
            return JobEnvelope.model_validate(details)
        except ValidationError as exc:
            return malformed(details, exc)

    def acknowledge_third_party_job(self, job_id: str, nonce: str, client_token: str) -> str:
        answer = self._call(
            "AcknowledgeThirdPartyJob",
            lambda: self.client.acknowledge_third_party_job(
                jobId=job_id, nonce=nonce, clientToken=client_token
            ),
        )
        return str(answer.get("status", ""))

    def put_result(
        self, job_id: str, result: Result, policy: RetryPolicy | None = None
    ) -> Delivery:
        """Report ``result`` for ``job_id``: success, continuation or failure."""
        return self.put_request(job_id, *result_request(result), policy=policy)

    def put_request(
        self,
        job_id: str,
        operation: str,
        request: Mapping[str, Any],
        policy: RetryPolicy | None = None,
        client_token: str | None = None,
    ) -> Delivery:
        """Send one PutJob*Result or PutThirdPartyJob*Result request (``result_request``'s
        form; a third-party one with the job's ``client_token``), with retries.

        InvalidJobState after an attempt that may have landed is checked with
        GetJobDetails (GetThirdPartyJobDetails): if the job is there, the earlier attempt
        was accepted.
        """
        method = getattr(self.client, OPERATION_METHODS[operation])
        token = {} if client_token is None else {"clientToken": client_token}
        ambiguous = False

        def attempt() -> None:
            nonlocal ambiguous
            try:
                method(jobId=job_id, **token, **request)
            except Exception as exc:
                ambiguous = ambiguous or _maybe_landed(exc)
                raise

        try:
            self._call(operation, attempt, policy=policy)
        except ClientError as exc:
            if not (ambiguous and error_code(exc) == "InvalidJobStateException"):
                raise
            # JobNotFound would mean it was never ours
            if client_token is None:
                self.get_job_details(job_id)
            else:
                self.get_third_party_job_details(job_id, client_token)
            return Delivery.EARLIER_ATTEMPT
        return Delivery.ACCEPTED


OPERATION_METHODS = {
    "PutJobSuccessResult": "put_job_success_result",
    "PutJobFailureResult": "put_job_failure_result",
    "PutThirdPartyJobSuccessResult": "put_third_party_job_success_result",
    "PutThirdPartyJobFailureResult": "put_third_party_job_failure_result",
}
SUCCESS_OPERATIONS = frozenset({"PutJobSuccessResult", "PutThirdPartyJobSuccessResult"})


def result_request(result: Result) -> tuple[str, dict[str, Any]]:
    """The operation and members (besides jobId) that report ``result``; JSON-ready, so
    the journal can keep a decided result and send it again after a crash."""
    if isinstance(result, Failure):
        details: dict[str, Any] = {"type": result.type.value, "message": result.message}
        if result.external_execution_id:
            details["externalExecutionId"] = result.external_execution_id
        return "PutJobFailureResult", {"failureDetails": details}
    return "PutJobSuccessResult", success_request(result)


def success_request(result: Success | Continue) -> dict[str, Any]:
    """The PutJobSuccessResult members (besides jobId) for a success or a continuation."""
    request: dict[str, Any] = {}
    details: dict[str, Any] = {}
    if result.summary:
        details["summary"] = result.summary
    if result.external_execution_id:
        details["externalExecutionId"] = result.external_execution_id
    if isinstance(result, Continue):
        request["continuationToken"] = result.token
        if result.percent_complete is not None:
            details["percentComplete"] = result.percent_complete
    else:
        if result.output_variables:
            request["outputVariables"] = dict(result.output_variables)
        if result.current_revision is not None:
            revision = result.current_revision
            current: dict[str, Any] = {
                "revision": revision.revision,
                "changeIdentifier": revision.change_identifier,
            }
            if revision.created is not None:
                current["created"] = revision.created.timestamp()
            if revision.revision_summary:
                current["revisionSummary"] = revision.revision_summary
            request["currentRevision"] = current
    if details:
        request["executionDetails"] = details
    return request
