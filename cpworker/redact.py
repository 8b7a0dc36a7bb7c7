"""Keep secrets out of logs, exceptions and failure messages.

Each running job registers its secrets (artifact credentials, values of secret
configuration properties) here; the log formatter and the failure-message
builder replace every registered value with ``****``. The registry is
process-wide on purpose: a credential can surface in a log line from any
library, on any thread, while its job runs.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

MASK = "****"
# Shorter values would mask ordinary words ("yes", "on") all over the logs.
MIN_SECRET_LENGTH = 4


class SecretRegistry:
    """A thread-safe multiset of secret strings currently in use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._ordered: tuple[str, ...] = ()

    @contextmanager
    def active(self, secrets: Iterable[str]) -> Iterator[None]:
        """Register ``secrets`` for the duration of the block."""
        values = [s for s in secrets if len(s) >= MIN_SECRET_LENGTH]
        with self._lock:
            self._counts.update(values)
            self._reorder()
        try:
            yield
        finally:
            with self._lock:
                self._counts.subtract(values)
                self._counts = +self._counts
                self._reorder()

    def _reorder(self) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._ordered = tuple(sorted(self._counts, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``****``."""
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


SECRETS = SecretRegistry()


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` without registered secrets nor the ``extra`` ones."""
    for secret in sorted((s for s in extra if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return SECRETS.scrub(text)
