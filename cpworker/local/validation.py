"""Server-side request validation against botocore's own CodePipeline service model.

botocore checks only required members, types and minimums before it sends a request;
AWS checks the rest (maximum lengths, patterns, enums) and answers ValidationException.
The local CodePipeline must do the same, and reading the constraints from the model
botocore ships keeps every number in one place instead of copied by hand.

Messages follow the AWS form, naming the member path the way AWS does
(``pipeline.stages.1.member.name``) and never echoing values, which may be secrets.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple

import botocore.session
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StructureShape

from cpworker.local.errors import ServiceError

__all__ = ["service_model", "validate_members", "validate_request"]


@lru_cache(maxsize=1)
def service_model() -> ServiceModel:
    """The CodePipeline model bundled with botocore, loaded once per process."""
    return botocore.session.get_session().get_service_model("codepipeline")


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def validate_request(operation: str, params: dict[str, Any]) -> None:
    """Raise ServiceError unless ``params`` is a valid request for ``operation``.

    An operation the model does not know answers UnknownOperationException; every
    constraint violation is collected and reported in one ValidationException.
    """
    model = service_model()
    if operation not in model.operation_names:
        raise ServiceError("UnknownOperationException", f"Unknown operation {operation!r}")
    shape = model.operation_model(operation).input_shape
    if shape is None:
        return
    errors: Errors = []
    _check(shape, params, "", errors)
    _raise(errors)


def validate_members(params: dict[str, Any], members: dict[str, tuple[str, bool]]) -> None:
    """Check a request of cpworker's own operations with the model's shapes.

    ``members`` maps each member to (CodePipeline shape name, required); other members
    are refused, so a typo does not pass silently.
    """
    model = service_model()
    errors: Errors = []
    for name, (shape_name, required) in members.items():
        if params.get(name) is None:
            if required:
                errors.append(_Violation(name, "Member must not be null", null=True))
        else:
            _check(model.shape_for(shape_name), params[name], name, errors)
    errors.extend(
        _Violation(name, "Member is not known") for name in sorted(set(params) - set(members))
    )
    _raise(errors)


def _raise(errors: Errors) -> None:
    if errors:
        count = f"{len(errors)} validation error{'s' if len(errors) > 1 else ''} detected: "
        raise ServiceError("ValidationException", count + "; ".join(map(str, errors)))


class _Violation(NamedTuple):
    path: str
    constraint: str
    null: bool = False

    def __str__(self) -> str:
        value = "Value null" if self.null else "Value"
        return f"{value} at '{self.path}' failed to satisfy constraint: {self.constraint}"


Errors = list[_Violation]


def _join(path: str, member: str) -> str:
    return f"{path}.{member}" if path else member


def _check(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    """Append to ``errors`` every violation of ``shape`` found in ``value``."""
    checker = _CHECKERS.get(shape.type_name)
    if checker is not None:
        checker(shape, value, path, errors)


def _check_structure(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    assert isinstance(shape, StructureShape)
    if not isinstance(value, dict):
        errors.append(_Violation(path, "Member must be a structure"))
        return
    for name in shape.required_members:
        if value.get(name) is None:
            errors.append(_Violation(_join(path, name), "Member must not be null", null=True))
    for name, member in shape.members.items():
        if value.get(name) is not None:
            _check(member, value[name], _join(path, name), errors)


def _check_list(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    assert isinstance(shape, ListShape)
    if not isinstance(value, list):
        errors.append(_Violation(path, "Member must be a list"))
        return
    _check_size(shape, len(value), path, errors)
    for index, item in enumerate(value, start=1):
        _check(shape.member, item, f"{path}.{index}.member", errors)


def _check_map(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    assert isinstance(shape, MapShape)
    if not isinstance(value, dict):
        errors.append(_Violation(path, "Member must be a map"))
        return
    _check_size(shape, len(value), path, errors)
    for key, item in value.items():
        key_errors: Errors = []
        _check(shape.key, key, path, key_errors)
        errors.extend(
            _Violation(path, f"Map keys must satisfy constraint: [{v.constraint}] (key {key!r})")
            for v in key_errors
        )
        _check(shape.value, item, f"{path}.{key}", errors)


def _check_string(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    if not isinstance(value, str):
        errors.append(_Violation(path, "Member must be a string"))
        return
    enum: list[str] = getattr(shape, "enum", [])
    if enum and value not in enum:
        errors.append(_Violation(path, f"Member must satisfy enum value set: [{', '.join(enum)}]"))
        return
    _check_size(shape, len(value), path, errors)
    pattern = shape.metadata.get("pattern")
    if pattern is not None and not _pattern(pattern).fullmatch(value):
        errors.append(
            _Violation(path, f"Member must satisfy regular expression pattern: {pattern}")
        )


def _check_integer(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(_Violation(path, "Member must be an integer"))
        return
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and value < low:
        errors.append(_Violation(path, f"Member must have value greater than or equal to {low}"))
    if high is not None and value > high:
        errors.append(_Violation(path, f"Member must have value less than or equal to {high}"))


def _check_number(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append(_Violation(path, "Member must be a number"))


def _check_timestamp(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        errors.append(_Violation(path, "Member must be a timestamp"))


def _check_boolean(shape: Shape, value: Any, path: str, errors: Errors) -> None:
    if not isinstance(value, bool):
        errors.append(_Violation(path, "Member must be a boolean"))


def _check_size(shape: Shape, size: int, path: str, errors: Errors) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and size < low:
        errors.append(_Violation(path, f"Member must have length greater than or equal to {low}"))
    if high is not None and size > high:
        errors.append(_Violation(path, f"Member must have length less than or equal to {high}"))


_CHECKERS = {
    "structure": _check_structure,
    "list": _check_list,
    "map": _check_map,
    "string": _check_string,
    "integer": _check_integer,
    "long": _check_integer,
    "float": _check_number,
    "double": _check_number,
    "timestamp": _check_timestamp,
    "boolean": _check_boolean,
}
