"""Third-party action types for tests: declared in the local CodePipeline with a JobWorker
executor, as an action-type definition file would declare them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cpworker import ActionSpec
from cpworker.local.engine import Engine

JOB_WORKER = {
    "type": "JobWorker",
    "configuration": {"jobWorkerExecutorConfiguration": {"pollingAccounts": ["123456789012"]}},
}


def declare_job_worker_type(
    engine: Engine,
    type_id: dict[str, str],
    *,
    properties: Sequence[dict[str, Any]] = (),
    inputs: tuple[int, int] = (0, 5),
    outputs: tuple[int, int] = (0, 5),
) -> dict[str, str]:
    """Declare the ThirdParty action type ``type_id``, polled by job workers; returns it.

    ``properties`` are ActionTypeProperty structures (name, optional, key, noEcho).
    """
    engine.register_action_type(
        {
            "id": type_id,
            "executor": JOB_WORKER,
            "properties": list(properties),
            "inputArtifactDetails": {"minimumCount": inputs[0], "maximumCount": inputs[1]},
            "outputArtifactDetails": {"minimumCount": outputs[0], "maximumCount": outputs[1]},
        }
    )
    return type_id


def declare_spec(engine: Engine, spec: ActionSpec) -> None:
    """Declare the action type of an app's ``owner="ThirdParty"`` action: its definition
    file, with a JobWorker executor in place of the Lambda one."""
    unused = "arn:aws:lambda:us-east-1:123456789012:function:unused"
    declaration = spec.action_type_definition(unused)["actionType"]
    engine.register_action_type(declaration | {"executor": JOB_WORKER})
