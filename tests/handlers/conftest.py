"""Fixtures for the example handlers run as Lambda invoke actions in the local CodePipeline.

Each function runs in its own subprocess (as in Lambda), configured only by the
environment the local CodePipeline gives it; a test maps a unique FunctionName to
a handler reference (the root ``function`` fixture) and runs a pipeline (S3 source
→ the test's actions).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from cpworker import testing
from cpworker.testing import PipelineRun, zip_bytes

Register = Callable[..., str]
Run = PipelineRun


@pytest.fixture
def start_pipeline(aws: Callable[..., Any]) -> Callable[..., Run]:
    """Factory: a pipeline (S3 source of ``source`` files → ``actions``) and its first run."""

    def start(
        actions: Sequence[dict[str, Any]], source: dict[str, str | bytes] | None = None
    ) -> Run:
        return testing.start_pipeline(
            aws("codepipeline"),
            aws("s3"),
            f"h-{uuid.uuid4().hex[:10]}",
            source=zip_bytes(source or {"README": "hi\n"}),
            actions=actions,
        )

    return start
