"""No web page can read or drive the local server: no CORS, loopback Host headers only."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
from cpw_local_lab import Lab

from cpworker.local.server import LocalCodePipeline

LIST_PIPELINES = {
    "X-Amz-Target": "CodePipeline_20150709.ListPipelines",
    "Content-Type": "application/x-amz-json-1.1",
}
PAGE = "https://evil.example"


def request(
    local: LocalCodePipeline,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request to the server, with exactly these headers (Host included)."""
    host = headers.get("Host", f"127.0.0.1:{local.app.port}")
    connection = http.client.HTTPConnection("127.0.0.1", local.app.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={**headers, "Host": host})
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def cors_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("access-control-")}


@pytest.mark.parametrize("path", ["/", "/moto-api/data.json", "/some-bucket/some-key"])
def test_cors_preflight_is_refused_without_cors_headers(
    local: LocalCodePipeline, path: str
) -> None:
    preflight = {
        "Origin": PAGE,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-amz-target,content-type",
    }

    status, headers, _ = request(local, "OPTIONS", path, preflight)

    assert status == 403
    assert cors_headers(headers) == {}


def test_answers_to_a_page_carry_no_cors_headers(local: LocalCodePipeline, lab: Lab) -> None:
    # Given an object in a bucket whose own CORS rules allow every origin
    bucket = f"cors-{lab.uid}"
    lab.s3.create_bucket(Bucket=bucket)
    lab.s3.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]},
    )
    lab.s3.put_object(Bucket=bucket, Key="k", Body=b"private")
    origin = {"Origin": PAGE}

    # When a page asks for moto's state, the object and a CodePipeline answer
    # (moto's dashboard: its data.json can fail on keys other tests left behind)
    data = request(local, "GET", "/moto-api/", origin)
    url = lab.s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    obj = request(local, "GET", url.removeprefix(local.endpoint_url), origin)
    pipelines = request(local, "POST", "/", origin | LIST_PIPELINES, b"{}")

    # Then each is answered, but none says a browser may show it to the page
    assert (data[0], b"<html" in data[2]) == (200, True)
    assert (obj[0], obj[2]) == (200, b"private")
    assert (pipelines[0], "pipelines" in json.loads(pipelines[2])) == (200, True)
    for _, headers, _ in (data, obj, pipelines):
        assert cors_headers(headers) == {}
    lab.s3.delete_object(Bucket=bucket, Key="k")
    lab.s3.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize(
    "template",
    [
        "evil.example:{port}",  # DNS rebinding: a foreign name resolved to 127.0.0.1
        "localhost.evil.example:{port}",
        "10.0.0.1:{port}",
        "localhost:{other}",  # a loopback name, but another port
        "127.0.0.1:{other}",
        "localhost",  # no port: port 80
        "",
    ],
)
def test_a_foreign_host_header_is_refused(local: LocalCodePipeline, template: str) -> None:
    host = template.format(port=local.app.port, other=local.app.port + 1)

    codepipeline = request(local, "POST", "/", {"Host": host} | LIST_PIPELINES, b"{}")
    moto_state = request(local, "GET", "/moto-api/data.json", {"Host": host})

    for status, headers, body in (codepipeline, moto_state):
        assert status == 403
        assert b"loopback host on its own port" in body
        assert cors_headers(headers) == {}


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "LocalHost", "127.1.2.3", "[::1]", "bucket.localhost"]
)
def test_loopback_host_headers_with_the_servers_port_are_answered(
    local: LocalCodePipeline, host: str
) -> None:
    status, _, body = request(
        local, "POST", "/", {"Host": f"{host}:{local.app.port}"} | LIST_PIPELINES, b"{}"
    )

    assert status == 200
    assert "pipelines" in json.loads(body)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com", "localhost."])
def test_the_server_refuses_to_listen_on_a_non_loopback_host(host: str) -> None:
    with pytest.raises(ValueError, match="cpworker local listens on loopback only"):
        LocalCodePipeline(host=host)


def test_boto3_requests_carry_an_accepted_host(aws: Any) -> None:
    # boto3 sends Host: 127.0.0.1:PORT; CodePipeline, S3 and STS all answer it
    assert "pipelines" in aws("codepipeline").list_pipelines()
    assert "Buckets" in aws("s3").list_buckets()
    assert aws("sts").get_caller_identity()["Account"] == "123456789012"
