"""cpworker's pytest plugin (entry point ``pytest11``): fixtures for testing actions.

- ``local_codepipeline``: an in-process ``cpworker local`` on a free loopback port, for
  the session, with boto3 clients (``codepipeline``, ``s3``, ``kms``; ``client(name)``
  for others), a bucket and a KMS key (``cpworker.testing_local.LocalAWS``).
- ``make_job``: ``Job`` objects to call a handler with directly, and Lambda events,
  with no network (``cpworker.testing_jobs.JobMaker``).
- ``run_action``: runs a handler through a real one-action pipeline on
  ``local_codepipeline`` and returns its end (``cpworker.testing_local.ActionRun``).

Importing this module imports nothing else of cpworker: pytest loads it for every run
in an environment where cpworker is installed, so the fixtures import what they use.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cpworker.testing_jobs import JobMaker
    from cpworker.testing_local import ActionRun, LocalAWS


@pytest.fixture(scope="session")
def local_codepipeline() -> Iterator[LocalAWS]:
    """A local CodePipeline for the test session (loopback, dummy credentials)."""
    from cpworker.testing_local import local_aws

    with local_aws() as local:
        yield local


@pytest.fixture
def make_job(tmp_path: Path) -> Iterator[JobMaker]:
    """``make_job(app, config=..., inputs=..., outputs=..., continuation=...)`` → a Job;
    ``make_job.output(job, name)`` → the uploaded output, extracted;
    ``make_job.event(...)`` → a Lambda event."""
    from cpworker.testing_jobs import JobMaker

    maker = JobMaker(tmp_path / "make_job")
    yield maker
    maker.close()


@pytest.fixture
def run_action(
    local_codepipeline: LocalAWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., ActionRun]:
    """``run_action(app, config=..., source=..., outputs=...)`` → the run's ``ActionRun``.

    While the test runs, boto3's environment names the local endpoint and dummy
    credentials, so the handler's own clients never reach AWS.
    """
    from cpworker import testing_local

    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in testing_local.DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_codepipeline.endpoint_url)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

    def run(*args: Any, **options: Any) -> ActionRun:
        workdir = tmp_path / "run_action" / uuid.uuid4().hex[:8]
        return testing_local.run_action(local_codepipeline, *args, workdir=workdir, **options)

    return run
