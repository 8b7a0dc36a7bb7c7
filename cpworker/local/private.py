"""cpworker's own operations on the local endpoint: standalone Lambda jobs, result counts,
CodePipeline call counts, third-party client tokens.

``cpworker invoke`` runs a Lambda handler once, outside any pipeline, yet the handler
must report with PutJobSuccessResult/PutJobFailureResult as it would in AWS. These
operations give it a real job to report on, tell a chaos run how many results each job
received, and give a third-party job worker the client token of the pipeline action it
serves (AWS shares it with the action's provider; no CodePipeline operation returns it).
They use the target prefix ``CpworkerLocal.`` so no AWS SDK call
can reach them by accident (nor can injected faults), and answer errors in the same
JSON wire form as the CodePipeline operations::

    CpworkerLocal.CreateLambdaJob {"data": JobData, "jobId": optional lowercase uuid}
        -> {"jobId", "event": {"CodePipeline.job": {"id", "accountId", "data"}}}
    CpworkerLocal.DescribeJob {"jobId"}
        -> {"jobId", "status", "result": {...}, "nextJobId": ...}
    CpworkerLocal.GetResultCounts {"pipelineName": optional}
        -> {"jobs": [{"jobId", "status", "pipelineName", "actionExecutionId",
                      "received": {"PutJobSuccessResult": n, "PutJobFailureResult": n},
                      "accepted": {"success" | "continuation" | "failure": n},
                      "refused": {"InvalidJobStateException": n, ...}}],
            "actionExecutions": [{"actionExecutionId", "pipelineName",
                                  "pipelineExecutionId", "actionName", "steps",
                                  "accepted": {"success" | "continuation" | "failure": n}}]}
    CpworkerLocal.GetJobTimes {"pipelineName": optional}
        -> {"jobs": [{"jobId", "status", "createdAt", "dispatchedAt", "acknowledgedAt"}]}
           (seconds since the epoch; oldest job first; a time not reached yet is absent)
    CpworkerLocal.ThirdPartyClient {"pipelineName", "stageName", "actionName",
                                    "clientId"?, "clientToken"?}
        -> {"clientId", "clientToken"}
    CpworkerLocal.GetCallCounts {} -> {"calls": {"PollForJobs": n, ...}}

``data`` is checked against botocore's ``JobData`` shape; its artifactCredentials, if
any, are replaced by fresh ones, and without an encryptionKey the engine's default key
is added.

GetResultCounts counts every result request that reached a known job, duplicates
included (a request refused by validation, or answered by an injected fault before
processing, never reaches one; a ``lost`` answer's request does). Jobs are listed
oldest first, standalone ones without pipelineName; with ``pipelineName`` only that
pipeline's. No job may have accepted more than one result, and no action execution
more than one success or failure: ``steps`` is its number of jobs (one, plus one per
continuation). A deleted pipeline's jobs are forgotten.

GetCallCounts tells how many CodePipeline requests the server received since it
started, by operation, faulted ones included, so that a bench can tell how many calls
a worker makes per job (the difference of two answers).

ThirdPartyClient answers the client id and token of one pipeline action of a
third-party type (made on first use, even before the pipeline exists); a given
``clientId`` or ``clientToken`` replaces the current one, so a test can give the
action a known pair, or a new token.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

from cpworker.local.engine import Engine
from cpworker.local.errors import ServiceError
from cpworker.local.validation import validate_members

PRIVATE_PREFIX = "CpworkerLocal."

Params = dict[str, Any]


class CallCounts:
    """The CodePipeline requests the server received, by operation (request threads
    count at once, hence the lock)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, operation: str) -> None:
        with self._lock:
            self._counts[operation] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class PrivateOperations:
    """The ``CpworkerLocal.*`` operation table, called by the server like ``Operations``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls = CallCounts()
        self._handlers: dict[str, Callable[[Params], Params]] = {
            "CreateLambdaJob": self._create_lambda_job,
            "DescribeJob": self._describe_job,
            "GetResultCounts": self._get_result_counts,
            "GetJobTimes": self._get_job_times,
            "GetCallCounts": self._get_call_counts,
            "ThirdPartyClient": self._third_party_client,
        }

    def call(self, operation: str, params: Params) -> Params:
        handler = self._handlers.get(operation)
        if handler is None:
            raise ServiceError(
                "UnknownOperationException", f"Unknown operation {PRIVATE_PREFIX}{operation}"
            )
        return handler(params)

    def _create_lambda_job(self, params: Params) -> Params:
        validate_members(params, {"data": ("JobData", True), "jobId": ("JobId", False)})
        return self.engine.create_lambda_job(params["data"], params.get("jobId"))

    def _describe_job(self, params: Params) -> Params:
        validate_members(params, {"jobId": ("JobId", True)})
        return self.engine.describe_job(params["jobId"])

    def _get_result_counts(self, params: Params) -> Params:
        validate_members(params, {"pipelineName": ("PipelineName", False)})
        return self.engine.result_counts(params.get("pipelineName"))

    def _get_job_times(self, params: Params) -> Params:
        validate_members(params, {"pipelineName": ("PipelineName", False)})
        return self.engine.job_times(params.get("pipelineName"))

    def _get_call_counts(self, params: Params) -> Params:
        validate_members(params, {})
        return {"calls": self.calls.snapshot()}

    def _third_party_client(self, params: Params) -> Params:
        validate_members(
            params,
            {
                "pipelineName": ("PipelineName", True),
                "stageName": ("StageName", True),
                "actionName": ("ActionName", True),
                "clientId": ("ClientId", False),
                "clientToken": ("ClientToken", False),
            },
        )
        pair = self.engine.third_party_client(
            params["pipelineName"],
            params["stageName"],
            params["actionName"],
            client_id=params.get("clientId"),
            client_token=params.get("clientToken"),
        )
        return {"clientId": pair.client_id, "clientToken": pair.client_token}


def call_private(endpoint_url: str, operation: str, params: Params, timeout_s: float = 30) -> Any:
    """Call ``CpworkerLocal.<operation>`` over HTTP; a modelled error raises ServiceError."""
    if not endpoint_url.startswith(("http://", "https://")):
        raise ValueError(f"{endpoint_url!r} is not an http(s) endpoint")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
        endpoint_url,
        data=json.dumps(params).encode(),
        headers={
            "X-Amz-Target": PRIVATE_PREFIX + operation,
            "Content-Type": "application/x-amz-json-1.1",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        raise ServiceError(
            body.get("__type", "InternalFailure"), body.get("message", ""), exc.code
        ) from exc
