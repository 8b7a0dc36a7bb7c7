"""Shared fixtures: a real local CodePipeline on loopback, and boto3 clients bound to it."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from cpworker.local.engine import EngineSettings
from cpworker.local.server import LocalCodePipeline

REGION = "us-east-1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach real AWS: dummy credentials, no profile, no config files."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


FAST_SETTINGS = EngineSettings(
    continuation_delay_s=0.2,
    redispatch_after_s=2.0,
    job_timeout_s=60.0,
    tick_s=0.05,
)


@pytest.fixture(scope="session")
def local() -> Iterator[LocalCodePipeline]:
    """One real `cpworker local` server on a free loopback port for the whole session."""
    server = LocalCodePipeline(settings=FAST_SETTINGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws(local: LocalCodePipeline) -> Callable[..., Any]:
    """Factory for boto3 clients that talk only to the local server."""

    def client(service: str, **kwargs: Any) -> Any:
        config = Config(retries={"max_attempts": 2, "mode": "standard"})
        if service == "s3":
            config = config.merge(Config(s3={"addressing_style": "path"}))
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=local.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
            **kwargs,
        )

    return client


@pytest.fixture
def function(local: LocalCodePipeline) -> Iterator[Callable[..., str]]:
    """Factory: map a unique FunctionName to a handler reference; unmapped afterwards.

    ``function("module:attr" or "path/file.py:attr", timeout_s=..., environment=...)``.
    """
    names: list[str] = []

    def register(handler_ref: str, **options: Any) -> str:
        name = f"fn-{uuid.uuid4().hex[:10]}"
        local.engine.register_function(name, handler_ref, **options)
        names.append(name)
        return name

    yield register
    for name in names:
        local.engine.unregister_function(name)


class _Recorder(logging.Handler):
    """Keeps every formatted log line of the session, for the credentials scan."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _issued_credentials() -> set[str]:
    """Every temporary credential moto's STS issued this session (the jobs' own)."""
    from moto.sts.models import sts_backends

    found: set[str] = set()
    for account in sts_backends.values():
        for backend in account.values():
            for role in backend.assumed_roles:
                found |= {role.access_key_id, role.secret_access_key, role.session_token}
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_credentials_in_any_log_line() -> Iterator[None]:
    """After the whole session: no captured log line carries a job's artifact credentials."""
    recorder = _Recorder()
    recorder.setFormatter(logging.Formatter("%(name)s %(message)s %(exc_text)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(recorder)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(recorder)
    root.setLevel(previous)
    issued = _issued_credentials()  # empty when only unit tests ran
    leaks = [line for line in recorder.lines if any(secret in line for secret in issued)]
    assert leaks == [], f"{len(leaks)} log lines carry artifact credentials: {leaks[:3]}"
