"""A pydantic config model becomes configuration properties, and configuration becomes it."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, SecretStr

from cpworker import ConfigurationError, prop
from cpworker.config import parse_config, properties_of, secret_values


class Deploy(BaseModel):
    Environment: str = prop(description="where to deploy", queryable=True)
    Replicas: int = 2
    DryRun: bool = False
    Mode: Literal["blue-green", "rolling"] = "rolling"
    ApiToken: SecretStr | None = None


def test_properties_follow_the_model() -> None:
    wire = [p.to_wire() for p in properties_of(Deploy)]
    assert wire == [
        {"name": "Environment", "required": True, "key": True, "secret": False,
         "queryable": True, "type": "String", "description": "where to deploy"},
        {"name": "Replicas", "required": False, "key": False, "secret": False,
         "queryable": False, "type": "Number"},
        {"name": "DryRun", "required": False, "key": False, "secret": False,
         "queryable": False, "type": "Boolean"},
        {"name": "Mode", "required": False, "key": False, "secret": False,
         "queryable": False, "type": "String"},
        {"name": "ApiToken", "required": False, "key": False, "secret": True,
         "queryable": False, "type": "String"},
    ]  # fmt: skip


def test_configuration_strings_are_converted() -> None:
    config = parse_config(Deploy, {"Environment": "prod", "Replicas": "5", "DryRun": "true"})
    assert isinstance(config, Deploy)
    assert (config.Replicas, config.DryRun) == (5, True)


def test_bad_configuration_names_the_property_but_not_the_value() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config(Deploy, {"Replicas": "many-s3cr3t", "Mode": "yolo"})
    message = caught.value.message
    assert "configuration property 'Environment' is required" in message
    assert "configuration property 'Replicas'" in message
    assert "configuration property 'Mode'" in message
    assert "many-s3cr3t" not in message


def test_secret_values_are_found_for_redaction() -> None:
    assert secret_values(Deploy, {"Environment": "prod", "ApiToken": "tok-123"}) == ["tok-123"]


def test_models_that_cannot_be_properties_are_refused() -> None:
    class TwoQueryable(BaseModel):
        A: str = prop(queryable=True)
        B: str = prop(queryable=True)

    class OptionalQueryable(BaseModel):
        A: str = prop("x", queryable=True)

    class ListField(BaseModel):
        Items: list[str]

    class TooMany(BaseModel):
        P1: str
        P2: str
        P3: str
        P4: str
        P5: str
        P6: str
        P7: str
        P8: str
        P9: str
        P10: str
        P11: str

    with pytest.raises(TypeError, match="only one property may be queryable"):
        properties_of(TwoQueryable)
    with pytest.raises(TypeError, match="must be required and not secret"):
        properties_of(OptionalQueryable)
    with pytest.raises(TypeError, match="cannot be a configuration property"):
        properties_of(ListField)
    with pytest.raises(TypeError, match="has 11 fields; a custom action allows 10"):
        properties_of(TooMany)
