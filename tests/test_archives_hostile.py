"""Hostile archives (issue 10) against ``cpworker.archives``, as extraction sees them.

Each archive is built here, written to disk and extracted, listed or opened the way
``InputArtifact`` does. Every refusal must be a typed ``ArchiveError`` with a clear
message that never names a host path, leave no destination behind and write nothing
outside it; time is measured in resolution steps and memory in a child's peak RSS,
never in seconds.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import struct
import subprocess
import sys
import tarfile
import textwrap
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cpw_archives import zip_link, zip_of

from cpworker import archives
from cpworker.archives import ArchiveError, Budget, LimitExceededError, UnsafeEntryError

MIB = 1024 * 1024
CHUNK = 64 * 1024

# ---------------------------------------------------------------- building archives


def tar_of(*members: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:  # type: ignore[call-overload]
        for member in members:
            info, data = member if isinstance(member, tuple) else (member, b"")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def gzip_raw(chunks: Iterator[bytes]) -> bytes:
    """A gzip stream of ``chunks`` without holding them all (for large, compressible tars)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return b"".join(compressor.compress(chunk) for chunk in chunks) + compressor.flush()


LOCAL = struct.Struct("<4s2B4HL2L2H")
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")


def central_directory_bomb(records: int, *, declared: int) -> bytes:
    """One stored file, and a central directory of ``records`` entries all pointing at it.

    The end records declare ``declared`` entries (zip64 when that does not fit 16 bits).
    """
    crc = zlib.crc32(b"x")
    local = LOCAL.pack(b"PK\x03\x04", 20, 0, 0, 0, 0, 0x21, crc, 1, 1, 1, 0) + b"a" + b"x"
    mode = (stat.S_IFREG | 0o644) << 16
    record = CENTRAL.pack(
        b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0x21, crc, 1, 1, 1, 0, 0, 0, 0, mode, 0
    )
    directory = (record + b"a") * records
    end = len(local) + len(directory)
    if declared <= 0xFFFF:
        eocd = struct.pack(
            "<4s4H2LH", b"PK\x05\x06", 0, 0, declared, declared, len(directory), len(local), 0
        )
        return local + directory + eocd
    zip64 = struct.pack(
        "<4sQ2H2L4Q",
        b"PK\x06\x06",
        44,
        45,
        45,
        0,
        0,
        declared,
        declared,
        len(directory),
        len(local),
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return local + directory + zip64 + locator + eocd


def zip64_sized(name: bytes, data: bytes) -> bytes:
    """A stored entry whose sizes are in the zip64 extra field (as for files over 4 GiB)."""
    crc, mark = zlib.crc32(data), 0xFFFFFFFF
    extra = struct.pack("<2H2Q", 1, 16, len(data), len(data))
    local = LOCAL.pack(b"PK\x03\x04", 45, 0, 0, 0, 0, 0x21, crc, mark, mark, len(name), len(extra))
    mode = (stat.S_IFREG | 0o644) << 16
    record = CENTRAL.pack(
        b"PK\x01\x02",
        45,
        3,
        45,
        0,
        0,
        0,
        0,
        0x21,
        crc,
        mark,
        mark,
        len(name),
        len(extra),
        0,
        0,
        0,
        mode,
        0,
    )
    head = local + name + extra + data
    directory = record + name + extra
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(head), 0)
    return head + directory + eocd


# ---------------------------------------------------------------- extracting and refusing


