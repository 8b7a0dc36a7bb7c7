"""Registered custom action types against the app's declarations.

Action types cannot be edited: a type registered from an older version of the code
keeps its old properties, and its jobs then fail at run time. ``differences`` says
exactly what no longer matches, so that ``cpworker register`` and ``cpworker serve``
can say it before a job does; ``next_version`` names the version a changed
declaration is registered under instead (``register --bump``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from cpworker.app import ActionSpec, _check_name
from cpworker.model import ActionTypeId

Registered = dict[ActionTypeId, dict[str, Any]]
_FLAGS = ("required", "key", "secret", "queryable", "type", "description")
_SETTINGS = (
    "entityUrlTemplate",
    "executionUrlTemplate",
    "revisionUrlTemplate",
    "thirdPartyConfigurationUrl",
)
_TRAILING_NUMBER = re.compile(r"(.*?)(\d+)")


def registered_custom_types(codepipeline: Any) -> Registered:
    """Every custom action type of the account and Region (ListActionTypes), by id."""
    pages = codepipeline.get_paginator("list_action_types").paginate(actionOwnerFilter="Custom")
    return {
        ActionTypeId.model_validate(found["id"]): found
        for page in pages
        for found in page["actionTypes"]
    }


def create_document(spec: ActionSpec, version: str | None = None) -> dict[str, Any]:
    """The CreateCustomActionType request (``--cli-input-json`` document) for ``spec``,
    registered as ``version`` when given."""
    document = spec.custom_action_type()
    if version is not None:
        document["version"] = version
    return document


def differences(spec: ActionSpec, registered: Mapping[str, Any]) -> list[str]:
    """What differs between the registered type (a ListActionTypes ``ActionType``) and
    the declaration of ``spec``, one phrase each; empty when they match."""
    declared = create_document(spec)
    found: list[str] = []
    found += _property_differences(
        declared["configurationProperties"], registered.get("actionConfigurationProperties", [])
    )
    for member, what in (("inputArtifactDetails", "inputs"), ("outputArtifactDetails", "outputs")):
        code = _counts(declared[member])
        there = _counts(registered.get(member, {}))
        if code != there:
            found.append(f"{what} (min, max) are {code} in the code, {there} registered")
    code_settings, there_settings = declared.get("settings", {}), registered.get("settings") or {}
    for name in _SETTINGS:
        if code_settings.get(name) != there_settings.get(name):
            found.append(
                f"setting {name} is {code_settings.get(name)!r} in the code, "
                f"{there_settings.get(name)!r} registered"
            )
    return found


def _counts(details: Mapping[str, Any]) -> tuple[int | None, int | None]:
    return details.get("minimumCount"), details.get("maximumCount")


def _property_differences(
    declared: Iterable[Mapping[str, Any]], registered: Iterable[Mapping[str, Any]]
) -> list[str]:
    code = {p["name"]: p for p in declared}
    there = {p["name"]: p for p in registered}
    found = [f"property {n!r} is declared but not registered" for n in code if n not in there]
    found += [f"property {n!r} is registered but not declared" for n in there if n not in code]
    for name in (n for n in code if n in there):
        for flag in _FLAGS:
            if code[name].get(flag) != there[name].get(flag):
                found.append(
                    f"property {name!r}: {flag} is {code[name].get(flag)!r} in the code, "
                    f"{there[name].get(flag)!r} registered"
                )
    return found


def matching_version(spec: ActionSpec, registered: Registered) -> str | None:
    """A registered version of the action's category and provider that matches its
    declaration, if any (a bump that was already made)."""
    for type_id, found in registered.items():
        same_type = (type_id.category, type_id.provider) == (
            spec.type_id.category,
            spec.type_id.provider,
        )
        if same_type and not differences(spec, found):
            return type_id.version
    return None


def next_version(type_id: ActionTypeId, registered: Iterable[ActionTypeId]) -> str:
    """The version after the highest one registered for this category and provider,
    counting in the declared version's trailing number (``1`` → ``2``, ``v3`` → ``v4``);
    ``ValueError`` naming the fix when the version ends in no number."""
    match = _TRAILING_NUMBER.fullmatch(type_id.version)
    if match is None:
        raise ValueError(
            f"version {type_id.version!r} of {type_id} ends in no number to bump: "
            "set the next version= in its @app.action yourself"
        )
    prefix = match.group(1)
    numbers = [int(match.group(2))]
    for other in registered:
        rest = other.version[len(prefix) :]
        same_type = (other.category, other.provider) == (type_id.category, type_id.provider)
        if same_type and other.version.startswith(prefix) and rest.isdigit():
            numbers.append(int(rest))
    version = f"{prefix}{max(numbers) + 1}"
    _check_name("version", version, "Version")
    return version
