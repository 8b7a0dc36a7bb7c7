"""``cpworker invoke``: run a Lambda handler once, locally, as CodePipeline would.

The handler gets a real ``CodePipeline.job`` event from a local CodePipeline (the
one at ``--endpoint-url``, or one started in this process), with input artifacts
uploaded from directories and output locations of its own; it reports with
PutJobSuccessResult/PutJobFailureResult as in AWS, and the reported result is
printed (a step that continues as ``Continued``), then where each output artifact
went. Continuations are followed, as CodePipeline would, up to ``--max-steps``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from cpworker.local.engine import EngineSettings
from cpworker.local.lambda_context import LambdaContext
from cpworker.local.lambda_runner import load_handler
from cpworker.local.private import call_private
from cpworker.local.server import LocalCodePipeline
from cpworker.mistakes import UsageError, one_line
from cpworker.sources.lambda_entry import INVOKE_EVENT_KEY as EVENT_KEY
from cpworker.sources.lambda_entry import EntryPointError
from cpworker.testing import zip_directory

BUCKET = "cpworker-invoke"
REGION = "us-east-1"


@dataclass(frozen=True)
class InvokeRequest:
    """What to run and with which job."""

    handler: str
    event_file: Path | None = None
    function_name: str = "cpworker-invoke"
    user_parameters: str | None = None
    inputs: Sequence[tuple[str, Path]] = ()
    outputs: Sequence[str] = ()
    endpoint_url: str | None = None
    timeout_s: float = 900.0
    max_steps: int = 20


@contextmanager
def _endpoint(endpoint_url: str | None) -> Iterator[str]:
    if endpoint_url:
        yield endpoint_url
        return
    with LocalCodePipeline(settings=EngineSettings(continuation_delay_s=0.0)) as server:
        yield server.endpoint_url


def _point_boto3_at(endpoint_url: str) -> None:
    """Every boto3 client the handler makes talks to the local endpoint, never to AWS."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint_url,
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="cpworker-invoke",
        AWS_SECRET_ACCESS_KEY="cpworker-invoke",  # noqa: S106 - local only, by design
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )


def _s3(endpoint_url: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint_url, config=Config(s3={"addressing_style": "path"})
    )


def _location(key: str) -> dict[str, Any]:
    return {"type": "S3", "s3Location": {"bucketName": BUCKET, "objectKey": key}}


def _built_data(request: InvokeRequest, endpoint_url: str) -> dict[str, Any]:
    """JobData from flags: input directories are zipped and uploaded, outputs get keys."""
    s3 = _s3(endpoint_url)
    s3.create_bucket(Bucket=BUCKET)
    run = uuid.uuid4().hex[:8]
    inputs = []
    for name, directory in request.inputs:
        key = f"{run}/inputs/{name}.zip"
        s3.put_object(Bucket=BUCKET, Key=key, Body=zip_directory(directory))
        inputs.append({"name": name, "revision": run, "location": _location(key)})
    configuration = {"FunctionName": request.function_name}
    if request.user_parameters is not None:
        configuration["UserParameters"] = request.user_parameters
    return {
        "actionConfiguration": {"configuration": configuration},
        "inputArtifacts": inputs,
        "outputArtifacts": [
            {"name": name, "location": _location(f"{run}/outputs/{name}.zip")}
            for name in request.outputs
        ],
    }


def _first_job(request: InvokeRequest, endpoint_url: str) -> dict[str, Any]:
    if request.event_file is not None:
        job = json.loads(request.event_file.read_text())[EVENT_KEY]
        created = call_private(
            endpoint_url, "CreateLambdaJob", {"data": job["data"], "jobId": job["id"]}
        )
    else:
        created = call_private(
            endpoint_url, "CreateLambdaJob", {"data": _built_data(request, endpoint_url)}
        )
    event: dict[str, Any] = created["event"]
    return event


def _next_event(endpoint_url: str, job_id: str, account_id: str) -> dict[str, Any]:
    codepipeline = boto3.client("codepipeline", endpoint_url=endpoint_url)
    details = codepipeline.get_job_details(jobId=job_id)["jobDetails"]
    return {EVENT_KEY: {"id": job_id, "accountId": account_id, "data": details["data"]}}


def _shown(described: Mapping[str, Any]) -> dict[str, Any]:
    """DescribeJob's answer, with a step that continues shown as ``Continued``: the job
    succeeded, but the action goes on in the next job."""
    shown = dict(described)
    if (described.get("result") or {}).get("type") == "continuation":
        shown["status"] = "Continued"
    return shown


def _where(outputs: Sequence[Mapping[str, Any]], endpoint_url: str) -> list[dict[str, Any]]:
    """Where each output artifact went, and with which encryption; or that it was not
    uploaded."""
    s3 = _s3(endpoint_url)
    found = []
    for artifact in outputs:
        location = artifact["location"]["s3Location"]
        bucket, key = location["bucketName"], location["objectKey"]
        entry: dict[str, Any] = {"name": artifact["name"], "location": f"s3://{bucket}/{key}"}
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
        except ClientError:
            entry["uploaded"] = False
        else:
            entry |= {"uploaded": True, "size": head["ContentLength"]}
            entry["serverSideEncryption"] = head.get("ServerSideEncryption")
            entry["kmsKeyId"] = head.get("SSEKMSKeyId")
        found.append(entry)
    return found


def run_invoke(request: InvokeRequest) -> int:
    """Run the handler until the job ends; print each step and the final result."""
    with _endpoint(request.endpoint_url) as endpoint_url:
        _point_boto3_at(endpoint_url)
        try:
            handler = load_handler(request.handler)
        except Exception as exc:  # noqa: BLE001 - the user's module may raise anything
            raise UsageError(f"cannot load {request.handler}: {one_line(exc)}") from None
        event = _first_job(request, endpoint_url)
        outputs = event[EVENT_KEY]["data"].get("outputArtifacts", [])
        for step in range(1, request.max_steps + 1):
            job_id = event[EVENT_KEY]["id"]
            context = LambdaContext.start(
                request.function_name,
                request.timeout_s,
                region=REGION,
                account_id=event[EVENT_KEY]["accountId"],
            )
            try:
                handler(event, context)
            except EntryPointError as exc:
                raise UsageError(f"{request.handler}: {exc}") from None
            described: Mapping[str, Any] = call_private(
                endpoint_url, "DescribeJob", {"jobId": job_id}
            )
            print(json.dumps({"step": step, **_shown(described)}, indent=2), flush=True)
            next_job = described.get("nextJobId")
            if described.get("status") == "InProgress" or not next_job:
                if outputs:
                    print(json.dumps({"outputArtifacts": _where(outputs, endpoint_url)}, indent=2))
                return 0 if described.get("status") == "Succeeded" else 1
            event = _next_event(endpoint_url, next_job, event[EVENT_KEY]["accountId"])
        print(f"stopped after {request.max_steps} steps; the job continues")
        return 1
