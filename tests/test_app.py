"""Registration fails early and clearly; handler outcomes map to typed results."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import BaseModel

import cpworker
from cpworker import (
    ActionApp,
    ConfigurationError,
    Continue,
    Failure,
    FailureType,
    Job,
    RevisionUnavailable,
    Success,
)
from cpworker.app import run_handler
from cpworker.logs import logger


class Config(BaseModel):
    Name: str


def _app() -> ActionApp:
    app = ActionApp()

    @app.action(category="Build", provider="Acme", config=Config, inputs=(1, 1), outputs=(0, 1))
    def build(job: Job[Config]) -> Success:
        return Success()

    return app


def test_custom_action_type_request_from_the_decorator() -> None:
    spec = _app()["build"]
    assert spec.custom_action_type() == {
        "category": "Build",
        "provider": "Acme",
        "version": "1",
        "configurationProperties": [
            {"name": "Name", "required": True, "key": True, "secret": False,
             "queryable": False, "type": "String"}
        ],
        "inputArtifactDetails": {"minimumCount": 1, "maximumCount": 1},
        "outputArtifactDetails": {"minimumCount": 0, "maximumCount": 1},
    }  # fmt: skip


def test_duplicate_action_type_is_refused_at_decoration() -> None:
    app = _app()
    with pytest.raises(ValueError, match="clashes with 'build'"):

        @app.action(category="Build", provider="Acme")
        def other(job: Job[Any]) -> None: ...


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"category": "Cook", "provider": "Acme"}, "category 'Cook' is invalid"),
        ({"category": "Build", "provider": "has space"}, "provider 'has space' is invalid"),
        ({"category": "Build", "provider": "A" * 36}, "provider"),
        ({"category": "Build", "provider": "Acme", "version": "1.0"}, "version '1.0'"),
        ({"category": "Build", "provider": "Acme", "inputs": (2, 1)}, "inputs=(2, 1)"),
        ({"category": "Build", "provider": "Acme", "outputs": (0, 6)}, "outputs=(0, 6)"),
        (
            {"category": "Build", "provider": "Acme", "optional_outputs": "Report"},
            "optional_outputs='Report' is invalid: give a sequence of artifact names, "
            "e.g. ('Report',)",
        ),
    ],
)
def test_invalid_declarations_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ActionApp().action(**options)


def _run(handler: Any, secrets: tuple[str, ...] = ()) -> Any:
    app = ActionApp()
    app.action(category="Test", provider="Unit")(handler)
    job = cast(Job[Any], SimpleNamespace(outputs=()))  # a job without output artifacts
    return run_handler(app[handler.__name__], lambda: job, logger("test"), secrets)


def test_results_pass_through_and_none_means_success() -> None:
    def nothing(job: Job[Any]) -> None:
        return None

    def later(job: Job[Any]) -> Continue:
        return Continue(state={"n": 1})

    assert _run(nothing) == Success()
    assert _run(later) == Continue(state={"n": 1})


def test_action_failed_keeps_its_type() -> None:
    def missing(job: Job[Any]) -> None:
        raise RevisionUnavailable("commit abc is gone", external_execution_id="run-9")

    assert _run(missing) == Failure(
        "commit abc is gone", type=FailureType.REVISION_UNAVAILABLE, external_execution_id="run-9"
    )


def test_any_other_exception_is_job_failed_bounded_and_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(job: Job[Any]) -> None:
        raise RuntimeError("token AKIASECRETVALUE rejected " + "x" * 6000)

    with caplog.at_level(logging.ERROR):
        failure = _run(boom, secrets=("AKIASECRETVALUE",))
    assert failure.type is FailureType.JOB_FAILED
    assert failure.message.startswith("RuntimeError: token **** rejected")
    assert len(failure.message) == 5000
    assert "Traceback" in caplog.text or caplog.records[0].exc_info is not None


def test_returned_texts_are_redacted() -> None:
    def chatty(job: Job[Any]) -> Success:
        return Success(
            summary="used pw hunter2hunter2", output_variables={"Echo": "hunter2hunter2"}
        )

    result = _run(chatty, secrets=("hunter2hunter2",))
    assert result == Success(summary="used pw ****", output_variables={"Echo": "****"})


def test_wrong_return_type_fails_the_job_clearly() -> None:
    def wrong(job: Job[Any]) -> Any:
        return {"status": "ok"}

    failure = _run(wrong)
    assert (
        failure.message
        == "InvalidResult: the handler returned dict; return Success, Continue or Failure"
    )


def test_configuration_error_from_job_building_is_typed() -> None:
    app = ActionApp()

    @app.action(category="Test", provider="Unit")
    def handler(job: Job[Any]) -> None: ...

    def make_job() -> Job[Any]:
        raise ConfigurationError("configuration property 'Name' is required")

    failure = run_handler(app["handler"], make_job, logger("test"), ())
    assert failure == Failure(
        "configuration property 'Name' is required", type=FailureType.CONFIGURATION_ERROR
    )


def test_public_surface_is_pinned_and_sorted() -> None:
    assert cpworker.__all__ == sorted(cpworker.__all__, key=lambda n: (n[0].islower(), n))
    assert set(cpworker.__all__) == {
        "ActionApp", "ActionFailed", "ActionSettings", "ActionSpec", "ConfigurationError",
        "Continue", "CurrentRevision", "Failure", "FailureType", "InvalidResult", "Job",
        "JobFailed", "PermissionError", "Result", "RevisionOutOfSync", "RevisionUnavailable",
        "Success", "SystemUnavailable", "current_job", "lambda_handler", "prop",
    }  # fmt: skip
    for name in cpworker.__all__:
        assert getattr(cpworker, name) is not None
