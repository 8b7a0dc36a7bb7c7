"""User mistakes as one line that names the fix, instead of a traceback.

The CLI prints a ``UsageError`` as ``cpworker <command>: <message>`` and exits
non-zero. ``aws_problem`` turns the AWS SDK's set-up errors (no Region, no
credentials, no endpoint) into such a line; messages never carry a secret.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ProxyConnectionError,
)

REFUSED_CREDENTIALS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "AccessDeniedException",
    }
)
_PACKAGE = str(Path(__file__).parent)
UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ProxyConnectionError,
    ConnectionClosedError,
)


class UsageError(Exception):
    """A mistake the user can fix; its message is one line that says how."""


def one_line(exc: BaseException) -> str:
    """``Type: message (file:line)`` of where ``exc`` was raised, on one line."""
    text = " ".join(str(exc).split())
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}:{exc.lineno})"
    elif frames := traceback.extract_tb(exc.__traceback__):
        # The user's line, rather than cpworker's check that raised
        theirs = [frame for frame in frames if not frame.filename.startswith(_PACKAGE)]
        frame = (theirs or frames)[-1]
        where = f" ({frame.filename}:{frame.lineno})"
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


def aws_problem(exc: BaseException, endpoint_url: str | None) -> str | None:
    """The fix for an AWS set-up error (Region, credentials, endpoint), else ``None``."""
    if isinstance(exc, NoRegionError):
        return "no AWS Region: give --region, or set AWS_DEFAULT_REGION (or region in the profile)"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            f"{exc}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile (--profile "
            "or AWS_PROFILE), or run with an instance or task role"
        )
    if isinstance(exc, ProfileNotFound):
        return f"{exc}: check --profile or AWS_PROFILE (aws configure list-profiles)"
    if isinstance(exc, UNREACHABLE):
        if endpoint_url:
            return f"{exc}: is cpworker local (or your endpoint) running? check --endpoint-url"
        return (
            f"{exc}: no network? To use a cpworker local, give --endpoint-url or set "
            "AWS_ENDPOINT_URL"
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in REFUSED_CREDENTIALS:
            return (
                f"CodePipeline refused the request ({code}: {error.get('Message', '')}): check "
                "the credentials, their Region and their permissions"
            )
    return None
