"""Imported once by the forkserver of ``cpworker serve``, so that every job's child
starts with boto3's models already loaded instead of paying ~100 ms to load them.
"""

from __future__ import annotations

from cpworker.artifacts import artifact_s3_client
from cpworker.isolation import run_job

# A client with dummy credentials and an unroutable endpoint: building it loads the
# S3 model into the shared session; it never sends a request.
artifact_s3_client(
    access_key_id="prefork",
    secret_access_key="prefork",  # noqa: S106 - a placeholder, never sent
    session_token=None,
    region="us-east-1",
    endpoint_url="http://127.0.0.1:9",
)

__all__ = ["run_job"]
