"""Client token resolvers: a static mapping, and Secrets Manager / Parameter Store (moto,
behind a real local CodePipeline endpoint) with their cache."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cpworker.client_tokens import (
    CachedTokens,
    ParameterStoreTokens,
    SecretsManagerTokens,
    StaticTokens,
)
from cpworker.local.server import LocalCodePipeline

CLIENT = "0b5e4c1e-5b4f-4d7e-9a51-2f1c9d1f0a11"


def test_static_tokens_from_a_file_and_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({CLIENT: "file-token"}))
    assert StaticTokens.from_file(path)(CLIENT) == "file-token"
    assert StaticTokens.from_file(path)("another-client") is None

    monkeypatch.setenv("CPWORKER_CLIENT_TOKENS", json.dumps({CLIENT: "env-token"}))
    assert StaticTokens.from_env()(CLIENT) == "env-token"
    monkeypatch.delenv("CPWORKER_CLIENT_TOKENS")
    assert StaticTokens.from_env()(CLIENT) is None
    assert "env-token" not in repr(StaticTokens({CLIENT: "env-token"}))


def test_a_malformed_mapping_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({CLIENT: ["secret-value"]}))
    with pytest.raises(ValueError, match="must be a JSON object") as caught:
        StaticTokens.from_file(path)
    assert "secret-value" not in str(caught.value)
    path.write_text("{secret-value")
    with pytest.raises(ValueError, match="is not JSON") as caught:
        StaticTokens.from_file(path)
    assert "secret-value" not in str(caught.value)


class Clock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _secrets_manager(aws: Callable[..., Any]) -> Callable[[str, str], None]:
    client = aws("secretsmanager")

    def store(name: str, value: str) -> None:
        try:
            client.put_secret_value(SecretId=name, SecretString=value)
        except client.exceptions.ResourceNotFoundException:
            client.create_secret(Name=name, SecretString=value)

    return store


def _parameter_store(aws: Callable[..., Any]) -> Callable[[str, str], None]:
    client = aws("ssm")

    def store(name: str, value: str) -> None:
        client.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)

    return store


@pytest.mark.parametrize(
    ("resolver", "store"),
    [(SecretsManagerTokens, _secrets_manager), (ParameterStoreTokens, _parameter_store)],
)
def test_stored_tokens_are_cached_for_their_ttl(
    local: LocalCodePipeline,
    aws: Callable[..., Any],
    resolver: type[CachedTokens],
    store: Callable[[Callable[..., Any]], Callable[[str, str], None]],
) -> None:
    # Given a token stored under the client id (a unique template keeps tests apart)
    put = store(aws)
    template = f"/cpw-{uuid.uuid4().hex[:8]}/{{client_id}}"
    clock = Clock()
    tokens = resolver(template, ttl_s=60, endpoint_url=local.endpoint_url, clock=clock)
    name = template.format(client_id=CLIENT)
    put(name, "first-token")
    assert tokens(CLIENT) == "first-token"

    # When it is rotated, the cached token serves until its TTL ends
    put(name, "rotated-token")
    clock.now += 59
    assert tokens(CLIENT) == "first-token"
    clock.now += 2
    assert tokens(CLIENT) == "rotated-token"

    # And an unknown client id is not cached: stored later, it is found at once
    other = "6f1d2c3b-4a59-4e68-8d7c-0b1a2c3d4e5f"
    assert tokens(other) is None
    put(template.format(client_id=other), "late-token")
    assert tokens(other) == "late-token"


def test_a_name_template_must_name_the_client_id() -> None:
    with pytest.raises(ValueError, match=r"must contain \{client_id\}"):
        SecretsManagerTokens("cpworker/one-token-for-all")
