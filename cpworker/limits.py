"""CodePipeline quotas on job results and action types, from botocore's own service model.

The numbers are not retyped: ``codepipeline_shapes.json`` holds the few shapes cpworker
checks (``SHAPES``), extracted from the ``codepipeline`` model that ships with botocore
by ``write_table()``, and a test fails when it no longer matches the
installed botocore. Reading that small table instead of botocore's whole model keeps
it out of a Lambda function's cold start. Only the 122880-byte output-variables total
is documented outside the model (CodePipeline quotas page) and is kept as a constant.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("codepipeline_shapes.json")
SHAPES = (
    "ActionCategory",
    "ActionProvider",
    "ContinuationToken",
    "ExecutionId",
    "ExecutionSummary",
    "Message",
    "OutputVariablesKey",
    "Percentage",
    "Revision",
    "RevisionChangeIdentifier",
    "RevisionSummary",
    "Version",
)
_FIELDS = ("min", "max", "pattern", "enum")

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
    table: dict[str, Any] = json.loads(TABLE.read_text())
    return table


def shape(name: str) -> dict[str, Any]:
    """One of the ``SHAPES`` of botocore's CodePipeline model (``min``, ``max``,
    ``pattern``, ``enum``)."""
    return dict(_shapes()[name])


def botocore_shapes() -> dict[str, Any]:
    """The ``SHAPES`` as the installed botocore's CodePipeline model has them."""
    from botocore.loaders import create_loader

    model: dict[str, Any] = create_loader().load_service_model("codepipeline", "service-2")
    return {
        name: {key: model["shapes"][name][key] for key in _FIELDS if key in model["shapes"][name]}
        for name in SHAPES
    }


def write_table() -> None:
    """Extract ``SHAPES`` from the installed botocore into ``TABLE`` (after a botocore
    upgrade changed them: ``python -c 'import cpworker.limits as l; l.write_table()'``)."""
    TABLE.write_text(json.dumps(botocore_shapes(), indent=2, sort_keys=True) + "\n")
