"""Client token resolvers: how a third-party job worker proves itself for each customer.

PollForThirdPartyJobs answers only ``{clientId, jobId}``; every later call on the job
(GetThirdPartyJobDetails, AcknowledgeThirdPartyJob, PutThirdPartyJob*Result) needs the
*client token* that CodePipeline shared with the action's provider for that client id.
The app names a resolver, ``ActionApp(client_tokens=...)``: any callable from a client
id to its token, ``None`` for a client id it does not know. Two are built in:

* ``StaticTokens``: a fixed mapping, from code, a JSON file or an environment variable
  (development);
* ``SecretsManagerTokens`` and ``ParameterStoreTokens``: one secret (a SecureString
  parameter) per client id, read with the worker's own AWS credentials and cached for
  ``ttl_s`` (production). A rotated token is read again once its cache entry expires.

A resolver that raises ends the job's processing with a log line naming the exception
type only; tokens are never logged.
"""

from __future__ import annotations

import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ClientTokens = Callable[[str], str | None]
"""A client id → its client token, or ``None`` if the client id is not known."""

DEFAULT_TOKENS_VARIABLE = "CPWORKER_CLIENT_TOKENS"
DEFAULT_TTL_S = 300.0


class StaticTokens:
    """Client tokens from a fixed mapping (development): ``{client id: token}``."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = dict(tokens)

    def __call__(self, client_id: str) -> str | None:
        return self._tokens.get(client_id)

    def __repr__(self) -> str:
        return f"StaticTokens({len(self._tokens)} client ids)"

    @classmethod
    def from_file(cls, path: str | Path) -> StaticTokens:
        """The JSON object ``{"<client id>": "<token>", ...}`` in ``path``."""
        return cls(_mapping(Path(path).read_text(), f"{path}"))

    @classmethod
    def from_env(cls, name: str = DEFAULT_TOKENS_VARIABLE) -> StaticTokens:
        """The JSON object ``{"<client id>": "<token>", ...}`` in the environment variable
        ``name`` (``CPWORKER_CLIENT_TOKENS``); none known when it is not set."""
        text = os.environ.get(name)
        return cls(_mapping(text, f"${name}") if text else {})


def _mapping(text: str, source: str) -> dict[str, str]:
    """``text`` as a JSON object of strings; ValueError naming ``source``, never a value."""
    try:
        tokens = json.loads(text)
    except ValueError:
        raise ValueError(f"{source} is not JSON") from None
    if not isinstance(tokens, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in tokens.items()
    ):
        raise ValueError(f'{source} must be a JSON object {{"<client id>": "<token>", ...}}')
    return tokens


class CachedTokens(ABC):
    """Tokens read from an AWS store by name (``name_template`` with ``{client_id}``,
    default ``default_template``), each kept for ``ttl_s`` seconds; unknown client ids
    are asked again each time.

    ``region``, ``endpoint_url`` and ``profile`` choose the store's client (default:
    the boto3 chain, ``AWS_ENDPOINT_URL`` included); ``clock`` is for tests.
    """

    service: str
    """The boto3 service name of the store."""
    default_template: str

    def __init__(
        self,
        name_template: str | None = None,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        region: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        name_template = name_template or self.default_template
        if "{client_id}" not in name_template:
            raise ValueError(f"name_template {name_template!r} must contain {{client_id}}")
        if ttl_s < 0:
            raise ValueError(f"ttl_s={ttl_s!r} is invalid: give seconds, 0 or more")
        self.name_template = name_template
        self.ttl_s = ttl_s
        self._client_options = {"region": region, "endpoint_url": endpoint_url, "profile": profile}
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}
        self._client: Any = None

    def __call__(self, client_id: str) -> str | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(client_id)
        if cached is not None and now < cached[1]:
            return cached[0]
        token = self._read(self._store(), self.name_template.format(client_id=client_id))
        if token is not None:
            with self._lock:
                self._cache[client_id] = (token, now + self.ttl_s)
        return token

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name_template!r}, ttl_s={self.ttl_s:g})"

    def _store(self) -> Any:
        """The store's boto3 client, made once (boto3 loads only when a token is needed)."""
        with self._lock:
            if self._client is None:
                import boto3

                options = self._client_options
                session = boto3.Session(profile_name=options["profile"])
                self._client = session.client(  # type: ignore[call-overload]
                    self.service,
                    region_name=options["region"],
                    endpoint_url=options["endpoint_url"],
                )
            return self._client

    @abstractmethod
    def _read(self, store: Any, name: str) -> str | None:
        """The token stored as ``name``, or ``None`` if there is none."""


class SecretsManagerTokens(CachedTokens):
    """Each client id's token is the secret string of an AWS Secrets Manager secret,
    ``cpworker/client-tokens/<client id>`` by default. The worker needs
    ``secretsmanager:GetSecretValue`` on those secrets."""

    service = "secretsmanager"
    default_template = "cpworker/client-tokens/{client_id}"

    def _read(self, store: Any, name: str) -> str | None:
        try:
            secret = store.get_secret_value(SecretId=name)
        except store.exceptions.ResourceNotFoundException:
            return None
        value: str | None = secret.get("SecretString")
        return value


class ParameterStoreTokens(CachedTokens):
    """Each client id's token is an SSM Parameter Store parameter (a SecureString),
    ``/cpworker/client-tokens/<client id>`` by default. The worker needs
    ``ssm:GetParameter`` on those parameters and ``kms:Decrypt`` on their key."""

    service = "ssm"
    default_template = "/cpworker/client-tokens/{client_id}"

    def _read(self, store: Any, name: str) -> str | None:
        try:
            parameter = store.get_parameter(Name=name, WithDecryption=True)
        except store.exceptions.ParameterNotFound:
            return None
        value: str = parameter["Parameter"]["Value"]
        return value
