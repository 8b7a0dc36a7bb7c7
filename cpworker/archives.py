"""Archive handling for artifacts, apart from S3: sniffing, safe extraction, zipping.

Artifacts come from other people's pipelines, so extraction trusts nothing in them:

- every entry must land inside the destination: ``..`` components, absolute names,
  Windows names (drive letters, backslashes) and NUL bytes are refused;
- symbolic links are created only if their target resolves inside the destination
  (checked when created and again once everything is extracted, because a later link
  can change what an earlier one resolves to); hard links only to files already
  extracted; device files, fifos and sockets are refused;
- bytes are counted while they are written and entries while they are read, so an
  archive that lies about its sizes cannot exceed the limits;
- a later entry with the name of an earlier file replaces it; a file and a directory
  with the same name make the archive invalid.

Files keep their permission bits (``& 0o777``: never setuid, setgid or sticky);
directories get default permissions, so extraction and clean-up can always write
into them.

Zip and tar (plain, gzip, bzip2, xz) go through the same checks. ``tarfile``'s
``data`` filter is not used: members are streamed by our own writer (to count bytes),
so the rules above are enforced here once, with one set of messages, for both kinds.
Violations raise an ``ArchiveError`` whose ``problem`` and message the caller puts
after the artifact's name. Nothing here knows about S3 or jobs.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import shutil
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, Literal

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

Kind = Literal["zip", "tar", "file"]

DEFAULT_FILE_MODE = 0o644
_ZIP_MAGIC = b"PK\x03\x04"
_UNIX = 3  # zip "version made by" host system: Unix, so external_attr holds st_mode
_MAX_LINK_BYTES = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")
_READ_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,  # zipfile: unsupported compression method
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


@dataclass
class Budget:
    """What an extraction may still write; counted as it happens, never from headers."""

    max_bytes: int
    max_entries: int
    written: int = 0
    entries: int = 0

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

    def _check(self, entries: int, size: int) -> None:
        if entries > self.max_entries:
            raise LimitExceededError(f"it has more than {self.max_entries} entries (max_entries)")
        if size > self.max_bytes:
            raise LimitExceededError(
                f"it expands to more than {self.max_bytes} bytes (max_total_bytes)"
            )


def sniff(path: Path) -> Kind:
    """The archive kind from the content (never the name): zip, tar (any compression), file."""
    with path.open("rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    # A truncated zip has no central directory, yet it is a zip: report it as corrupt.
    if head == _ZIP_MAGIC or zipfile.is_zipfile(path):
        return "zip"
    return "tar" if tarfile.is_tarfile(path) else "file"


def safe_parts(name: str) -> tuple[str, ...]:
    """The components of an entry name, ``()`` for the root; UnsafeEntryError if it could escape."""
    if "\x00" in name:
        raise UnsafeEntryError(f"entry {name!r} contains a NUL byte")
    if "\\" in name or _DRIVE.match(name):
        raise UnsafeEntryError(f"entry {name!r} is a Windows path (drive letter or backslash)")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if name.startswith("/") or ".." in parts:
        raise UnsafeEntryError(f"entry {name!r} would be written outside the extraction directory")
    return parts


def member_name(name: str) -> str:
    """An entry name as listed and looked up: no ``./`` prefix, no trailing slash."""
    return "/".join(part for part in name.split("/") if part not in ("", "."))


@contextmanager
def _reading(kind: Kind) -> Iterator[None]:
    """Turn the standard library's many archive errors into one CorruptArchiveError."""
    try:
        yield
    except _READ_ERRORS as exc:
        raise CorruptArchiveError(kind, str(exc) or type(exc).__name__) from exc


# ---------------------------------------------------------------- listing and reading


def member_names(archive: Path, kind: Kind, file_name: str) -> list[str]:
    """Names of the non-directory members, in archive order, without extracting."""
    if kind == "file":
        return [file_name]
    with _reading(kind):
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                return [member_name(i.filename) for i in zf.infolist() if not i.is_dir()]
        with tarfile.open(archive, "r:*") as tf:
            return [member_name(m.name) for m in tf if not m.isdir()]


class _MemberReader(io.RawIOBase):
    """A member's stream whose ``close`` also closes the archive it is read from."""

    def __init__(self, stream: IO[bytes], owner: ExitStack) -> None:
        super().__init__()
        self._stream = stream
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._owner.close()
        super().close()


def open_member(archive: Path, kind: Kind, member: str, file_name: str) -> BinaryIO | None:
    """A reader for one member (the last one of that name, as extraction keeps), or None."""
    wanted = member_name(member)
    if kind == "file":
        return archive.open("rb") if wanted == file_name else None
    find = _find_zip_member if kind == "zip" else _find_tar_member
    with _reading(kind), ExitStack() as stack:
        stream = find(stack, archive, wanted)
        if stream is None:
            return None
        return io.BufferedReader(_MemberReader(stream, stack.pop_all()))


