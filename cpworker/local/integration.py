"""Lambda executors of declared action types: the integration model's event and reply.

An action of a type whose executor is ``Lambda`` runs the function that the executor's
``lambdaFunctionArn`` names (``arn:...:function:NAME`` maps to the FunctionName NAME;
see :mod:`cpworker.local.lambdas`), synchronously, with::

    {"jobId", "accountId", "data": {"actionConfiguration": {k: v}, "encryptionKey",
     "inputArtifacts", "outputArtifacts", "actionExecutionId", "actionCredentials",
     "continuationToken"?}}

and reads its return value as the User Guide states it: ``result`` (Success, Continue
or Fail), ``failureType`` (required with Fail, else null), ``continuation.State``
(required with Continue, else null), ``status`` (``ExternalExecutionId``, ``Summary``:
on a failure, the message) and ``outputVariables`` (only with Success). Every member
name and the ``result`` and ``failureType`` values are read case-insensitively.
``PermissionsError`` (the guide's spelling) and ``PermissionError`` both fail with
``PermissionError``. Anything else is an invalid reply: the action fails with
``JobFailed`` and a message naming the problem. Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cpworker.errors import FailureType
from cpworker.limits import Bounds, result_limits
from cpworker.local.executions import ActionRun
from cpworker.result import bounded

RESULTS = ("success", "continue", "fail")
_FAILURE_TYPES = {kind.value.lower(): kind.value for kind in FailureType} | {
    "permissionserror": FailureType.PERMISSION_ERROR.value  # the User Guide's spelling
}


class InvalidReply(ValueError):  # noqa: N818 - what the function returned is invalid
    """The function's return value is not a valid integration-model result."""


@dataclass(frozen=True)
class Reply:
    """A valid result returned by a Lambda executor's function."""

    result: str
    """success, continue or fail."""
    summary: str | None = None
    external_execution_id: str | None = None
    failure_type: str | None = None
    state: str | None = None
    output_variables: dict[str, str] = field(default_factory=dict)


def function_name(lambda_function_arn: str) -> str:
    """The FunctionName in ``arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]``."""
    return lambda_function_arn.split(":function:", 1)[-1].split(":", 1)[0]


def integration_event(
    job_id: str, account_id: str, data: Mapping[str, Any], action_execution_id: str
) -> dict[str, Any]:
    """The event a Lambda executor's function is invoked with, from the job's ``data``
    (the JobData of a Lambda invoke job)."""
    event_data: dict[str, Any] = {
        "actionConfiguration": dict(data["actionConfiguration"]["configuration"]),
        "encryptionKey": data["encryptionKey"],
        "inputArtifacts": data["inputArtifacts"],
        "outputArtifacts": data["outputArtifacts"],
        "actionExecutionId": action_execution_id,
        "actionCredentials": data["artifactCredentials"],
    }
    if "continuationToken" in data:
        event_data["continuationToken"] = data["continuationToken"]
    return {"jobId": job_id, "accountId": account_id, "data": event_data}


def read_reply(payload: Any) -> Reply:
    """The function's return value as a ``Reply``; ``InvalidReply`` naming the problem."""
    members = _members(payload, "the function's return value")
    result = members.get("result")
    if not isinstance(result, str) or result.lower() not in RESULTS:
        raise InvalidReply(
            f"result is {_shown(result)}; it must be Success, Continue or Fail (any case)"
        )
    result = result.lower()
    failure_type, continuation = members.get("failuretype"), members.get("continuation")
    variables = members.get("outputvariables")
    if result == "fail" and failure_type is None:
        raise InvalidReply("failureType is required when result is Fail")
    if result != "fail" and failure_type is not None:
        raise InvalidReply(f"failureType must be null when result is {result.capitalize()}")
    if result == "continue" and continuation is None:
        raise InvalidReply("continuation is required when result is Continue")
    if result != "continue" and continuation is not None:
        raise InvalidReply(f"continuation must be null when result is {result.capitalize()}")
    if result != "success" and variables is not None:
        raise InvalidReply(f"outputVariables must be null when result is {result.capitalize()}")
    limits = result_limits()
    status = _members(members.get("status") or {}, "status")
    fail = result == "fail"  # the summary is then the failure message: cut, never refused
    summary_bounds = limits.failure_message if fail else limits.summary
    execution_id = "status.ExternalExecutionId"
    return Reply(
        result,
        summary=_text(status, "summary", "status.Summary", summary_bounds, cut=fail),
        external_execution_id=_text(
            status, "externalexecutionid", execution_id, limits.external_execution_id
        ),
        failure_type=None if failure_type is None else _failure_type(failure_type),
        state=None if continuation is None else _state(continuation),
        output_variables={} if variables is None else _variables(variables),
    )


