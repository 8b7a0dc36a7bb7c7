"""Action types known to the local CodePipeline: AWS built-ins, custom ones, and ones
declared with an executor (an action-type definition file, :mod:`cpworker.local.declarations`).

Every type is keyed by (category, owner, provider, version). Deleting a custom one only
marks it deleted, as AWS does: polling it fails, and the same version can be restored by
creating it again with an identical definition, but never redefined. A declared type is
replaced by UpdateActionType.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cpworker.local.errors import ServiceError

ActionKey = tuple[str, str, str, str]
"""(category, owner, provider, version): how CodePipeline names an action type."""

CUSTOM = "Custom"
MAX_CUSTOM_TYPES = 50  # per Region, CodePipeline quotas
QUERYABLE_VALUE = re.compile(r"[A-Za-z0-9_-]{1,20}")
_CONFIG_REF = re.compile(r"\{Config:([^}]+)\}")


def key_of(type_id: Mapping[str, Any]) -> ActionKey:
    """The registry key of an ``ActionTypeId`` wire structure."""
    return (type_id["category"], type_id["owner"], type_id["provider"], type_id["version"])


def describe(key: ActionKey) -> str:
    """``Build/Custom/Provider/1``: how messages name an action type."""
    return "/".join(key)


def fill_template(
    template: str | None, configuration: Mapping[str, str], **extra: str
) -> str | None:
    """Fill ``{Config:Name}`` and ``{Name}`` placeholders of a URL template.

    Placeholders with no value are left as they are, so a half-filled URL still
    shows what is missing.
    """
    if template is None:
        return None
    filled = _CONFIG_REF.sub(lambda m: configuration.get(m.group(1), m.group(0)), template)
    for name, value in extra.items():
        filled = filled.replace("{" + name + "}", value)
    return filled


def _property(
    name: str, *, required: bool, key: bool = False, queryable: bool = False
) -> dict[str, Any]:
    return {"name": name, "required": required, "key": key, "secret": False, "queryable": queryable}


def _builtin(
    category: str,
    provider: str,
    properties: list[dict[str, Any]],
    inputs: tuple[int, int],
    outputs: tuple[int, int],
) -> dict[str, Any]:
    return {
        "id": {"category": category, "owner": "AWS", "provider": provider, "version": "1"},
        "settings": {},
        "actionConfigurationProperties": properties,
        "inputArtifactDetails": {"minimumCount": inputs[0], "maximumCount": inputs[1]},
        "outputArtifactDetails": {"minimumCount": outputs[0], "maximumCount": outputs[1]},
    }


# The AWS-owned types this engine knows: the S3 source, and Lambda invoke actions
# (run by cpworker.local.lambdas with the functions mapped from FunctionName).
BUILTIN_TYPES: tuple[dict[str, Any], ...] = (
    _builtin(
        "Source",
        "S3",
        [
            _property("S3Bucket", required=True, key=True),
            _property("S3ObjectKey", required=True, key=True),
            _property("PollForSourceChanges", required=False),
            _property("AllowOverrideForS3ObjectKey", required=False),
        ],
        inputs=(0, 0),
        outputs=(1, 1),
    ),
    _builtin(
        "Invoke",
        "Lambda",
        [
            _property("FunctionName", required=True, key=True),
            _property("UserParameters", required=False),
        ],
        inputs=(0, 5),
        outputs=(0, 5),
    ),
)
S3_SOURCE: ActionKey = ("Source", "AWS", "S3", "1")
LAMBDA_INVOKE: ActionKey = ("Invoke", "AWS", "Lambda", "1")


@dataclass
class ActionTypeRecord:
    """One action type: its ``ActionType`` wire structure and whether it is deleted."""

    definition: dict[str, Any]
    tags: list[dict[str, str]]
    deleted: bool = False
    declaration: dict[str, Any] | None = None
    """The ``ActionTypeDeclaration`` of a type declared with an executor (GetActionType)."""

    @property
    def key(self) -> ActionKey:
        return key_of(self.definition["id"])

    @property
    def executor(self) -> dict[str, Any] | None:
        """The ``ActionTypeExecutor`` of a declared type: who runs its jobs."""
        return None if self.declaration is None else dict(self.declaration["executor"])

    @property
    def properties(self) -> list[dict[str, Any]]:
        props: list[dict[str, Any]] = self.definition.get("actionConfigurationProperties", [])
        return props

    @property
    def queryable(self) -> str | None:
        """The name of the queryable configuration property, if the type has one."""
        return next((p["name"] for p in self.properties if p.get("queryable")), None)

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(p["name"] for p in self.properties if p.get("secret"))

    def counts(self, direction: str) -> tuple[int, int]:
        """(minimum, maximum) artifact count; ``direction`` is "input" or "output"."""
        details = self.definition[f"{direction}ArtifactDetails"]
        return details["minimumCount"], details["maximumCount"]

    def url(self, setting: str, configuration: Mapping[str, str], **extra: str) -> str | None:
        """A URL template of the type's settings, filled for one action."""
        return fill_template(
            self.definition.get("settings", {}).get(setting), configuration, **extra
        )


