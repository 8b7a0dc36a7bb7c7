"""`cpworker local` keeps connections alive (HTTP/1.1) as AWS does: clients reuse one
connection across calls, and each request on it is still checked and answered whole."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any

import pytest
import urllib3.connection

from cpworker.local.server import LocalCodePipeline

TARGET = "CodePipeline_20150709.ListPipelines"


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every TCP connection urllib3 (so botocore) opens from now on."""
    opened: list[object] = []
    connect = urllib3.connection.HTTPConnection.connect

    def counting(self: urllib3.connection.HTTPConnection) -> None:
        opened.append(self)
        connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counting)
    return opened


def test_boto3_calls_share_one_connection(aws: Callable[..., Any], connects: list[object]) -> None:
    codepipeline, s3 = aws("codepipeline"), aws("s3")
    bucket = f"keep-{id(connects):x}"

    codepipeline.list_pipelines()
    codepipeline.list_action_types(actionOwnerFilter="Custom")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 100_000)
    head = s3.head_object(Bucket=bucket, Key="k")
    body = s3.get_object(Bucket=bucket, Key="k")["Body"].read()
    s3.delete_object(Bucket=bucket, Key="k")
    s3.delete_bucket(Bucket=bucket)

    assert (head["ContentLength"], body) == (100_000, b"x" * 100_000)
    assert len(connects) == 2  # one per client


def call(connection: http.client.HTTPConnection, host: str, body: bytes) -> tuple[int, bytes]:
    """A ListPipelines request on ``connection`` addressed to ``host``: (status, body)."""
    connection.request(
        "POST",
        "/",
        body=body,
        headers={
            "Host": host,
            "X-Amz-Target": TARGET,
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    answer = connection.getresponse()
    return answer.status, answer.read()


def test_every_request_on_a_kept_connection_is_checked_and_read_whole(
    local: LocalCodePipeline,
) -> None:
    port = int(local.endpoint_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        refused = call(connection, f"evil.example:{port}", b'{"unread": "' + b"z" * 50_000 + b'"}')
        kept = connection.sock
        answered = call(connection, f"localhost:{port}", b"{}")
        refused_again = call(connection, f"evil.example:{port}", b"{}")
        still = connection.sock
    finally:
        connection.close()

    assert refused[0] == 403
    assert answered[0] == 200
    assert "pipelines" in json.loads(answered[1])
    assert refused_again[0] == 403
    assert kept is not None
    assert still is kept
