"""A Lambda function whose module is slow to import (``CPW_INIT_SECONDS``), like one that
loads a big SDK or a model at init; it prints its pid first, then reports at once."""

from __future__ import annotations

import os
import time
from typing import Any

print(f"pid={os.getpid()} initialising", flush=True)
time.sleep(float(os.environ.get("CPW_INIT_SECONDS", "0")))

import boto3  # noqa: E402 - part of the slow init, once the pid is out

codepipeline = boto3.client("codepipeline")


def report(event: dict[str, Any], context: Any) -> None:
    """Succeed, telling how much of its timeout the handler had when it was called."""
    print("handler called", flush=True)
    codepipeline.put_job_success_result(
        jobId=event["CodePipeline.job"]["id"],
        outputVariables={"RemainingMs": str(context.get_remaining_time_in_millis())},
    )