def _find_zip_member(stack: ExitStack, archive: Path, wanted: str) -> IO[bytes] | None:
    zf = stack.enter_context(zipfile.ZipFile(archive))
    infos = [i for i in zf.infolist() if not i.is_dir() and member_name(i.filename) == wanted]
    return zf.open(infos[-1]) if infos else None


def _find_tar_member(stack: ExitStack, archive: Path, wanted: str) -> IO[bytes] | None:
    tf = stack.enter_context(tarfile.open(archive, "r:*"))  # noqa: SIM115 - the stack owns it
    members = [m for m in tf if not m.isdir() and member_name(m.name) == wanted]
    return tf.extractfile(members[-1]) if members else None


# ---------------------------------------------------------------- extraction


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


class _Extractor:
    """Writes entries under ``root`` after checking each one; see the module docstring."""

    def __init__(self, dest: Path, kind: Kind, budget: Budget, chunk_bytes: int) -> None:
        self.root = os.path.realpath(dest)
        self.kind = kind
        self.budget = budget
        self.chunk_bytes = chunk_bytes
        self.links: list[str] = []

    def _place(self, name: str) -> str | None:
        """Where an entry goes (its parent really inside root), or None for root itself."""
        parts = safe_parts(name)
        if not parts:
            return None
        parent = os.path.realpath(os.path.join(self.root, *parts[:-1]))
        if not _inside(parent, self.root):
            raise UnsafeEntryError(
                f"entry {name!r} would be written outside the extraction directory"
            )
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise self._conflict(name) from exc
        return os.path.join(parent, parts[-1])

    def _conflict(self, name: str) -> CorruptArchiveError:
        return CorruptArchiveError(self.kind, f"entry {name!r} is both a file and a directory")

    def _fresh(self, name: str) -> str:
        """The path for a new file or link; an earlier file or link of that name goes."""
        target = self._place(name)
        if target is None or (os.path.isdir(target) and not os.path.islink(target)):
            raise self._conflict(name)
        if os.path.lexists(target):
            os.unlink(target)
        return target

    def directory(self, name: str) -> None:
        target = self._place(name)
        if target is None:
            return
        if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
            raise self._conflict(name)
        os.makedirs(target, exist_ok=True)

    def file(self, name: str, source: IO[bytes], mode: int) -> None:
        target = self._fresh(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with open(os.open(target, flags, 0o600), "wb") as out:
            while chunk := source.read(self.chunk_bytes):
                self.budget.add_bytes(len(chunk))
                out.write(chunk)
            os.fchmod(out.fileno(), mode & 0o777)

    def symlink(self, name: str, link: str) -> None:
        escape = UnsafeEntryError(f"symbolic link {name!r} points outside the extraction directory")
        if not link or "\x00" in link or "\\" in link or _DRIVE.match(link):
            raise escape
        target = self._fresh(name)
        resolved = os.path.realpath(os.path.join(os.path.dirname(target), link))
        if os.path.isabs(link) or not _inside(resolved, self.root):
            raise escape
        os.symlink(link, target)
        self.links.append(target)

    def hardlink(self, name: str, link: str) -> None:
        escape = UnsafeEntryError(f"hard link {name!r} points outside the extraction directory")
        try:
            source = os.path.realpath(os.path.join(self.root, *safe_parts(link)))
        except UnsafeEntryError:
            raise escape from None
        if not _inside(source, self.root):
            raise escape
        target = self._fresh(name)  # first: a link to itself then refers to nothing
        if not os.path.isfile(source):
            raise CorruptArchiveError(
                self.kind, f"hard link {name!r} refers to {link!r}, which is not a file before it"
            )
        os.link(source, target)

    def special(self, name: str) -> None:
        raise UnsafeEntryError(
            f"entry {name!r} is a device file, fifo or socket, which is not allowed"
        )

    def finish(self) -> None:
        """Re-check links: a later link may have changed where an earlier one leads."""
        for link in self.links:
            if os.path.islink(link) and not _inside(os.path.realpath(link), self.root):
                name = os.path.relpath(link, self.root)
                raise UnsafeEntryError(
                    f"symbolic link {name!r} points outside the extraction directory"
                )


def extract(
    archive: Path, kind: Kind, dest: Path, *, budget: Budget, chunk_bytes: int, file_name: str
) -> None:
    """Extract ``archive`` into ``dest`` safely; on any error ``dest`` is removed.

    A ``file`` (not an archive) becomes the one file ``dest/file_name``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    extractor = _Extractor(dest, kind, budget, chunk_bytes)
    try:
        if kind == "zip":
            _extract_zip(archive, extractor)
        elif kind == "tar":
            _extract_tar(archive, extractor)
        else:
            budget.add_entry()
            with archive.open("rb") as source:
                extractor.file(file_name, source, DEFAULT_FILE_MODE)
        extractor.finish()
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _zip_mode(info: zipfile.ZipInfo) -> int:
    """st_mode from a zip entry; a file from a non-Unix zip is a plain regular file."""
    mode = info.external_attr >> 16
    if info.create_system != _UNIX or mode == 0:
        return stat.S_IFREG | DEFAULT_FILE_MODE
    return mode if stat.S_IFMT(mode) else mode | stat.S_IFREG


def _zip_link(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """A zip symlink's target, which is stored as the entry's content."""
    with zf.open(info) as handle:
        data = handle.read(_MAX_LINK_BYTES + 1)
    if len(data) > _MAX_LINK_BYTES:
        raise UnsafeEntryError(f"symbolic link {info.filename!r} has an oversized target")
    return data.decode("utf-8", errors="replace")


def _extract_zip(archive: Path, extractor: _Extractor) -> None:
    with _reading("zip"), zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        extractor.budget.expect(len(infos), sum(info.file_size for info in infos))
        for info in infos:
            extractor.budget.add_entry()
            _extract_zip_entry(zf, info, extractor)


def _extract_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, ex: _Extractor) -> None:
    mode = _zip_mode(info)
    if info.is_dir() or stat.S_ISDIR(mode):
        ex.directory(info.filename)
    elif stat.S_ISLNK(mode):
        ex.symlink(info.filename, _zip_link(zf, info))
    elif not stat.S_ISREG(mode):
        ex.special(info.filename)
    elif info.flag_bits & 0x1:
        raise CorruptArchiveError("zip", f"entry {info.filename!r} is encrypted")
    else:
        with zf.open(info) as source:
            ex.file(info.filename, source, mode)


def _extract_tar(archive: Path, ex: _Extractor) -> None:
    with _reading("tar"), tarfile.open(archive, "r:*") as tf:
        for member in tf:
            ex.budget.add_entry()
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
                    ex.file(member.name, source, member.mode)
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


def _unix_info(arcname: str, st_mode: int, mtime: float) -> zipfile.ZipInfo:
    """An entry made on Unix: file type and permission bits kept, setuid/setgid dropped."""
    info = zipfile.ZipInfo(arcname, _zip_time(mtime))
    info.create_system = _UNIX
    info.external_attr = (stat.S_IFMT(st_mode) | (st_mode & 0o777)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


class _ZipWriter:
    """Streams entries into a zip from disk, in the order they are added."""

    def __init__(self, zf: zipfile.ZipFile, chunk_bytes: int) -> None:
        self.zf = zf
        self.chunk_bytes = chunk_bytes

    def add_file(self, arcname: str, path: Path) -> None:
        st = path.stat()
        info = _unix_info(arcname, st.st_mode, st.st_mtime)
        info.file_size = st.st_size  # lets zipfile pick zip64 for files over 2 GiB
        with path.open("rb") as source, self.zf.open(info, "w") as out:
            shutil.copyfileobj(source, out, self.chunk_bytes)

    def add_dir(self, arcname: str, path: Path) -> None:
        st = path.stat()
        info = _unix_info(arcname + "/", st.st_mode, st.st_mtime)
        info.external_attr |= 0x10  # the MS-DOS directory flag, as zip tools set it
        info.compress_type = zipfile.ZIP_STORED
        info.compress_size = info.file_size = info.CRC = 0
        self.zf.mkdir(info)

    def add_link(self, arcname: str, path: Path, target: str) -> None:
        st = path.lstat()
        info = _unix_info(arcname, st.st_mode, st.st_mtime)
        info.compress_type = zipfile.ZIP_STORED
        self.zf.writestr(info, target)

    def add_data(self, arcname: str, data: bytes) -> None:
        info = _unix_info(arcname, stat.S_IFREG | DEFAULT_FILE_MODE, time.time())
        self.zf.writestr(info, data)


@contextmanager
def _zip_writer(out: Path, chunk_bytes: int) -> Iterator[_ZipWriter]:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        yield _ZipWriter(zf, chunk_bytes)


def _walk(directory: Path) -> Iterator[Path]:
    """Everything under ``directory``, sorted, parents first; symlinked dirs not entered."""
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        yield path
        if path.is_dir() and not path.is_symlink():
            yield from _walk(path)


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


def zip_directory(source: Path, out: Path, chunk_bytes: int) -> None:
    """Zip everything under ``source`` into ``out``, in sorted order, with Unix modes.

    Symbolic links are stored as links (not followed) when they resolve inside
    ``source``; a link leading outside raises UnsafeEntryError rather than leak or drop
    a file. Device files, fifos and sockets raise UnsafeEntryError.
    """
    root = os.path.realpath(source)
    with _zip_writer(out, chunk_bytes) as writer:
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


def zip_members(members: Mapping[str, Member], out: Path, chunk_bytes: int) -> None:
    """Zip the given members into ``out``, sorted by name.

    ``bytes`` are stored as they are, ``str`` as UTF-8 text (mode 0o644), and a
    ``Path`` is the file whose content (and mode) is streamed in.
    """
    with _zip_writer(out, chunk_bytes) as writer:
        for name in sorted(members):
            arcname = "/".join(safe_parts(name))
            if not arcname:
                raise UnsafeEntryError(f"entry {name!r} has no file name")
            value = members[name]
            if isinstance(value, Path):
                writer.add_file(arcname, value)
            else:
                writer.add_data(arcname, value.encode() if isinstance(value, str) else value)
