"""Results refuse what CodePipeline would refuse, with a message that says why."""

from __future__ import annotations

import pytest

from cpworker import Continue, CurrentRevision, Failure, FailureType, InvalidResult, Success
from cpworker.api import success_request


def test_continuation_state_must_fit_the_token() -> None:
    Continue(state={"run": "x" * 2030})  # 2040 characters serialised: fits
    with pytest.raises(InvalidResult, match="at most 2048"):
        Continue(state={"run": "x" * 2048})


def test_continuation_state_must_be_json() -> None:
    with pytest.raises(InvalidResult, match="not JSON-serialisable"):
        Continue(state={"when": object()})


@pytest.mark.parametrize("percent", [-1, 101])
def test_percent_complete_is_bounded(percent: int) -> None:
    with pytest.raises(InvalidResult, match="between 0 and 100"):
        Continue(state=1, percent_complete=percent)


def test_summary_and_external_id_lengths() -> None:
    with pytest.raises(InvalidResult, match="summary is 2049 characters"):
        Success(summary="s" * 2049)
    with pytest.raises(InvalidResult, match="external_execution_id is 1501"):
        Success(external_execution_id="e" * 1501)
    with pytest.raises(InvalidResult, match="must not be empty"):
        Success(summary="")


def test_output_variable_names_and_total_size() -> None:
    Success(output_variables={"Run-Id_1@x": "ok"})
    with pytest.raises(InvalidResult, match="name 'bad name' is invalid"):
        Success(output_variables={"bad name": "x"})
    with pytest.raises(InvalidResult, match="must be a string"):
        Success(output_variables={"Count": 3})  # type: ignore[dict-item]
    with pytest.raises(InvalidResult, match="at most 122880 bytes"):
        Success(output_variables={"Big": "é" * 61_440})  # 122880 bytes + the name


def test_failure_message_is_cut_not_refused() -> None:
    failure = Failure("x" * 6000)
    assert len(failure.message) == 5000
    assert failure.message.endswith("…")
    with pytest.raises(InvalidResult, match="needs a message"):
        Failure("  ")


def test_failure_type_accepts_the_wire_names() -> None:
    assert Failure("no", type="ConfigurationError").type is FailureType.CONFIGURATION_ERROR  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'Nope' is not a valid FailureType"):
        Failure("no", type="Nope")  # type: ignore[arg-type]


def test_success_request_carries_everything_a_user_set() -> None:
    request = success_request(
        Success(
            summary="built",
            external_execution_id="run-1",
            output_variables={"RunId": "run-1"},
            current_revision=CurrentRevision("abc123", "change-1", revision_summary="fix"),
        )
    )
    assert request == {
        "executionDetails": {"summary": "built", "externalExecutionId": "run-1"},
        "outputVariables": {"RunId": "run-1"},
        "currentRevision": {
            "revision": "abc123",
            "changeIdentifier": "change-1",
            "revisionSummary": "fix",
        },
    }


def test_continue_request_has_token_and_percent_but_no_variables() -> None:
    request = success_request(Continue(state={"b": 1, "a": 2}, percent_complete=40))
    assert request == {
        "continuationToken": '{"a":2,"b":1}',
        "executionDetails": {"percentComplete": 40},
    }
