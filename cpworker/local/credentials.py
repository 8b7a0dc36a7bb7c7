"""Job credential lifetimes, and who signed a request.

moto's STS issues the job credentials and moto's S3 accepts any signature, so the
server enforces their expiry itself: the engine records each job credential's expiry
here (only with ``EngineSettings.credential_ttl_s`` set), and the server refuses an S3
request signed with an expired one, as S3 does, with ``ExpiredToken``. The signer is
read from the ``Authorization`` header or, for a presigned URL, from the query.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple
from urllib.parse import parse_qs

__all__ = ["CredentialExpiries", "Signer", "signer_of"]


class Signer(NamedTuple):
    """The access key id and the service of a SigV4 credential scope."""

    access_key_id: str
    service: str


def signer_of(environ: dict[str, Any]) -> Signer | None:
    """Who signed this request: the SigV4 scope ``AKID/date/region/service/aws4_request``
    from the Authorization header or the ``X-Amz-Credential`` parameter, or the key of
    an S3 SigV2 signature (``AWS AKID:signature``, ``AWSAccessKeyId``, as boto3 presigns)."""
    authorization: str = environ.get("HTTP_AUTHORIZATION", "")
    if authorization.startswith("AWS "):
        return Signer(authorization[4:].partition(":")[0], "s3")
    if authorization:
        start = authorization.find("Credential=")
        if start < 0:
            return None
        scope = authorization[start + len("Credential=") :].partition(",")[0].strip()
    else:
        query: str = environ.get("QUERY_STRING", "")
        if "X-Amz-Credential=" in query:
            scope = parse_qs(query).get("X-Amz-Credential", [""])[0]
        elif "AWSAccessKeyId=" in query:
            return Signer(parse_qs(query).get("AWSAccessKeyId", [""])[0], "s3")
        else:
            return None
    parts = scope.split("/")
    if len(parts) != 5:
        return None
    return Signer(parts[0], parts[3])


class CredentialExpiries:
    """When each job credential expires, by access key id (epoch seconds)."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}

    def __bool__(self) -> bool:
        """Whether any credential has an expiry: without one the server checks nothing."""
        return bool(self._expiry)

    def record(self, access_key_id: str, expires_at: float) -> None:
        self._expiry[access_key_id] = expires_at

    def expired(self, access_key_id: str) -> bool:
        expires_at = self._expiry.get(access_key_id)
        return expires_at is not None and time.time() >= expires_at