def settle(run: ActionRun, reply: Reply, now: float, continuation_delay_s: float) -> None:
    """Apply a valid reply to its action execution (callers hold the engine lock)."""
    if reply.result == "fail":
        message = reply.summary or f"the Lambda function failed ({reply.failure_type})"
        assert reply.failure_type is not None
        run.fail(now, reply.failure_type, message, reply.external_execution_id)
        return
    details = {"summary": reply.summary, "externalExecutionId": reply.external_execution_id}
    run.report(now, {name: value for name, value in details.items() if value is not None})
    if reply.result == "continue":
        run.continuation_token, run.due_at = reply.state, now + continuation_delay_s
    else:
        run.succeed(now, reply.output_variables)


def _members(value: Any, what: str) -> dict[str, Any]:
    """``value``'s members by lower-case name (null ones left out)."""
    if not isinstance(value, dict):
        raise InvalidReply(f"{what} is {_shown(value)}, not a JSON object")
    members: dict[str, Any] = {}
    for name, item in value.items():
        key = str(name).lower()
        if key in members:
            raise InvalidReply(f"{what} has {name!r} twice, in different cases")
        if item is not None:
            members[key] = item
    return members


def _text(
    members: Mapping[str, Any], name: str, label: str, bounds: Bounds, *, cut: bool = False
) -> str | None:
    value = members.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidReply(f"{label} must be a non-empty string")
    if cut:
        return bounded(value, bounds.max)
    if bounds.max is not None and len(value) > bounds.max:
        raise InvalidReply(f"{label} is {len(value)} characters long; the limit is {bounds.max}")
    return value


def _failure_type(value: Any) -> str:
    kind = _FAILURE_TYPES.get(value.lower()) if isinstance(value, str) else None
    if kind is None:
        raise InvalidReply(
            f"failureType {_shown(value)} is not one of ConfigurationError, JobFailed, "
            "PermissionsError, RevisionOutOfSync, RevisionUnavailable, SystemUnavailable"
        )
    return kind


def _state(continuation: Any) -> str:
    """The continuation token: the State string, or other JSON as compact JSON."""
    state = _members(continuation, "continuation").get("state")
    if state is None:
        raise InvalidReply("continuation.State is required when result is Continue")
    token = state if isinstance(state, str) else json.dumps(state, separators=(",", ":"))
    limit = result_limits().continuation_token
    if not token or (limit.max is not None and len(token) > limit.max):
        raise InvalidReply(f"continuation.State must be 1 to {limit.max} characters")
    return token


def _variables(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidReply(f"outputVariables is {_shown(value)}, not a JSON object")
    limits = result_limits()
    pattern = limits.output_variable_name.pattern
    total = 0
    for name, item in value.items():
        if pattern is not None and not pattern.fullmatch(name):
            raise InvalidReply(
                f"output variable name {name!r} is invalid: use letters, digits, '@', '-', '_'"
            )
        if not isinstance(item, str):
            raise InvalidReply(f"output variable {name!r} is {_shown(item)}, not a string")
        total += len(name.encode()) + len(item.encode())
    if total > limits.output_variables_max_bytes:
        raise InvalidReply(
            f"outputVariables take {total} bytes; the limit is {limits.output_variables_max_bytes}"
        )
    return dict(value)


def _shown(value: Any) -> str:
    """A value for a message: its type, and short strings themselves (a reply carries no
    secret in these members, but may be long)."""
    if isinstance(value, str) and len(value) <= 40:
        return repr(value)
    return "null" if value is None else f"a {type(value).__name__}"
