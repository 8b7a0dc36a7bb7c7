"""A third-party action for the worker tests; ``cpw_third_party_apps:app`` from this folder.

Its client tokens come from AWS Secrets Manager (``cpworker/client-tokens/<client id>``,
the built-in resolver's default): the tests store them in the local CodePipeline's moto,
where ``AWS_ENDPOINT_URL`` points the worker. ``CPW_TEST_SPY_DIR`` (if set) is where a
hanging job says it started.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from pydantic import BaseModel

from cpworker import ActionApp, ConfigurationError, Continue, Job, Success, prop
from cpworker.client_tokens import SecretsManagerTokens

app = ActionApp(client_tokens=SecretsManagerTokens())


class PartnerConfig(BaseModel):
    Mode: str = prop(
        description="build: the input becomes the output; outlive: the same, 3 s later; "
        "steps: two jobs; fail: a ConfigurationError; variables: a Success with output "
        "variables; hang: never returns."
    )


@app.action(
    category="Build",
    provider="CpwPartner",
    owner="ThirdParty",
    config=PartnerConfig,
    inputs=(1, 1),
    outputs=(0, 1),
)
def partner(job: Job[PartnerConfig]) -> Success | Continue:
    """What a partner's action does, by ``Mode``; the summary says what the job knew."""
    mode = job.config.Mode
    if mode == "outlive":  # past the first artifact credentials' lifetime
        time.sleep(3)
        mode = "build"
    if mode == "build":
        source = job.inputs.one().extract()
        for output in job.outputs:
            output.upload_dir(source)
        context = job.pipeline
        assert context is not None
        return Success(
            summary=f"built for {context.pipeline_name}/{context.action.name}; account "
            f"{job.account_id}, pipeline ARN {context.pipeline_arn}, execution "
            f"{context.pipeline_execution_id}"
        )
    if mode == "steps":
        if job.continuation is None:
            return Continue(state={"first": job.id}, summary="step 1 of 2", percent_complete=50)
        return Success(summary=f"step 2 of 2, after job {job.continuation['first']}")
    if mode == "variables":
        return Success(summary="with variables", output_variables={"RunId": "r-1"})
    if mode == "hang":
        with (Path(os.environ["CPW_TEST_SPY_DIR"]) / "started").open("a") as spy:
            spy.write(f"{job.id}\n")
        threading.Event().wait()
    if mode == "fail":
        raise ConfigurationError("the partner's service has no project for this pipeline")
    raise ValueError(f"unknown mode {mode!r}")
