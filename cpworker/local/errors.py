"""The one exception the local CodePipeline raises for a modelled API error.

It lives apart from ``ops`` so the engine modules can raise it without importing the
operations layer that imports them. ``cpworker.local.ops`` re-exports it.
"""

from __future__ import annotations

# Errors whose HTTP status is not 400; botocore retries 5xx, so client mistakes never are.
_STATUS = {"ConflictException": 409}


class ServiceError(Exception):
    """A modelled CodePipeline error: answered as ``{"__type": code, "message": message}``.

    botocore maps ``code`` to ``client.exceptions.<code>``, so use modelled names
    (ValidationException, JobNotFoundException, ...).
    """

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else _STATUS.get(code, 400)
