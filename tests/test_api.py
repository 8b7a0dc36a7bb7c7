"""Which CodePipeline errors are retried, and that the retry policy really retries."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from cpworker.api import RetryPolicy, is_retryable


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PollForJobs",
    )


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (_client_error("ThrottlingException", 400), True),
        (_client_error("InternalFailure", 500), True),
        (_client_error("ServiceUnavailable", 503), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (_client_error("InvalidNonceException", 400), False),
        (_client_error("JobNotFoundException", 400), False),
        (_client_error("InvalidJobStateException", 400), False),
        (_client_error("ValidationException", 400), False),
        (ValueError("bug"), False),
    ],
)
def test_only_transient_errors_are_retried(error: Exception, retried: bool) -> None:
    assert is_retryable(error) is retried


def test_policy_retries_transient_errors_then_succeeds() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _client_error("ThrottlingException", 400)
        return "ok"

    policy = RetryPolicy(attempts=5, backoff_base_s=0.001, backoff_max_s=0.01)
    assert policy.wrap(flaky) == "ok"
    assert len(calls) == 3


def test_policy_gives_up_after_its_attempts_and_never_retries_client_errors() -> None:
    calls: list[Any] = []

    def throttled() -> None:
        calls.append(1)
        raise _client_error("ThrottlingException", 400)

    def stale() -> None:
        calls.append(2)
        raise _client_error("InvalidJobStateException", 400)

    policy = RetryPolicy(attempts=3, backoff_base_s=0.001, backoff_max_s=0.01)
    with pytest.raises(ClientError, match="ThrottlingException"):
        policy.wrap(throttled)
    assert calls.count(1) == 3
    with pytest.raises(ClientError, match="InvalidJobStateException"):
        policy.wrap(stale)
    assert calls.count(2) == 1


def test_the_time_budget_counts_the_first_attempt() -> None:
    calls: list[float] = []

    def slow_then_throttled() -> None:
        calls.append(time.monotonic())
        time.sleep(0.2)  # longer than the whole budget below
        raise _client_error("ThrottlingException", 400)

    policy = RetryPolicy(attempts=5, max_elapsed_s=0.1, backoff_base_s=0.001)
    with pytest.raises(ClientError, match="ThrottlingException"):
        policy.wrap(slow_then_throttled)
    assert len(calls) == 1
