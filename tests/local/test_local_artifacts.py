"""The S3 source action and the artifact store: bytes unchanged, SSE-KMS on every object."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from typing import Any

import pytest
from cpw_local_lab import Lab

from cpworker.local.engine import EngineSettings


def input_object(lab: Lab, job: dict[str, Any]) -> tuple[str, str]:
    location = job["data"]["inputArtifacts"][0]["location"]["s3Location"]
    return location["bucketName"], location["objectKey"]


def test_default_key_encrypts_artifacts_and_travels_with_jobs(
    lab: Lab, aws: Callable[..., Any]
) -> None:
    type_id = lab.action_type()
    lab.pipeline([lab.action(type_id)])

    job = lab.poll(type_id)[0]

    key_id = job["data"]["encryptionKey"]["id"]
    alias = EngineSettings().default_key_alias
    assert aws("kms").describe_key(KeyId=alias)["KeyMetadata"]["Arn"] == key_id
    bucket, key = input_object(lab, job)
    head = lab.s3.head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_id


def test_pipeline_key_encrypts_artifacts_and_travels_with_jobs(
    lab: Lab, aws: Callable[..., Any]
) -> None:
    pipeline_key = aws("kms").create_key(Description="pipeline key")["KeyMetadata"]["Arn"]
    type_id = lab.action_type()
    lab.pipeline([lab.action(type_id)], encryption_key_id=pipeline_key)

    job = lab.poll(type_id)[0]

    assert job["data"]["encryptionKey"] == {"id": pipeline_key, "type": "KMS"}
    bucket, key = input_object(lab, job)
    head = lab.s3.head_object(Bucket=bucket, Key=key)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", pipeline_key)


def tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"tarred\n"
        info = tarfile.TarInfo("file.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("source", [b"just one plain file\n", tar_bytes()], ids=["file", "tar"])
def test_source_bytes_are_copied_unchanged_with_the_etag_as_revision(
    lab: Lab, source: bytes
) -> None:
    type_id = lab.action_type()
    name, _ = lab.pipeline([lab.action(type_id)], source=source)

    job = lab.poll(type_id)[0]

    bucket, key = input_object(lab, job)
    assert lab.s3.get_object(Bucket=bucket, Key=key)["Body"].read() == source
    etag = lab.s3.head_object(Bucket=f"{name}-src", Key="source.zip")["ETag"].strip('"')
    assert job["data"]["inputArtifacts"][0]["revision"] == etag


def test_versioned_source_uses_the_version_id_as_revision(lab: Lab) -> None:
    type_id = lab.action_type()
    bucket = f"v-{lab.uid}-src"  # the source bucket Lab.pipeline(suffix="v") uses
    lab.s3.create_bucket(Bucket=bucket)
    lab.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    lab.pipeline([lab.action(type_id)], suffix="v")

    job = lab.poll(type_id)[0]

    version = lab.s3.head_object(Bucket=bucket, Key="source.zip")["VersionId"]
    assert job["data"]["inputArtifacts"][0]["revision"] == version


def test_missing_source_object_fails_the_source_action(lab: Lab) -> None:
    type_id = lab.action_type()
    name, _ = lab.pipeline([lab.action(type_id)])
    lab.s3.delete_object(Bucket=f"{name}-src", Key="source.zip")

    execution_id = lab.codepipeline.start_pipeline_execution(name=name)["pipelineExecutionId"]

    assert lab.wait(name, execution_id)["status"] == "Failed"
    error = lab.action_state(name, "Source")["errorDetails"]
    assert error["code"] == "RevisionUnavailable"
    assert f"s3://{name}-src/source.zip" in error["message"]
