"""Input and output artifacts: streamed S3 transfers with the job's credentials.

A job's artifacts live in the pipeline's S3 artifact store and are reached with the
job's temporary ``artifactCredentials`` (SigV4). Inputs are downloaded once, in
chunks, into the job's workspace, then listed, read or extracted safely (see
``cpworker.archives``). Outputs are zipped from disk and uploaded with SSE-KMS under
the job's key (multipart above a threshold). Nothing is ever written outside the
job's workspace, and failures become pipeline-facing errors whose messages carry no
credentials:

- the input object does not exist → ``RevisionUnavailable``
- access denied → ``cpworker.errors.PermissionError``
- an unsafe, corrupt or oversize archive, or any other S3 failure → ``JobFailed``
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    BinaryIO,
    Generic,
    Literal,
    Protocol,
    TypedDict,
    TypeVar,
    cast,
)

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError

from cpworker import archives
from cpworker.errors import (
    ActionFailed,
    ConfigurationError,
    JobFailed,
    PermissionError,
    RevisionUnavailable,
)
from cpworker.redact import scrub

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

Kind = archives.Kind
Member = archives.Member
R = TypeVar("R")

GIB = 1024**3
MIB = 1024**2
_INTERNAL_DIR = ".cpworker"  # downloads, inside the workspace
_DENIED = frozenset({"AccessDenied", "AllAccessDisabled"})
_MISSING = frozenset({"NoSuchKey", "NoSuchBucket"})
_MIN_PART = 5 * MIB  # S3's smallest part (but the last)
_TAIL_BYTES = 8 * MIB  # fetched first when a zip is extracted while downloading
_HANDED_CHUNKS = 1  # chunks of a lent span that wait in memory for the extraction
_SESSION_LOCK = threading.Lock()
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b")


@dataclass(frozen=True)
class ArtifactSettings:
    """Bounds and transfer sizes for artifacts; the defaults suit real pipelines.

    - ``max_total_bytes`` (10 GiB): bytes one extraction may write, counted while
      writing (archives can lie about their sizes), so a zip bomb cannot fill the disk.
    - ``max_entries`` (100_000): entries one extraction may create (directories made
      on the way count), and members that listing or opening one may read.
    - ``max_ratio`` (200) and ``ratio_check_after_bytes`` (1 GiB): once more than
      ``ratio_check_after_bytes`` were written, an extraction that wrote more than
      ``max_ratio`` times the compressed bytes it read from the archive so far is
      refused, so a bomb stops there rather than at ``max_total_bytes``.
    - ``multipart_threshold_bytes`` (64 MiB): ``upload_file`` goes multipart above it.
    - ``multipart_chunk_bytes`` (5 MiB, S3's smallest; smaller values are raised to
      that): part size of a multipart upload. A zip is streamed into S3 as it is
      made, with no temporary file: one PutObject if it fits one part, else one part
      uploading while the next is filled (memory: two parts, 10 MiB; S3's 10,000
      parts then bound the zip to 48 GiB: raise it for larger ones).
    - ``compress_level`` (1): zlib level of zipped outputs; 1 is the fastest and keeps
      most of the gain of 6 (zip's default) on text. Entries whose first block does
      not compress by 5 % are stored.
    - ``chunk_bytes`` (1 MiB): read/write buffer when streaming; memory use is a
      few of these, whatever the artifact's size.
    """

    max_total_bytes: int = 10 * GIB
    max_entries: int = 100_000
    max_ratio: int = 200
    ratio_check_after_bytes: int = 1 * GIB
    multipart_threshold_bytes: int = 64 * MIB
    multipart_chunk_bytes: int = 5 * MIB
    chunk_bytes: int = 1 * MIB
    compress_level: int = archives.DEFAULT_LEVEL


def artifact_s3_client(
    *,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None,
    region: str | None,
    endpoint_url: str | None,
) -> S3Client:
    """An S3 client signing with the job's artifact credentials (SigV4, standard retries).

    ``endpoint_url`` wins; without it botocore itself honours ``AWS_ENDPOINT_URL_S3`` and
    ``AWS_ENDPOINT_URL``. With any endpoint set (a local emulator), addressing is
    path-style, because loopback hosts have no bucket subdomains.
    """
    # As many tries as the CodePipeline calls get (RetryPolicy): throttling (SlowDown),
    # 5xx and broken connections are retried with backoff; 3 tries lose jobs under load.
    config = Config(signature_version="s3v4", retries={"mode": "standard", "total_max_attempts": 8})
    if _endpoint_configured(endpoint_url):
        config = config.merge(Config(s3={"addressing_style": "path"}))
    with _SESSION_LOCK:
        client = _shared_session().create_client(
            "s3",
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
            endpoint_url=endpoint_url,
            config=config,
        )
    return cast("S3Client", client)


class LazyClient:
    """An S3 client made on first use, then shared by every artifact of one job.

    Building a client costs milliseconds of CPU; a job whose handler touches no artifact
    should not pay it. ``make`` runs at most once, even when threads race for it.
    """

    def __init__(self, make: Callable[[], S3Client]) -> None:
        self._make = make
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    def get(self) -> S3Client:
        """The client, built now if no artifact needed it before."""
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client


@cache
def _shared_session() -> botocore.session.Session:
    """One session for every job's client: service models load once (~10 ms a client
    instead of ~150 ms). It holds no credentials; each client gets the job's own.
    Sessions are not thread-safe, hence ``_SESSION_LOCK`` around client creation.
    botocore's rather than boto3's: cpworker uses none of what boto3 adds, and importing
    boto3 loads s3transfer, which only ``upload_file`` needs.
    """
    return botocore.session.Session()


def _endpoint_configured(explicit: str | None) -> bool:
    """Whether the client will talk to a custom endpoint (explicit, or as boto3 reads env)."""
    if explicit:
        return True
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return False
    return bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


def _error_text(exc: ClientError | BotoCoreError) -> str:
    """What went wrong, from the error response only (never request headers), scrubbed."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message", "")
        text = f"{code}: {message}" if message else code
    else:
        text = str(exc)
    return _ACCESS_KEY_ID.sub("****", scrub(text))


