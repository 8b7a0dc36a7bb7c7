"""Fixtures for worker tests: the test app registered in the local CodePipeline,
pipelines that run one of its actions, and in-process workers that poll it."""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cpw_test_apps import app

from cpworker import ActionApp, ActionSpec, testing
from cpworker.api import CodePipelineAPI, RetryPolicy
from cpworker.client_tokens import ClientTokens
from cpworker.local.server import LocalCodePipeline
from cpworker.logs import RedactingFormatter
from cpworker.testing import PipelineRun, custom_action, zip_bytes
from cpworker.worker import Worker, WorkerSettings

APPS_DIR = Path(__file__).parent
DEFAULT_SOURCE = {"README.md": "hello\n", "src/main.py": "print('hi')\n"}


Run = PipelineRun
Executor = Callable[..., dict[str, Any]]


def local_codepipeline(local: LocalCodePipeline, **options: Any) -> Any:
    """A boto3 CodePipeline client of the local CodePipeline (``options``: e.g. ``config``)."""
    import boto3

    return boto3.client(
        "codepipeline",
        endpoint_url=local.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        **options,
    )


@pytest.fixture(scope="session")
def registered(local: LocalCodePipeline) -> None:
    """The test app's action types exist in the local CodePipeline."""
    app.register(local_codepipeline(local))


@pytest.fixture(scope="session")
def fault_types(local: LocalCodePipeline) -> None:
    """The misbehaving actions of ``cpw_fault_apps`` exist in the local CodePipeline."""
    from cpw_fault_apps import app as fault_app

    fault_app.register(local_codepipeline(local))


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


@pytest.fixture
def executor(local: LocalCodePipeline, function: Callable[..., str]) -> Executor:
    """Factory: the app action ``spec`` declared as a ThirdParty type (its definition file,
    with a provider of its own) whose Lambda executor is the function ``ref``; returns a
    pipeline action of that type."""

    def make(
        spec: ActionSpec,
        ref: str,
        configuration: dict[str, str],
        outputs: tuple[str, ...] = (),
        **function_options: Any,
    ) -> dict[str, Any]:
        name = function(ref, **function_options)
        definition = spec.action_type_definition(
            f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        )
        declared = definition["actionType"]
        declared["id"]["provider"] = f"{spec.type_id.provider[:20]}-{uuid.uuid4().hex[:8]}"
        local.engine.register_action_type(declared)
        action = custom_action("Act", provider="-", configuration=configuration, outputs=outputs)
        action["actionTypeId"] = declared["id"]
        return action

    return make


def until(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> Any:
    """Wait for ``condition()`` to be truthy and return it (polls; generous for a loaded
    machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or condition}")


def stopped(pid: int) -> bool:
    """The process no longer runs: no such pid, or a zombie left for its reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def assert_build_output(run: PipelineRun) -> dict[str, Any]:
    """``run``'s action is handlers/build.py's, finished: its output variables name the
    build, which is also the action's external execution; returns the action's output."""
    output: dict[str, Any] = run.action_output()
    variables = output["outputVariables"]
    assert set(variables) == {"RunId", "DurationSeconds", "SourceRevision"}
    assert variables["RunId"].startswith("demo-")
    assert run.action_state()["externalExecutionId"] == variables["RunId"]
    assert output["executionResult"]["externalExecutionSummary"].startswith(
        f"build {variables['RunId']} succeeded in"
    )
    return output


def assert_failed_by_the_timeout_trap(run: PipelineRun, started: float) -> None:
    """``run``'s Lambda action failed promptly, answered by the timeout trap (1 s margin),
    not by Lambda killing it at the timeout nor by the end of the reply window."""
    assert run.wait(timeout_s=30)["status"] == "Failed"
    assert time.monotonic() - started < 15, "answered by the trap, not at the timeout"
    error = run.action_state()["errorDetails"]
    assert error["code"] == "JobFailed"
    assert re.fullmatch(
        r"timed out after \d s, 1 s before the Lambda timeout; use a continuation for long work",
        error["message"],
    ), error["message"]


def assert_leaky_masked(message: str, logs: str, spy_dir: Path) -> None:
    """What the careless ``leaky`` action (cpw_test_apps) leaked shows only as masks: its
    failure ``message`` and the captured ``logs`` hold none of the secrets it spied."""
    assert message.startswith("RuntimeError: login to db.internal with ****")
    secrets = (spy_dir / "secrets").read_text().split()
    assert len(secrets) == 4, "the password and the job's three credentials"
    assert "logging in to db.internal with ****" in logs, "the handler's logs are captured"
    for secret in secrets:
        assert secret not in logs
        assert secret not in message


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
def json_lines() -> Iterator[io.StringIO]:
    """The test's log lines as the worker and the Lambda runtime write them (cpworker's
    redacting JSON formatter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(service="cpworker"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


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
    """Factory: an in-process worker serving the test app (or ``serve``; third-party
    actions with ``client_tokens``), stopped after the test."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(
        *actions: str,
        serve: ActionApp = app,
        client_tokens: ClientTokens | None = None,
        **overrides: Any,
    ) -> Worker:
        settings = fast_settings(
            workspace_root,
            endpoint_url=local.endpoint_url,
            **{"state_dir": state_dir, **overrides},
        )
        api = CodePipelineAPI(aws("codepipeline"), RetryPolicy(attempts=3, backoff_max_s=0.5))
        instance = Worker(api, serve.select(actions), settings, client_tokens)
        thread = threading.Thread(target=instance.run, daemon=True)
        thread.start()
        started.append((instance, thread))
        return instance

    yield start
    for instance, thread in started:
        instance.shutdown()
        thread.join(timeout=15)
        assert not thread.is_alive(), "a worker did not stop"
