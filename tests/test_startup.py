"""serve's start-up check of the account leaves a least-privilege role able to serve:
a role without ListActionTypes is warned, not refused. (botocore's Stubber answers: no
network.)"""

from __future__ import annotations

import logging

import boto3
import pytest
from botocore.stub import Stubber

from cpworker import ActionApp
from cpworker.api import RetryPolicy
from cpworker.startup import check_account

app = ActionApp()


@app.action(category="Test", provider="StartupCheck")
def check(job: object) -> None: ...


def test_a_role_without_list_action_types_serves_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    codepipeline = boto3.client("codepipeline", region_name="us-east-1")
    with Stubber(codepipeline) as stub:
        stub.add_client_error("list_action_types", "AccessDeniedException", "not allowed")
        check_account(codepipeline, list(app), RetryPolicy(attempts=1))
    (warning,) = [r for r in caplog.records if r.name == "cpworker.serve"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().endswith("the role lacks codepipeline:ListActionTypes")


def test_refused_credentials_still_stop_serve() -> None:
    codepipeline = boto3.client("codepipeline", region_name="us-east-1")
    with Stubber(codepipeline) as stub:
        stub.add_client_error("list_action_types", "UnrecognizedClientException", "bad token")
        with pytest.raises(codepipeline.exceptions.ClientError):
            check_account(codepipeline, list(app), RetryPolicy(attempts=1))