class Land:
    """An archive file and a destination inside a pretend workspace under ``tmp_path``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.archive = root / "ws" / ".cpworker" / "inputs" / "Src"
        self.dest = root / "ws" / "inputs" / "Src"
        self.archive.parent.mkdir(parents=True)
        self.dest.parent.mkdir()

    def put(self, data: bytes) -> archives.Kind:
        self.archive.write_bytes(data)
        return archives.sniff(self.archive)

    def extract(self, data: bytes, **limits: int) -> Budget:
        kind = self.put(data)
        budget = Budget(
            limits.pop("max_bytes", 10 * 1024**3), limits.pop("max_entries", 100_000), **limits
        )
        archives.extract(
            self.archive, kind, self.dest, budget=budget, chunk_bytes=CHUNK, file_name="Src"
        )
        return budget

    def refuse(
        self, data: bytes, error: type[ArchiveError], text: str, **limits: int
    ) -> ArchiveError:
        """Extraction fails with ``error`` and ``text``; nothing stays, nor names a host path."""
        self.archive.write_bytes(data)
        before = sorted(self.root.rglob("*"))
        with pytest.raises(ArchiveError) as caught:
            self.extract(data, **limits)
        assert isinstance(caught.value, error), repr(caught.value)
        assert text in str(caught.value)
        assert_no_host_path(caught.value, self.root)
        assert not self.dest.exists()
        assert sorted(self.root.rglob("*")) == before
        return caught.value


def assert_no_host_path(exc: ArchiveError, root: Path) -> None:
    shown = f"{exc.problem}: {exc}"
    for path in {str(root), os.path.realpath(root), str(root.parent)}:
        assert path not in shown, shown


@pytest.fixture
def land(tmp_path: Path) -> Land:
    return Land(tmp_path)


# ---------------------------------------------------------------- 1. expansion ratio


def _zip_method(method: int) -> bytes:
    return zip_of(("zeros", bytes(8 * MIB)), method=method)


def _tar_zeros(mode: str) -> bytes:
    return tar_of((tar_entry("zeros"), bytes(8 * MIB)), mode=mode)


@pytest.mark.parametrize(
    "build",
    [
        lambda: _zip_method(zipfile.ZIP_DEFLATED),
        lambda: _zip_method(zipfile.ZIP_BZIP2),
        lambda: _zip_method(zipfile.ZIP_LZMA),
        lambda: _tar_zeros("w:gz"),
        lambda: _tar_zeros("w:bz2"),
        lambda: _tar_zeros("w:xz"),
    ],
    ids=["zip-deflate", "zip-bzip2", "zip-lzma", "tar-gz", "tar-bz2", "tar-xz"],
)
def test_bomb_stops_once_past_the_threshold(land: Land, build: Any) -> None:
    # 8 MiB of zeros compress to at most 40 KiB: refused at the first chunk past 1 MB
    error = land.refuse(
        build(),
        LimitExceededError,
        "expands more than 50 times its compressed size: ",
        max_ratio=50,
        ratio_check_after=1_000_000,
    )
    assert error.problem == "exceeds the extraction limits"
    written = int(str(error).split(": ")[1].split()[0])
    assert 1_000_000 < written <= 1_000_000 + CHUNK


def test_ratio_is_checked_only_past_the_threshold(land: Land) -> None:
    budget = land.extract(
        zip_of(("zeros", bytes(900_000))), max_ratio=50, ratio_check_after=1_000_000
    )
    assert (land.dest / "zeros").stat().st_size == 900_000
    assert budget.written > 50 * budget.read  # a high ratio, but below the threshold


@pytest.mark.parametrize(
    "data",
    [os.urandom(3 * MIB), zip_of(("random", os.urandom(3 * MIB)), method=zipfile.ZIP_STORED)],
    ids=["single-file", "stored-zip"],
)
def test_incompressible_content_never_trips_the_ratio(land: Land, data: bytes) -> None:
    budget = land.extract(data, max_ratio=1, ratio_check_after=0)
    assert budget.written == 3 * MIB
    assert budget.read >= budget.written


# ---------------------------------------------------------------- 2. memory and entry counts

PEAK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from cpworker import archives

    for line in sys.stdin:
        path, kind, operation, limits = json.loads(line)
        archive = Path(path)
        budget = archives.Budget(10 * 1024**3, 100_000, **limits)
        try:
            if operation == "extract":
                dest = archive.with_suffix(".out")
                archives.extract(
                    archive, kind, dest, budget=budget, chunk_bytes=1 << 20, file_name="x"
                )
            elif operation == "names":
                archives.member_names(archive, kind, "x")
            else:
                archives.open_member(archive, kind, "a", "x")
            outcome = ["accepted", ""]
        except archives.ArchiveError as exc:
            outcome = [type(exc).__name__, str(exc)]
        print(json.dumps([archive.name, operation, *outcome]), flush=True)
    # VmHWM, not ru_maxrss: that one keeps the parent's figure across fork and exec
    status = Path("/proc/self/status").read_text()
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    """
)


