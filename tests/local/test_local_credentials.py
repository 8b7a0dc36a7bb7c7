"""Job credentials expire after ``credential_ttl_s``; GetJobDetails hands out fresh ones."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError
from cpw_local_lab import Lab

TTL_S = 5.0


def test_expired_job_credentials_are_refused_and_get_job_details_renews_them(
    lab: Lab, tune: Callable[..., None]
) -> None:
    # Given a job whose credentials live TTL_S seconds
    tune(credential_ttl_s=TTL_S)
    type_id = lab.action_type()
    lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)
    location = job["data"]["inputArtifacts"][0]["location"]["s3Location"]
    where = {"Bucket": location["bucketName"], "Key": location["objectKey"]}
    first = lab.job_s3(job["data"])
    assert first.get_object(**where)["Body"].read()[:2] == b"PK"
    presigned = first.generate_presigned_url("get_object", Params=where)

    # When they have expired, S3 refuses them with ExpiredToken, signed in a header...
    refusal: dict[str, str] = {}

    def refused() -> bool:
        try:
            first.get_object(**where)
        except ClientError as exc:
            refusal.update(exc.response["Error"])
            refusal["Status"] = str(exc.response["ResponseMetadata"]["HTTPStatusCode"])
            return True
        return False

    Lab.wait_until(refused, timeout_s=TTL_S + 60)
    assert refusal["Status"] == "400"
    assert refusal["Code"] == "ExpiredToken"
    assert refusal["Message"] == "The provided token has expired."

    # ...or in a presigned URL
    with pytest.raises(urllib.error.HTTPError) as presigned_refusal:
        urllib.request.urlopen(presigned, timeout=30)
    assert presigned_refusal.value.code == 400
    assert b"<Code>ExpiredToken</Code>" in presigned_refusal.value.read()

    # And GetJobDetails gives new credentials that work
    details = lab.codepipeline.get_job_details(jobId=job["id"])["jobDetails"]
    fresh = details["data"]["artifactCredentials"]
    assert fresh["accessKeyId"] != job["data"]["artifactCredentials"]["accessKeyId"]
    assert lab.job_s3(details["data"]).get_object(**where)["Body"].read()[:2] == b"PK"


def test_without_a_ttl_job_credentials_do_not_expire(lab: Lab) -> None:
    type_id = lab.action_type()
    lab.pipeline([lab.action(type_id)])
    job = lab.claim(type_id)
    location = job["data"]["inputArtifacts"][0]["location"]["s3Location"]

    details = lab.codepipeline.get_job_details(jobId=job["id"])["jobDetails"]

    # both the first and the renewed credentials still read the artifact
    for data in (job["data"], details["data"]):
        s3 = lab.job_s3(data)
        body = s3.get_object(Bucket=location["bucketName"], Key=location["objectKey"])["Body"]
        assert body.read()[:2] == b"PK"
