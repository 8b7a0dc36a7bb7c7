"""Turn a pydantic config model into CodePipeline configuration properties, and back.

A field of the model is one configuration property. Its alias (or name) is the
property name; ``required`` comes from the model, ``secret`` from a ``SecretStr``
annotation or ``prop(secret=True)``, ``type`` from the annotation
(str → String, int/float → Number, bool → Boolean).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import AliasChoices, BaseModel, Field, JsonValue, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from cpworker.errors import ConfigurationError

PropertyType = Literal["String", "Number", "Boolean"]
MAX_PROPERTIES = 10  # CreateCustomActionType: at most 10 configuration properties
_CPWORKER_KEY = "cpworker"


@dataclass(frozen=True)
class ConfigProperty:
    """One configuration property of a custom action type, as CreateCustomActionType takes it."""

    name: str
    required: bool
    key: bool
    secret: bool
    queryable: bool
    type: PropertyType
    description: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "name": self.name,
            "required": self.required,
            "key": self.key,
            "secret": self.secret,
            "queryable": self.queryable,
            "type": self.type,
        }
        if self.description:
            wire["description"] = self.description
        return wire


def prop(
    default: Any = ...,
    *,
    description: str | None = None,
    key: bool | None = None,
    secret: bool = False,
    queryable: bool = False,
    alias: str | None = None,
) -> Any:
    """A config model field with CodePipeline property flags.

    ``key`` defaults to ``required``; ``queryable`` lets workers poll only the jobs
    whose value matches (``--query Name=value``).
    """
    flags: dict[str, JsonValue] = {"key": key, "secret": secret, "queryable": queryable}
    return Field(
        default, description=description, alias=alias, json_schema_extra={_CPWORKER_KEY: flags}
    )


def _scalar(annotation: Any) -> Any:
    """The annotation without ``Optional``; raises for unions of several types."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"union {annotation} cannot be a configuration property")
        return args[0]
    if origin is Literal:
        return str
    return annotation


def _property_type(annotation: Any) -> PropertyType:
    scalar = _scalar(annotation)
    if scalar is bool:
        return "Boolean"
    if scalar in (int, float):
        return "Number"
    if scalar in (str, SecretStr) or (isinstance(scalar, type) and issubclass(scalar, str)):
        return "String"
    raise TypeError(
        f"type {scalar!r} cannot be a configuration property: use str, int, float, bool, "
        "SecretStr or a Literal of strings"
    )


def _flags(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    flags = extra.get(_CPWORKER_KEY) if isinstance(extra, dict) else None
    return dict(flags) if isinstance(flags, dict) else {}


def properties_of(model: type[BaseModel]) -> tuple[ConfigProperty, ...]:
    """The configuration properties ``model`` declares; ``TypeError`` if it cannot."""
    found = []
    for field_name, info in model.model_fields.items():
        flags = _flags(info)
        required = info.is_required()
        secret = bool(flags.get("secret")) or _scalar(info.annotation) is SecretStr
        key = flags.get("key")
        found.append(
            ConfigProperty(
                name=info.alias or field_name,
                required=required,
                key=required if key is None else bool(key),
                secret=secret,
                queryable=bool(flags.get("queryable")),
                type=_property_type(info.annotation),
                description=info.description,
            )
        )
    _check_properties(model, found)
    return tuple(found)


def _check_properties(model: type[BaseModel], found: list[ConfigProperty]) -> None:
    where = f"config model {model.__name__}"
    if len(found) > MAX_PROPERTIES:
        raise TypeError(f"{where} has {len(found)} fields; a custom action allows {MAX_PROPERTIES}")
    for item in found:
        if not 1 <= len(item.name) <= 50:
            raise TypeError(f"{where}: property name {item.name!r} must be 1-50 characters")
    queryable = [p for p in found if p.queryable]
    if len(queryable) > 1:
        names = ", ".join(p.name for p in queryable)
        raise TypeError(f"{where}: only one property may be queryable, not {names}")
    for item in queryable:
        if not item.required or item.secret:
            raise TypeError(
                f"{where}: queryable property {item.name!r} must be required and not secret"
            )


def parse_config(model: type[BaseModel], configuration: Mapping[str, Any]) -> BaseModel:
    """Validate the job's raw configuration into ``model``.

    A bad value becomes a ``ConfigurationError`` that names the property but never
    echoes its value (it may be secret).
    """
    try:
        return model.model_validate(configuration)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            name = ".".join(str(part) for part in error["loc"]) or "configuration"
            if error["type"] == "missing":
                problems.append(f"configuration property {name!r} is required")
            else:
                problems.append(f"configuration property {name!r}: {error['msg'].lower()}")
        raise ConfigurationError(
            _not_an_object(model, configuration) or "; ".join(problems)
        ) from None


def _not_an_object(model: type[BaseModel], configuration: Mapping[str, Any]) -> str | None:
    """Why a Lambda action's UserParameters could not carry the config model, if that is
    why it failed: the properties are then all missing, which says nothing of the cause."""
    text = configuration.get("UserParameters")
    fields = [info.alias or name for name, info in model.model_fields.items()]
    if not isinstance(text, str) or any(
        "UserParameters" in _accepted_names(name, info) for name, info in model.model_fields.items()
    ):
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        problem = f"is not valid JSON ({exc.args[0]})"
    else:
        if isinstance(value, dict):
            return None
        problem = f"is a JSON {type(value).__name__}"
    return f"UserParameters {problem}: give a JSON object with {', '.join(fields)}"


def _accepted_names(name: str, info: FieldInfo) -> set[str]:
    """The keys a field is read from: its name, alias and validation aliases (such as
    url_check's ``AliasChoices("url", "UserParameters")``, which takes the plain string)."""
    alias = info.validation_alias
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    return {name, info.alias or name, *(c for c in choices if isinstance(c, str))}


def secret_values(model: type[BaseModel], configuration: Mapping[str, Any]) -> list[str]:
    """The values of the secret properties in ``configuration``, for redaction."""
    names = {p.name for p in properties_of(model) if p.secret}
    return [str(value) for name, value in configuration.items() if name in names and value]
