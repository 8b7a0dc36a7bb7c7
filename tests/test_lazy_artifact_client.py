"""A job's artifact S3 client is made on first use, once, and shared by its artifacts.

Counting client creation is what a user would care about here: every client costs
milliseconds of CPU per job, so a handler that touches no artifact must build none.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from cpworker import ActionApp, Job, Success
from cpworker.artifacts import LazyClient
from cpworker.logs import logger
from cpworker.model import ArtifactCredentials, JobEnvelope
from cpworker.sources import jobdata
from cpworker.sources.jobdata import JobContext, build_job

app = ActionApp()


@app.action(category="Test", provider="CpwLazy", inputs=(0, 2), outputs=(0, 1))
def lazy(job: Job[Any]) -> Success:
    return Success()


SPEC = next(iter(app))


def envelope() -> JobEnvelope:
    """A job with two inputs and one output, and credentials to read them."""

    def ref(name: str) -> dict[str, Any]:
        location = {"bucketName": "store", "objectKey": f"p/{name}"}
        return {"name": name, "location": {"type": "S3", "s3Location": location}}

    return JobEnvelope.model_validate(
        {
            "id": "job-1",
            "data": {
                "inputArtifacts": [ref("A"), ref("B")],
                "outputArtifacts": [ref("Out")],
                "artifactCredentials": {
                    "accessKeyId": "AKIAEXAMPLELAZY12345",
                    "secretAccessKey": "lazy-secret",
                    "sessionToken": "lazy-token",
                },
            },
        }
    )


@pytest.fixture
def made(mocker: MockerFixture) -> Any:
    """The artifact client factory, counted (it still builds real clients)."""
    return mocker.patch.object(jobdata, "artifact_s3_client", wraps=jobdata.artifact_s3_client)


def context(tmp_path: Path, **options: Any) -> JobContext:
    return JobContext(
        workspace=tmp_path,
        deadline_s=60,
        log=logger(),
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        **options,
    )


def test_a_job_that_touches_no_artifact_builds_no_client(made: Any, tmp_path: Path) -> None:
    job = build_job(envelope(), SPEC, context(tmp_path))
    assert job.inputs.names == ["A", "B"]
    assert job.outputs.one().name == "Out"
    assert made.call_count == 0


def test_the_first_use_builds_one_client_for_every_artifact(made: Any, tmp_path: Path) -> None:
    job = build_job(envelope(), SPEC, context(tmp_path))
    clients = {id(artifact._client) for artifact in [*job.inputs, *job.outputs]}
    assert made.call_count == 1
    assert len(clients) == 1


def test_a_late_first_use_starts_from_fresh_credentials(made: Any, tmp_path: Path) -> None:
    fresh = ArtifactCredentials.model_validate(
        {"accessKeyId": "AKIAEXAMPLEFRESH1234", "secretAccessKey": "fresh-secret"}
    )
    # A refresh period of 0 s: by the first use, the job's own credentials are too old
    job = build_job(
        envelope(),
        SPEC,
        context(tmp_path, refresh_credentials=lambda: fresh, credential_refresh_s=0),
    )
    job.inputs["A"]._client  # noqa: B018 - the first use
    assert made.call_args.kwargs["access_key_id"] == "AKIAEXAMPLEFRESH1234"


def test_racing_threads_share_one_client() -> None:
    calls: list[int] = []
    started = threading.Barrier(8)

    def make() -> Any:
        calls.append(1)
        return object()

    lazy_client = LazyClient(make)
    seen: list[Any] = []

    def use() -> None:
        started.wait()
        seen.append(lazy_client.get())

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len({id(client) for client in seen}) == 1
