"""The fast paths of extraction keep what the slow ones did: exact modes, bytes and errors.

Files are created with their final mode in one system call when the umask keeps it,
and set explicitly otherwise; whichever path, the mode on disk is the archive's.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cpw_archives import zip_link, zip_of
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


def _patched(data: bytes, offset: int, value: int) -> bytes:
    """The zip with a 32-bit field of its (only) central directory record changed."""
    at = data.index(b"PK\x01\x02") + offset
    return data[:at] + value.to_bytes(4, "little") + data[at + 4 :]


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("chunk_bytes", [1 << 20, 512], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("field", "change", "problem"),
    [(16, 1, "fails its CRC check"), (24, 10, "is shorter than its declared size")],
    ids=["crc", "size"],
)
def test_small_and_streamed_entries_are_checked_alike(
    tmp_path: Path, method: int, chunk_bytes: int, field: int, change: int, problem: str
) -> None:
    content = b"print('hello')\n" * 200  # 3,000 bytes: read whole, or in 512-byte chunks
    good = zip_of(("src/a.py", content), method=method)
    declared = int.from_bytes(good[good.index(b"PK\x01\x02") + field :][:4], "little")
    archive, dest = tmp_path / "a.zip", tmp_path / "out"
    archive.write_bytes(_patched(good, field, declared + change))
    budget = Budget(10 * 1024**3, 100_000)
    with pytest.raises(archives.CorruptArchiveError, match=f"'src/a.py' {problem}"):
        archives.extract(
            archive, "zip", dest, budget=budget, chunk_bytes=chunk_bytes, file_name="x"
        )
    assert not dest.exists()


def test_a_small_entry_is_placed_before_it_is_read(tmp_path: Path) -> None:
    """An unsafe name is refused as unsafe even when its content is corrupt too."""
    good = zip_of(("../a.py", b"x" * 100))
    archive = tmp_path / "a.zip"
    archive.write_bytes(_patched(good, 16, 0))
    budget = Budget(10 * 1024**3, 100_000)
    with pytest.raises(archives.UnsafeEntryError):
        archives.extract(
            archive, "zip", tmp_path / "out", budget=budget, chunk_bytes=4096, file_name="x"
        )


@pytest.mark.parametrize("kept_bytes", [8 * 1024 * 1024, 0], ids=["kept", "read-again"])
def test_entries_kept_or_read_again_extract_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept_bytes: int
) -> None:
    """A small central directory is parsed once and kept; a large one is read twice."""
    monkeypatch.setattr(archives, "_KEPT_BYTES", kept_bytes)
    files = {
        f"d{index % 3}/f{index}.txt": f"file {index}\n".encode() * index for index in range(50)
    }
    dest = extract(tmp_path, zip_of(*files.items()))
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*.txt")} == files


def test_too_many_declared_bytes_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive, dest = tmp_path / "a.zip", tmp_path / "out"
    archive.write_bytes(zip_of(("a.txt", b"a" * 1000), ("b.txt", b"b" * 1000)))
    budget = Budget(1500, 100)
    with pytest.raises(archives.LimitExceededError, match="max_total_bytes"):
        archives.extract(archive, "zip", dest, budget=budget, chunk_bytes=4096, file_name="x")
    assert not dest.exists()


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_large_and_small_entries_replace_each_other_in_archive_order(tmp_path: Path) -> None:
    """Large entries (streamed in chunks) and small ones (read whole) mix: a later entry
    of the same name replaces an earlier one, large or small, and links and modes are as
    the archive says."""
    big = [bytes([index]) * (50_000 + index) for index in range(4)]
    entries = [
        (unix_entry("bin/a.bin", stat.S_IFREG | 0o755), big[0]),
        ("src/one.py", b"one\n"),
        ("bin/b.bin", big[1]),
        ("src/one.py", big[2]),  # a small file replaced by a large one
        (unix_entry("bin/a.bin", stat.S_IFREG | 0o640), b"small now\n"),  # large → small
        zip_link("latest", "bin/b.bin"),
        ("bin/c.bin", big[3]),
        *((f"src/f{index}.txt", f"{index}\n".encode()) for index in range(100)),
    ]
    dest = extract(tmp_path, zip_of(*entries))

    assert (dest / "bin" / "a.bin").read_bytes() == b"small now\n"
    assert stat.S_IMODE((dest / "bin" / "a.bin").stat().st_mode) == 0o640
    assert (dest / "src" / "one.py").read_bytes() == big[2]
    assert (dest / "latest").read_bytes() == big[1]
    assert (dest / "bin" / "c.bin").read_bytes() == big[3]
    assert all((dest / f"src/f{i}.txt").read_bytes() == f"{i}\n".encode() for i in range(100))


def test_a_large_entry_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    good = zip_of(("big.bin", os.urandom(200_000)), *((f"f{i}.txt", b"x") for i in range(300)))
    archive, dest = tmp_path / "a.zip", tmp_path / "out"
    archive.write_bytes(_patched(good, 16, 0))  # the first record's CRC: big.bin's
    descriptors = _open_descriptors()
    with pytest.raises(archives.CorruptArchiveError, match=r"'big\.bin' fails its CRC check"):
        archives.extract(
            archive, "zip", dest, budget=Budget(1 << 30, 1000), chunk_bytes=4096, file_name="x"
        )
    assert not dest.exists()
    assert _open_descriptors() == descriptors


class _Arrived:
    """A download of ``archive`` that has arrived whole, except the ranges it lends: a
    download never writes those to the file (zeros stay there), it serves them itself."""

    def __init__(self, archive: Path, data: bytes) -> None:
        archive.write_bytes(data)
        self.archive, self.data = archive, data
        self.lent: list[tuple[int, int]] = []
        self.given_back = 0

    def wait(self, start: int, end: int) -> None:
        """Every byte not lent is there."""

    def lend(self, start: int, end: int) -> _LentBytes:
        self.lent.append((start, end))
        with self.archive.open("r+b") as file:
            file.seek(start)
            file.write(bytes(end - start))
        return _LentBytes(self, self.data[start:end])


class _LentBytes(io.BytesIO):
    def __init__(self, download: _Arrived, data: bytes) -> None:
        super().__init__(data)
        self._download = download

    def close(self) -> None:
        if not self.closed:
            self._download.given_back += 1
        super().close()


def _extract_incoming(tmp_path: Path, data: bytes) -> tuple[Path, _Arrived]:
    """Extract ``data`` as a zip still downloading: the extracted tree and the download."""
    incoming, dest = _Arrived(tmp_path / "a.zip", data), tmp_path / "out"
    budget = Budget(1 << 30, 1000)
    archives.extract(
        incoming.archive,
        "zip",
        dest,
        budget=budget,
        chunk_bytes=4096,
        file_name="x",
        incoming=incoming,
    )
    return dest, incoming


def test_a_large_entry_is_read_from_the_download_and_not_from_the_file(tmp_path: Path) -> None:
    blob = os.urandom(300_000)
    data = zip_of(("big.bin", blob), *((f"f{i}.txt", f"{i}\n".encode()) for i in range(20)))
    dest, incoming = _extract_incoming(tmp_path, data)

    assert (dest / "big.bin").read_bytes() == blob
    assert all((dest / f"f{i}.txt").read_bytes() == f"{i}\n".encode() for i in range(20))
    [(start, end)] = incoming.lent  # the large entry only, its compressed bytes exactly
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("big.bin")
    assert end - start == info.compress_size
    assert incoming.given_back == 1


def test_a_lent_entry_that_fails_gives_the_download_back(tmp_path: Path) -> None:
    data = _patched(zip_of(("big.bin", os.urandom(200_000)), ("f.txt", b"x")), 16, 0)
    incoming = _Arrived(tmp_path / "a.zip", data)
    with pytest.raises(archives.CorruptArchiveError, match=r"'big\.bin' fails its CRC check"):
        archives.extract(
            incoming.archive,
            "zip",
            tmp_path / "out",
            budget=Budget(1 << 30, 1000),
            chunk_bytes=4096,
            file_name="x",
            incoming=incoming,
        )
    assert not (tmp_path / "out").exists()
    assert incoming.lent
    assert incoming.given_back == len(incoming.lent)


def _overlapping_zip() -> tuple[bytes, bytes, bytes]:
    """A zip whose large entry's bytes hold the whole of a second entry, header and all
    (as overlapping-entry bombs do): (the zip, the large entry's data, the second's)."""
    inner_data = b"inner file\n"
    inner = zipfile.ZipInfo("inner.txt")
    inner.compress_type = zipfile.ZIP_STORED
    inner.CRC, inner.file_size, inner.compress_size = zlib.crc32(inner_data), 11, 11
    prefix = os.urandom(100_000)
    outer_data = prefix + inner.FileHeader() + inner_data + os.urandom(100_000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("outer.bin", outer_data)
        outer = zf.getinfo("outer.bin")
        inner.header_offset = outer.header_offset + len(outer.FileHeader()) + len(prefix)
        zf.filelist.append(inner)  # listed in the directory, its bytes inside outer.bin's
        zf.NameToInfo[inner.filename] = inner
    return buffer.getvalue(), outer_data, inner_data


def test_an_entry_whose_bytes_hold_another_entry_is_read_from_the_file(tmp_path: Path) -> None:
    data, outer_data, inner_data = _overlapping_zip()
    dest, incoming = _extract_incoming(tmp_path, data)

    assert (dest / "outer.bin").read_bytes() == outer_data
    assert (dest / "inner.txt").read_bytes() == inner_data
    assert incoming.lent == []
