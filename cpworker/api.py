"""A thin CodePipeline client: the job calls cpworker makes, with the right retries.

Retries (tenacity: exponential backoff with full jitter, bounded in attempts and
time) happen on throttling, 5xx answers and connection errors only. Answers
that mean "this job is not yours any more" — InvalidNonce, JobNotFound,
InvalidJobState, Validation — are never retried: repeating them cannot help.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from tenacity import (
    before_sleep_log,
    retry,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from cpworker.model import ActionTypeId, JobEnvelope
from cpworker.result import Continue, Failure, Result, Success

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

    def wrap(self, call: Callable[[], T]) -> T:
        retrying = retry(
            retry=retry_if_exception(is_retryable),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.max_elapsed_s),
            wait=wait_random_exponential(multiplier=self.backoff_base_s, max=self.backoff_max_s),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        return retrying(call)()


def codepipeline_client(
    *, region: str | None = None, endpoint_url: str | None = None, profile: str | None = None
) -> Any:
    """A CodePipeline client from the usual boto3 chain; cpworker does the retrying."""
    session = boto3.Session(profile_name=profile, region_name=region)
    return session.client(
        "codepipeline",
        endpoint_url=endpoint_url,
        # One attempt at the botocore level: tenacity decides what is worth repeating.
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=70),
    )


class CodePipelineAPI:
    """The custom-action job calls, retried per ``RetryPolicy``."""

    def __init__(self, client: Any, policy: RetryPolicy | None = None) -> None:
        self.client = client
        self.policy = policy or RetryPolicy()

    def poll_for_jobs(
        self, type_id: ActionTypeId, max_batch_size: int, query: Mapping[str, str] | None = None
    ) -> list[JobEnvelope]:
        request: dict[str, Any] = {
            "actionTypeId": type_id.model_dump(),
            "maxBatchSize": max_batch_size,
        }
        if query:
            request["queryParam"] = dict(query)
        answer = self.policy.wrap(lambda: self.client.poll_for_jobs(**request))
        return [JobEnvelope.model_validate(job) for job in answer.get("jobs", [])]

    def acknowledge_job(self, job_id: str, nonce: str) -> str:
        answer = self.policy.wrap(lambda: self.client.acknowledge_job(jobId=job_id, nonce=nonce))
        return str(answer.get("status", ""))

    def get_job_details(self, job_id: str) -> JobEnvelope:
        answer = self.policy.wrap(lambda: self.client.get_job_details(jobId=job_id))
        return JobEnvelope.model_validate(answer["jobDetails"])

    def put_result(self, job_id: str, result: Result) -> None:
        """Report ``result`` for ``job_id``: success, continuation or failure."""
        if isinstance(result, Failure):
            details: dict[str, Any] = {"type": result.type.value, "message": result.message}
            if result.external_execution_id:
                details["externalExecutionId"] = result.external_execution_id
            self.policy.wrap(
                lambda: self.client.put_job_failure_result(jobId=job_id, failureDetails=details)
            )
            return
        request = success_request(result)
        self.policy.wrap(lambda: self.client.put_job_success_result(jobId=job_id, **request))


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
                current["created"] = revision.created
            if revision.revision_summary:
                current["revisionSummary"] = revision.revision_summary
            request["currentRevision"] = current
    if details:
        request["executionDetails"] = details
    return request
