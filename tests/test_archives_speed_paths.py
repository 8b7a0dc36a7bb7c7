"""The fast paths of extraction keep what the slow ones did: exact modes, bytes and errors.

Files are created with their final mode in one system call when the umask keeps it,
and set explicitly otherwise; whichever path, the mode on disk is the archive's.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cpw_archives import zip_of
from test_artifacts import unix_entry

from cpworker import archives
from cpworker.archives import Budget

MODES = (0o644, 0o755, 0o777, 0o666, 0o444, 0o700, 0o600, 0o000)


@pytest.fixture(params=[0o022, 0o077, 0o000], ids=["umask-022", "umask-077", "umask-000"])
def umask(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The process umask set to the parameter (and the module's view of it), then restored."""
    value: int = request.param
    previous = os.umask(value)
    monkeypatch.setattr(archives, "_UMASK", value)
    yield value
    os.umask(previous)


def extract(tmp_path: Path, data: bytes) -> Path:
    archive, dest = tmp_path / "a.zip", tmp_path / "out"
    archive.write_bytes(data)
    budget = Budget(10 * 1024**3, 100_000)
    archives.extract(archive, "zip", dest, budget=budget, chunk_bytes=4096, file_name="x")
    return dest


def test_modes_are_the_archives_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    entries = [(unix_entry(f"f{mode:03o}", stat.S_IFREG | mode), b"x" * 10_000) for mode in MODES]
    dest = extract(tmp_path, zip_of(*entries))
    for mode in MODES:
        path = dest / f"f{mode:03o}"
        assert stat.S_IMODE(path.stat().st_mode) == mode, (oct(umask), oct(mode))
        os.chmod(path, 0o600)
        assert path.read_bytes() == b"x" * 10_000


def test_the_process_umask_is_read_without_changing_it() -> None:
    previous = os.umask(0o027)
    try:
        assert archives._umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(previous)