def _error_code(exc: ClientError | BotoCoreError) -> str:
    return exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""


def _s3_failure(what: str, exc: ClientError | BotoCoreError) -> ActionFailed:
    """The pipeline-facing error for a failed S3 call; ``what`` starts the message."""
    message = f"{what}: {_error_text(exc)}"
    return PermissionError(message) if _error_code(exc) in _DENIED else JobFailed(message)


def _archive_failure(direction: str, name: str, exc: archives.ArchiveError) -> JobFailed:
    return JobFailed(f"{direction} artifact {name!r} {exc.problem}: {exc}")


def _fs_name(name: str) -> str:
    """An artifact name usable as one file name (CodePipeline names already are)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return "artifact" if cleaned in ("", ".", "..") else cleaned


def _in_workspace(workspace: Path, path: Path | str) -> Path:
    """``path`` (relative ones are relative to the workspace), refused if outside it."""
    root = workspace.resolve()
    full = (root / path).resolve()
    if not full.is_relative_to(root):
        raise ValueError(f"{str(path)!r} is outside the job's workspace {str(root)!r}")
    return full


class ArtifactKeyError(KeyError):
    """A missing artifact or member; reads as a plain sentence, unlike ``KeyError``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _StoredArtifact:
    """What inputs and outputs share: an S3 object of the artifact store, and the workspace."""

    def __init__(
        self,
        *,
        name: str,
        bucket: str,
        key: str,
        client: S3Client | LazyClient,
        workspace: Path,
        settings: ArtifactSettings | None = None,
    ) -> None:
        self._name, self._bucket, self._key = name, bucket, key
        self._client_source = client
        self._workspace = workspace
        self._settings = settings or ArtifactSettings()

    @property
    def _client(self) -> S3Client:
        """The job's S3 client, made when the first artifact needs one."""
        source = self._client_source
        return source.get() if isinstance(source, LazyClient) else source

    @property
    def name(self) -> str:
        return self._name

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def key(self) -> str:
        return self._key

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(name={self._name!r}, bucket={self._bucket!r}, key={self._key!r})"


