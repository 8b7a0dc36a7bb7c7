"""CodePipeline quotas on job results, read from botocore's own service model.

The numbers are not retyped here: they come from the ``codepipeline`` model that
ships with botocore, loaded once on first use (it is a packaged data file, no
network). Only the 122880-byte output-variables total is documented outside the
model (CodePipeline quotas page) and therefore kept as a constant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

# "Maximum size of all output variables of an action: 122880 bytes" (User Guide, quotas).
OUTPUT_VARIABLES_MAX_BYTES = 122_880
# "For the Lambda integration model, the maximum timeout is 15 minutes" (User Guide,
# action type definition file: executor.jobTimeout).
INTEGRATION_JOB_TIMEOUT_MAX_S = 900


@dataclass(frozen=True)
class Bounds:
    """Length (or value) bounds of one shape; ``None`` means unbounded."""

    min: int | None
    max: int | None
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True)
class ResultLimits:
    """The limits a result must meet before it is sent."""

    continuation_token: Bounds
    summary: Bounds
    failure_message: Bounds
    external_execution_id: Bounds
    percent_complete: Bounds
    revision: Bounds
    change_identifier: Bounds
    revision_summary: Bounds
    output_variable_name: Bounds
    output_variables_max_bytes: int = OUTPUT_VARIABLES_MAX_BYTES


def bounds(name: str) -> Bounds:
    """The bounds of one shape of botocore's CodePipeline model."""
    found = shape(name)
    pattern = found.get("pattern")
    return Bounds(found.get("min"), found.get("max"), re.compile(pattern) if pattern else None)


@cache
def result_limits() -> ResultLimits:
    """Load the limits from botocore's bundled CodePipeline model (cached)."""
    return ResultLimits(
        continuation_token=bounds("ContinuationToken"),
        summary=bounds("ExecutionSummary"),
        failure_message=bounds("Message"),
        external_execution_id=bounds("ExecutionId"),
        percent_complete=bounds("Percentage"),
        revision=bounds("Revision"),
        change_identifier=bounds("RevisionChangeIdentifier"),
        revision_summary=bounds("RevisionSummary"),
        output_variable_name=bounds("OutputVariablesKey"),
    )


@cache
def _shapes() -> dict[str, Any]:
    from botocore.loaders import create_loader

    model: dict[str, Any] = create_loader().load_service_model("codepipeline", "service-2")
    return dict(model["shapes"])


def shape(name: str) -> dict[str, Any]:
    """One shape of botocore's CodePipeline model (``min``, ``max``, ``pattern``, ``enum``)."""
    return dict(_shapes()[name])
