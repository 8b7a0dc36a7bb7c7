"""Issue 10: a secret is masked in whatever form it takes — escaped in JSON or in a
``repr``, percent-encoded in a presigned URL — in the logs, the failure message, the
summary and the output variables, for ``cpworker serve``'s worker and for Lambda."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from conftest import APPS_DIR, Run
from cpw_secret_apps import app as disguised_app

from cpworker.testing import lambda_action
from cpworker.worker import Worker

# Quote, backslash and newline (escaped by JSON and repr); +, / and = (percent-encoded).
PASSWORD = 'pa"ss\\word\nline+two/three=four'


def _forms(secret: str) -> list[str]:
    return [
        secret,
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    ]


def _job_secrets(spy_dir: Path) -> list[str]:
    """The password and the job's artifact credentials, as the handler saw them."""
    (secrets,) = [json.loads(line) for line in (spy_dir / "secrets.jsonl").read_text().splitlines()]
    assert len(secrets) == 4, "the password and the three artifact credentials"
    assert secrets[0] == PASSWORD
    assert any(c in secrets[3] for c in "+/="), "the session token needs encoding in a URL"
    return [str(secret) for secret in secrets]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _decoded(lines: list[str]) -> str:
    """Every string inside the JSON log lines (a line may carry a prefix before its JSON)."""
    found: list[str] = []
    for line in lines:
        start = line.find("{")
        if start >= 0:
            try:
                found += _strings(json.loads(line[start:]))
            except ValueError:
                continue
    return "\n".join(found)


def _assert_hidden(secrets: list[str], *texts: str) -> None:
    for secret in secrets:
        for form in _forms(secret):
            for text in texts:
                assert form not in text


def _assert_masked_result(run: Run, outcome: str) -> list[str]:
    """The masked texts a pipeline user sees; returns them for the leak check."""
    if outcome == "fail":
        message = run.action_state()["errorDetails"]["message"]
        assert "X-Amz-Security-Token=****" in message
        assert message.endswith(' as {"password": "****"} [\'****\']'), message
        return [message]
    output = run.action_output()
    summary = output["executionResult"]["externalExecutionSummary"]
    assert summary == 'signed in with {"password": "****"} [\'****\'] and ****'
    variables = output["outputVariables"]
    assert variables == {
        "Raw": "****",
        "Json": '{"password": "****"}',
        "Query": "****",
        "Form": "****",
        "Token": "****",
    }
    return [summary, *variables.values()]


@pytest.mark.parametrize("outcome", ["fail", "succeed"])
def test_the_worker_masks_every_form_of_a_secret(
    outcome: str,
    start_pipeline: Callable[..., Run],
    worker: Callable[..., Worker],
    aws: Callable[..., Any],
    spy_dir: Path,
    json_lines: io.StringIO,
) -> None:
    # Given a handler that logs, fails or succeeds with its secrets in disguise
    disguised_app.register(aws("codepipeline"))
    run = start_pipeline("CpwDisguised", {"Password": PASSWORD, "Outcome": outcome})
    # When the worker runs its job
    worker(serve=disguised_app)
    expected = "Failed" if outcome == "fail" else "Succeeded"
    assert run.wait(timeout_s=60)["status"] == expected
    # Then no form of any secret reaches the logs or what the pipeline shows
    shown = _assert_masked_result(run, outcome)
    lines = json_lines.getvalue().splitlines()
    signing = [json.loads(line) for line in lines if "signing in with" in line]
    assert [line["message"] for line in signing] == ["signing in with ****"]
    assert set(signing[0]["forms"].values()) == {"****", '{"password": "****"}', "['****']"}
    _assert_hidden(_job_secrets(spy_dir), "\n".join(lines), _decoded(lines), *shown)


@pytest.mark.parametrize("outcome", ["fail", "succeed"])
def test_lambda_masks_every_form_of_a_secret(
    outcome: str,
    start_pipeline: Callable[..., Run],
    function: Callable[..., str],
    spy_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given the same handler as a Lambda function
    name = function(
        f"{APPS_DIR / 'cpw_secret_apps.py'}:disguised_lambda",
        environment={"CPW_TEST_SPY_DIR": str(spy_dir)},
    )
    parameters = json.dumps({"Password": PASSWORD, "Outcome": outcome})
    # When its job runs
    with caplog.at_level(logging.INFO):
        run = start_pipeline(
            "lambda", action=lambda_action("Act", function_name=name, user_parameters=parameters)
        )
        expected = "Failed" if outcome == "fail" else "Succeeded"
        assert run.wait(timeout_s=60)["status"] == expected
    # Then no form of any secret reaches its logs or what the pipeline shows
    shown = _assert_masked_result(run, outcome)
    assert "signing in with ****" in caplog.text, "the function's logs are captured"
    _assert_hidden(_job_secrets(spy_dir), caplog.text, _decoded(caplog.messages), *shown)