class InputArtifact(_StoredArtifact):
    """One input artifact: downloaded on first use (once), then listed, read or extracted.

    The raw object is cached in ``<workspace>/.cpworker/inputs/`` (except after an
    extraction that streamed large entries straight to their files: asked for later,
    it is downloaded again); ``kind`` is sniffed from its content. A single object that
    is neither zip nor tar is an artifact with one member named after the object key's
    base name.
    """

    def __init__(
        self,
        *,
        name: str,
        bucket: str,
        key: str,
        revision: str | None,
        client: S3Client | LazyClient,
        workspace: Path,
        settings: ArtifactSettings | None = None,
    ) -> None:
        super().__init__(
            name=name, bucket=bucket, key=key, client=client, workspace=workspace, settings=settings
        )
        self._revision = revision
        self._path: Path | None = None
        self._kind: Kind | None = None
        self._extracted: set[Path] = set()

    @property
    def revision(self) -> str | None:
        """The source revision CodePipeline reports (a commit id, a version id...)."""
        return self._revision

    @property
    def _file_name(self) -> str:
        """The member name of a single-file artifact: the key's base name if usable."""
        base = posixpath.basename(self._key)
        try:
            parts = archives.safe_parts(base)
        except archives.UnsafeEntryError:
            parts = ()
        return parts[-1] if parts else _fs_name(self._name)

    def download(self, dest: Path | str | None = None) -> Path:
        """The raw object as a local file; with ``dest`` (in the workspace), a copy there."""
        cached = self._fetch()
        if dest is None:
            return cached
        target = _in_workspace(self._workspace, dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, target)
        return target

    def _fetch(self) -> Path:
        if self._path is None:
            self._finish(self._start())
        assert self._path is not None  # _finish keeps a complete download or raises
        return self._path

    def _start(self) -> _Download:
        """Start streaming the object into ``.cpworker/inputs/<name>.part``."""
        folder = self._workspace / _INTERNAL_DIR / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f"{_fs_name(self._name)}.part"
        try:
            return _Download(self._client, self._bucket, self._key, partial, self._settings)
        except (ClientError, BotoCoreError) as exc:
            partial.unlink(missing_ok=True)
            raise self._download_failure(exc) from exc

    def _finish(self, download: _Download) -> None:
        """Wait for ``download``: keep the object if it is complete, else raise its failure."""
        try:
            complete = download.join()
        except _DownloadFailedError as failed:
            download.path.unlink(missing_ok=True)
            if isinstance(failed.cause, ClientError | BotoCoreError):
                raise self._download_failure(failed.cause) from failed.cause
            raise failed.cause from None
        if not complete or download.lent:  # cancelled, or no complete copy
            download.path.unlink(missing_ok=True)
            return
        self._path = download.path.with_suffix("")
        download.path.replace(self._path)

    def _download_failure(self, exc: ClientError | BotoCoreError) -> ActionFailed:
        where = f"s3://{self._bucket}/{self._key}"
        if _error_code(exc) in _MISSING:
            return RevisionUnavailable(
                f"input artifact {self._name!r} was not found at {where}: {_error_text(exc)}"
            )
        return _s3_failure(f"could not download input artifact {self._name!r} from {where}", exc)

    @property
    def kind(self) -> Kind:
        """``"zip"``, ``"tar"`` (plain or compressed) or ``"file"``, from the content."""
        if self._kind is None:
            self._kind = archives.sniff(self._fetch())
        return self._kind

    def _archive_call(self, call: Callable[[], R]) -> R:
        try:
            return call()
        except archives.ArchiveError as exc:
            raise _archive_failure("input", self._name, exc) from exc

    def names(self) -> list[str]:
        """Member names (not directories), without extracting."""
        path, kind = self._fetch(), self.kind
        return self._archive_call(
            lambda: archives.member_names(
                path, kind, self._file_name, max_entries=self._settings.max_entries
            )
        )

    def open(self, member: str) -> BinaryIO:
        """A binary reader for one member, without extracting the rest."""
        path, kind = self._fetch(), self.kind
        reader = self._archive_call(
            lambda: archives.open_member(
                path, kind, member, self._file_name, max_entries=self._settings.max_entries
            )
        )
        if reader is None:
            raise ArtifactKeyError(f"input artifact {self._name!r} has no member {member!r}")
        return reader

    def read_text(self, member: str, encoding: str = "utf-8") -> str:
        """One member's content as text."""
        with self.open(member) as reader:
            return reader.read().decode(encoding)

    def extract(self, dest: Path | str | None = None) -> Path:
        """Extract safely into ``dest`` (default ``<workspace>/inputs/<name>``) and return it.

        A relative ``dest`` is relative to the workspace; a ``dest`` outside the workspace
        raises ``ValueError``, as does one that is neither missing nor an empty directory.
        Extracting again to the same place returns it without work. An unsafe, corrupt
        or oversize artifact raises ``JobFailed`` and leaves no ``dest`` behind.
        """
        target = _in_workspace(self._workspace, dest or Path("inputs") / _fs_name(self._name))
        if target in self._extracted:
            return target
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ValueError(f"cannot extract into {str(target)!r}: not an empty directory")
        settings = self._settings
        budget = archives.Budget(
            settings.max_total_bytes,
            settings.max_entries,
            settings.max_ratio,
            settings.ratio_check_after_bytes,
        )
        if self._path is None and self._extract_while_downloading(target, budget):
            self._extracted.add(target)
            return target
        path, kind = self._fetch(), self.kind
        self._archive_call(
            lambda: archives.extract(
                path,
                kind,
                target,
                budget=budget,
                chunk_bytes=settings.chunk_bytes,
                file_name=self._file_name,
            )
        )
        self._extracted.add(target)
        return target

    def _extract_while_downloading(self, target: Path, budget: archives.Budget) -> bool:
        """On first use, extract a large zip while it downloads; False if it is not one
        (it is then downloaded, for the usual path).

        The zip's central directory, at its end, comes first by a ranged GET; the entries
        follow the download, each read waiting for its bytes. Every check is extraction's
        own: only where the bytes come from differs.
        """
        download = self._start()
        if download.size <= _TAIL_BYTES or download.head() != archives.ZIP_MAGIC:
            self._finish(download)
            return False
        try:
            download.fetch_tail()
            self._archive_call(
                lambda: archives.extract(
                    download.path,
                    "zip",
                    target,
                    budget=budget,
                    chunk_bytes=self._settings.chunk_bytes,
                    file_name=self._file_name,
                    incoming=download,
                )
            )
            self._finish(download)
        except BaseException:
            download.cancel()
            shutil.rmtree(target, ignore_errors=True)
            self._finish(download)  # raises the download's failure: the cause of this one
            raise
        self._kind = "zip"
        return True