def test_refused_archives_keep_memory_bounded(tmp_path: Path) -> None:
    # Given a 47 MB zip whose central directory holds a million records (declared
    # honestly in zip64, or understated), and a zip entry of 200 MB of zeros in bzip2
    honest, understated, bomb = (
        tmp_path / n for n in ("honest.zip", "understated.zip", "bomb.zip")
    )
    honest.write_bytes(central_directory_bomb(1_000_000, declared=1_000_000))
    understated.write_bytes(central_directory_bomb(1_000_000, declared=1))
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_BZIP2) as zf, zf.open("zeros", "w") as out:
        for _ in range(200):
            out.write(bytes(MIB))
    jobs = [
        *(
            [str(archive), "zip", operation, {}]
            for archive in (honest, understated)
            for operation in ("extract", "names", "open")
        ),
        [str(bomb), "zip", "extract", {"ratio_check_after": 10 * MIB}],
    ]
    # When a child process extracts, lists and opens them with the default limits
    child = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT],
        input="".join(json.dumps(job) + "\n" for job in jobs),
        capture_output=True,
        text=True,
        check=True,
    )
    *outcomes, peak_kib = child.stdout.splitlines()
    # Then each is refused, and the child's peak RSS stays under 150 MiB
    results = [json.loads(line) for line in outcomes]
    for name, operation, error, message in results[:-1]:
        assert (error, message) == (
            "LimitExceededError",
            "it has more than 100000 entries (max_entries)",
        ), (name, operation)
    assert results[-1][2] == "LimitExceededError"
    assert "expands more than 200 times its compressed size" in results[-1][3]
    assert int(peak_kib) < 150 * 1024, f"peak RSS {int(peak_kib) // 1024} MiB"


def test_entry_limit_bounds_listing_and_opening(land: Land) -> None:
    many_zip = zip_of(*((f"f{i}", b"x") for i in range(30)))
    many_tar = tar_of(*((tar_entry(f"f{i}"), b"x") for i in range(30)), mode="w:gz")
    for data in (many_zip, many_tar):
        kind = land.put(data)
        with pytest.raises(LimitExceededError, match=r"more than 10 entries \(max_entries\)"):
            archives.member_names(land.archive, kind, "Src", max_entries=10)
        with pytest.raises(LimitExceededError, match=r"more than 10 entries \(max_entries\)"):
            archives.open_member(land.archive, kind, "f0", "Src", max_entries=10)
        land.refuse(data, LimitExceededError, "it has more than 10 entries", max_entries=10)
        assert len(archives.member_names(land.archive, kind, "Src", max_entries=30)) == 30


def test_tar_members_are_counted_while_streaming(land: Land) -> None:
    # 20 000 members of one block each, 10 MB of tar in 20 KB of gzip
    header = tarfile.TarInfo("f").tobuf(format=tarfile.USTAR_FORMAT)
    data = gzip_raw(iter([header * 20_000, bytes(1024)]))
    error = land.refuse(data, LimitExceededError, "it has more than 2000 entries", max_entries=2000)
    assert str(error) == "it has more than 2000 entries (max_entries)"


def test_directories_made_on_the_way_count_as_entries(land: Land) -> None:
    land.refuse(
        zip_of(("a/b/c/d/e/f.txt", b"x")), LimitExceededError, "more than 4 entries", max_entries=4
    )
    land.extract(zip_of(("a/b/c/d/e/f.txt", b"x")), max_entries=6)
    assert (land.dest / "a/b/c/d/e/f.txt").read_bytes() == b"x"


def _pax_header(size: int) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _long_names(count: int) -> Iterator[bytes]:
    long_name = tarfile.TarInfo("././@LongLink")
    long_name.type, long_name.size = tarfile.GNUTYPE_LONGNAME, 2
    block = long_name.tobuf(format=tarfile.GNU_FORMAT) + b"n\x00".ljust(512, b"\x00")
    yield block * count
    yield tarfile.TarInfo("f").tobuf(format=tarfile.GNU_FORMAT) + bytes(1024)


def _pax_sparse() -> bytes:
    info = tarfile.TarInfo("sparse")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s"}
    return tar_of((info, b"3\n" + bytes(510)), mode="w:gz")


@pytest.mark.parametrize(
    ("build", "error", "text"),
    [
        (
            lambda: gzip_raw(iter([_pax_header(64 * MIB), bytes(64 * MIB + 1024)])),
            LimitExceededError,
            "extended header of 67108864 bytes",
        ),
        (
            lambda: gzip_raw(_long_names(2000)),
            LimitExceededError,
            "more than 16 extended headers in a row",
        ),
        (
            lambda: tar_of(tar_entry("s", tarfile.GNUTYPE_SPARSE)),
            ArchiveError,
            "entry 's' is a sparse file",
        ),
        (_pax_sparse, ArchiveError, "entry 's' is a sparse file, which is not supported"),
    ],
    ids=["64MiB-pax-header", "2000-long-names", "gnu-sparse", "pax-sparse-1.0"],
)
def test_tar_headers_are_bounded(
    land: Land, build: Any, error: type[ArchiveError], text: str
) -> None:
    data = build()
    assert land.put(data) == "tar"
    land.refuse(data, error, text)
    with pytest.raises(error, match=text):
        archives.member_names(land.archive, "tar", "Src")


