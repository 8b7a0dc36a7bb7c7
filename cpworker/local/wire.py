"""Answers the server writes itself, in the wire form each client parses.

CodePipeline's JSON 1.1 errors (``{"__type", "message"}``), S3's XML errors, and a
plain-text refusal for requests the server does not serve at all.
"""

from __future__ import annotations

import json
import uuid
from http import HTTPStatus
from xml.sax.saxutils import escape

__all__ = ["Answer", "json_error", "plain", "s3_error"]

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

Answer = tuple[str, list[tuple[str, str]], bytes]
"""A WSGI status line, headers and the whole body."""


def _status(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def json_error(status: int, code: str, message: str) -> Answer:
    """A modelled error of a JSON 1.1 service; botocore raises ``exceptions.<code>``."""
    body = json.dumps({"__type": code, "message": message}).encode()
    headers = [
        ("Content-Type", JSON_CONTENT_TYPE),
        ("Content-Length", str(len(body))),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return _status(status), headers, body


def s3_error(status: int, code: str, message: str, *, head: bool) -> Answer:
    """An S3 error document; a HEAD answer has the status and headers only, as S3's."""
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        b""
        if head
        else (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
    )
    headers = [
        ("Content-Type", "application/xml"),
        ("Content-Length", str(len(body))),
        ("x-amz-request-id", request_id),
    ]
    return _status(status), headers, body


def plain(status: int, text: str) -> Answer:
    """A short plain-text answer, for requests that are refused before any service."""
    body = f"{text}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    return _status(status), headers, body
