"""Artifact credentials that renew themselves through GetJobDetails.

A job's ``artifactCredentials`` are temporary and carry no expiry time. A job
that runs longer than they last would fail at its upload, so the S3 client of a
job signs with botocore ``RefreshableCredentials`` that fetch fresh ones from
GetJobDetails every ``refresh_s`` seconds (CodePipeline hands out new
credentials there). Requests already under way keep their signature; the next
one — the next part of a multipart upload included — uses the new keys.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.credentials import RefreshableCredentials

from cpworker.model import ArtifactCredentials

Fetch = Callable[[], ArtifactCredentials]


def _metadata(credentials: ArtifactCredentials, refresh_s: float) -> dict[str, Any]:
    expiry = datetime.now(UTC) + timedelta(seconds=refresh_s)
    token = credentials.session_token
    return {
        "access_key": credentials.access_key_id.get_secret_value(),
        "secret_key": credentials.secret_access_key.get_secret_value(),
        "token": token.get_secret_value() if token else None,
        "expiry_time": expiry.isoformat(),
    }


def refreshing(client: Any, first: ArtifactCredentials, fetch: Fetch, refresh_s: float) -> Any:
    """``client`` signing with ``first`` until ``refresh_s`` has passed, then with the
    credentials ``fetch()`` returns, and so on."""
    credentials = RefreshableCredentials.create_from_metadata(
        _metadata(first, refresh_s),
        refresh_using=lambda: _metadata(fetch(), refresh_s),
        method="cpworker-job",
        # Renew when the period is over, not botocore's 10-15 minutes ahead of it.
        advisory_timeout=0,
        mandatory_timeout=0,
    )
    # boto3 has no public way to give one client refreshable credentials without a
    # session per job (and its ~100 ms of model loading); the signer is where
    # every request of this client — s3transfer's included — reads them.
    client._request_signer._credentials = credentials
    return client
