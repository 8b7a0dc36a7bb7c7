"""Pipeline declarations: the structural checks CodePipeline makes before it stores one.

botocore's model covers each field on its own; these checks cover how the fields fit
together (unique names, known action types, artifact wiring, configuration keys) and
answer the modelled InvalidStructureException / InvalidActionDeclarationException.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cpworker.local.actiontypes import (
    QUERYABLE_VALUE,
    ActionTypeRecord,
    ActionTypeRegistry,
    describe,
    key_of,
)
from cpworker.local.errors import ServiceError

DEFAULT_EXECUTION_MODE = "SUPERSEDED"


@dataclass
class PipelineRecord:
    """A stored pipeline: its normalised declaration and when it was created/updated."""

    declaration: dict[str, Any]
    created: float
    updated: float
    history: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Every version of the declaration, for GetPipeline with a version."""

    def __post_init__(self) -> None:
        self.history[self.version] = self.declaration

    @property
    def name(self) -> str:
        name: str = self.declaration["name"]
        return name

    @property
    def version(self) -> int:
        version: int = self.declaration["version"]
        return version


def _structure(message: str) -> ServiceError:
    return ServiceError("InvalidStructureException", message)


def _action_error(stage: str, action: str, message: str) -> ServiceError:
    return ServiceError(
        "InvalidActionDeclarationException", f"Action {action!r} in stage {stage!r}: {message}"
    )


def normalise(
    declaration: Mapping[str, Any], types: ActionTypeRegistry, version: int
) -> dict[str, Any]:
    """A checked copy of ``declaration`` with the defaults AWS fills in (runOrder, mode)."""
    pipeline = copy.deepcopy(dict(declaration))
    pipeline["version"] = version
    pipeline.setdefault("executionMode", DEFAULT_EXECUTION_MODE)
    pipeline.setdefault("pipelineType", "V1")
    if "artifactStore" not in pipeline:
        raise _structure(
            "cpworker local needs pipeline.artifactStore (artifactStores is not supported)"
        )
    for stage in pipeline["stages"]:
        for action in stage["actions"]:
            action.setdefault("runOrder", 1)
            action.setdefault("configuration", {})
            action.setdefault("inputArtifacts", [])
            action.setdefault("outputArtifacts", [])
    _check_stages(pipeline["stages"])
    _check_actions(pipeline["stages"], types)
    _check_wiring(pipeline["stages"])
    _check_variables(pipeline.get("variables", []))
    return pipeline


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _structure(f"{what} names must be unique; {name!r} is used more than once")
        seen.add(name)


def _check_stages(stages: list[dict[str, Any]]) -> None:
    if len(stages) < 2:
        raise _structure("A pipeline must have at least two stages")
    _unique([s["name"] for s in stages], "Stage")
    for index, stage in enumerate(stages):
        if not stage["actions"]:
            raise _structure(f"Stage {stage['name']!r} must have at least one action")
        _unique([a["name"] for a in stage["actions"]], f"Action (in stage {stage['name']!r})")
        for action in stage["actions"]:
            is_source = action["actionTypeId"]["category"] == "Source"
            if is_source != (index == 0):
                raise _structure(
                    "Source actions must be in the first stage, and the first stage may "
                    f"contain only source actions; see action {action['name']!r}"
                )
    namespaces = [a["namespace"] for s in stages for a in s["actions"] if "namespace" in a]
    _unique(namespaces, "Action namespace")


def _check_actions(stages: list[dict[str, Any]], types: ActionTypeRegistry) -> None:
    for stage in stages:
        for action in stage["actions"]:
            key = key_of(action["actionTypeId"])
            record = types.find(key)
            if record is None:
                raise _action_error(
                    stage["name"], action["name"], f"action type {describe(key)} not found"
                )
            _check_artifact_counts(stage["name"], action, record)
            _check_configuration(stage["name"], action, record)


def _check_artifact_counts(stage: str, action: dict[str, Any], record: ActionTypeRecord) -> None:
    for direction in ("input", "output"):
        count = len(action[f"{direction}Artifacts"])
        low, high = record.counts(direction)
        if not low <= count <= high:
            raise _action_error(
                stage,
                action["name"],
                f"{describe(record.key)} takes {low} to {high} {direction} artifacts, not {count}",
            )


def _check_configuration(stage: str, action: dict[str, Any], record: ActionTypeRecord) -> None:
    configuration: dict[str, str] = action["configuration"]
    known = {p["name"] for p in record.properties}
    unknown = sorted(set(configuration) - known)
    if unknown:
        raise _action_error(
            stage,
            action["name"],
            f"unknown configuration keys {unknown}; {describe(record.key)} accepts {sorted(known)}",
        )
    missing = sorted(
        p["name"] for p in record.properties if p["required"] and p["name"] not in configuration
    )
    if missing:
        raise _action_error(stage, action["name"], f"missing required configuration keys {missing}")
    queryable = record.queryable
    if queryable is not None and not QUERYABLE_VALUE.fullmatch(configuration[queryable]):
        raise _action_error(
            stage,
            action["name"],
            f"the queryable property {queryable!r} must be 1 to 20 of [A-Za-z0-9_-]",
        )


def _check_wiring(stages: list[dict[str, Any]]) -> None:
    """Every input artifact is the output of an action that runs earlier."""
    produced: dict[str, tuple[int, int]] = {}
    for stage_index, stage in enumerate(stages):
        for action in stage["actions"]:
            for artifact in action["outputArtifacts"]:
                if artifact["name"] in produced:
                    raise _structure(
                        f"Output artifact {artifact['name']!r} is produced more than once"
                    )
                produced[artifact["name"]] = (stage_index, action["runOrder"])
    for stage_index, stage in enumerate(stages):
        for action in stage["actions"]:
            for artifact in action["inputArtifacts"]:
                origin = produced.get(artifact["name"])
                if origin is None or origin >= (stage_index, action["runOrder"]):
                    raise _structure(
                        f"Input artifact {artifact['name']!r} of action {action['name']!r} is not "
                        "the output of an action that runs before it"
                    )


def _check_variables(variables: list[dict[str, Any]]) -> None:
    _unique([v["name"] for v in variables], "Pipeline variable")


def resolve_variables(
    declaration: Mapping[str, Any], given: list[dict[str, str]]
) -> dict[str, str]:
    """Pipeline variables of one execution: the given values over declared defaults."""
    declared = {v["name"]: v.get("defaultValue") for v in declaration.get("variables", [])}
    values = {name: default for name, default in declared.items() if default is not None}
    for variable in given:
        if variable["name"] not in declared:
            raise ServiceError(
                "ValidationException", f"Pipeline variable {variable['name']!r} is not declared"
            )
        values[variable["name"]] = variable["value"]
    missing = sorted(set(declared) - set(values))
    if missing:
        raise ServiceError("ValidationException", f"Pipeline variables {missing} need a value")
    return values
