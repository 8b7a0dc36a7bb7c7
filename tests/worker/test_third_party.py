"""Third-party jobs through ``cpworker serve`` (a real subprocess) and a local CodePipeline:
the client token found in Secrets Manager, the same outcomes as a custom action's, a
refused or unknown token that stops only its own job, and restart resolution."""

from __future__ import annotations

import io
import sqlite3
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from conftest import DEFAULT_SOURCE, Run, until
from cpw_third_party import declare_spec
from cpw_third_party_apps import app as partner_app
from pytest_mock import MockerFixture
from test_serve import Serve

from cpworker import ActionApp, testing
from cpworker.client_tokens import StaticTokens
from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline
from cpworker.local.thirdparty import ClientPair
from cpworker.worker import Worker, WorkerSettings

APP = "cpw_third_party_apps:app"


@dataclass(frozen=True)
class Partner:
    """A pipeline running the partner's action (named Act), and the action's client."""

    run: Run
    client: ClientPair


@pytest.fixture(scope="session")
def partner_type(local: LocalCodePipeline) -> None:
    """The app's third-party action type is declared in the local CodePipeline."""
    declare_spec(local.engine, partner_app["partner"])


@pytest.fixture
def start_partner(
    local: LocalCodePipeline, aws: Callable[..., Any], partner_type: None
) -> Callable[..., Partner]:
    """Factory: a pipeline whose action Act runs ``mode``; its client token is stored in
    Secrets Manager first (``token``: another value stored instead; None: none stored)."""

    def start(mode: str, *, token: str | None = "", outputs: tuple[str, ...] = ()) -> Partner:
        name = f"tp-{mode}-{uuid.uuid4().hex[:8]}"
        client = local.engine.third_party_client(name, "Build", "Act")
        if token is not None:
            aws("secretsmanager").create_secret(
                Name=f"cpworker/client-tokens/{client.client_id}",
                SecretString=token or client.client_token,
            )
        action = testing.custom_action(
            "Act", provider="CpwPartner", configuration={"Mode": mode}, outputs=outputs
        )
        action["actionTypeId"]["owner"] = "ThirdParty"
        run = testing.start_pipeline(
            aws("codepipeline"),
            aws("s3"),
            name,
            source=testing.zip_bytes(DEFAULT_SOURCE),
            actions=[action],
        )
        return Partner(run, client)

    return start


@pytest.fixture
def serve(
    local: LocalCodePipeline, spy_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str, state_dir: Path | None = None) -> Serve:
        log_file = tmp_path / f"serve-{len(started)}.log"
        process = Serve(local, spy_dir, log_file, *args, app=APP, state_dir=state_dir)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def tokens_of(*partners: Partner) -> StaticTokens:
    """A development resolver that knows the client tokens of ``partners``."""
    return StaticTokens({p.client.client_id: p.client.client_token for p in partners})


def _no_token_in(worker: Serve, *partners: Partner) -> None:
    text = worker.log_file.read_text()
    for partner in partners:
        assert partner.client.client_token not in text


@pytest.mark.e2e
def test_third_party_jobs_have_the_outcomes_of_custom_ones(
    serve: Callable[..., Serve],
    start_partner: Callable[..., Partner],
    aws: Callable[..., Any],
    local: LocalCodePipeline,
) -> None:
    # Given a worker, and four pipelines running the partner's action
    worker = serve()
    build = start_partner("build", outputs=("Built",))
    steps = start_partner("steps")
    fail = start_partner("fail")
    variables = start_partner("variables")

    # Then a success uploads its output artifact, and the job knew no account, ARN or execution
    assert build.run.wait()["status"] == "Succeeded"
    assert build.run.action_state()["summary"] == (
        f"built for {build.run.name}/Act; account None, pipeline ARN None, execution None"
    )
    location = build.run.action_output()["outputArtifacts"][0]["s3location"]
    built = aws("s3").get_object(Bucket=location["bucket"], Key=location["key"])
    assert built["ServerSideEncryption"] == "aws:kms"
    with zipfile.ZipFile(io.BytesIO(built["Body"].read())) as archive:
        assert archive.read("README.md").decode() == DEFAULT_SOURCE["README.md"]

    # And a continuation takes two jobs
    assert steps.run.wait()["status"] == "Succeeded"
    assert steps.run.action_state()["summary"].startswith("step 2 of 2, after job ")
    counts = call_private(local.endpoint_url, "GetResultCounts", {})
    execution = next(e for e in counts["actionExecutions"] if e["pipelineName"] == steps.run.name)
    assert (execution["steps"], execution["accepted"]) == (2, {"continuation": 1, "success": 1})

    # And a typed failure keeps its type
    assert fail.run.wait()["status"] == "Failed"
    error = fail.run.action_state()["errorDetails"]
    assert (error["code"], error["message"]) == (
        "ConfigurationError",
        "the partner's service has no project for this pipeline",
    )

    # And output variables, which the third-party API cannot carry, fail the job clearly
    assert variables.run.wait()["status"] == "Failed"
    error = variables.run.action_state()["errorDetails"]
    assert error["code"] == "JobFailed"
    assert error["message"].startswith(
        "output variables (RunId) are not part of the third-party job API"
    )

    # And every result went through the third-party API, and no client token was logged
    reported = [line for line in worker.lines() if line.get("message") == "result reported"]
    assert len(reported) == 5
    jobs = [j for j in counts["jobs"] if j.get("pipelineName", "").startswith("tp-")]
    assert {op for job in jobs for op in job["received"]} <= {
        "PutThirdPartyJobSuccessResult",
        "PutThirdPartyJobFailureResult",
    }
    _no_token_in(worker, build, steps, fail, variables)