class _DownloadFailedError(Exception):
    """The download a reader was waiting on failed with ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Download:
    """An S3 object streamed into ``path`` by a thread, which readers can follow.

    ``path`` has the object's size from the start; ``wait(start, end)`` returns once
    those bytes are written: by the stream, or by ``fetch_tail``'s ranged GET of the
    end (where a zip keeps its directory), made with ``IfMatch`` so both halves are of
    one version. ``lend(start, end)`` gives a reader the bytes of a range the stream has
    not reached yet in memory, handed over as they arrive, instead of through ``path``:
    a large entry then goes to its file written once, not twice, while the stream goes
    on receiving and checksumming on its own thread; ``path`` is then no complete copy
    (``lent``). Memory stays at a few chunks.
    """

    def __init__(
        self, client: S3Client, bucket: str, key: str, path: Path, settings: ArtifactSettings
    ) -> None:
        response = client.get_object(Bucket=bucket, Key=key)
        self._client, self._bucket, self._key = client, bucket, key
        self.path, self.size, self._etag = path, response["ContentLength"], response["ETag"]
        self._body = response["Body"]
        self._changed = threading.Condition()
        self._front = 0  # where the stream is: bytes before it are written, or handed over
        self._reading_to = 0  # where the stream's read under way ends
        self._tail = self.size  # where the bytes written from the end begin
        self._span: tuple[int, int] | None = None  # lent: handed over, not written
        self._handed: deque[bytes] = deque()  # chunks of the span not taken yet
        self.lent = False  # some bytes were handed over instead of written to ``path``
        self._failure: BaseException | None = None
        self._done = self._cancelled = False
        with path.open("wb") as out:
            out.truncate(self.size)
        self._chunk_bytes = settings.chunk_bytes
        self._thread = threading.Thread(target=self._stream, name="cpworker-download")
        self._thread.start()

    def _stream(self) -> None:
        try:
            with self._body, self.path.open("r+b", buffering=0) as out:
                while size := self._next_read():
                    chunk = self._body.read(size)
                    if not chunk:  # botocore raises this itself; an early end never passes
                        raise IncompleteReadError(
                            actual_bytes=self._front, expected_bytes=self.size
                        )
                    if not self._hand_over(chunk):
                        out.seek(self._front)
                        out.write(chunk)
                    with self._changed:
                        self._front += len(chunk)
                        self._changed.notify_all()
                if not self._cancelled and self._failure is None:
                    self._body.read(1)  # at the end: botocore checks length and checksum
        except (ClientError, BotoCoreError, OSError) as exc:  # the reader raises it
            self._failure = exc
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def _next_read(self) -> int:
        """How many bytes to read next (0: stop): a read ends where a lent span begins,
        and one inside the span ends with it."""
        with self._changed:
            if self._cancelled or self._failure is not None:
                return 0
            end = self.size
            if self._span is not None:
                begin, stop = self._span
                end = begin if self._front < begin else stop if self._front < stop else end
            size = min(self._chunk_bytes, end - self._front)
            self._reading_to = self._front + size
            return size

    def _hand_over(self, chunk: bytes) -> bool:
        """Give ``chunk`` to the borrower if it is of the lent span, once fewer than
        ``_HANDED_CHUNKS`` wait for it; False: ``path`` gets it."""
        with self._changed:
            while self._lending() and len(self._handed) >= _HANDED_CHUNKS:
                self._changed.wait()
            if not self._lending():
                return False
            self._handed.append(chunk)
            self.lent = True
            self._changed.notify_all()
            return True

    def _lending(self) -> bool:
        span = self._span
        return span is not None and span[0] <= self._front < span[1] and not self._cancelled

    def lend(self, start: int, end: int) -> _Borrowed | None:
        """A reader of bytes [start, end): those the stream has not reached, up to the
        tail, handed over in memory; None if there are none (read ``path``)."""
        with self._changed:
            begin, stop = max(start, self._reading_to), min(end, self._tail)
            if self._done or self._span is not None or begin >= stop:
                return None
            self._span = (begin, stop)
        return _Borrowed(self, start, (begin, stop), end)

    def take(self) -> bytes:
        """The next chunk of the lent span, in order, once the stream received it."""
        with self._changed:
            while not self._handed and not self._done:
                self._changed.wait()
            if not self._handed:
                raise _DownloadFailedError(self._failure or RuntimeError("download cancelled"))
            self._changed.notify_all()
            return self._handed.popleft()

    def give_back(self) -> None:
        """The borrower is done: the rest of the span goes to ``path`` as usual."""
        with self._changed:
            self._span = None
            self._handed.clear()
            self._changed.notify_all()

    def head(self) -> bytes:
        """The object's first bytes (a zip's magic), once downloaded."""
        self.wait(0, len(archives.ZIP_MAGIC))
        with self.path.open("rb") as source:
            return source.read(len(archives.ZIP_MAGIC))

    def fetch_tail(self) -> None:
        """Write the last ``_TAIL_BYTES`` now, with a ranged GET of the same version."""
        start = self.size - _TAIL_BYTES
        try:
            tail = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-", IfMatch=self._etag
            )["Body"]
            with tail, self.path.open("r+b", buffering=0) as out:
                out.seek(start)
                for chunk in tail.iter_chunks(self._chunk_bytes):
                    out.write(chunk)
        except (ClientError, BotoCoreError) as exc:
            self._failure = exc
            raise _DownloadFailedError(exc) from exc
        with self._changed:
            self._tail = start
            self._changed.notify_all()

    def wait(self, start: int, end: int) -> None:
        """Return once bytes [start, end) are written; raise if the download failed."""
        end = min(end, self.size)
        with self._changed:
            while not (
                self._done or end <= self._front or self._front >= self._tail or start >= self._tail
            ):
                self._changed.wait()
            if self._failure is not None:
                raise _DownloadFailedError(self._failure)

    def cancel(self) -> None:
        with self._changed:
            self._cancelled = True
            self._changed.notify_all()

    def join(self) -> bool:
        """Wait for the stream's end: True if complete, False if cancelled; its failure raised."""
        self._thread.join()
        if self._failure is not None:
            raise _DownloadFailedError(self._failure)
        return not self._cancelled or self._front == self.size


