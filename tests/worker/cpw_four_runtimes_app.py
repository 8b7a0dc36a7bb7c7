"""One handler for the four runtimes (issue 7's acceptance); ``cpw_four_runtimes_app:app``
from this folder, and ``handler`` its Lambda entry point (invoke action and integration
model alike).

The one function ``four`` is declared twice, because a third-party action type differs
from a custom one by its owner: ``four`` (Custom, served by ``cpworker serve`` and the
action whose Lambda entry point is ``handler``) and ``four_partner`` (ThirdParty).

``CPW_TEST_SPY_DIR`` (if set) is where each job appends its id (``runs``) and its secrets
(``secrets``: the secret property's value and the three artifact credentials), for the
tests to look for in the logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, SecretStr

from cpworker import ActionApp, ActionFailed, Continue, Job, Success, lambda_handler, prop
from cpworker.errors import FailureType

app = ActionApp()


class FourConfig(BaseModel):
    Mode: Literal["build", "steps", "fail"] = prop(
        description="build: the input becomes the output, with output variables where the "
        "runtime has them; steps: two jobs; fail: a ProjectMissing failure."
    )
    ApiKey: SecretStr = prop(description="Logged by the handler: masked everywhere.")


class ProjectMissing(ActionFailed):
    """The partner's own failure: a configuration error by type."""

    failure_type = FailureType.CONFIGURATION_ERROR


def _spy(name: str, *lines: str) -> None:
    folder = os.environ.get("CPW_TEST_SPY_DIR")
    if folder:
        with (Path(folder) / name).open("a") as file:
            file.writelines(f"{line}\n" for line in lines)


@app.action(category="Build", provider="CpwFour", config=FourConfig, inputs=(1, 1), outputs=(0, 1))
def four(job: Job[FourConfig]) -> Success | Continue:
    """Log the secrets carelessly, then do what ``Mode`` says."""
    api_key = job.config.ApiKey.get_secret_value()
    credentials = job.envelope.data.artifact_credentials
    secrets = credentials.secrets() if credentials else []
    _spy("runs", job.id)
    _spy("secrets", api_key, *secrets)
    job.log.info("signing in with %s, credentials %s", api_key, secrets)
    mode = job.config.Mode
    if mode == "fail":
        raise ProjectMissing(f"no project for this pipeline under the key {api_key}")
    if mode == "steps":
        if job.continuation is None:
            return Continue(
                state={"first": job.id},
                summary="step 1 of 2",
                percent_complete=50,
                external_execution_id="four-steps",
            )
        first = job.continuation["first"]
        return Success(
            summary=f"step 2 of 2, after job {first}", external_execution_id="four-steps"
        )
    source = job.inputs.one().extract()
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    job.outputs.one().upload_dir(source)
    # The third-party job API has no output variables: returning some would fail the job.
    third_party = job.action_type is not None and job.action_type.owner == "ThirdParty"
    return Success(
        summary=f"built {len(files)} files",
        external_execution_id="four-build",
        output_variables={} if third_party else {"Files": ",".join(files)},
    )


# The same function, as a partner's action type: only the owner (and so the provider) differs.
app.action(
    category="Build",
    provider="CpwFourPartner",
    owner="ThirdParty",
    name="four_partner",
    config=FourConfig,
    inputs=(1, 1),
    outputs=(0, 1),
)(four)

handler = lambda_handler(app, "four")