class ActionTypeRegistry:
    """All action types of the Region. Callers hold the engine lock."""

    def __init__(self) -> None:
        self._types: dict[ActionKey, ActionTypeRecord] = {}
        for definition in BUILTIN_TYPES:
            record = ActionTypeRecord(copy.deepcopy(definition), tags=[])
            self._types[record.key] = record

    def create(self, params: Mapping[str, Any]) -> ActionTypeRecord:
        """CreateCustomActionType: a new type, or the existing one if identical."""
        definition = _custom_definition(params)
        record = ActionTypeRecord(definition, tags=list(params.get("tags", [])))
        existing = self._types.get(record.key)
        if existing is not None:
            if existing.definition != definition:
                raise ServiceError(
                    "ValidationException",
                    f"Action type {describe(record.key)} already exists with a different "
                    "definition; use a version string that has never been used",
                )
            existing.deleted = False  # an identical definition restores a deleted type
            return existing
        if sum(1 for r in self if r.key[1] == CUSTOM) >= MAX_CUSTOM_TYPES:
            raise ServiceError(
                "LimitExceededException",
                f"At most {MAX_CUSTOM_TYPES} custom action types may exist in a Region",
            )
        self._types[record.key] = record
        return record

    def declare(self, record: ActionTypeRecord, *, update: bool) -> None:
        """Add a declared type, or replace one; only replace it when ``update`` (UpdateActionType).

        Built-in and custom types cannot be declared over.
        """
        existing = self._types.get(record.key)
        if existing is not None and existing.declaration is None:
            raise ServiceError(
                "ValidationException",
                f"Action type {describe(record.key)} exists and was not declared with an "
                "executor: it cannot be replaced",
            )
        if update and existing is None:
            raise ServiceError(
                "ActionTypeNotFoundException", f"Action type {describe(record.key)} not found"
            )
        self._types[record.key] = record

    def declared(self, key: ActionKey) -> ActionTypeRecord:
        """The declared type with this key (GetActionType)."""
        record = self.find(key)
        if record is None or record.declaration is None:
            raise ServiceError(
                "ActionTypeNotFoundException",
                f"Action type {describe(key)} not found: cpworker local knows the action "
                "types declared with an executor (cpworker local --action-type FILE)",
            )
        return record

    def delete(self, category: str, provider: str, version: str) -> None:
        """DeleteCustomActionType: mark the type deleted (unknown types are ignored)."""
        record = self._types.get((category, CUSTOM, provider, version))
        if record is not None:
            record.deleted = True

    def find(self, key: ActionKey) -> ActionTypeRecord | None:
        """The active type with this key, if any."""
        record = self._types.get(key)
        return None if record is None or record.deleted else record

    def __iter__(self) -> Iterator[ActionTypeRecord]:
        """Active types, built-ins first, then in creation order."""
        return (r for r in self._types.values() if not r.deleted)


def _custom_definition(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ActionType`` structure of a CreateCustomActionType request, checked."""
    definition = {
        "id": {
            "category": params["category"],
            "owner": CUSTOM,
            "provider": params["provider"],
            "version": params["version"],
        },
        "settings": dict(params.get("settings", {})),
        "actionConfigurationProperties": [
            dict(p) for p in params.get("configurationProperties", [])
        ],
        "inputArtifactDetails": dict(params["inputArtifactDetails"]),
        "outputArtifactDetails": dict(params["outputArtifactDetails"]),
    }
    check_definition(definition)
    return definition


def check_definition(definition: Mapping[str, Any]) -> None:
    """The checks CodePipeline makes on how an ``ActionType``'s fields fit together."""
    properties: list[dict[str, Any]] = definition["actionConfigurationProperties"]
    _check_properties(properties)
    for direction in ("inputArtifactDetails", "outputArtifactDetails"):
        details = definition[direction]
        if details["minimumCount"] > details["maximumCount"]:
            raise ServiceError(
                "ValidationException",
                f"{direction}: minimumCount must not be greater than maximumCount",
            )
    _check_templates(definition["settings"], properties)


def _check_properties(properties: list[dict[str, Any]]) -> None:
    names = [p["name"] for p in properties]
    if len(set(names)) != len(names):
        raise ServiceError("ValidationException", "Configuration property names must be unique")
    queryable = [p for p in properties if p.get("queryable")]
    if len(queryable) > 1:
        raise ServiceError(
            "ValidationException", "At most one configuration property may be queryable"
        )
    for prop in queryable:
        if not prop["required"] or prop["secret"]:
            raise ServiceError(
                "ValidationException",
                f"Queryable configuration property {prop['name']!r} must be required "
                "and must not be secret",
            )


def _check_templates(settings: Mapping[str, str], properties: list[dict[str, Any]]) -> None:
    """URL templates may only name required, non-secret properties (User Guide)."""
    usable = {p["name"] for p in properties if p["required"] and not p["secret"]}
    for setting, template in settings.items():
        for name in _CONFIG_REF.findall(template):
            if name not in usable:
                raise ServiceError(
                    "ValidationException",
                    f"settings.{setting} uses {{Config:{name}}}, but {name!r} is not a "
                    "required, non-secret configuration property",
                )
