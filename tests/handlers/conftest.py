"""Fixtures for the example handlers run as Lambda invoke actions in the local CodePipeline.

Each function runs in its own subprocess (as in Lambda), configured only by the
environment the local CodePipeline gives it; a test maps a unique FunctionName to
a handler reference and runs a pipeline (S3 source → the test's actions).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from cpworker.local.server import LocalCodePipeline
from cpworker.testing import (
    action_execution,
    action_state,
    pipeline_declaration,
    upload_source,
    wait_for_execution,
    zip_bytes,
)

Register = Callable[..., str]


@dataclass(frozen=True)
class Run:
    """A pipeline a test started, and what its actions did."""

    name: str
    execution_id: str
    codepipeline: Any

    def wait(self, timeout_s: float = 60.0) -> dict[str, Any]:
        return wait_for_execution(
            self.codepipeline, self.name, self.execution_id, timeout_s=timeout_s
        )

    def state(self, action: str) -> dict[str, Any]:
        """GetPipelineState's latest execution of ``action`` (summary, errorDetails, ...)."""
        return action_state(self.codepipeline, self.name, action)

    def output(self, action: str) -> dict[str, Any]:
        """ListActionExecutions' output of ``action`` (outputVariables, executionResult)."""
        detail = action_execution(self.codepipeline, self.name, self.execution_id, action)
        return dict(detail.get("output", {}))


@pytest.fixture
def function(local: LocalCodePipeline) -> Iterator[Register]:
    """Map a unique FunctionName to a handler reference (``module:attr`` or ``file.py:attr``)."""
    names: list[str] = []

    def register(handler_ref: str, **options: Any) -> str:
        name = f"fn-{uuid.uuid4().hex[:10]}"
        local.engine.register_function(name, handler_ref, **options)
        names.append(name)
        return name

    yield register
    for name in names:
        local.engine.unregister_function(name)


@pytest.fixture
def start_pipeline(aws: Callable[..., Any]) -> Callable[..., Run]:
    """Factory: a pipeline (S3 source of ``source`` files → ``actions``) and its first run."""

    def start(
        actions: Sequence[dict[str, Any]], source: dict[str, str | bytes] | None = None
    ) -> Run:
        name = f"h-{uuid.uuid4().hex[:10]}"
        s3, codepipeline = aws("s3"), aws("codepipeline")
        upload_source(s3, f"{name}-src", "source.zip", zip_bytes(source or {"README": "hi\n"}))
        s3.create_bucket(Bucket=f"{name}-store")
        codepipeline.create_pipeline(
            pipeline=pipeline_declaration(
                name,
                artifact_bucket=f"{name}-store",
                source_bucket=f"{name}-src",
                source_key="source.zip",
                actions=actions,
            )
        )
        summaries = codepipeline.list_pipeline_executions(pipelineName=name)
        return Run(
            name, summaries["pipelineExecutionSummaries"][0]["pipelineExecutionId"], codepipeline
        )

    return start