@pytest.mark.e2e
def test_a_refused_or_unknown_client_token_stops_only_its_job(
    serve: Callable[..., Serve], start_partner: Callable[..., Partner]
) -> None:
    # Given jobs whose stored token is wrong, or whose client id has no token at all
    worker = serve()
    wrong = start_partner("build", token="an-outdated-token-0123456789")
    unknown = start_partner("build", token=None)
    good = start_partner("build")

    # Then the worker carries on with the others
    assert good.run.wait()["status"] == "Succeeded"

    # And each of those jobs ends with one clear line, naming the client and not the token
    def errors_of(partner: Partner) -> list[dict[str, Any]]:
        return [
            line
            for line in worker.lines()
            if line.get("level") in ("ERROR", "CRITICAL")
            and line.get("client_id") == partner.client.client_id
        ]

    refused = until(lambda: errors_of(wrong), what="the refused token's log line")
    assert {line["message"] for line in refused} == {
        "CodePipeline refused the client token of this job's client id: the app's "
        "client_tokens resolver gave a wrong or outdated token; the job is left to "
        "CodePipeline"
    }
    assert refused[0]["error"] == "InvalidClientTokenException"
    missing = until(lambda: errors_of(unknown), what="the unknown client's log line")
    assert {line["message"] for line in missing} == {
        f"no client token for client id {unknown.client.client_id}: the app's client_tokens "
        "resolver does not know it; the job is left to CodePipeline"
    }
    assert wrong.run.action_state()["status"] == "InProgress"
    assert unknown.run.action_state()["status"] == "InProgress"
    assert "an-outdated-token-0123456789" not in worker.log_file.read_text()
    _no_token_in(worker, wrong, unknown, good)


@pytest.mark.e2e
def test_kill_9_then_restart_reports_the_third_party_job_with_its_client_token(
    serve: Callable[..., Serve],
    start_partner: Callable[..., Partner],
    spy_dir: Path,
    tmp_path: Path,
    local: LocalCodePipeline,
) -> None:
    # Given a worker killed with SIGKILL while its third-party job runs
    state = tmp_path / "shared-state"
    first = serve(state_dir=state)
    hang = start_partner("hang")
    until(lambda: (spy_dir / "started").exists(), what="the job to start")
    first.process.kill()
    first.process.wait()

    # When a worker starts again on the same state directory
    second = serve(state_dir=state)

    # Then it resolves the client token again and fails the job through the third-party API
    assert hang.run.wait()["status"] == "Failed"
    error = hang.run.action_state()["errorDetails"]
    assert error["code"] == "SystemUnavailable"
    assert error["message"].startswith("the worker stopped unexpectedly while running this job")
    second.wait_for("resolving a job of a worker that stopped unexpectedly")
    counts = call_private(local.endpoint_url, "GetResultCounts", {"pipelineName": hang.run.name})
    (job,) = counts["jobs"]
    assert job["received"] == {"PutThirdPartyJobFailureResult": 1}
    _no_token_in(first, hang)
    _no_token_in(second, hang)


def test_a_report_that_cannot_be_sent_stays_in_the_journal_without_its_token(
    start_partner: Callable[..., Partner],
    worker: Callable[..., Worker],
    mocker: MockerFixture,
    caplog: pytest.LogCaptureFixture,
    state_dir: Path,
) -> None:
    # Given a third-party job whose failure cannot be reported
    partner = start_partner("fail", token=None)
    instance = worker("partner", serve=partner_app, client_tokens=tokens_of(partner))
    mocker.patch.object(
        instance.api.client,
        "put_third_party_job_failure_result",
        side_effect=EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    )
    critical = until(lambda: [r for r in caplog.records if r.levelname == "CRITICAL"])
    assert critical[0].getMessage() == "could not report the result"
    # Then the journal keeps what a restart needs to send it: the client id, not the token
    with sqlite3.connect(state_dir / "journal.sqlite3") as db:
        rows = db.execute("SELECT state, operation, client_id FROM jobs").fetchall()
    assert rows == [("decided", "PutThirdPartyJobFailureResult", partner.client.client_id)]
    token = partner.client.client_token.encode()
    assert not [path for path in state_dir.iterdir() if token in path.read_bytes()]
    assert not [r for r in caplog.records if partner.client.client_token in r.getMessage()]


def test_a_third_party_job_outliving_its_credentials_renews_them_with_its_token(
    start_partner: Callable[..., Partner],
    worker: Callable[..., Worker],
    local: LocalCodePipeline,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = local.engine.settings.credential_ttl_s
    local.engine.configure(credential_ttl_s=1.5)
    try:
        partner = start_partner("outlive", token=None, outputs=("Built",))
        worker(
            "partner",
            serve=partner_app,
            client_tokens=tokens_of(partner),
            credential_refresh_s=0.5,
        )
        assert partner.run.wait()["status"] == "Succeeded"
    finally:
        local.engine.configure(credential_ttl_s=original)
    assert [r for r in caplog.records if r.getMessage() == "artifact credentials refreshed"]


def test_third_party_actions_need_a_token_resolver_and_are_not_registered(
    tmp_path: Path, aws: Callable[..., Any]
) -> None:
    bare = ActionApp()
    bare.action(category="Build", provider="CpwNoTokens", owner="ThirdParty")(
        partner_app["partner"].handler
    )
    with pytest.raises(ValueError, match=r"give the app a resolver, ActionApp\(client_tokens="):
        Worker(object(), list(bare), WorkerSettings(state_dir=tmp_path))  # type: ignore[arg-type]
    assert bare.register(aws("codepipeline")) == []
    with pytest.raises(ValueError, match="owner='Partner' is invalid"):
        bare.action(category="Build", provider="CpwOwner", owner="Partner")  # type: ignore[arg-type]
