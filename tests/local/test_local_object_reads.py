"""GetObject in ``cpworker local`` answers ranges and whole objects as S3 does, reading
only the bytes it sends (moto alone read the whole object for every ranged GET)."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from moto import mock_aws
from moto.s3.models import FakeKey

from cpworker.local import s3_reads

MIB = 1024 * 1024
SIZE = 3 * MIB + 7  # spans several of the server's 1 MiB chunks, and ends inside one


@pytest.fixture
def stored(aws: Callable[..., Any]) -> tuple[Any, str, bytes]:
    """An S3 client, a bucket holding ``data`` under the key ``obj``, and that data."""
    s3 = aws("s3")
    bucket = f"reads-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    data = os.urandom(SIZE)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    return s3, bucket, data


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        (f"bytes={MIB - 3}-{MIB + 3}", MIB - 3, MIB + 3),  # across a chunk boundary
        (f"bytes={SIZE - 100}-", SIZE - 100, SIZE - 1),
        ("bytes=-8", SIZE - 8, SIZE - 1),  # a suffix: the last 8 bytes
        (f"bytes=5-{SIZE + 1000}", 5, SIZE - 1),  # an end past the object is its end
        (f"bytes=-{SIZE + 1000}", 0, SIZE - 1),  # a suffix longer than the object
    ],
)
def test_a_ranged_get_answers_its_bytes(
    stored: tuple[Any, str, bytes], header: str, start: int, end: int
) -> None:
    s3, bucket, data = stored
    answer = s3.get_object(Bucket=bucket, Key="obj", Range=header)
    assert answer["Body"].read() == data[start : end + 1]
    assert answer["ContentLength"] == end - start + 1
    assert answer["ContentRange"] == f"bytes {start}-{end}/{SIZE}"


def test_a_range_past_the_end_is_refused(stored: tuple[Any, str, bytes]) -> None:
    s3, bucket, _ = stored
    with pytest.raises(s3.exceptions.ClientError, match="InvalidRange"):
        s3.get_object(Bucket=bucket, Key="obj", Range=f"bytes={SIZE}-")


def test_whole_objects_and_download_file_get_every_byte(
    stored: tuple[Any, str, bytes], tmp_path: Path
) -> None:
    s3, bucket, data = stored
    whole = s3.get_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")
    assert whole["Body"].read() == data
    assert whole["ContentLength"] == SIZE
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    parts = TransferConfig(multipart_threshold=MIB, multipart_chunksize=MIB)
    s3.download_file(bucket, "obj", str(tmp_path / "copy"), Config=parts)  # ranged GETs
    assert (tmp_path / "copy").read_bytes() == data


def test_a_body_being_read_keeps_the_version_it_started_with(
    stored: tuple[Any, str, bytes],
) -> None:
    s3, bucket, data = stored
    body = s3.get_object(Bucket=bucket, Key="obj")["Body"]
    first = body.read(MIB)
    s3.upload_fileobj(io.BytesIO(b"replaced"), bucket, "obj")
    assert first + body.read() == data
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"replaced"


class _CountingBuffer(io.BytesIO):
    """A key's buffer that counts the bytes read from it."""

    read_bytes = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_a_stored_body_reads_only_the_span_asked_for() -> None:
    data = os.urandom(20 * MIB)
    key = FakeKey(name="obj", value=data, account_id="123456789012", region_name="us-east-1")
    key._value_buffer = _CountingBuffer(data)  # to count what is read
    body = s3_reads.StoredBody(key)

    assert len(body) == len(data)
    assert body[len(data) - 1000 :] == data[-1000:]
    assert key._value_buffer.read_bytes == 1000
    assert b"".join(body) == data


def test_moto_used_directly_still_answers_bytes() -> None:
    s3_reads.install()  # the patch is in place, but no local server serves this call
    with mock_aws():
        s3 = boto3.client(
            "s3",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="direct")
        s3.put_object(Bucket="direct", Key="obj", Body=b"plain bytes")
        answer = s3.get_object(Bucket="direct", Key="obj", Range="bytes=6-")
        assert answer["Body"].read() == b"bytes"