# ---------------------------------------------------------------- 3. symbolic links


def _chains(count: int, length: int, *, backwards: bool) -> bytes:
    """``count`` chains of ``length`` links to the directory ``d``, a file through each end.

    Backwards, each link is written before the one it points to, so it dangles until the
    chain is complete and is resolved again at the end.
    """
    members = [tar_entry("d", tarfile.DIRTYPE)]
    for c in range(count):
        chain = [
            tar_entry(f"c{c}-{i}", tarfile.SYMTYPE, f"c{c}-{i - 1}" if i else "d")
            for i in range(length)
        ]
        members += chain[::-1] if backwards else chain
        members.append(tar_entry(f"c{c}-{length - 1}/f{c}"))
    return tar_of(*members)


@pytest.mark.parametrize("backwards", [False, True], ids=["forwards", "backwards"])
def test_link_resolution_is_linear(tmp_path: Path, backwards: bool) -> None:
    steps = {}
    for count in (5, 20):
        land = Land(tmp_path / f"{count}")
        budget = land.extract(_chains(count, 40, backwards=backwards))
        assert (land.dest / "d" / f"f{count - 1}").is_file()
        steps[count] = budget.link_steps
    # 4x the links, 4x the steps; a few steps per entry, where resolving each link from
    # scratch (at creation and again at the end) would cost 40 to 80
    assert steps[20] <= 4 * steps[5] * 1.05, steps
    assert steps[20] <= 10 * 20 * 41, steps


@pytest.mark.parametrize("length", [41, 1500])
def test_chain_over_40_links_is_refused(land: Land, length: int) -> None:
    error = land.refuse(
        _chains(1, length, backwards=False),
        LimitExceededError,
        "symbolic link 'c0-40' leads through more than 40 symbolic links (a chain or a loop)",
    )
    assert "c0-40" in str(error)


def test_chain_of_40_links_is_kept(land: Land) -> None:
    land.extract(_chains(1, 40, backwards=True))
    assert os.readlink(land.dest / "c0-39") == "c0-38"
    assert (land.dest / "c0-39" / "f0").is_file()  # the kernel follows all 40


def test_link_loop_is_refused(land: Land) -> None:
    land.refuse(
        zip_of(zip_link("a", "b"), zip_link("b", "a")),
        LimitExceededError,
        "symbolic link 'b' leads through more than 40 symbolic links (a chain or a loop)",
    )


def test_a_later_link_that_makes_an_earlier_one_escape_is_refused(land: Land) -> None:
    # "x" -> "a/../.." is inside while "a" leads two levels down (to the missing "b/c");
    # once "b/c" -> "." exists, "a" leads one level down and "x" climbs out.
    links = (zip_link("a", "b/c"), zip_link("x", "a/../.."), ("b/", b""), zip_link("b/c", "."))
    land.refuse(zip_of(*links), UnsafeEntryError, "symbolic link 'x' points outside the extraction")
    through = zip_of(*links, ("x/evil.txt", b"pwned"))
    land.refuse(
        through, UnsafeEntryError, "entry 'x/evil.txt' would be written outside the extraction"
    )


# ---------------------------------------------------------------- 4. names the OS refuses, OSErrors


@pytest.mark.parametrize("form", ["zip", "tar"])
def test_component_over_name_max(land: Land, form: str) -> None:
    name = "dir/" + "n" * 300
    data = zip_of((name, b"x")) if form == "zip" else tar_of((tar_entry(name), b"x"))
    error = land.refuse(
        data,
        LimitExceededError,
        "has a name component of 300 bytes, more than the file system allows (255)",
    )
    assert "'dir/nnnn" in str(error)


