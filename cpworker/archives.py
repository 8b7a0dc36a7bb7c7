"""Archive handling for artifacts, apart from S3: sniffing, safe extraction, zipping.

Artifacts come from other people's pipelines, so reading and extraction trust nothing
in them:

- every entry must land inside the destination: ``..`` components, absolute names,
  Windows names (drive letters, backslashes) and NUL bytes are refused;
- symbolic links are created only if their target resolves inside the destination
  (checked when created and again once everything is extracted, because a later link
  can change what an earlier one resolves to); hard links only to files already
  extracted; device files, fifos, sockets and sparse files are refused;
- links are resolved in a model of what extraction created, never by the OS: each
  link once (memoised until the tree changes under it) and at most ``MAX_LINK_HOPS``
  (40, as the Linux kernel) in one resolution, so a longer chain or a loop is refused
  instead of costing quadratic time;
- bytes are counted while they are written and entries while they are read, so an
  archive that lies about its sizes cannot exceed the limits; directories created on
  the way count as entries; past a threshold, the expansion ratio is bounded too;
- a name component longer than the file system's NAME_MAX, a path longer than its
  PATH_MAX allows under the destination, or more than ``MAX_DEPTH`` (256) levels of
  nesting are refused before anything is written;
- memory stays flat whatever the archive says: the zip central directory is streamed
  (its declared entry count is checked before any entry is read), tar members are not
  kept once read, extended tar headers are bounded in size and number, and every
  decompression is bounded per read;
- a later entry with the name of an earlier file replaces it; a file and a directory
  with the same name make the archive invalid.

Files keep their permission bits (``& 0o777``: never setuid, setgid or sticky);
directories get default permissions, so extraction and clean-up can always write
into them.

Zip (stored, deflate, bzip2, lzma) and tar (plain, gzip, bzip2, xz) go through the
same checks; zip is read by the code below (``zipfile`` builds every entry in memory
before anyone can count them), tar by ``tarfile`` with bounded headers. Every failure
is an ``ArchiveError`` whose ``problem`` and message the caller puts after the
artifact's name; messages name entries as the archive does and never a host path (an
OSError keeps only the system's reason). Nothing here knows about S3 or jobs.
"""

from __future__ import annotations

import bisect
import bz2
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, NamedTuple, Protocol

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

Kind = Literal["zip", "tar", "file"]

DEFAULT_FILE_MODE = 0o644
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_RATIO = 200
DEFAULT_RATIO_CHECK_AFTER = 1024**3
MAX_LINK_HOPS = 40  # symbolic links followed in one resolution (the kernel's MAXSYMLINKS)
MAX_DEPTH = 256  # levels of nesting under the destination; deeper trees break tools
_NAME_MAX = 255  # used when the file system does not say (os.pathconf)
_PATH_MAX = 4096
_MAX_LINK_BYTES = _PATH_MAX - 1  # the longest target a Linux symbolic link holds
_MAX_EXTENDED_BYTES = 1024 * 1024  # one pax or GNU long-name header, read whole by tarfile
_MAX_EXTENDED_HEADERS = 16  # in a row before one tar member; tarfile reads them by recursion
_MAX_LZMA_DICT = 64 * 1024 * 1024  # a zip LZMA entry's dictionary (xz -9 uses 64 MiB)
_COMPRESSED_READ = 64 * 1024  # compressed bytes read at a time from a zip entry
_SHOWN_NAME = 160  # characters of an entry name shown in a message
ZIP_MAGIC = b"PK\x03\x04"
_UNIX = 3  # zip "version made by" host system: Unix, so external_attr holds st_mode
_DRIVE = re.compile(r"^[A-Za-z]:")
_READ_ERRORS = (
    tarfile.TarError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
    EOFError,
    struct.error,
)


class ArchiveError(Exception):
    """An archive's contents cannot be used; ``problem`` reads after "artifact 'X'"."""

    problem = "could not be processed"


class UnsafeEntryError(ArchiveError):
    """An entry would write, or point, outside the destination."""

    problem = "is unsafe"


class LimitExceededError(ArchiveError):
    """The archive expands to more bytes or entries than allowed."""

    problem = "exceeds the extraction limits"


class CorruptArchiveError(ArchiveError):
    """The archive cannot be read, or contradicts itself."""

    def __init__(self, kind: Kind, detail: str) -> None:
        super().__init__(detail)
        self.problem = f"is not a valid {kind} archive"


def _quote(name: str) -> str:
    """An entry name for a message: its repr, cut in the middle when very long."""
    if len(name) > _SHOWN_NAME:
        name = f"{name[: _SHOWN_NAME // 2]}...{name[-_SHOWN_NAME // 4 :]}"
    return repr(name)


def _too_many(max_entries: int) -> LimitExceededError:
    return LimitExceededError(f"it has more than {max_entries} entries (max_entries)")


@dataclass
class Budget:
    """What an extraction may still write; counted as it happens, never from headers.

    The expansion ratio is bytes written over bytes read from the archive file so far
    (compressed bytes, headers and read-ahead included, counted again when read again).
    It is checked only once more than ``ratio_check_after`` bytes were written, so a
    small archive of zeros passes while a bomb stops there instead of at ``max_bytes``.
    ``link_steps`` counts the work of resolving symbolic links (it stays linear in the
    archive's size; the tests prove it).
    """

    max_bytes: int
    max_entries: int
    max_ratio: int = DEFAULT_MAX_RATIO
    ratio_check_after: int = DEFAULT_RATIO_CHECK_AFTER
    written: int = 0
    entries: int = 0
    read: int = 0
    link_steps: int = 0

    def expect(self, entries: int, size: int) -> None:
        """Fail before writing when the headers already declare too much.

        Headers can also declare too little, so counting continues while writing.
        """
        self._check(self.entries + entries, self.written + size)

    def add_entry(self) -> None:
        self.entries += 1
        self._check(self.entries, self.written)

    def add_bytes(self, count: int) -> None:
        self.written += count
        self._check(self.entries, self.written)
        if self.written > self.ratio_check_after and self.written > self.max_ratio * self.read:
            raise LimitExceededError(
                f"expands more than {self.max_ratio} times its compressed size: "
                f"{self.written} bytes written from {self.read} bytes read (max_ratio)"
            )

    def _check(self, entries: int, size: int) -> None:
        if entries > self.max_entries:
            raise _too_many(self.max_entries)
        if size > self.max_bytes:
            raise LimitExceededError(
                f"it expands to more than {self.max_bytes} bytes (max_total_bytes)"
            )