class _Borrowed(io.RawIOBase):
    """Bytes [start, end) of a download: the ``lent`` span from the chunks the stream
    hands over, the bytes around it from the file; closing it gives the span back."""

    def __init__(self, download: _Download, start: int, lent: tuple[int, int], end: int) -> None:
        super().__init__()
        self._download = download
        self._position, self._lent, self._end = start, lent, end
        self._file: io.FileIO | None = None
        self._chunk = memoryview(b"")  # what is left of the chunk being read
        self._held = True  # the span is the borrower's until given back

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        position, (begin, stop) = self._position, self._lent
        if position >= self._end:
            return 0
        if begin <= position < stop:
            count = self._handed(view[: stop - position])
        else:
            count = self._from_file(view[: (begin if position < begin else self._end) - position])
        self._position += count
        if self._position == stop:
            self._give_back()
        return count

    def _handed(self, view: memoryview) -> int:
        if not self._chunk:
            self._chunk = memoryview(self._download.take())
        count = min(len(view), len(self._chunk))
        view[:count] = self._chunk[:count]
        self._chunk = self._chunk[count:]
        return count

    def _from_file(self, view: memoryview) -> int:
        self._download.wait(self._position, self._position + len(view))
        if self._file is None:
            self._file = io.FileIO(self._download.path, "r")
        self._file.seek(self._position)
        return self._file.readinto(view) or 0

    def _give_back(self) -> None:
        if self._held:
            self._held = False
            self._download.give_back()

    def close(self) -> None:
        if not self.closed:
            if self._file is not None:
                self._file.close()
            self._give_back()
        super().close()


