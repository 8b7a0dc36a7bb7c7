"""The Lab: a test's corner of the shared local CodePipeline. It creates uniquely
named action types and pipelines, acts as a job worker by hand, and cleans up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from cpworker.testing import (
    action_state,
    custom_action,
    start_pipeline,
    wait_for_execution,
    zip_bytes,
)

SOURCE_FILES = {"README.md": "hello\n", "src/app.py": "print('hi')\n"}
AWS_CLI = os.path.join(os.path.dirname(sys.executable), "aws")


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def local_process(*options: str, cwd: Path | None = None) -> Iterator[tuple[Any, str, int]]:
    """``cpworker local`` as a real process on a free port, with ``options``: yields the
    process, its "ready" line and the port once it is ready; killed afterwards if the
    test has not stopped it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cpworker.cli", "local", "--port", str(port), *options],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline().strip(), port
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def aws_cli(endpoint_url: str, *args: str) -> tuple[int, Any, str]:
    """Run the real AWS CLI against the local endpoint: (exit code, JSON answer, stderr)."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    command = [AWS_CLI, *args, "--endpoint-url", endpoint_url, "--region", "us-east-1"]
    done = subprocess.run(
        [*command, "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    answer = json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None
    return done.returncode, answer, done.stderr


@dataclass
class Lab:
    """One test's corner of the shared server."""

    codepipeline: Any
    s3: Any
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    action_types: list[dict[str, str]] = field(default_factory=list)
    pipelines: list[str] = field(default_factory=list)

    def action_type(
        self,
        name: str = "Act",
        *,
        properties: list[dict[str, Any]] | None = None,
        inputs: tuple[int, int] = (1, 1),
        outputs: tuple[int, int] = (0, 1),
        settings: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Create a custom Build action type with a unique provider; its ActionTypeId."""
        provider = f"{name}-{self.uid}"
        self.codepipeline.create_custom_action_type(
            category="Build",
            provider=provider,
            version="1",
            settings=settings or {},
            configurationProperties=properties or [],
            inputArtifactDetails={"minimumCount": inputs[0], "maximumCount": inputs[1]},
            outputArtifactDetails={"minimumCount": outputs[0], "maximumCount": outputs[1]},
        )
        type_id = {"category": "Build", "owner": "Custom", "provider": provider, "version": "1"}
        self.action_types.append(type_id)
        return type_id

    def pipeline(
        self,
        actions: list[dict[str, Any]],
        *,
        source: bytes | None = None,
        encryption_key_id: str | None = None,
        suffix: str = "p",
    ) -> tuple[str, str]:
        """Create buckets, the source object and a pipeline; (name, first execution id)."""
        name = f"{suffix}-{self.uid}"
        run = start_pipeline(
            self.codepipeline,
            self.s3,
            name,
            source=source or zip_bytes(SOURCE_FILES),
            actions=actions,
            encryption_key_id=encryption_key_id,
        )
        self.pipelines.append(name)
        return name, run.execution_id

    @staticmethod
    def action(type_id: dict[str, str], name: str = "Build", **kwargs: Any) -> dict[str, Any]:
        """An action declaration of an action type made by `action_type`."""
        return custom_action(name, provider=type_id["provider"], **kwargs)

    def executions(self, name: str) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = self.codepipeline.list_pipeline_executions(
            pipelineName=name
        )["pipelineExecutionSummaries"]
        return summaries

    def poll(
        self,
        type_id: dict[str, str],
        *,
        count: int = 1,
        query: dict[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Poll until `count` jobs have been dispatched (raises after `timeout_s`)."""
        jobs: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(jobs) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(jobs)} of {count} jobs for {type_id} after {timeout_s}s")
            jobs += self.codepipeline.poll_for_jobs(
                actionTypeId=type_id, maxBatchSize=count - len(jobs), queryParam=query or {}
            )["jobs"]
            time.sleep(0.02)
        return jobs

    def job_s3(self, data: dict[str, Any]) -> Any:
        """An S3 client signing with a job's own artifact credentials, as a worker does."""
        credentials = data["artifactCredentials"]
        return boto3.client(
            "s3",
            endpoint_url=self.s3.meta.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=credentials["accessKeyId"],
            aws_secret_access_key=credentials["secretAccessKey"],
            aws_session_token=credentials["sessionToken"],
        )

    def claim(self, type_id: dict[str, str], **kwargs: Any) -> dict[str, Any]:
        """Poll one job and acknowledge it, as a worker does."""
        job = self.poll(type_id, **kwargs)[0]
        ack = self.codepipeline.acknowledge_job(jobId=job["id"], nonce=job["nonce"])
        assert ack["status"] == "InProgress"
        return job

    @staticmethod
    def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Sleep until `condition()` holds (raises after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition still false after {timeout_s}s")
            time.sleep(0.02)

    def wait(self, name: str, execution_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
        return wait_for_execution(self.codepipeline, name, execution_id, timeout_s=timeout_s)

    def action_state(self, name: str, action: str) -> dict[str, Any]:
        """GetPipelineState's latestExecution of one action."""
        return action_state(self.codepipeline, name, action)

    def action_executions(self, name: str, execution_id: str) -> dict[str, dict[str, Any]]:
        """ListActionExecutions of one execution, by action name."""
        details = self.codepipeline.list_action_executions(
            pipelineName=name, filter={"pipelineExecutionId": execution_id}
        )["actionExecutionDetails"]
        return {d["actionName"]: d for d in details}

    def cleanup(self) -> None:
        for name in self.pipelines:
            self.codepipeline.delete_pipeline(name=name)
        for type_id in self.action_types:
            self.codepipeline.delete_custom_action_type(
                category=type_id["category"],
                provider=type_id["provider"],
                version=type_id["version"],
            )
