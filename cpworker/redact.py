"""Keep secrets out of logs, exceptions and failure messages.

Each running job registers its secrets (artifact credentials, values of secret
configuration properties) here; the log formatter and the failure-message
builder replace every registered value with ``****``. The registry is
process-wide on purpose: a credential can surface in a log line from any
library, on any thread, while its job runs.

A secret rarely shows up only as itself: a session token (``+``, ``/``, ``=``)
is percent-encoded in a presigned URL, a password with ``"`` or ``\\`` is
escaped in JSON or in a ``repr``. Every such form is masked too. The forms are
computed once per secret; scrubbing a line is one substring test per form, and
only when some are found, one search with a regular expression of those forms
(alternatives longest first), so that registering secrets, which every job does,
compiles nothing.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from urllib.parse import quote, quote_plus

MASK = "****"
# Shorter values would mask ordinary words ("yes", "on") all over the logs.
MIN_SECRET_LENGTH = 4


def forms(secret: str) -> set[str]:
    """The ways ``secret`` appears in text: as is, JSON-escaped, inside a ``repr``,
    and percent-encoded (path, query component, form encoding)."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }


class _Masker:
    """Replaces every form of a fixed set of secrets with ``****``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants = {form for secret in secrets for form in _forms_of(secret)}
        # Longest first: a secret that contains another is masked whole.
        self._forms = tuple(sorted(variants, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        # A substring test per form is cheap, and a line rarely holds a secret; only the
        # forms found are compiled (cached), so registering secrets compiles nothing.
        present = tuple(form for form in self._forms if form in text)
        if not present:
            return text
        pieces: list[str] = []
        done = 0
        for start, stop in self._spans(_pattern_for(present), text):
            pieces += (text[done:start], MASK)
            done = stop
        return "".join(pieces) + text[done:]

    @staticmethod
    def _spans(pattern: re.Pattern[str], text: str) -> Iterator[tuple[int, int]]:
        """Where secrets are, overlapping ones merged, so that none shows even in part."""
        position = 0
        while (found := pattern.search(text, position)) is not None:
            start, stop = found.span()
            inner = start + 1
            while inner < stop:
                overlap = pattern.match(text, inner)
                if overlap is not None:
                    stop = max(stop, overlap.end())
                inner += 1
            yield start, stop
            position = stop


class SecretRegistry:
    """A thread-safe multiset of secret strings currently in use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._masker = _masker_for(frozenset())

    @contextmanager
    def active(self, secrets: Iterable[str]) -> Iterator[None]:
        """Register ``secrets`` for the duration of the block (nested holds add up)."""
        values = [s for s in secrets if len(s) >= MIN_SECRET_LENGTH]
        with self._lock:
            self._counts.update(values)
            self._masker = _masker_for(frozenset(self._counts))
        try:
            yield
        finally:
            with self._lock:
                self._counts.subtract(values)
                self._counts = +self._counts
                self._masker = _masker_for(frozenset(self._counts))

    def scrub(self, text: str) -> str:
        """``text`` with every form of every registered secret replaced by ``****``."""
        return self._masker(text)


@lru_cache(maxsize=256)
def _forms_of(secret: str) -> frozenset[str]:
    return frozenset(forms(secret))


@lru_cache(maxsize=256)
def _pattern_for(present: tuple[str, ...]) -> re.Pattern[str]:
    """One search for the forms found in a text (given longest first)."""
    return re.compile("|".join(map(re.escape, present)))


@lru_cache(maxsize=32)
def _masker_for(secrets: frozenset[str]) -> _Masker:
    # Made once per set of secrets: a result is scrubbed field by field with the same
    # ones, and jobs come and go with the same registry contents.
    return _Masker(secrets)


SECRETS = SecretRegistry()


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` without registered secrets nor the ``extra`` ones, in any of their forms."""
    wanted = frozenset(s for s in extra if len(s) >= MIN_SECRET_LENGTH)
    if wanted:
        text = _masker_for(wanted)(text)
    return SECRETS.scrub(text)
