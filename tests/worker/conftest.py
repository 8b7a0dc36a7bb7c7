"""Fixtures for worker tests: the test app registered in the local CodePipeline,
pipelines that run one of its actions, and in-process workers that poll it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cpw_test_apps import app

from cpworker import ActionApp, testing
from cpworker.api import CodePipelineAPI, RetryPolicy
from cpworker.local.server import LocalCodePipeline
from cpworker.testing import PipelineRun, custom_action, zip_bytes
from cpworker.worker import Worker, WorkerSettings

APPS_DIR = Path(__file__).parent
DEFAULT_SOURCE = {"README.md": "hello\n", "src/main.py": "print('hi')\n"}


Run = PipelineRun


@pytest.fixture(scope="session")
def registered(local: LocalCodePipeline) -> None:
    """The test app's action types exist in the local CodePipeline."""
    import boto3

    client = boto3.client(
        "codepipeline",
        endpoint_url=local.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    app.register(client)


@pytest.fixture(scope="session")
def fault_types(local: LocalCodePipeline) -> None:
    """The misbehaving actions of ``cpw_fault_apps`` exist in the local CodePipeline."""
    import boto3
    from cpw_fault_apps import app as fault_app

    fault_app.register(
        boto3.client(
            "codepipeline",
            endpoint_url=local.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    )


@pytest.fixture
def start_pipeline(aws: Callable[..., Any], registered: None) -> Callable[..., Run]:
    """Factory: a new pipeline (S3 source → one action named Act) and its first execution.

    The action is a custom action of ``provider`` unless a declaration is given.
    """

    def start(
        provider: str,
        configuration: dict[str, str] | None = None,
        *,
        source: bytes | None = None,
        outputs: tuple[str, ...] = (),
        encryption_key_id: str | None = None,
        category: str = "Test",
        action: dict[str, Any] | None = None,
    ) -> Run:
        name = f"t-{provider.lower()}-{uuid.uuid4().hex[:8]}"
        action = action or custom_action(
            "Act",
            provider=provider,
            category=category,
            configuration=configuration or {},
            outputs=outputs,
        )
        return testing.start_pipeline(
            aws("codepipeline"),
            aws("s3"),
            name,
            source=source or zip_bytes(DEFAULT_SOURCE),
            actions=[action],
            encryption_key_id=encryption_key_id,
        )

    return start


def fast_settings(root: Path, **overrides: Any) -> WorkerSettings:
    base: dict[str, Any] = {
        "concurrency": 4,
        "poll_interval_min_s": 0.05,
        "poll_interval_max_s": 0.2,
        "drain_timeout_s": 5.0,
        "workspace_root": root,
    }
    return WorkerSettings(**{**base, **overrides})


@pytest.fixture
def workspace_root(tmp_path: Path) -> Path:
    return tmp_path / "workspaces"


@pytest.fixture
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker's journal, outside the test's tmp_path (which tests check stays clean)."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture
def spy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "spy"
    folder.mkdir()
    monkeypatch.setenv("CPW_TEST_SPY_DIR", str(folder))
    return folder


@pytest.fixture
def worker(
    aws: Callable[..., Any], local: LocalCodePipeline, workspace_root: Path, state_dir: Path
) -> Iterator[Callable[..., Worker]]:
    """Factory: an in-process worker serving the test app, stopped after the test."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(*actions: str, serve: ActionApp = app, **overrides: Any) -> Worker:
        settings = fast_settings(
            workspace_root,
            endpoint_url=local.endpoint_url,
            **{"state_dir": state_dir, **overrides},
        )
        api = CodePipelineAPI(aws("codepipeline"), RetryPolicy(attempts=3, backoff_max_s=0.5))
        instance = Worker(api, serve.select(actions), settings)
        thread = threading.Thread(target=instance.run, daemon=True)
        thread.start()
        started.append((instance, thread))
        return instance

    yield start
    for instance, thread in started:
        instance.shutdown()
        thread.join(timeout=15)
        assert not thread.is_alive(), "a worker did not stop"