class OutputArtifact(_StoredArtifact):
    """One output artifact: a zip (or a given file) uploaded with SSE-KMS.

    The object is encrypted with ``aws:kms`` under the job's key when the job names one,
    else under the AWS managed key. ``uploaded`` turns True only after S3 accepted the
    object; a failure always raises. Uploading again replaces the object. ``guard``
    is called before each upload and raises when the job may no longer upload (its
    runtime abandoned it).
    """

    def __init__(
        self,
        *,
        name: str,
        bucket: str,
        key: str,
        client: S3Client | LazyClient,
        workspace: Path,
        encryption_key_id: str | None = None,
        settings: ArtifactSettings | None = None,
        guard: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            name=name, bucket=bucket, key=key, client=client, workspace=workspace, settings=settings
        )
        self._key_id = encryption_key_id
        self._uploaded = False
        self._guard = guard

    @property
    def uploaded(self) -> bool:
        """True once S3 accepted the latest upload."""
        return self._uploaded

    def upload_dir(self, path: Path | str) -> None:
        """Zip a directory (relative paths: from the workspace) and upload the zip.

        Entries are sorted and keep their Unix modes (``create_system`` 3). Symbolic
        links are stored as links when they resolve inside the directory; one that
        leads outside fails the upload instead of leaking or silently dropping a file.
        """
        self._uploaded = False
        source = self._workspace / path
        if not source.is_dir():
            raise NotADirectoryError(f"upload_dir needs a directory: {str(source)!r}")
        chunk, level = self._settings.chunk_bytes, self._settings.compress_level
        self._upload_zip(lambda out: archives.zip_directory(source, out, chunk, level))

    def upload_files(self, files: Mapping[str, Member]) -> None:
        """Zip the given members and upload the zip.

        Values: ``bytes`` as is, ``str`` as UTF-8 text, ``Path`` a file streamed from disk.
        """
        chunk, level = self._settings.chunk_bytes, self._settings.compress_level
        self._upload_zip(lambda out: archives.zip_members(files, out, chunk, level))

    def upload_file(self, path: Path | str) -> None:
        """Upload one file unchanged (relative paths: from the workspace).

        Meant for a zip built elsewhere, or a consumer that takes a single object; the
        file is not wrapped in a zip.
        """
        from s3transfer.manager import TransferConfig, TransferManager  # only this needs it

        self._uploaded = False
        self._check_guard()
        config = TransferConfig(
            multipart_threshold=self._settings.multipart_threshold_bytes,
            multipart_chunksize=self._settings.multipart_chunk_bytes,
        )
        extra = dict(self._encryption())
        with self._s3_errors(), TransferManager(self._client, config) as manager:
            manager.upload(str(self._workspace / path), self._bucket, self._key, extra).result()
        self._uploaded = True

    def _upload_zip(self, build: Callable[[archives.Sink], None]) -> None:
        """Zip straight into S3: parts go up while the next files are compressed."""
        self._uploaded = False
        self._check_guard()
        with self._s3_errors():
            upload = _StreamingUpload(
                self._client,
                self._bucket,
                self._key,
                self._encryption(),
                max(self._settings.multipart_chunk_bytes, _MIN_PART),
            )
            try:
                build(upload)
                upload.finish()
            except archives.ArchiveError as exc:
                upload.abort()
                raise _archive_failure("output", self._name, exc) from exc
            except BaseException:
                upload.abort()
                raise
        self._uploaded = True

    def _check_guard(self) -> None:
        if self._guard is not None:
            self._guard()

    def _encryption(self) -> _Encryption:
        """SSE-KMS under the job's key, or the AWS managed key when the job names none."""
        extra: _Encryption = {"ServerSideEncryption": "aws:kms"}
        if self._key_id:
            extra["SSEKMSKeyId"] = self._key_id
        return extra

    @contextmanager
    def _s3_errors(self) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise _s3_failure(f"could not upload output artifact {self._name!r}", exc) from exc