def sniff(path: Path) -> Kind:
    """The archive kind from the content (never the name): zip, tar (any compression), file."""
    with path.open("rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    # A truncated zip has no central directory, yet it is a zip: report it as corrupt.
    if head == ZIP_MAGIC or zipfile.is_zipfile(path):
        return "zip"
    return "tar" if _is_tar(path) else "file"


def _is_tar(path: Path) -> bool:
    """Whether tar reads a first member; bounded, unlike ``tarfile.is_tarfile``."""
    try:
        with ExitStack() as stack:
            _open_tar(stack, path, None)
    except ArchiveError:  # tar headers over our bounds: a tar, which extraction refuses
        return True
    except _READ_ERRORS:
        return False
    return True


def safe_parts(name: str) -> tuple[str, ...]:
    """The components of an entry name, ``()`` for the root; UnsafeEntryError if it could escape."""
    if "\x00" in name:
        raise UnsafeEntryError(f"entry {_quote(name)} contains a NUL byte")
    if "\\" in name or _DRIVE.match(name):
        raise UnsafeEntryError(
            f"entry {_quote(name)} is a Windows path (drive letter or backslash)"
        )
    parts = name.split("/")
    if "" in parts or "." in parts:
        parts = [part for part in parts if part not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise UnsafeEntryError(
            f"entry {_quote(name)} would be written outside the extraction directory"
        )
    return tuple(parts)


def member_name(name: str) -> str:
    """An entry name as listed and looked up: no ``./`` prefix, no trailing slash."""
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def _check_name_size(name: str) -> None:
    """No usable path is longer than PATH_MAX: a longer name only costs memory."""
    if len(name) > _PATH_MAX:
        raise LimitExceededError(
            f"entry {_quote(name)} has a name of {len(name)} characters, "
            f"longer than any path can be ({_PATH_MAX})"
        )


@contextmanager
def _guarded(kind: Kind, entry: Callable[[], str | None] = lambda: None) -> Iterator[None]:
    """Every failure as an ArchiveError, with the entry it happened at, never a host path.

    The standard library's archive errors mean a corrupt archive; an OSError without an
    errno is a decompressor's complaint (bz2, gzip) and means the same. Other OSErrors
    keep only the system's reason (``strerror``): their text names host paths.
    """
    try:
        yield
    except _READ_ERRORS as exc:
        raise CorruptArchiveError(kind, str(exc) or type(exc).__name__) from exc
    except UnicodeError as exc:
        raise ArchiveError(f"{_at(entry())} has a name the file system cannot encode") from exc
    except OSError as exc:
        if exc.errno is None:
            raise CorruptArchiveError(kind, str(exc) or type(exc).__name__) from exc
        raise ArchiveError(f"{_at(entry())} could not be extracted: {exc.strerror}") from exc


def _at(entry: str | None) -> str:
    return "the archive" if entry is None else f"entry {_quote(entry)}"


class Incoming(Protocol):
    """An archive file still being written (downloaded): its bytes arrive in order."""

    def wait(self, start: int, end: int, /) -> None:
        """Return once bytes [start, end) are in the file; raise if they never will be."""

    def lend(self, start: int, end: int, /) -> io.RawIOBase | None:
        """A reader of bytes [start, end) that takes those not yet arrived straight from
        where they come from, which then never writes them to the file; closing it lets
        the rest arrive. None when they are (or will be) in the file anyway."""


class _Metered(io.RawIOBase):
    """A part of the archive, adding the bytes read from it to a budget (for the ratio),
    and, while the file is still being downloaded, waiting for the bytes each read needs."""

    def __init__(
        self, raw: io.RawIOBase, budget: Budget | None, incoming: Incoming | None = None
    ) -> None:
        super().__init__()
        self._file = raw
        self._budget = budget
        self._incoming = incoming

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._file.seekable()

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._incoming is not None:
            start = self._file.tell()
            self._incoming.wait(start, start + len(memoryview(buffer)))
        count = self._file.readinto(buffer) or 0
        if self._budget is not None:
            self._budget.read += count
        return count

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def _open_archive(
    stack: ExitStack, path: Path, budget: Budget | None, incoming: Incoming | None = None
) -> BinaryIO:
    """The archive file, buffered; metered into ``budget`` when there is one."""
    raw: io.RawIOBase = io.FileIO(path, "r")
    if budget or incoming:
        raw = _Metered(raw, budget, incoming)
    return stack.enter_context(io.BufferedReader(raw))


# ---------------------------------------------------------------- zip reading

_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_DIRECTORY_BLOCK = 256 * 1024  # bytes of the central directory read at a time
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_ZIP_COMMENT_MAX = 0xFFFF
_ZIP64_MARK = 0xFFFFFFFF
_UTF8_NAME = 0x800
_ENCRYPTED = 0x1
_PATCHED = 0x20


def _bad_zip(detail: str) -> CorruptArchiveError:
    return CorruptArchiveError("zip", detail)


class _ZipEntry(NamedTuple):
    """One record of the central directory (a tuple: a source tree has thousands)."""

    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    offset: int  # of the entry's local header in the file
    system: int
    attributes: int  # "external attributes": st_mode << 16 when made on Unix

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    @property
    def mode(self) -> int:
        """st_mode; a file from a non-Unix zip is a plain regular file."""
        mode = self.attributes >> 16
        if self.system != _UNIX or mode == 0:
            return stat.S_IFREG | DEFAULT_FILE_MODE
        return mode if stat.S_IFMT(mode) else mode | stat.S_IFREG


def _zip_directory(handle: BinaryIO) -> tuple[int, int, int, int]:
    """From the end records: (declared entries, start, end of the central directory, shift).

    ``shift`` is how many bytes precede the zip itself (a self-extracting stub); offsets
    in the zip are relative to its start.
    """
    size = handle.seek(0, os.SEEK_END)
    tail_start = max(0, size - _EOCD.size - _ZIP_COMMENT_MAX)
    handle.seek(tail_start)
    tail = handle.read()
    at = tail.rfind(b"PK\x05\x06", 0, len(tail) - _EOCD.size + 4) if len(tail) >= _EOCD.size else -1
    if at < 0:
        raise _bad_zip("it has no end of central directory record")
    _, disk, cd_disk, _, entries, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
    record = tail_start + at
    if record >= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size:
        handle.seek(record - _ZIP64_LOCATOR.size)
        if handle.read(4) == b"PK\x06\x07":
            record -= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size
            handle.seek(record)
            fields = _ZIP64_EOCD.unpack(handle.read(_ZIP64_EOCD.size))
            if fields[0] != b"PK\x06\x06":
                raise _bad_zip("its zip64 end of central directory record is missing")
            disk, cd_disk, _, entries, cd_size, cd_offset = fields[4:]
    if disk or cd_disk:
        raise _bad_zip("it spans several disks, which is not supported")
    shift = record - cd_size - cd_offset
    if shift < 0:
        raise _bad_zip("its central directory lies outside the file")
    return entries, cd_offset + shift, cd_offset + shift + cd_size, shift


def _zip64_values(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """Sizes and offset from the zip64 extra field, for those the record marks 0xFFFFFFFF."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, at)
        if tag == 1:
            body = extra[at + 4 : at + 4 + length]
            values = (value for (value,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8]))
            try:
                size = next(values) if size == _ZIP64_MARK else size
                compressed = next(values) if compressed == _ZIP64_MARK else compressed
                offset = next(values) if offset == _ZIP64_MARK else offset
            except StopIteration:
                raise _bad_zip("a zip64 extra field is too short") from None
            break
        at += 4 + length
    return size, compressed, offset


def _zip_entries(handle: BinaryIO, max_entries: int) -> Iterator[_ZipEntry]:
    """The central directory's entries, one at a time: memory stays flat whatever it holds.

    The count the end record declares is checked before any entry is read; entries are
    also counted as they are read (the count may lie, or wrap at 65535).
    """
    declared, position, end, shift = _zip_directory(handle)
    if declared > max_entries:
        raise _too_many(max_entries)
    records = _DirectoryBlocks(handle, position, end)
    count = 0
    while records.position < end:
        fields = _CENTRAL.unpack_from(*records.take(_CENTRAL.size))
        if fields[0] != b"PK\x01\x02":
            raise _bad_zip("its central directory is damaged")
        count += 1
        if count > max_entries:
            raise _too_many(max_entries)
        system, flags, method, crc, compressed, size, name_len, extra_len = (
            fields[2],
            fields[5],
            fields[6],
            *fields[9:14],
        )
        attributes, offset = fields[-2:]
        record = _CENTRAL.size + name_len + extra_len + fields[14]
        block, at = records.take(record)
        records.skip(record)
        at += _CENTRAL.size
        raw_name = block[at : at + name_len]
        extra = block[at + name_len : at + name_len + extra_len]
        size, compressed, offset = _zip64_values(extra, size, compressed, offset)
        encoding = "utf-8" if flags & _UTF8_NAME else "cp437"
        name = raw_name.decode(encoding, "surrogateescape")
        _check_name_size(name)
        yield _ZipEntry(
            name, raw_name, flags, method, crc, compressed, size, offset + shift, system, attributes
        )


class _DirectoryBlocks:
    """The central directory, read in blocks of ``_DIRECTORY_BLOCK`` bytes rather than three
    reads and a seek per record, memory bounded by a block and one record."""

    def __init__(self, handle: BinaryIO, start: int, end: int) -> None:
        handle.seek(start)
        self._handle = handle
        self._left = end - start  # bytes not read yet
        self._block = b""
        self._at = 0
        self.position = start  # of the next record

    def take(self, size: int) -> tuple[bytes, int]:
        """The block holding the next ``size`` bytes, and where they start in it."""
        if len(self._block) - self._at < size:
            wanted = min(self._left, max(_DIRECTORY_BLOCK, size))
            more = self._handle.read(wanted)
            self._left -= len(more)
            self._block, self._at = self._block[self._at :] + more, 0
            if len(self._block) < size:
                raise _bad_zip("its central directory is damaged")
        return self._block, self._at

    def skip(self, size: int) -> None:
        """Move past a record that ``take`` returned."""
        self._at += size
        self.position += size


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int, /) -> bytes: ...


class _Stored:
    """A stored entry: the output is the input."""

    eof = False

    def __init__(self) -> None:
        self._pending = b""

    @property
    def needs_input(self) -> bool:
        return not self._pending

    def decompress(self, data: bytes, max_length: int) -> bytes:
        self._pending += data
        out, self._pending = self._pending[:max_length], self._pending[max_length:]
        return out


class _Inflate:
    """Deflate, with bounded output per call like the other decompressors."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    @property
    def needs_input(self) -> bool:
        return not self._zlib.unconsumed_tail

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._zlib.decompress(self._zlib.unconsumed_tail + data, max_length)


class _ZipLzma:
    """LZMA as zip stores it: version (2 bytes), properties size (2), properties, raw LZMA1."""

    def __init__(self) -> None:
        self._header = b""
        self._lzma: lzma.LZMADecompressor | None = None

    @property
    def eof(self) -> bool:
        return self._lzma is not None and self._lzma.eof

    @property
    def needs_input(self) -> bool:
        return self._lzma is None or self._lzma.needs_input

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._lzma is None:
            self._header += data
            size = int.from_bytes(self._header[2:4], "little")
            if len(self._header) < 4 + size:
                return b""
            self._lzma = self._decoder(self._header[4 : 4 + size])
            data, self._header = self._header[4 + size :], b""
        return self._lzma.decompress(data, max_length)

    @staticmethod
    def _decoder(properties: bytes) -> lzma.LZMADecompressor:
        if len(properties) != 5 or properties[0] >= 9 * 5 * 5:
            raise lzma.LZMAError("invalid LZMA properties")
        dictionary = int.from_bytes(properties[1:5], "little")
        if dictionary > _MAX_LZMA_DICT:
            raise LimitExceededError(
                f"it has an LZMA dictionary of {dictionary} bytes, more than {_MAX_LZMA_DICT}"
            )
        pb, rest = divmod(properties[0], 9 * 5)
        lp, lc = divmod(rest, 9)
        lzma1 = {"id": lzma.FILTER_LZMA1, "dict_size": dictionary, "lc": lc, "lp": lp, "pb": pb}
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1])


def _decompressor(entry: _ZipEntry) -> _Decompressor:
    if entry.method == zipfile.ZIP_STORED:
        return _Stored()
    if entry.method == zipfile.ZIP_DEFLATED:
        return _Inflate()
    if entry.method == zipfile.ZIP_BZIP2:
        return bz2.BZ2Decompressor()
    if entry.method == zipfile.ZIP_LZMA:
        return _ZipLzma()
    raise ArchiveError(
        f"entry {_quote(entry.name)} uses compression method {entry.method}, "
        "which is not supported (stored, deflate, bzip2 and lzma are)"
    )


class _ZipEntryReader(io.RawIOBase):
    """An entry's content: bounded output per read, then its declared size and CRC checked,
    so a lying header is an error and never extra bytes."""

    def __init__(self, source: BinaryIO, entry: _ZipEntry) -> None:
        super().__init__()
        self._source = source
        self._entry = entry
        self._compressed_left = entry.compressed
        self._left = entry.size
        self._crc = 0
        self._decompressor = _decompressor(entry)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if not self._left:
            if self._crc != self._entry.crc:
                raise _bad_crc(self._entry)
            return 0
        data = self._next(min(len(view), self._left))
        view[: len(data)] = data
        self._left -= len(data)
        self._crc = zlib.crc32(data, self._crc)
        return len(data)

    def _next(self, wanted: int) -> bytes:
        while True:
            if self._decompressor.eof:
                raise _short(self._entry)
            chunk = b""
            if self._decompressor.needs_input and self._compressed_left:
                chunk = self._source.read(min(_COMPRESSED_READ, self._compressed_left))
                if not chunk:
                    raise _short(self._entry)
                self._compressed_left -= len(chunk)
            data = self._decompressor.decompress(chunk, wanted)
            if data:
                return data
            if not chunk and self._decompressor.needs_input:
                raise _short(self._entry)


def _short(entry: _ZipEntry) -> CorruptArchiveError:
    return _bad_zip(f"entry {_quote(entry.name)} is shorter than its declared size")


def _bad_crc(entry: _ZipEntry) -> CorruptArchiveError:
    return _bad_zip(f"entry {_quote(entry.name)} fails its CRC check")


def _open_zip_entry(handle: BinaryIO, entry: _ZipEntry) -> BinaryIO:
    """A reader of one entry's content, after checking its local header."""
    _seek_data(handle, entry)
    return io.BufferedReader(_ZipEntryReader(handle, entry))


def _is_small(entry: _ZipEntry, limit: int) -> bool:
    """Whether ``_read_small`` serves the entry: stored or deflated, both sizes in ``limit``."""
    return entry.compressed <= limit and entry.size <= limit and entry.method in _WHOLE


_WHOLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _read_small(handle: BinaryIO, entry: _ZipEntry) -> bytes:
    """A small entry's content in one read and one bounded zlib call, with the streaming
    reader's checks (local header, declared size, CRC) but none of its per-read work:
    most entries of a source tree are small, and that work was most of their cost."""
    _seek_data(handle, entry)
    if not entry.size:
        data = b""
    elif entry.method == zipfile.ZIP_STORED:
        data = handle.read(entry.compressed)[: entry.size]
    else:
        packed = handle.read(entry.compressed)
        data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(packed, entry.size)
    if len(data) < entry.size:
        raise _short(entry)
    if zlib.crc32(data) != entry.crc:
        raise _bad_crc(entry)
    return data


def _seek_data(handle: BinaryIO, entry: _ZipEntry) -> None:
    """Check an entry's flags and local header, and leave ``handle`` at its data."""
    if entry.flags & _ENCRYPTED:
        raise _bad_zip(f"entry {_quote(entry.name)} is encrypted")
    if entry.flags & _PATCHED:
        raise ArchiveError(f"entry {_quote(entry.name)} is patch data, which is not supported")
    handle.seek(entry.offset)
    head = handle.read(_LOCAL.size)
    if len(head) < _LOCAL.size or head[:4] != ZIP_MAGIC:
        raise _bad_zip(f"entry {_quote(entry.name)} has no local header")
    name_len, extra_len = _LOCAL.unpack(head)[-2:]
    if handle.read(name_len) != entry.raw_name:
        raise _bad_zip(f"entry {_quote(entry.name)} has another name in its local header")
    handle.seek(extra_len, os.SEEK_CUR)


def _read_link(source: BinaryIO, name: str) -> str:
    """A zip symlink's target, which is stored as the entry's content."""
    data = source.read(_MAX_LINK_BYTES + 1)
    if len(data) > _MAX_LINK_BYTES:
        raise UnsafeEntryError(f"symbolic link {_quote(name)} has an oversized target")
    return data.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------- tar reading

_EXTENDED_TYPES = frozenset(
    {
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
    }
)


def _sparse(name: str) -> ArchiveError:
    return ArchiveError(f"entry {_quote(name)} is a sparse file, which is not supported")


class _TarHeader(tarfile.TarInfo):
    """A tar header read within bounds, through the hook tarfile provides (``_proc_member``).

    tarfile reads an extended header (pax, GNU long name) whole into memory, follows a
    run of them by recursion, and grows sparse maps as long as the archive goes on: sizes
    and runs are checked here first, and sparse files refused.
    """

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo | None:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _sparse(self.name)
        if self.type in _EXTENDED_TYPES:
            assert isinstance(tar, _StreamingTar)  # the only TarFile that uses this class
            tar.extended_headers += 1
            if tar.extended_headers > _MAX_EXTENDED_HEADERS:
                raise LimitExceededError(
                    f"it has more than {_MAX_EXTENDED_HEADERS} extended headers in a row"
                )
            if self.size > _MAX_EXTENDED_BYTES:
                raise LimitExceededError(
                    f"it has an extended header of {self.size} bytes, "
                    f"more than {_MAX_EXTENDED_BYTES}"
                )
        member: tarfile.TarInfo | None = super()._proc_member(tar)  # type: ignore[misc]
        return member

    def _proc_gnusparse_00(
        self, member: tarfile.TarInfo, pax_headers: Mapping[str, str], *_: object
    ) -> None:
        raise _sparse(pax_headers.get("GNU.sparse.name", member.name))

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


class _StreamingTar(tarfile.TarFile):
    """A TarFile that forgets each member once read (TarFile keeps them all), with
    bounded headers; read it with ``next()``, never by iteration."""

    tarinfo = _TarHeader
    members: list[tarfile.TarInfo]
    extended_headers = 0

    def next(self) -> tarfile.TarInfo | None:
        self.members = []
        self.extended_headers = 0
        return super().next()


def _open_tar(stack: ExitStack, path: Path, budget: Budget | None) -> _StreamingTar:
    fileobj = _open_archive(stack, path, budget)
    return stack.enter_context(_StreamingTar.open(fileobj=fileobj, mode="r:*"))


def _tar_members(tf: _StreamingTar, max_entries: int) -> Iterator[tarfile.TarInfo]:
    """The members in order, counted as they are read: past ``max_entries`` is refused."""
    count = 0
    while (member := tf.next()) is not None:
        count += 1
        if count > max_entries:
            raise _too_many(max_entries)
        _check_name_size(member.name)
        yield member


# ---------------------------------------------------------------- listing and reading


def member_names(
    archive: Path, kind: Kind, file_name: str, *, max_entries: int = DEFAULT_MAX_ENTRIES
) -> list[str]:
    """Names of the non-directory members, in archive order, without extracting.

    More than ``max_entries`` members is a LimitExceededError, as for extraction.
    """
    if kind == "file":
        return [file_name]
    with _guarded(kind), ExitStack() as stack:
        if kind == "zip":
            handle = _open_archive(stack, archive, None)
            entries = _zip_entries(handle, max_entries)
            return [member_name(entry.name) for entry in entries if not entry.is_dir]
        members = _tar_members(_open_tar(stack, archive, None), max_entries)
        return [member_name(member.name) for member in members if not member.isdir()]


class _MemberReader(io.RawIOBase):
    """A member's stream whose ``close`` also closes the archive it is read from."""

    def __init__(self, stream: IO[bytes], kind: Kind, owner: ExitStack) -> None:
        super().__init__()
        self._stream = stream
        self._kind = kind
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        with _guarded(self._kind):
            data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._owner.close()
        super().close()


def open_member(
    archive: Path,
    kind: Kind,
    member: str,
    file_name: str,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> BinaryIO | None:
    """A reader for one member (the last one of that name, as extraction keeps), or None.

    At most ``max_entries`` members are looked at: more is a LimitExceededError.
    """
    wanted = member_name(member)
    if kind == "file":
        return archive.open("rb") if wanted == file_name else None
    find = _find_zip_member if kind == "zip" else _find_tar_member
    with _guarded(kind), ExitStack() as stack:
        stream = find(stack, archive, wanted, max_entries)
        if stream is None:
            return None
        return io.BufferedReader(_MemberReader(stream, kind, stack.pop_all()))


def _find_zip_member(
    stack: ExitStack, archive: Path, wanted: str, max_entries: int
) -> IO[bytes] | None:
    handle = _open_archive(stack, archive, None)
    found = None
    for entry in _zip_entries(handle, max_entries):
        if not entry.is_dir and member_name(entry.name) == wanted:
            found = entry
    return None if found is None else _open_zip_entry(handle, found)


def _find_tar_member(
    stack: ExitStack, archive: Path, wanted: str, max_entries: int
) -> IO[bytes] | None:
    tf = _open_tar(stack, archive, None)
    found = None
    for member in _tar_members(tf, max_entries):
        if not member.isdir() and member_name(member.name) == wanted:
            found = member
    return None if found is None else tf.extractfile(found)


# ---------------------------------------------------------------- the extracted tree


class _Node:
    """Something extraction created: a directory (``children``), a file, or a symbolic
    link (``link``, its target; ``entry``, its name in the archive)."""

    __slots__ = (
        "children",
        "depth",
        "entry",
        "link",
        "memo",
        "name",
        "parent",
        "path",
        "size",
        "watched",
    )

    def __init__(
        self,
        parent: _Node | None,
        name: str,
        *,
        directory: bool = False,
        link: str | None = None,
        entry: str = "",
    ) -> None:
        self.parent = parent
        self.name = name
        self.children: dict[str, _Node] | None = {} if directory else None
        self.link = link
        self.entry = entry
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.size: int = _path_size(parent, name)  # bytes of its path relative to the root
        self.memo: _Memo | None = None
        self.watched = -1  # the version in which a memoised resolution looked below it
        self.path: str | None = None  # a directory's host path, once asked for

    def child(self, name: str) -> _Node | None:
        return None if self.children is None else self.children.get(name)


def _path_size(parent: _Node | None, name: str) -> int:
    """Bytes of the path of ``name`` in ``parent``, relative to the root."""
    if parent is None:
        return 0
    separator = 1 if parent.parent is not None else 0
    return parent.size + separator + _encoded_size(name)


def _encoded_size(name: str) -> int:
    """Bytes of ``name`` as the OS gets it (an ASCII name without encoding it)."""
    return len(name) if name.isascii() else len(os.fsencode(name))


@dataclass(slots=True)
class _Memo:
    """Where a link led, found in tree ``version``, and how many links that took."""

    version: int
    node: _Node
    missing: tuple[str, ...]
    hops: int


@dataclass(slots=True)
class _LinkDone:
    """On the resolution stack after a link's target: then the link's memo is known."""

    link: _Node
    hops_before: int


class _OutsideError(Exception):
    """A resolution went above the root."""


class _TooManyLinksError(Exception):
    """A resolution followed more than MAX_LINK_HOPS links (a long chain, or a loop)."""


class _Tree:
    """A model of what extraction created, in which links resolve like the kernel would.

    Nothing is asked of the OS (``realpath`` recurses, and resolves every link from
    scratch each time). A resolution walks the model, follows at most ``MAX_LINK_HOPS``
    links, and memoises where each link led. A memo holds until a node is removed, or a
    link is created where a memoised resolution found nothing (a missing name it looked
    up, or anything below one): only then can an earlier answer change.
    """

    def __init__(self, budget: Budget) -> None:
        self.root = _Node(None, "", directory=True)
        self.links: dict[_Node, None] = {}  # every link, in creation order
        self._budget = budget
        self._version = 0
        self._probed: set[tuple[_Node, str]] = set()  # missing names memos depend on

    def add(
        self,
        parent: _Node,
        name: str,
        *,
        directory: bool = False,
        link: str | None = None,
        entry: str = "",
    ) -> _Node:
        node = _Node(parent, name, directory=directory, link=link, entry=entry)
        if (parent, name) in self._probed or parent.watched == self._version:
            node.watched = self._version
            if link is not None:
                self._invalidate()
        assert parent.children is not None  # callers place entries in directories only
        parent.children[name] = node
        if link is not None:
            self.links[node] = None
        return node

    def remove(self, node: _Node) -> None:
        assert node.parent is not None
        assert node.parent.children is not None
        del node.parent.children[node.name]
        self.links.pop(node, None)
        self._invalidate()

    def _invalidate(self) -> None:
        self._version += 1
        self._probed.clear()

    def resolve(self, start: _Node, parts: Iterable[str]) -> tuple[_Node, list[str]]:
        """Where ``parts`` lead from ``start``, following every link: the deepest node that
        exists and the missing names below it. Raises _OutsideError or _TooManyLinksError."""
        parts = tuple(parts)
        if not self.links and "" not in parts and "." not in parts and ".." not in parts:
            return self._walk(start, parts)
        node, missing, hops, open_links = start, list[str](), 0, 0
        stack: list[str | _LinkDone] = [*parts]
        stack.reverse()
        while stack:
            self._budget.link_steps += 1
            item = stack.pop()
            if isinstance(item, _LinkDone):
                open_links -= 1
                item.link.memo = _Memo(self._version, node, tuple(missing), hops - item.hops_before)
            elif item in ("", "."):
                continue
            elif item == "..":
                if missing:
                    missing.pop()
                elif node.parent is None:
                    raise _OutsideError
                else:
                    node = node.parent
            elif missing or node.children is None:
                missing.append(item)
            elif (child := node.children.get(item)) is None:
                if open_links:
                    self._probed.add((node, item))
                missing.append(item)
            elif child.link is None:
                node = child
            elif (memo := child.memo) is not None and memo.version == self._version:
                hops += memo.hops
                if hops > MAX_LINK_HOPS:
                    raise _TooManyLinksError
                node, missing = memo.node, list(memo.missing)
            else:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise _TooManyLinksError
                open_links += 1
                stack.append(_LinkDone(child, hops - 1))
                stack.extend(child.link.split("/")[::-1])
        return node, missing

    def _walk(self, start: _Node, parts: tuple[str, ...]) -> tuple[_Node, list[str]]:
        """``resolve`` while the tree holds no link, of names that are neither ``..`` nor
        empty: only a walk down what exists (most entries of most archives)."""
        self._budget.link_steps += len(parts)
        node = start
        for index, part in enumerate(parts):
            child = node.children.get(part) if node.children is not None else None
            if child is None:
                return node, list(parts[index:])
            node = child
        return node, []


# ---------------------------------------------------------------- extraction


def _pathconf(path: str, name: str, default: int) -> int:
    try:
        value = os.pathconf(path, name)
    except (OSError, ValueError):
        return default
    return value if value > 0 else default


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0o777  # unknown: every mode is then set explicitly
    found = re.search(r"^Umask:\s*([0-7]+)$", status, re.MULTILINE)
    return int(found.group(1), 8) if found else 0o777


_UMASK = _umask()


def _create(path: str, mode: int) -> int:
    """A new file (never through a link), made with its final permission bits if the
    umask keeps them, else 0o600 until ``_fix_mode``."""
    return os.open(path, _CREATE, mode & 0o777 if not mode & _UMASK else 0o600)


def _fix_mode(descriptor: int, mode: int) -> None:
    """Set the permission bits the umask took away at creation (rarely needed)."""
    if mode & _UMASK & 0o777:
        os.fchmod(descriptor, mode & 0o777)


def _write_all(descriptor: int, data: bytes) -> None:
    written = os.write(descriptor, data)  # all of it, nearly always
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(descriptor, view) :]


class _Extractor:
    """Writes entries under ``root`` after checking each one; see the module docstring."""

    def __init__(self, dest: Path, kind: Kind, budget: Budget, chunk_bytes: int) -> None:
        self.root = os.path.realpath(dest)
        self.kind = kind
        self.budget = budget
        self.chunk_bytes = chunk_bytes
        self.tree = _Tree(budget)
        self.current: str | None = None  # the entry being extracted, for error messages
        self.name_max = _pathconf(self.root, "PC_NAME_MAX", _NAME_MAX)
        # A path under root, plus root, a separator and the terminating NUL, fits PATH_MAX.
        root_bytes = len(os.fsencode(self.root))
        self.path_max = _pathconf(self.root, "PC_PATH_MAX", _PATH_MAX) - root_bytes - 2

    def begin(self, name: str) -> None:
        self.current = name
        self.budget.add_entry()

    def _path(self, node: _Node, leaf: str | None = None) -> str:
        """The host path of ``node`` (and ``leaf`` in it); each directory's is made once."""
        if leaf is not None:
            return f"{self._path(node)}/{leaf}"
        if node.parent is None:
            return self.root
        if node.children is None:  # a file or a link: its path is not kept
            return self._path(node.parent, node.name)
        if node.path is None:
            node.path = self._path(node.parent, node.name)
        return node.path

    def _fits(self, parent: _Node, leaf: str, name: str) -> None:
        """Refuse, before the OS does, what the file system cannot hold (or tools walk)."""
        size = _encoded_size(leaf)
        if size > self.name_max:
            raise LimitExceededError(
                f"entry {_quote(name)} has a name component of {size} bytes, "
                f"more than the file system allows ({self.name_max})"
            )
        if parent.depth >= MAX_DEPTH:
            raise LimitExceededError(
                f"entry {_quote(name)} is nested more than {MAX_DEPTH} directories deep"
            )
        if _path_size(parent, leaf) > self.path_max:
            raise LimitExceededError(
                f"entry {_quote(name)} makes a path longer than the file system allows "
                f"under the extraction directory ({self.path_max} bytes)"
            )

    def _conflict(self, name: str) -> CorruptArchiveError:
        return CorruptArchiveError(
            self.kind, f"entry {_quote(name)} is both a file and a directory"
        )

    def _too_long(self, name: str) -> LimitExceededError:
        return LimitExceededError(
            f"symbolic link {_quote(name)} leads through more than {MAX_LINK_HOPS} "
            "symbolic links (a chain or a loop)"
        )

    def _place(self, name: str) -> tuple[_Node, str] | None:
        """The directory an entry goes in (created, really inside root) and its own name;
        None for root itself."""
        parts = safe_parts(name)
        if not parts:
            return None
        try:
            parent, missing = self.tree.resolve(self.tree.root, parts[:-1])
        except _OutsideError:
            raise UnsafeEntryError(
                f"entry {_quote(name)} would be written outside the extraction directory"
            ) from None
        except _TooManyLinksError:
            raise self._too_long(name) from None
        for part in missing:
            if parent.children is None:
                raise self._conflict(name)
            self._fits(parent, part, name)
            self.budget.add_entry()  # a directory the archive did not list still counts
            os.mkdir(self._path(parent, part))
            parent = self.tree.add(parent, part, directory=True)
        if parent.children is None:
            raise self._conflict(name)
        self._fits(parent, parts[-1], name)
        return parent, parts[-1]

    def _fresh(self, name: str) -> tuple[_Node, str]:
        """Where a new file or link goes; an earlier file or link of that name goes."""
        placed = self._place(name)
        if placed is None:
            raise self._conflict(name)
        parent, leaf = placed
        existing = parent.child(leaf)
        if existing is not None:
            if existing.children is not None:
                raise self._conflict(name)
            os.unlink(self._path(parent, leaf))
            self.tree.remove(existing)
        return parent, leaf

    def directory(self, name: str) -> None:
        placed = self._place(name)
        if placed is None:
            return
        parent, leaf = placed
        existing = parent.child(leaf)
        if existing is None:
            os.mkdir(self._path(parent, leaf))
            self.tree.add(parent, leaf, directory=True)
        elif existing.children is None:
            raise self._conflict(name)

    def file(self, name: str, chunks: Iterable[bytes], mode: int) -> None:
        """A regular file, made with its final mode: three system calls for a small one.

        ``chunks`` is read only once the file's place was checked and the file made.
        """
        parent, leaf = self._fresh(name)
        descriptor = _create(self._path(parent, leaf), mode)
        self.tree.add(parent, leaf)
        try:
            for chunk in chunks:
                self.budget.add_bytes(len(chunk))  # counted before it is written
                _write_all(descriptor, chunk)
            _fix_mode(descriptor, mode)
        finally:
            os.close(descriptor)

    def chunks(self, source: IO[bytes]) -> Iterator[bytes]:
        """A stream's content, ``chunk_bytes`` at a time."""
        while chunk := source.read(self.chunk_bytes):
            yield chunk

    def symlink(self, name: str, link: str) -> None:
        if not link or "\x00" in link or "\\" in link or _DRIVE.match(link) or link[0] == "/":
            raise self._escape("symbolic link", name)
        if len(os.fsencode(link)) > _MAX_LINK_BYTES:
            raise UnsafeEntryError(f"symbolic link {_quote(name)} has an oversized target")
        parent, leaf = self._fresh(name)
        self._check_link(self.tree.add(parent, leaf, link=link, entry=name))
        os.symlink(link, self._path(parent, leaf))

    def _escape(self, what: str, name: str) -> UnsafeEntryError:
        return UnsafeEntryError(f"{what} {_quote(name)} points outside the extraction directory")

    def _check_link(self, node: _Node) -> None:
        assert node.parent is not None  # a link is never the root
        try:
            self.tree.resolve(node.parent, (node.name,))
        except _OutsideError:
            raise self._escape("symbolic link", node.entry) from None
        except _TooManyLinksError:
            raise self._too_long(node.entry) from None

    def hardlink(self, name: str, link: str) -> None:
        try:
            parts = safe_parts(link)
        except UnsafeEntryError:
            raise self._escape("hard link", name) from None
        parent, leaf = self._fresh(name)  # first: a link to itself then refers to nothing
        try:
            source, missing = self.tree.resolve(self.tree.root, parts)
        except _OutsideError:
            raise self._escape("hard link", name) from None
        except _TooManyLinksError:
            raise self._too_long(name) from None
        if missing or source.parent is None or source.children is not None:
            raise CorruptArchiveError(
                self.kind,
                f"hard link {_quote(name)} refers to {_quote(link)}, which is not a file before it",
            )
        os.link(self._path(source), self._path(parent, leaf))
        self.tree.add(parent, leaf)

    def special(self, name: str) -> None:
        raise UnsafeEntryError(
            f"entry {_quote(name)} is a device file, fifo or socket, which is not allowed"
        )

    def finish(self) -> None:
        """Re-check links: a later link may have changed where an earlier one leads."""
        for node in list(self.tree.links):
            self._check_link(node)


def extract(
    archive: Path,
    kind: Kind,
    dest: Path,
    *,
    budget: Budget,
    chunk_bytes: int,
    file_name: str,
    incoming: Incoming | None = None,
) -> None:
    """Extract ``archive`` into ``dest`` (missing or empty) safely; on any error ``dest`` is
    removed.

    A ``file`` (not an archive) becomes the one file ``dest/file_name``. With
    ``incoming``, a zip is extracted while it is still being written: ``archive`` has
    its final size, each read waits for its bytes, and a large entry that no other
    entry shares bytes with is read from ``incoming.lend``.
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"the extraction directory could not be made: {exc.strerror}") from exc
    extractor = _Extractor(dest, kind, budget, chunk_bytes)
    try:
        with _guarded(kind, lambda: extractor.current), ExitStack() as stack:
            if kind == "zip":
                _extract_zip(stack, archive, extractor, incoming)
            elif kind == "tar":
                _extract_tar(stack, archive, extractor)
            else:
                extractor.begin(file_name)
                source = _open_archive(stack, archive, budget)
                extractor.file(file_name, extractor.chunks(source), DEFAULT_FILE_MODE)
            extractor.finish()
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _extract_zip(
    stack: ExitStack, archive: Path, ex: _Extractor, incoming: Incoming | None
) -> None:
    directory = _open_archive(stack, archive, None, incoming)
    data = _open_archive(stack, archive, ex.budget, incoming)
    entries = _expected_entries(directory, ex.budget)
    lender = _Lender(entries, incoming, ex.budget)
    for entry in entries:
        ex.begin(entry.name)
        mode = entry.mode
        if entry.is_dir or stat.S_ISDIR(mode):
            ex.directory(entry.name)
        elif stat.S_ISLNK(mode):
            with _open_zip_entry(data, entry) as source:
                ex.symlink(entry.name, _read_link(source, entry.name))
        elif not stat.S_ISREG(mode):
            ex.special(entry.name)
        elif _is_small(entry, ex.chunk_bytes):
            ex.file(entry.name, _whole_entry(data, entry), mode)
        else:
            with lender.open(data, entry) as source:
                ex.file(entry.name, ex.chunks(source), mode)


class _Lender:
    """Large entries, read from the file, or, from a zip still downloading, from the
    download itself (``Incoming.lend``) when no other entry's header lies among their
    bytes: then no other entry reads them, and they need not be in the file."""

    def __init__(
        self, entries: Iterable[_ZipEntry], incoming: Incoming | None, budget: Budget
    ) -> None:
        self._entries = entries if isinstance(entries, list) else None  # else: too many
        self._starts: list[int] | None = None
        self._incoming = incoming
        self._budget = budget

    @contextmanager
    def open(self, handle: BinaryIO, entry: _ZipEntry) -> Iterator[BinaryIO]:
        """A reader of the entry's content, its bytes lent if they can be."""
        _seek_data(handle, entry)
        start = handle.tell()
        lent = self._lend(start, start + entry.compressed)
        # Reads pass the lent reader's small buffer; what it lends is metered here.
        source = handle if lent is None else io.BufferedReader(_Metered(lent, self._budget))
        owned: AbstractContextManager[object] = nullcontext() if lent is None else lent
        with owned, io.BufferedReader(_ZipEntryReader(source, entry)) as reader:
            yield reader

    def _lend(self, start: int, end: int) -> io.RawIOBase | None:
        if self._incoming is None or self._entries is None:
            return None
        if self._starts is None:
            self._starts = sorted(entry.offset for entry in self._entries)
        if bisect.bisect_left(self._starts, start) != bisect.bisect_left(self._starts, end):
            return None  # another entry starts among these bytes (overlapping entries)
        return self._incoming.lend(start, end)


_KEPT_BYTES = 8 * 1024 * 1024  # memory a zip's entries may take to be read only once
_ENTRY_BYTES = 350  # what one entry takes in memory (tracemalloc), besides twice its name


def _expected_entries(directory: BinaryIO, budget: Budget) -> Iterable[_ZipEntry]:
    """The entries, once their count and declared sizes passed ``budget.expect``.

    That takes a first read of the central directory; its entries are kept for the
    extraction while they take under ``_KEPT_BYTES`` (20,000 entries of short names
    take about 7 MiB), which saves parsing them twice; more are read again as a stream.
    """
    kept: list[_ZipEntry] | None = []
    entries = size = held = 0
    for entry in _zip_entries(directory, budget.max_entries):
        entries, size = entries + 1, size + entry.size
        if kept is not None:
            held += _ENTRY_BYTES + 2 * len(entry.raw_name)
            if held > _KEPT_BYTES:
                kept = None
            else:
                kept.append(entry)
    budget.expect(entries, size)
    return kept if kept is not None else _zip_entries(directory, budget.max_entries)


def _whole_entry(handle: BinaryIO, entry: _ZipEntry) -> Iterator[bytes]:
    """A small entry's content as one chunk, read when the extractor asks for it."""
    yield _read_small(handle, entry)


def _extract_tar(stack: ExitStack, archive: Path, ex: _Extractor) -> None:
    tf = _open_tar(stack, archive, ex.budget)
    while (member := tf.next()) is not None:
        ex.begin(member.name)
        _check_name_size(member.name)
        if member.isdir():
            ex.directory(member.name)
        elif member.issym():
            ex.symlink(member.name, member.linkname)
        elif member.islnk():
            ex.hardlink(member.name, member.linkname)
        elif member.isreg():
            source = tf.extractfile(member)
            assert source is not None  # always a stream for a regular member
            with source:
                ex.file(member.name, ex.chunks(source), member.mode)
        else:
            ex.special(member.name)


# ---------------------------------------------------------------- zipping

Member = bytes | str | Path
_ZIP_FIRST = (1980, 1, 1, 0, 0, 0)
_ZIP_LAST = (2107, 12, 31, 23, 59, 58)


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    """A zip timestamp (local time, 1980..2107) for an mtime."""
    t = time.localtime(mtime)
    stamp = (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
    return min(max(stamp, _ZIP_FIRST), _ZIP_LAST)


DEFAULT_LEVEL = 1  # zlib's fastest: most of level 6's gain on text, at a fraction of its time
STORE_ABOVE_RATIO = 0.95  # compressed / raw of the first block above which an entry is stored
_MAX32 = 0xFFFFFFFF
_VERSION = 20  # "version needed": deflate
_VERSION64 = 45  # zip64
_DESCRIPTOR = 0x08  # CRC and sizes follow the data
_MAX_FILE = 1 << 63  # no limit on the bytes read from a file


def _dos_time(mtime: float) -> tuple[int, int]:
    """The MS-DOS (time, date) of an mtime, local time, within 1980..2107."""
    year, month, day, hour, minute, second = _zip_time(mtime)
    return hour << 11 | minute << 5 | second // 2, (year - 1980) << 9 | month << 5 | day


@dataclass(slots=True)
class _Written:
    """What the central directory says of one entry."""

    name: bytes
    flags: int
    method: int
    when: tuple[int, int]
    crc: int
    compressed: int
    size: int
    offset: int
    attributes: int

    def record(self) -> bytes:
        """Its central directory record, with a zip64 field for what does not fit 32 bits."""
        big = [value for value in (self.size, self.compressed, self.offset) if value >= _MAX32]
        extra = struct.pack(f"<2H{len(big)}Q", 1, 8 * len(big), *big) if big else b""
        size, compressed, offset = (
            min(v, _MAX32) for v in (self.size, self.compressed, self.offset)
        )
        version = _VERSION64 if big else _VERSION
        return (
            _CENTRAL.pack(
                b"PK\x01\x02",
                version,
                _UNIX,
                version,
                0,
                self.flags,
                self.method,
                *self.when,
                self.crc,
                compressed,
                size,
                len(self.name),
                len(extra),
                0,
                0,
                0,
                self.attributes,
                offset,
            )
            + self.name
            + extra
        )


Chunk = bytes | bytearray | memoryview


class Sink(Protocol):
    """Where a zip is written: a file, or a stream that can neither seek nor tell."""

    def write(self, data: Chunk, /) -> object: ...


class _Counted:
    """The output stream, and how many bytes went into it (it need not seek nor tell)."""

    def __init__(self, out: Sink) -> None:
        self._out = out
        self.offset = 0

    def write(self, data: Chunk) -> None:
        self._out.write(data)
        self.offset += len(data)


class _ZipWriter:
    """Writes a zip front to back, never seeking, so it can stream into an upload.

    Entries keep Unix modes (``create_system`` 3). Each file's first block is compressed
    as a probe: when that saves under 5 % (``STORE_ABOVE_RATIO``) the file is stored,
    its CRC computed in a first read so that its local header is complete; otherwise it
    is deflated at ``level``, a file larger than one chunk with its CRC and sizes in a
    data descriptor after the data (as every zip reader expects of deflated entries).
    Zip64 fields appear where sizes, offsets or counts need them.
    """

    def __init__(self, out: Sink, chunk_bytes: int, level: int) -> None:
        self._out = _Counted(out)
        self._chunk_bytes = chunk_bytes
        self._level = level
        self._directory = bytearray()  # the central directory records, as written at the end
        self._count = 0

    def add_file(self, arcname: str, path: Path) -> None:
        with path.open("rb") as source:
            st = os.fstat(source.fileno())
            entry = self._entry(arcname, st.st_mode, st.st_mtime)
            first = source.read(self._chunk_bytes)
            packer = zlib.compressobj(self._level, zlib.DEFLATED, -zlib.MAX_WBITS)
            packed = packer.compress(first)
            if len(first) < self._chunk_bytes:  # the whole file: no descriptor needed
                self._whole(entry, first, packed + packer.flush())
            elif len(packed) + len(packer.copy().flush()) > STORE_ABOVE_RATIO * len(first):
                self._stored(entry, source, first)
            else:
                self._deflated(entry, source, packer, first, packed)

    def add_dir(self, arcname: str, path: Path) -> None:
        st = path.stat()
        entry = self._entry(arcname + "/", st.st_mode, st.st_mtime)
        entry.attributes |= 0x10  # the MS-DOS directory flag, as zip tools set it
        self._known(entry, b"", 0, 0)

    def add_link(self, arcname: str, path: Path, target: str) -> None:
        st = path.lstat()
        data = target.encode("utf-8", "surrogateescape")
        self._known(self._entry(arcname, st.st_mode, st.st_mtime), data, zlib.crc32(data), 0)

    def add_data(self, arcname: str, data: bytes) -> None:
        entry = self._entry(arcname, stat.S_IFREG | DEFAULT_FILE_MODE, time.time())
        packer = zlib.compressobj(self._level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._whole(entry, data, packer.compress(data) + packer.flush())

    def _entry(self, arcname: str, st_mode: int, mtime: float) -> _Written:
        """An entry made on Unix: file type and permission bits kept, setuid/setgid dropped."""
        try:
            name, flags = arcname.encode("ascii"), 0
        except UnicodeEncodeError:
            name, flags = arcname.encode("utf-8", "surrogateescape"), _UTF8_NAME
        attributes = (stat.S_IFMT(st_mode) | (st_mode & 0o777)) << 16
        return _Written(name, flags, 0, _dos_time(mtime), 0, 0, 0, 0, attributes)

    def _whole(self, entry: _Written, data: bytes, packed: bytes) -> None:
        """An entry whose content is all in memory: deflated if that pays, else stored."""
        if len(packed) <= STORE_ABOVE_RATIO * len(data):
            entry.method = zipfile.ZIP_DEFLATED
            self._known(entry, packed, zlib.crc32(data), len(data))
        else:
            self._known(entry, data, zlib.crc32(data), len(data))

    def _known(self, entry: _Written, payload: bytes, crc: int, size: int) -> None:
        """An entry whose CRC and sizes are known before its header is written."""
        entry.crc, entry.compressed, entry.size = crc, len(payload), size or len(payload)
        self._header(entry, zip64=entry.size >= _MAX32)
        self._out.write(payload)
        self._done(entry)

    def _stored(self, entry: _Written, source: io.BufferedReader, first: bytes) -> None:
        """A large file that does not compress: read once for its CRC, then copied."""
        crc, size = self._crc(source, first)
        entry.crc, entry.compressed, entry.size = crc, size, size
        self._header(entry, zip64=size >= _MAX32)
        source.seek(0)
        copied, copied_crc = 0, 0
        for chunk in self._chunks(source, size):
            self._out.write(chunk)
            copied, copied_crc = copied + len(chunk), zlib.crc32(chunk, copied_crc)
        if (copied, copied_crc) != (size, crc):
            raise ArchiveError(f"{_quote(entry.name.decode())} changed while it was zipped")
        self._done(entry)

    def _crc(self, source: io.BufferedReader, first: bytes) -> tuple[int, int]:
        crc, size = zlib.crc32(first), len(first)
        for chunk in self._chunks(source, _MAX_FILE):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        return crc, size

    def _chunks(self, source: io.BufferedReader, limit: int) -> Iterator[memoryview]:
        """Up to ``limit`` bytes of ``source``, read into one reused buffer: a large file
        read chunk by chunk into new objects left the allocator's heap grown."""
        with memoryview(bytearray(self._chunk_bytes)) as buffer:
            while limit and (count := source.readinto(buffer[: min(len(buffer), limit)])):
                limit -= count
                yield buffer[:count]

    def _deflated(
        self, entry: _Written, source: BinaryIO, packer: Any, first: bytes, packed: bytes
    ) -> None:
        """A large file that compresses, streamed; its CRC and sizes follow in a descriptor."""
        entry.method, entry.flags = zipfile.ZIP_DEFLATED, entry.flags | _DESCRIPTOR
        zip64 = os.fstat(source.fileno()).st_size * 1.05 >= _MAX32  # as zipfile decides
        self._header(entry, zip64=zip64)
        self._out.write(packed)
        crc, size, compressed = zlib.crc32(first), len(first), len(packed)
        while chunk := source.read(self._chunk_bytes):
            packed = packer.compress(chunk)
            self._out.write(packed)
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
            compressed += len(packed)
        tail = packer.flush()
        self._out.write(tail)
        entry.crc, entry.compressed, entry.size = crc, compressed + len(tail), size
        shape = "<4sL2Q" if zip64 else "<4s3L"
        self._out.write(struct.pack(shape, b"PK\x07\x08", crc, entry.compressed, size))
        self._done(entry)

    def _header(self, entry: _Written, *, zip64: bool) -> None:
        entry.offset = self._out.offset
        sizes = (entry.compressed, entry.size)
        if entry.flags & _DESCRIPTOR:
            sizes = (0, 0)
        extra = struct.pack("<2H2Q", 1, 16, sizes[1], sizes[0]) if zip64 else b""
        if zip64:
            sizes = (_MAX32, _MAX32)
        crc = 0 if entry.flags & _DESCRIPTOR else entry.crc
        header = _LOCAL.pack(
            ZIP_MAGIC,
            _VERSION64 if zip64 else _VERSION,
            0,
            entry.flags,
            entry.method,
            *entry.when,
            crc,
            *sizes,
            len(entry.name),
            len(extra),
        )
        self._out.write(header + entry.name + extra)

    def _done(self, entry: _Written) -> None:
        """Keep the complete entry's central record: packed, it takes a third of the memory
        of the entry object it was made from (20,000 entries: 2 MiB, not 6)."""
        self._directory += entry.record()
        self._count += 1

    def close(self) -> None:
        """The central directory and the end records (zip64 ones when needed)."""
        start = self._out.offset
        self._out.write(self._directory)
        end, count = self._out.offset, self._count
        size = end - start
        if count >= 0xFFFF or size >= _MAX32 or start >= _MAX32:
            self._out.write(
                _ZIP64_EOCD.pack(
                    b"PK\x06\x06", 44, _VERSION64, _VERSION64, 0, 0, count, count, size, start
                )
                + _ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, end, 1)
            )
        self._out.write(
            _EOCD.pack(
                b"PK\x05\x06",
                0,
                0,
                min(count, 0xFFFF),
                min(count, 0xFFFF),
                min(size, _MAX32),
                min(start, _MAX32),
                0,
            )
        )


@contextmanager
def _zip_writer(out: Path | Sink, chunk_bytes: int, level: int) -> Iterator[_ZipWriter]:
    """A zip writer into ``out`` (a file made there, or a stream), closed with its directory."""
    with ExitStack() as stack:
        stream = stack.enter_context(out.open("wb")) if isinstance(out, Path) else out
        writer = _ZipWriter(stream, chunk_bytes, level)
        yield writer
        writer.close()


def _walk(directory: Path) -> Iterator[Path]:
    """Everything under ``directory``, sorted, parents first; symlinked dirs not entered.

    Iterative, so no depth of tree exhausts the interpreter's recursion limit.
    """
    levels = [iter(sorted(directory.iterdir(), key=lambda p: p.name))]
    while levels:
        path = next(levels[-1], None)
        if path is None:
            levels.pop()
            continue
        yield path
        if path.is_dir() and not path.is_symlink():
            levels.append(iter(sorted(path.iterdir(), key=lambda p: p.name)))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _inner_link(path: Path, root: str, arcname: str) -> str:
    """A link's target to store: as written if relative, else made relative; never outside."""
    target = os.readlink(path)
    resolved = os.path.realpath(path)
    if not _inside(resolved, root):
        raise UnsafeEntryError(
            f"{arcname!r} is a symbolic link to {target!r}, outside the directory being zipped"
        )
    if os.path.isabs(target):
        return os.path.relpath(resolved, os.path.realpath(path.parent))
    return target


def zip_directory(
    source: Path, out: Path | Sink, chunk_bytes: int, level: int = DEFAULT_LEVEL
) -> None:
    """Zip everything under ``source`` into ``out``, in sorted order, with Unix modes.

    Symbolic links are stored as links (not followed) when they resolve inside
    ``source``; a link leading outside raises UnsafeEntryError rather than leak or drop
    a file. Device files, fifos and sockets raise UnsafeEntryError.
    """
    root = os.path.realpath(source)
    with _zip_writer(out, chunk_bytes, level) as writer:
        for path in _walk(source):
            arcname = path.relative_to(source).as_posix()
            if path.is_symlink():
                writer.add_link(arcname, path, _inner_link(path, root, arcname))
            elif path.is_dir():
                writer.add_dir(arcname, path)
            elif path.is_file():
                writer.add_file(arcname, path)
            else:
                raise UnsafeEntryError(f"{arcname!r} is a device file, fifo or socket")


def zip_members(
    members: Mapping[str, Member],
    out: Path | Sink,
    chunk_bytes: int,
    level: int = DEFAULT_LEVEL,
) -> None:
    """Zip the given members into ``out``, sorted by name.

    ``bytes`` are stored as they are, ``str`` as UTF-8 text (mode 0o644), and a
    ``Path`` is the file whose content (and mode) is streamed in.
    """
    with _zip_writer(out, chunk_bytes, level) as writer:
        for name in sorted(members):
            arcname = "/".join(safe_parts(name))
            if not arcname:
                raise UnsafeEntryError(f"entry {name!r} has no file name")
            value = members[name]
            if isinstance(value, Path):
                writer.add_file(arcname, value)
            else:
                writer.add_data(arcname, value.encode() if isinstance(value, str) else value)
