"""``handlers/url_check`` as a Lambda invoke action, against a web server on loopback."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Register, Run

from cpworker import ConfigurationError
from cpworker.testing import lambda_action
from cpworker.testing_jobs import JobMaker
from handlers import url_check

PAGES = {
    "/welcome": (200, "<h1>Welcome to the test site</h1>"),
    "/other": (200, "<h1>Something else</h1>"),
    "/missing": (404, "not here"),
}
HANDLER = "handlers.url_check:handler"


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = PAGES.get(self.path.split("?")[0], (404, "no such page"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test asserts outcomes, not access logs."""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """Base URL of a small web server on a free loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def check(function: Register, start_pipeline: Callable[..., Run]) -> Callable[[str], Run]:
    """Run a pipeline whose Lambda action checks with ``user_parameters``; wait for it."""

    def run(user_parameters: str) -> Run:
        name = function(HANDLER, environment={"no_proxy": "*", "NO_PROXY": "*"})
        started = start_pipeline(
            [lambda_action("Check", function_name=name, user_parameters=user_parameters)]
        )
        started.wait()
        return started

    return run


def test_a_plain_url_that_answers_200_succeeds(check: Callable[[str], Run], site: str) -> None:
    run = check(f"{site}/other")
    assert run.wait()["status"] == "Succeeded"
    assert run.action_state("Check")["summary"] == f"{site}/other answered 200"


def test_the_expected_text_on_the_page_succeeds(check: Callable[[str], Run], site: str) -> None:
    run = check(json.dumps({"url": f"{site}/welcome", "expect": "Welcome", "timeoutSeconds": 5}))
    assert run.wait()["status"] == "Succeeded"
    assert (
        run.action_state("Check")["summary"]
        == f"{site}/welcome answered 200 and contains 'Welcome'"
    )


def test_a_page_without_the_expected_text_fails(check: Callable[[str], Run], site: str) -> None:
    run = check(json.dumps({"url": f"{site}/other?token=s3cr3t-value", "expect": "Welcome"}))
    assert run.wait()["status"] == "Failed"
    error = run.action_state("Check")["errorDetails"]["message"]
    assert error == f"expected text 'Welcome' not found in {site}/other"
    assert "s3cr3t-value" not in error  # the query string may carry tokens: never shown


def test_a_404_fails_with_the_status(check: Callable[[str], Run], site: str) -> None:
    run = check(f"{site}/missing")
    assert run.wait()["status"] == "Failed"
    assert run.action_state("Check")["errorDetails"]["message"] == (
        f"{site}/missing answered HTTP 404, expected 200"
    )


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"UserParameters": "ftp://example.com/file"}, "must be an absolute http:// or https://"),
        ({"UserParameters": "not a url"}, "must be an absolute http:// or https:// URL"),
        ({"UserParameters": "http://user:pw@127.0.0.1/"}, "must not carry credentials"),
        ({"url": "http://127.0.0.1/", "timeoutSeconds": 0}, "timeoutSeconds"),
        ({"expect": "x"}, "'url' is required"),
    ],
)
def test_a_bad_configuration_is_a_configuration_error(
    make_job: JobMaker, config: dict[str, Any], problem: str
) -> None:
    # As the Lambda function's UserParameters give it: a plain string, or a JSON object
    with pytest.raises(ConfigurationError) as refused:
        make_job(url_check.app, config=config)
    assert problem.lower() in refused.value.message.lower()
    assert "pw@" not in refused.value.message


def test_an_unreachable_site_fails_with_the_reason(check: Callable[[str], Run]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = check(f"http://127.0.0.1:{port}/")
    assert run.wait()["status"] == "Failed"
    error = run.action_state("Check")["errorDetails"]["message"]
    assert error.startswith(f"could not reach http://127.0.0.1:{port}/: ")
    assert "refused" in error.lower()
