"""Produce output variables for downstream actions: ``testRunId``, ``dateTime``, ``region``.

The User Guide's "Using variables with Lambda invoke actions" tutorial, in
Python. Give the action a namespace (the tutorial uses ``TestVariables``) and
later actions can use ``#{TestVariables.testRunId}`` in their configuration.
The run id is a UUID (the tutorial's random number below 1000 repeats soon),
and the time is UTC ISO 8601 (the tutorial's is a local, locale-formatted string).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

from cpworker import ActionApp, Job, Result, Success, lambda_handler

app = ActionApp()


@app.action(category="Invoke", provider="CpworkerVariables", version="1", inputs=(0, 5))
def variables(job: Job[None]) -> Result:
    """Publish a fresh run id, the time and the Region the action runs in."""
    run_id = str(uuid.uuid4())
    return Success(
        summary=f"test run {run_id}",
        output_variables={
            "testRunId": run_id,
            "dateTime": datetime.now(UTC).isoformat(timespec="seconds"),
            "region": _region(),
        },
    )


def _region() -> str:
    """The Lambda's ``AWS_REGION``, else the Region boto3 would use, else ``unknown``."""
    region = os.environ.get("AWS_REGION")
    if not region:
        import boto3  # only outside Lambda, where AWS_REGION is always set

        region = boto3.session.Session().region_name
    return region or "unknown"


handler = lambda_handler(app)
