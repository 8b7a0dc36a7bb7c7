"""A source uploaded in parts (as ``upload_file`` does above 8 MiB) reaches a custom
action as an input artifact it can download, checksum validation included."""

from __future__ import annotations

import hashlib
import io
import os

from boto3.s3.transfer import TransferConfig
from cpw_local_lab import Lab

from cpworker.testing import pipeline_declaration

SIZE = 20 * 1024 * 1024
PART = 8 * 1024 * 1024  # upload_file's default threshold and part size


def test_a_multipart_source_downloads_as_an_input_artifact(lab: Lab) -> None:
    source = os.urandom(SIZE)
    name = f"big-{lab.uid}"
    lab.s3.create_bucket(Bucket=f"{name}-src")
    lab.s3.create_bucket(Bucket=f"{name}-store")
    parts = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
    lab.s3.upload_fileobj(io.BytesIO(source), f"{name}-src", "source.zip", Config=parts)
    type_id = lab.action_type()
    lab.codepipeline.create_pipeline(
        pipeline=pipeline_declaration(
            name,
            artifact_bucket=f"{name}-store",
            source_bucket=f"{name}-src",
            source_key="source.zip",
            actions=[lab.action(type_id)],
        )
    )
    lab.pipelines.append(name)
    execution_id = lab.executions(name)[0]["pipelineExecutionId"]

    job = lab.claim(type_id, timeout_s=30)
    location = job["data"]["inputArtifacts"][0]["location"]["s3Location"]
    body = lab.job_s3(job["data"]).get_object(
        Bucket=location["bucketName"], Key=location["objectKey"], ChecksumMode="ENABLED"
    )["Body"]
    downloaded = hashlib.sha256(body.read()).hexdigest()
    lab.codepipeline.put_job_success_result(jobId=job["id"])

    assert downloaded == hashlib.sha256(source).hexdigest()
    assert lab.wait(name, execution_id)["status"] == "Succeeded"
