"""What a handler returns: ``Success``, ``Continue`` or ``Failure``.

Every result is checked against CodePipeline's quotas when it is built, so a bad
result fails inside the handler (and becomes a clear ``JobFailed``) instead of
being rejected by CodePipeline after the work is done. The quotas come from
botocore's service model (see ``cpworker.limits``). This module is pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cpworker.errors import FailureType
from cpworker.limits import Bounds, result_limits

ELLIPSIS = "…"
# A continuation cpworker made itself (a handler cut off by the Lambda timeout): the
# next job sees the state the handler last returned, not this wrapper.
RESUME_KEY = "cpworker:resume"


class InvalidResult(ValueError):  # noqa: N818 - reads as what it is
    """A result breaks a CodePipeline quota; the message says which and by how much."""


def _check_length(what: str, value: str | None, bounds: Bounds) -> None:
    if value is None:
        return
    if bounds.min is not None and len(value) < bounds.min:
        raise InvalidResult(f"{what} must not be empty")
    if bounds.max is not None and len(value) > bounds.max:
        raise InvalidResult(
            f"{what} is {len(value)} characters long; CodePipeline allows at most {bounds.max}"
        )


def _check_percent(value: int | None) -> None:
    if value is None:
        return
    bounds = result_limits().percent_complete
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidResult(f"percent_complete must be an integer, not {type(value).__name__}")
    if (bounds.min is not None and value < bounds.min) or (
        bounds.max is not None and value > bounds.max
    ):
        raise InvalidResult(
            f"percent_complete must be between {bounds.min} and {bounds.max}, not {value}"
        )


def _check_output_variables(variables: Mapping[str, str]) -> None:
    limits = result_limits()
    pattern = limits.output_variable_name.pattern
    total = 0
    for name, value in variables.items():
        if not isinstance(name, str) or not name or (pattern and not pattern.fullmatch(name)):
            raise InvalidResult(
                f"output variable name {name!r} is invalid: use letters, digits, '@', '-' and '_'"
            )
        if not isinstance(value, str):
            raise InvalidResult(
                f"output variable {name!r} must be a string, not {type(value).__name__}"
            )
        total += len(name.encode()) + len(value.encode())
    if total > limits.output_variables_max_bytes:
        raise InvalidResult(
            f"output variables take {total} bytes; CodePipeline allows at most "
            f"{limits.output_variables_max_bytes} bytes for one action"
        )


@dataclass(frozen=True)
class CurrentRevision:
    """The revision a source-like action produced (``currentRevision`` on success)."""

    revision: str
    change_identifier: str
    created: datetime | None = None
    revision_summary: str | None = None

    def __post_init__(self) -> None:
        limits = result_limits()
        _check_length("current_revision.revision", self.revision, limits.revision)
        _check_length(
            "current_revision.change_identifier", self.change_identifier, limits.change_identifier
        )
        _check_length(
            "current_revision.revision_summary", self.revision_summary, limits.revision_summary
        )


@dataclass(frozen=True)
class Success:
    """The action succeeded; the pipeline moves on.

    ``output_variables`` (names of letters, digits, ``@-_``; string values; at most
    122880 bytes together) become the action's variables for downstream actions.
    """

    summary: str | None = None
    external_execution_id: str | None = None
    output_variables: Mapping[str, str] = field(default_factory=dict)
    current_revision: CurrentRevision | None = None

    def __post_init__(self) -> None:
        limits = result_limits()
        _check_length("summary", self.summary, limits.summary)
        _check_length(
            "external_execution_id", self.external_execution_id, limits.external_execution_id
        )
        _check_output_variables(self.output_variables)


@dataclass(frozen=True)
class Continue:
    """This step is done; CodePipeline sends a new job carrying ``state``.

    ``state`` is any JSON value; serialised it must fit the 2048-character
    continuation token. Output variables are not allowed with a continuation:
    return them with the final ``Success``.
    """

    state: Any
    summary: str | None = None
    external_execution_id: str | None = None
    percent_complete: int | None = None

    def __post_init__(self) -> None:
        limits = result_limits()
        _check_length("continuation state (serialised)", self.token, limits.continuation_token)
        _check_length("summary", self.summary, limits.summary)
        _check_length(
            "external_execution_id", self.external_execution_id, limits.external_execution_id
        )
        _check_percent(self.percent_complete)

    @property
    def token(self) -> str:
        """The continuation token: ``state`` as compact JSON."""
        try:
            return json.dumps(self.state, separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidResult(f"continuation state is not JSON-serialisable: {exc}") from exc


@dataclass(frozen=True)
class Failure:
    """The action failed with ``message`` (shown in the pipeline) and a failure type.

    A message longer than CodePipeline's 5000 characters is cut (ending in "…")
    rather than refused: a failure must always be deliverable.
    """

    message: str
    type: FailureType = FailureType.JOB_FAILED
    external_execution_id: str | None = None

    def __post_init__(self) -> None:
        limits = result_limits()
        if not self.message or not self.message.strip():
            raise InvalidResult("a failure needs a message for the pipeline user")
        object.__setattr__(self, "type", FailureType(self.type))
        object.__setattr__(self, "message", bounded(self.message, limits.failure_message.max))
        _check_length(
            "external_execution_id", self.external_execution_id, limits.external_execution_id
        )


def resume(previous_token: str | None, summary: str) -> Continue:
    """A continuation that runs the step again, carrying the previous step's state."""
    return Continue(state={RESUME_KEY: decode_token(previous_token)}, summary=summary)


def decode_token(token: str | None) -> Any:
    """The state a continuation token carries (``None`` for no token).

    A token cpworker did not write is handed over as the raw string; a resume
    wrapper is unwrapped.
    """
    if token is None:
        return None
    try:
        state = json.loads(token)
    except ValueError:
        return token
    if isinstance(state, dict) and set(state) == {RESUME_KEY}:
        return state[RESUME_KEY]
    return state


def bounded(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters, marking the cut with an ellipsis."""
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)] + ELLIPSIS


Result = Success | Continue | Failure


def outcome_of(result: Result) -> str:
    """A result in one word for logs and metrics: success, continue or failure:<type>."""
    if isinstance(result, Continue):
        return "continue"
    if isinstance(result, Success):
        return "success"
    return f"failure:{result.type.value}"