def test_path_over_path_max(land: Land) -> None:
    too_long = "/".join(["p" * 250] * 20)  # 5019 characters: longer than any path
    land.refuse(
        zip_of((too_long, b"x")),
        LimitExceededError,
        "has a name of 5019 characters, longer than any path can be (4096)",
    )
    long = "/".join(["p" * 250] * 16 + ["q" * 74])  # 4090: too long under the destination
    land.refuse(
        tar_of((tar_entry(long), b"x"), mode="w:gz"),
        LimitExceededError,
        "makes a path longer than the file system allows under the extraction directory",
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: zip_of(("d/" * 1200 + "f", b"x")),
        lambda: tar_of(*(tar_entry("d/" * i, tarfile.DIRTYPE) for i in range(1, 1201))),
    ],
    ids=["one-deep-entry", "1200-directory-entries"],
)
def test_deep_nesting_is_refused(land: Land, build: Any) -> None:
    error = land.refuse(build(), LimitExceededError, "is nested more than 256 directories deep")
    assert str(error).startswith("entry 'd/d/d/")


def test_nesting_up_to_256_levels_is_kept(land: Land) -> None:
    land.extract(zip_of(("d/" * 255 + "f", b"deep")))
    assert (land.dest / ("d/" * 255 + "f")).read_bytes() == b"deep"


@pytest.mark.parametrize(
    ("call", "leaf", "entry", "data"),
    [
        ("open", "file.txt", "a/file.txt", zip_of(("a/file.txt", b"x"))),
        ("symlink", "link", "link", zip_of(zip_link("link", "target"))),
        ("mkdir", "a", "a/b/c.txt", tar_of((tar_entry("a/b/c.txt"), b"x"))),
        (
            "link",
            "hard",
            "hard",
            tar_of((tar_entry("f"), b"x"), tar_entry("hard", tarfile.LNKTYPE, "f")),
        ),
    ],
)
def test_os_errors_name_the_entry_not_the_host_path(
    land: Land, monkeypatch: pytest.MonkeyPatch, call: str, leaf: str, entry: str, data: bytes
) -> None:
    real = getattr(os, call)

    def fail(*args: Any, **kwargs: Any) -> Any:
        """The OS refusing the entry's own path, with that (absolute) path in the error."""
        if any(isinstance(arg, str) and os.path.basename(arg) == leaf for arg in args):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(os, call, fail)
    error = land.refuse(
        data, ArchiveError, f"entry '{entry}' could not be extracted: No space left on device"
    )
    assert type(error) is ArchiveError


def test_listing_failures_name_no_host_path(land: Land) -> None:
    data = zip_of(("a.txt", os.urandom(5000)))
    land.put(data[: len(data) - 30])
    with pytest.raises(ArchiveError) as caught:
        archives.member_names(land.archive, "zip", "Src")
    assert str(caught.value) == "it has no end of central directory record"
    assert_no_host_path(caught.value, land.root)


# ---------------------------------------------------------------- what still works


def test_zip_methods_and_zip64_sizes_extract(land: Land) -> None:
    content = os.urandom(1000) * 50
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        target = Land(land.root / str(method))
        target.extract(zip_of(("dir/data.bin", content), ("empty", b""), method=method))
        assert (target.dest / "dir/data.bin").read_bytes() == content
        assert (target.dest / "empty").read_bytes() == b""
        reader = archives.open_member(target.archive, "zip", "dir/data.bin", "Src")
        assert reader is not None
        with reader:
            assert reader.read() == content
    land.extract(zip64_sized(b"big.bin", content))
    assert (land.dest / "big.bin").read_bytes() == content


def test_unsupported_compression_is_a_clear_error(land: Land) -> None:
    data = bytearray(zip_of(("a.txt", b"text")))
    for signature, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        struct.pack_into("<H", data, data.index(signature) + at, 9)  # deflate64
    land.refuse(
        bytes(data), ArchiveError, "entry 'a.txt' uses compression method 9, which is not supported"
    )


def test_zip_directory_walks_deep_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1100 levels: deeper than the interpreter's recursion limit (made and removed one
    # relative step at a time, since the test's own tools recurse)
    levels = 1100
    deep = tmp_path / "deep"
    deep.mkdir()
    monkeypatch.chdir(deep)
    made = 0
    try:
        for made in range(1, levels + 1):  # noqa: B007 - the count is used for clean-up
            os.mkdir("d")
            os.chdir("d")
        Path("leaf.txt").write_text("leaf")
        archives.zip_directory(deep, tmp_path / "deep.zip", CHUNK)
        with zipfile.ZipFile(tmp_path / "deep.zip") as zf:
            assert zf.namelist()[-1] == "d/" * levels + "leaf.txt"
    finally:
        Path("leaf.txt").unlink(missing_ok=True)
        for _ in range(made):
            os.chdir("..")
            os.rmdir("d")
