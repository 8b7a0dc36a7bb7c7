"""Issue 7's acceptance: one decorated handler (``cpw_four_runtimes_app.four``) gives the
same outcomes in the four runtimes against a real ``cpworker local``: the custom-action
worker, the third-party worker (the same function declared with ``owner="ThirdParty"``),
the Lambda invoke action and the Lambda integration model (``handler``, its Lambda entry
point, run in a process of its own). The one difference is the third-party API's: it has
no output variables."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS_DIR, DEFAULT_SOURCE, Executor, Run, local_codepipeline
from cpw_four_runtimes_app import app as four_app
from cpw_third_party import declare_spec

from cpworker.client_tokens import StaticTokens
from cpworker.local.server import LocalCodePipeline
from cpworker.testing import custom_action, lambda_action
from cpworker.worker import Worker

HANDLER = f"{APPS_DIR / 'cpw_four_runtimes_app.py'}:handler"
API_KEY = "correct-horse-battery-staple"
RUNTIMES = ["custom", "third-party", "lambda-invoke", "lambda-integration"]


@pytest.fixture(scope="session")
def four_types(local: LocalCodePipeline) -> None:
    """The custom action type exists, and the third-party one is declared (a job worker's)."""
    four_app.register(local_codepipeline(local))
    declare_spec(local.engine, four_app["four_partner"])


@dataclass
class Runtime:
    """One runtime of the handler: ``run(mode)`` starts a pipeline whose action Act runs it
    there (and, for the worker runtimes, a worker serving it)."""

    name: str
    key_id: str
    start_pipeline: Callable[..., Run]
    worker: Callable[..., Worker]
    function: Callable[..., str]
    executor: Executor
    local: LocalCodePipeline
    spy_dir: Path
    client_tokens: list[str] = field(default_factory=list)

    def run(self, mode: str, outputs: tuple[str, ...] = ()) -> Run:
        configuration = {"Mode": mode, "ApiKey": API_KEY}
        key = {"encryption_key_id": self.key_id}
        environment = {"CPW_TEST_SPY_DIR": str(self.spy_dir)}
        if self.name == "custom":
            run = self.start_pipeline(
                "CpwFour", configuration, category="Build", outputs=outputs, **key
            )
            self.worker("four", serve=four_app)
        elif self.name == "third-party":
            action = custom_action(
                "Act", provider="CpwFourPartner", configuration=configuration, outputs=outputs
            )
            action["actionTypeId"]["owner"] = "ThirdParty"
            run = self.start_pipeline("partner", action=action, **key)
            client = self.local.engine.third_party_client(run.name, "Build", "Act")
            self.client_tokens.append(client.client_token)
            tokens = StaticTokens({client.client_id: client.client_token})
            self.worker("four_partner", serve=four_app, client_tokens=tokens)
        elif self.name == "lambda-invoke":
            name = self.function(HANDLER, environment=environment)
            parameters = json.dumps(configuration)
            action = lambda_action(
                "Act", function_name=name, user_parameters=parameters, outputs=outputs
            )
            run = self.start_pipeline("invoke", action=action, **key)
        else:
            action = self.executor(
                four_app["four"], HANDLER, configuration, outputs, environment=environment
            )
            run = self.start_pipeline("integration", action=action, **key)
        return run

    def assert_nothing_secret_logged(
        self, caplog: pytest.LogCaptureFixture, json_lines: io.StringIO
    ) -> None:
        """No artifact credential, secret property value or client token in the log records
        nor in the JSON lines the worker writes, though the handler logged them."""
        assert "signing in with ****" in caplog.text, "the handler's log lines are captured"
        secrets = set((self.spy_dir / "secrets").read_text().split())
        assert API_KEY in secrets
        assert len(secrets) >= 4, "the secret value and the three artifact credentials"
        for secret in [*secrets, *self.client_tokens]:
            assert secret not in caplog.text
            assert secret not in json_lines.getvalue()


@pytest.fixture(params=RUNTIMES)
def runtime(
    request: pytest.FixtureRequest,
    four_types: None,
    aws: Callable[..., Any],
    start_pipeline: Callable[..., Run],
    worker: Callable[..., Worker],
    function: Callable[..., str],
    executor: Executor,
    local: LocalCodePipeline,
    spy_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> Runtime:
    caplog.set_level(logging.INFO)
    key_id = aws("kms").create_key()["KeyMetadata"]["KeyId"]
    return Runtime(
        request.param, key_id, start_pipeline, worker, function, executor, local, spy_dir
    )


def test_a_success_uploads_its_output_under_the_pipelines_key_with_the_same_variables(
    runtime: Runtime,
    aws: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    json_lines: io.StringIO,
) -> None:
    run = runtime.run("build", outputs=("Built",))

    assert run.wait(timeout_s=60)["status"] == "Succeeded"
    state = run.action_state()
    assert (state["summary"], state["externalExecutionId"]) == ("built 2 files", "four-build")
    output = run.action_output()
    location = output["outputArtifacts"][0]["s3location"]
    stored = aws("s3").get_object(Bucket=location["bucket"], Key=location["key"])
    assert stored["ServerSideEncryption"] == "aws:kms"
    assert stored["SSEKMSKeyId"].endswith(runtime.key_id)
    with zipfile.ZipFile(io.BytesIO(stored["Body"].read())) as archive:
        files = [name for name in archive.namelist() if not name.endswith("/")]
        assert {name: archive.read(name).decode() for name in files} == DEFAULT_SOURCE
    if runtime.name == "third-party":  # its API has none, so the handler returns none
        assert output.get("outputVariables", {}) == {}
    else:
        assert output["outputVariables"] == {"Files": "README.md,src/main.py"}
    runtime.assert_nothing_secret_logged(caplog, json_lines)


def test_a_continuation_takes_two_jobs(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, json_lines: io.StringIO
) -> None:
    run = runtime.run("steps")

    assert run.wait(timeout_s=60)["status"] == "Succeeded"
    first, second = (runtime.spy_dir / "runs").read_text().split()
    assert first != second, "two jobs, each run once"
    state = run.action_state()
    assert state["summary"] == f"step 2 of 2, after job {first}", "the second had the state"
    assert state["externalExecutionId"] == "four-steps"
    runtime.assert_nothing_secret_logged(caplog, json_lines)


def test_a_typed_failure_keeps_its_type_and_its_masked_message(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, json_lines: io.StringIO
) -> None:
    run = runtime.run("fail")

    assert run.wait(timeout_s=60)["status"] == "Failed"
    assert run.action_state()["errorDetails"] == {
        "code": "ConfigurationError",
        "message": "no project for this pipeline under the key ****",
    }
    runtime.assert_nothing_secret_logged(caplog, json_lines)
