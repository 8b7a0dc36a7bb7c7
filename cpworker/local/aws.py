"""The engine's own calls to S3, KMS and STS, served by moto behind the same endpoint.

The scheduler thread and request threads (for fresh job credentials) use it, never
while they hold the engine lock: these are HTTP calls to the server the engine runs in.
They sign with :data:`ENGINE_ACCESS_KEY`, which injected faults spare.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

log = logging.getLogger("cpworker.local")

ENGINE_ACCESS_KEY = "cpworker-local-engine"
"""The access key id of the engine's own requests (moto accepts any credentials)."""
_DUMMY = {"aws_access_key_id": ENGINE_ACCESS_KEY, "aws_secret_access_key": ENGINE_ACCESS_KEY}


class SourceUnavailable(Exception):  # noqa: N818 - a condition, reported as an action failure
    """The S3 source object cannot be read or copied; the message says why."""


@dataclass(frozen=True)
class SourceObject:
    """What the S3 source action learnt about the object it copied."""

    etag: str
    version_id: str | None

    @property
    def revision(self) -> str:
        """The artifact revision: the VersionId in a versioned bucket, else the ETag."""
        return self.version_id or self.etag


class AwsClients:
    """boto3 clients bound to the local endpoint, and the few calls the engine makes."""

    def __init__(self, endpoint_url: str, region: str) -> None:
        config = Config(
            retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": "path"}
        )

        def client(service: str) -> Any:
            return boto3.session.Session().client(
                service,
                endpoint_url=endpoint_url,
                region_name=region,
                config=config,
                **_DUMMY,  # type: ignore[call-overload]
            )

        self._s3, self._kms, self._sts = client("s3"), client("kms"), client("sts")
        self._default_key: str | None = None

    def default_key(self, alias: str) -> str:
        """The ARN of the engine's artifact key, created in moto KMS on first use."""
        if self._default_key is None:
            try:
                self._default_key = self._kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "NotFoundException":
                    raise
                key = self._kms.create_key(Description="cpworker local artifact store key")
                self._kms.create_alias(AliasName=alias, TargetKeyId=key["KeyMetadata"]["KeyId"])
                self._default_key = key["KeyMetadata"]["Arn"]
        return self._default_key

    def credentials(self, role_arn: str) -> dict[str, str]:
        """Temporary credentials for one job: AssumeRole on the pipeline's role."""
        session = f"cpworker-local-{uuid.uuid4().hex[:16]}"
        creds = self._sts.assume_role(RoleArn=role_arn, RoleSessionName=session)["Credentials"]
        return {
            "accessKeyId": creds["AccessKeyId"],
            "secretAccessKey": creds["SecretAccessKey"],
            "sessionToken": creds["SessionToken"],
        }

    def copy_source(
        self, bucket: str, key: str, store: str, store_key: str, kms_key: str
    ) -> SourceObject:
        """Copy an S3 source object, bytes unchanged, into the artifact store (SSE-KMS).

        The copy gets a full-object CRC32: a source uploaded in parts carries a checksum
        of its parts, which a reader of the whole copied object would fail to match.
        """
        try:
            head = self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise SourceUnavailable(
                f"Cannot read source object s3://{bucket}/{key}: {_reason(exc)}"
            ) from exc
        source: dict[str, str] = {"Bucket": bucket, "Key": key}
        version = head.get("VersionId")
        obj = SourceObject(
            str(head["ETag"]).strip('"'), version if version and version != "null" else None
        )
        if obj.version_id is not None:
            source["VersionId"] = obj.version_id
        try:
            self._s3.copy_object(
                Bucket=store,
                Key=store_key,
                CopySource=source,
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId=kms_key,
                ChecksumAlgorithm="CRC32",
            )
        except ClientError as exc:
            message = f"Cannot write the source artifact to s3://{store}: {_reason(exc)}"
            raise SourceUnavailable(message) from exc
        return obj


def _reason(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'Error')} ({error.get('Message') or 'no message'})"
