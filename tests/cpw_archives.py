"""Builders of hand-made archives for the archive tests (importable from every test folder)."""

from __future__ import annotations

import io
import stat
import warnings
import zipfile


def zip_of(
    *entries: tuple[str | zipfile.ZipInfo, bytes], method: int = zipfile.ZIP_DEFLATED
) -> bytes:
    """A zip of ``(name or ZipInfo, data)`` entries, in order (a name may come twice)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are on purpose
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


def zip_link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    """A zip entry that is a symbolic link ``name`` → ``target`` (Unix mode bits)."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()
