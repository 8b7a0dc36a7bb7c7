"""Object bodies read from moto's store a chunk at a time, as S3 serves them.

moto's GetObject reads the whole object into memory, and answers a ranged GET by
slicing that copy: every read of a 2 GiB artifact took 2 GiB of the emulator's memory
and a full copy, and ``download_file`` (one ranged GET per 8 MiB) or a zip's directory
fetched from its end cost a whole read each, quadratic in the object's size. Inside a
GetObject that :class:`~cpworker.local.server.LocalApp` serves, the object's value is
instead a view that reads only what is sliced or sent, under the key's own lock. Every
other caller of moto (its decorator mode, CopyObject, checksums) gets bytes as before.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from moto.s3.models import FakeKey
from moto.s3.responses import S3Response

_CHUNK_BYTES = 1 << 20

_serving = contextvars.ContextVar("cpworker_local_serving", default=False)
_in_get_object = contextvars.ContextVar("cpworker_local_get_object", default=False)
_install_lock = threading.Lock()
_installed = False


class StoredBody:
    """An object's content, read from its key on demand: its length, slices, and
    iteration in 1 MiB chunks (the WSGI body)."""

    def __init__(self, key: FakeKey) -> None:
        self._key = key
        self._size: int = key.size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, span: slice) -> bytes:
        start, stop, step = span.indices(self._size)
        if step != 1:
            raise ValueError("a stored body is read in contiguous spans")
        return self._read(start, max(stop - start, 0))

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, self._size, _CHUNK_BYTES):
            yield self._read(start, min(_CHUNK_BYTES, self._size - start))

    def _read(self, start: int, count: int) -> bytes:
        key = self._key
        with key.lock:  # moto's own: the buffer's position is shared
            key._value_buffer.seek(start)  # where moto keeps the bytes
            data: bytes = key._value_buffer.read(count)
        return data


@contextmanager
def serving() -> Iterator[None]:
    """Mark a request as the local server's: its GetObject answers a :class:`StoredBody`."""
    install()
    token = _serving.set(True)
    try:
        yield
    finally:
        _serving.reset(token)


def install() -> None:
    """Patch moto once per process (idempotent); inert outside :func:`serving`."""
    global _installed
    with _install_lock:
        if _installed:
            return
        value = FakeKey.value
        assert isinstance(value, property)
        assert value.fget is not None
        FakeKey.value = property(_lazy_value(value.fget), value.fset)
        S3Response.get_object = _marked(S3Response.get_object)
        _installed = True


def _lazy_value(read_all: Callable[[FakeKey], bytes]) -> Callable[[FakeKey], Any]:
    def value(key: FakeKey) -> Any:
        if _serving.get() and _in_get_object.get():
            return StoredBody(key)
        return read_all(key)

    return value


def _marked(get_object: Callable[[S3Response], Any]) -> Callable[[S3Response], Any]:
    def marked(response: S3Response) -> Any:
        token = _in_get_object.set(True)
        try:
            return get_object(response)
        finally:
            _in_get_object.reset(token)

    return marked
