"""Fixtures for the local CodePipeline tests: a `lab` per test, and `tune` for timings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cpw_local_lab import Lab

from cpworker.local.server import LocalCodePipeline


@pytest.fixture
def lab(aws: Callable[..., Any]) -> Iterator[Lab]:
    """A Lab on the shared server; deletes its pipelines and action types afterwards."""
    created = Lab(aws("codepipeline"), aws("s3"))
    yield created
    created.cleanup()


@pytest.fixture
def tune(local: LocalCodePipeline) -> Iterator[Callable[..., None]]:
    """Change engine settings for one test (e.g. short timers); restored afterwards."""
    original = local.engine.settings

    def change(**changes: Any) -> None:
        local.engine.configure(**changes)

    yield change
    local.engine.configure(**dataclasses.asdict(original))
