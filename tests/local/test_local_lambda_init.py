"""A local Lambda function's timeout counts from its handler call, as in Lambda; start-up
and module imports (the init phase) have their own limit, ``lambda_init_timeout_s``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cpw_local_lab import Lab

from cpworker.testing import lambda_action

SLOW_INIT = f"{Path(__file__).with_name('cpw_slow_init.py')}:report"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="cpworker.local")
    return caplog


def test_a_slow_init_does_not_count_against_the_function_timeout(
    lab: Lab, function: Callable[..., str]
) -> None:
    # Given a function with a 2 s timeout whose module takes over 2.5 s to import
    fn = function(SLOW_INIT, timeout_s=2, environment={"CPW_INIT_SECONDS": "2.5"})
    name, execution_id = lab.pipeline([lambda_action("Slow", function_name=fn)])

    # Then its handler still runs, with its whole timeout ahead of it, and reports
    assert lab.wait(name, execution_id, timeout_s=60)["status"] == "Succeeded"
    variables = lab.action_executions(name, execution_id)["Slow"]["output"]["outputVariables"]
    assert 1000 < int(variables["RemainingMs"]) <= 2000


def test_an_init_past_its_limit_is_killed_before_the_handler_runs(
    lab: Lab,
    function: Callable[..., str],
    tune: Callable[..., None],
    logs: pytest.LogCaptureFixture,
) -> None:
    # Given an init limit of 5 s (the runner's own start-up takes over 2 s on a loaded
    # machine without .pyc files) and a function whose module never finishes importing
    tune(lambda_init_timeout_s=5.0)
    fn = function(SLOW_INIT, environment={"CPW_INIT_SECONDS": "300"})
    name, _ = lab.pipeline([lambda_action("Stuck", function_name=fn)])

    # Then the process is killed at the init limit and the handler is never called
    lab.wait_until(lambda: "END (the handler was never called)" in logs.text, timeout_s=30)
    assert "Init timed out after 5.00 seconds" in logs.text
    assert "handler called" not in logs.text
    pid = int(logs.text.split("pid=")[1].split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert lab.action_state(name, "Stuck")["status"] == "InProgress"
