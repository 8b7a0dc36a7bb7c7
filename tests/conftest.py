"""Shared fixtures: a real local CodePipeline on loopback, and boto3 clients bound to it."""

from __future__ import annotations

import os
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