class _Encryption(TypedDict, total=False):
    ServerSideEncryption: Literal["aws:kms"]
    SSEKMSKeyId: str


class _StreamingUpload:
    """Bytes written here become one S3 object: a PutObject if they fit one part, else a
    multipart upload whose parts are sent by a thread while the next part fills.

    Two buffers of one part each, allocated once: one is sent (from a view of it, never
    copied) while the other fills, so memory stays at two parts. The encryption
    arguments go on the PutObject or the CreateMultipartUpload (S3 applies them to every
    part). ``abort`` after any failure leaves no parts behind.
    """

    def __init__(
        self, client: S3Client, bucket: str, key: str, extra: _Encryption, part_bytes: int
    ) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._extra = extra
        self._part_bytes = part_bytes
        self._filling, self._spare = bytearray(part_bytes), bytearray(part_bytes)
        self._filled = 0  # bytes of the part in ``_filling``
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._sending: Future[CompletedPartTypeDef] | None = None
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="cpworker-upload")

    def write(self, data: archives.Chunk) -> int:
        start, size = 0, len(data)
        while start < size:
            taken = min(size - start, self._part_bytes - self._filled)
            self._filling[self._filled : self._filled + taken] = memoryview(data)[
                start : start + taken
            ]
            self._filled, start = self._filled + taken, start + taken
            if self._filled == self._part_bytes:
                self._send()
        return size

    def _send(self) -> None:
        """Hand the filled part to the sender once the previous one is in S3, and fill
        the other buffer (the previous part's) meanwhile."""
        if self._upload_id is None:
            created = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ChecksumAlgorithm="CRC32", **self._extra
            )
            self._upload_id = created["UploadId"]
        self._wait()
        part = io.BufferedReader(_PartBody(memoryview(self._filling)[: self._filled]))
        self._sending = self._sender.submit(self._upload_part, len(self._parts) + 1, part)
        self._filling, self._spare, self._filled = self._spare, self._filling, 0

    def _upload_part(self, number: int, part: BinaryIO) -> CompletedPartTypeDef:
        assert self._upload_id is not None
        sent = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=part,
            ChecksumAlgorithm="CRC32",
        )
        return {"ETag": sent["ETag"], "PartNumber": number, "ChecksumCRC32": sent["ChecksumCRC32"]}

    def _wait(self) -> None:
        if self._sending is not None:
            sending, self._sending = self._sending, None
            self._parts.append(sending.result())

    def finish(self) -> None:
        """Send what is left and make the object."""
        try:
            if self._upload_id is None:
                body = bytes(memoryview(self._filling)[: self._filled])
                self._client.put_object(
                    Bucket=self._bucket, Key=self._key, Body=body, **self._extra
                )
                return
            if self._filled:
                self._send()
            self._wait()
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        finally:
            self._sender.shutdown()

    def abort(self) -> None:
        """Drop the parts sent so far (best effort: the failure that led here is raised)."""
        self._sender.shutdown(cancel_futures=True)
        if self._upload_id is not None:
            with suppress(ClientError, BotoCoreError):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )


