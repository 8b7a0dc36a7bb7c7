"""Tiny Lambda functions for the local CodePipeline's Invoke actions, written as users do:
plain boto3, configured only by the environment Lambda (here: cpworker local) gives them.

The tests register them by file (``path/cpw_lambda_functions.py:name``), so each runs in
its own process, as it would in Lambda.
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from typing import Any

import boto3


def _job(event: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = event["CodePipeline.job"]
    return job


def _user_parameters(event: dict[str, Any]) -> str:
    configuration = _job(event)["data"]["actionConfiguration"]["configuration"]
    return str(configuration.get("UserParameters", ""))


def report_success(event: dict[str, Any], context: Any) -> None:
    """Succeed with output variables that tell what the function saw."""
    job = _job(event)
    print(f"job {job['id']} started")
    seen = {
        "Greeting": _user_parameters(event),
        "JobId": job["id"],
        "EventKeys": ",".join(sorted(job)),
        "DataKeys": ",".join(sorted(job["data"])),
        "FunctionName": context.function_name,
        "FunctionArn": context.invoked_function_arn,
        "RequestId": context.aws_request_id,
        "RemainingMs": str(context.get_remaining_time_in_millis()),
        "Region": os.environ.get("AWS_REGION", "-"),
        "Endpoint": os.environ.get("AWS_ENDPOINT_URL", "-"),
        "AccessKey": os.environ.get("AWS_ACCESS_KEY_ID", "-"),
        "Profile": os.environ.get("AWS_PROFILE", "-"),
        "OwnVariable": os.environ.get("CPW_OWN", "-"),
    }
    boto3.client("codepipeline").put_job_success_result(
        jobId=job["id"],
        executionDetails={"summary": "reported by the function", "percentComplete": 100},
        outputVariables=seen,
    )


def continue_twice(event: dict[str, Any], context: Any) -> None:
    """Two continuations, then a success that tells every token it was given."""
    job = _job(event)
    token = job["data"].get("continuationToken")
    codepipeline = boto3.client("codepipeline")
    if token is None or token.count(",") < 1:
        step = "first" if token is None else f"{token},second"
        codepipeline.put_job_success_result(jobId=job["id"], continuationToken=step)
    else:
        codepipeline.put_job_success_result(
            jobId=job["id"], outputVariables={"Tokens": token, "LastJob": job["id"]}
        )


def report_failure(event: dict[str, Any], context: Any) -> None:
    boto3.client("codepipeline").put_job_failure_result(
        jobId=_job(event)["id"],
        failureDetails={
            "type": "JobFailed",
            "message": f"broken on purpose: {_user_parameters(event)}",
            "externalExecutionId": "ext-7",
        },
    )


def silent(event: dict[str, Any], context: Any) -> None:
    """Returns without reporting: the pipeline must wait for the reply window."""
    print("doing nothing")


def sleep_past_timeout(event: dict[str, Any], context: Any) -> None:
    print(f"pid={os.getpid()} sleeping", flush=True)
    time.sleep(60)


def write_artifact(event: dict[str, Any], context: Any) -> None:
    """Write the output artifact with the job's credentials and key, then succeed."""
    job = _job(event)
    data = job["data"]
    credentials = data["artifactCredentials"]
    s3 = boto3.client(
        "s3",
        aws_access_key_id=credentials["accessKeyId"],
        aws_secret_access_key=credentials["secretAccessKey"],
        aws_session_token=credentials["sessionToken"],
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("params.json", json.dumps({"UserParameters": _user_parameters(event)}))
    location = data["outputArtifacts"][0]["location"]["s3Location"]
    s3.put_object(
        Bucket=location["bucketName"],
        Key=location["objectKey"],
        Body=buffer.getvalue(),
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=data["encryptionKey"]["id"],
    )
    boto3.client("codepipeline").put_job_success_result(jobId=job["id"])


def crash(event: dict[str, Any], context: Any) -> None:
    raise RuntimeError("the handler crashed")


def record_event(event: Any, context: Any) -> None:
    """An EventBridge target: append the event it was given to the file CPW_EVENT_FILE."""
    with open(os.environ["CPW_EVENT_FILE"], "a", encoding="utf-8") as out:
        out.write(json.dumps(event) + "\n")
