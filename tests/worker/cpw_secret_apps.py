"""An action that shows its secrets in every disguise a careless handler would use:
JSON, ``repr``, percent-encoding, and a presigned URL made with the job's credentials
(issue 10). Importable as ``cpw_secret_apps:app`` from this folder; the same action
is a Lambda function (``disguised_lambda``).

With ``CPW_TEST_SPY_DIR`` set, the handler appends the job's secrets to
``<dir>/secrets.jsonl`` (one JSON list per job), for the tests to look for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal
from urllib.parse import quote, quote_plus

import boto3
from botocore.config import Config
from pydantic import BaseModel, SecretStr

from cpworker import ActionApp, Job, JobFailed, Success, lambda_handler, prop

app = ActionApp()


class DisguisedConfig(BaseModel):
    Password: SecretStr = prop(description="Shown in every form by the handler.")
    Outcome: Literal["fail", "succeed"] = "fail"


def presigned_url(job: Job[DisguisedConfig]) -> str:
    """A GET URL for the input artifact, signed with the job's temporary credentials:
    its query carries ``X-Amz-Security-Token``, percent-encoded."""
    credentials = job.envelope.data.artifact_credentials
    assert credentials is not None
    assert credentials.session_token is not None
    source = job.inputs.one()
    s3 = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id=credentials.access_key_id.get_secret_value(),
        aws_secret_access_key=credentials.secret_access_key.get_secret_value(),
        aws_session_token=credentials.session_token.get_secret_value(),
        config=Config(signature_version="s3v4"),
    )
    url: str = s3.generate_presigned_url(
        "get_object", Params={"Bucket": source.bucket, "Key": source.key}, ExpiresIn=60
    )
    return url


@app.action(category="Test", provider="CpwDisguised", config=DisguisedConfig, inputs=(1, 1))
def disguised(job: Job[DisguisedConfig]) -> Success:
    """Log the password and the session token in disguise, then fail (or succeed) with them."""
    password = job.config.Password.get_secret_value()
    credentials = job.envelope.data.artifact_credentials
    assert credentials is not None
    assert credentials.session_token is not None
    token = credentials.session_token.get_secret_value()
    if folder := os.environ.get("CPW_TEST_SPY_DIR"):
        with (Path(folder) / "secrets.jsonl").open("a") as spy:
            spy.write(json.dumps([password, *credentials.secrets()]) + "\n")
    forms = {
        "json": json.dumps({"password": password}),
        "repr": repr([password]),
        "query": quote(password, safe=""),
        "path": quote(password),
        "form": quote_plus(password),
        "token": quote(token, safe=""),
    }
    job.log.info("signing in with %s", password, extra={"forms": forms})
    if job.config.Outcome == "succeed":
        return Success(
            summary=f"signed in with {forms['json']} {forms['repr']} and {forms['token']}",
            output_variables={
                "Raw": password,
                "Json": forms["json"],
                "Query": forms["query"],
                "Form": forms["form"],
                "Token": quote_plus(token),
            },
        )
    raise JobFailed(f"could not fetch {presigned_url(job)} as {forms['json']} {forms['repr']}")


disguised_lambda = lambda_handler(app, "disguised")