class _PartBody(io.RawIOBase):
    """A part's bytes as the seekable file botocore reads (to hash, sign and send, and
    again on a retry), read from the upload's buffer without copying it whole."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        with memoryview(buffer) as out:
            count = min(len(out), len(self._view) - self._at)
            out[:count] = self._view[self._at : self._at + count]
        self._at += count
        return count

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._at, os.SEEK_END: len(self._view)}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


class ArtifactCollection(Generic[T]):
    """A job's input or output artifacts, by name and in envelope order."""

    def __init__(self, artifacts: Iterable[T], *, kind: Literal["input", "output"]) -> None:
        self._kind = kind
        self._items: dict[str, T] = {}
        for artifact in artifacts:
            if artifact.name in self._items:
                raise ValueError(f"two {kind} artifacts are named {artifact.name!r}")
            self._items[artifact.name] = artifact

    @property
    def names(self) -> list[str]:
        return list(self._items)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            available = ", ".join(self._items) or "none"
            raise ArtifactKeyError(
                f"no {self._kind} artifact named {name!r}; available: {available}"
            ) from None

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def one(self) -> T:
        """The only artifact; a ``ConfigurationError`` when there are none or several."""
        if len(self._items) != 1:
            listed = f": {', '.join(self._items)}" if self._items else ""
            raise ConfigurationError(
                f"action expects exactly one {self._kind} artifact, got {len(self._items)}{listed}"
            )
        return next(iter(self._items.values()))

    def __repr__(self) -> str:
        return f"ArtifactCollection({self._kind}: {', '.join(self._items) or 'none'})"
