"""Artifacts against a real local CodePipeline endpoint (moto S3/KMS behind it).

Malicious archives are built here with zipfile/tarfile, put in a bucket, and read
through ``InputArtifact`` exactly as a handler would. Each test checks what a pipeline
user would see: the failure type and message, the files on disk (and that nothing
appeared outside the extraction directory), the objects and headers in S3.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ResponseStreamingError
from cpw_archives import zip_of

from cpworker.artifacts import (
    ArtifactCollection,
    ArtifactSettings,
    InputArtifact,
    OutputArtifact,
    _Download,
    artifact_s3_client,
)
from cpworker.errors import ConfigurationError, JobFailed, PermissionError, RevisionUnavailable

SECRET_KEY_ID = "AKIAEXAMPLEJOBKEY123"
SECRET_ACCESS_KEY = "job-secret-access-key-never-shown"
SECRET_TOKEN = "job-session-token-never-shown"
SECRETS = (SECRET_KEY_ID, SECRET_ACCESS_KEY, SECRET_TOKEN)


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def s3(aws: Callable[..., Any]) -> Any:
    return aws("s3")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"artifacts-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def job_client(local: Any) -> Any:
    """The client a job gets: its own (temporary) credentials, the local endpoint."""
    return artifact_s3_client(
        access_key_id=SECRET_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        session_token=SECRET_TOKEN,
        region="us-east-1",
        endpoint_url=local.endpoint_url,
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "jobs" / "job-1"
    path.mkdir(parents=True)
    return path


InputFactory = Callable[..., InputArtifact]


@pytest.fixture
def make_input(s3: Any, bucket: str, job_client: Any, workspace: Path) -> InputFactory:
    """Put ``data`` in the bucket and return the InputArtifact a handler would get."""

    def make(
        data: bytes, name: str = "SourceOutput", key: str | None = None, **settings: int
    ) -> InputArtifact:
        key = key or f"pipeline/{name}/{uuid.uuid4().hex[:8]}"
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        return InputArtifact(
            name=name,
            bucket=bucket,
            key=key,
            revision="rev-1",
            client=job_client,
            workspace=workspace,
            settings=ArtifactSettings(**settings),
        )

    return make


def unix_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, (2024, 1, 2, 3, 4, 6))
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def zip_link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    return unix_entry(name, stat.S_IFLNK | 0o777), target.encode()


def tar_of(*members: tuple[tarfile.TarInfo, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:  # type: ignore[call-overload]
        for info, data in members:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> Any:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def assert_failed_cleanly(artifact: InputArtifact, workspace: Path, message: str) -> JobFailed:
    """Extraction fails with ``message``; no dest, nothing new anywhere outside it."""
    root = workspace.parent.parent
    with pytest.raises(JobFailed) as caught:
        artifact.extract()
    assert type(caught.value) is JobFailed
    assert message in caught.value.message
    dest = workspace / "inputs" / artifact.name
    assert not dest.exists()
    assert list((workspace / "inputs").iterdir()) == []
    assert sorted(p.name for p in workspace.iterdir()) == [".cpworker", "inputs"]
    assert [p.name for p in root.iterdir()] == ["jobs"]
    assert [p.name for p in workspace.parent.iterdir()] == ["job-1"]
    assert not any("evil" in p.name or "outside" in p.name for p in root.rglob("*"))
    assert not Path("/abs/evil.txt").exists()
    return caught.value


# ---------------------------------------------------------------- unsafe archives


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("../evil.txt", "entry '../evil.txt' would be written outside the extraction directory"),
        ("a/../../evil.txt", "would be written outside the extraction directory"),
        ("/abs/evil.txt", "entry '/abs/evil.txt' would be written outside the extraction"),
        ("C:\\evil.txt", "is a Windows path (drive letter or backslash)"),
        ("..\\evil.txt", "is a Windows path (drive letter or backslash)"),
        ("C:/evil.txt", "is a Windows path (drive letter or backslash)"),
    ],
)
def test_zip_entry_outside_dest_is_refused(
    make_input: InputFactory, workspace: Path, entry: str, reason: str
) -> None:
    artifact = make_input(zip_of(("good.txt", b"ok"), (entry, b"pwned")))
    error = assert_failed_cleanly(artifact, workspace, "input artifact 'SourceOutput' is unsafe: ")
    assert reason in error.message


def test_zip_symlink_out_then_file_through_it(make_input: InputFactory, workspace: Path) -> None:
    artifact = make_input(zip_of(zip_link("link", "../../outside"), ("link/evil.txt", b"x")))
    assert_failed_cleanly(
        artifact,
        workspace,
        "input artifact 'SourceOutput' is unsafe: symbolic link 'link' points outside",
    )


def test_zip_symlinks_that_escape_only_together(make_input: InputFactory, workspace: Path) -> None:
    # "x" -> "y/.." is inside while "y" does not exist; "y" -> "." makes x the parent.
    artifact = make_input(zip_of(zip_link("x", "y/.."), zip_link("y", ".")))
    assert_failed_cleanly(artifact, workspace, "symbolic link 'x' points outside")
    through = zip_of(zip_link("x", "y/.."), zip_link("y", "."), ("x/evil.txt", b"pwned"))
    assert_failed_cleanly(
        make_input(through, name="Through"),
        workspace,
        "input artifact 'Through' is unsafe: entry 'x/evil.txt' would be written outside",
    )


def test_zip_absolute_symlink_is_refused(make_input: InputFactory, workspace: Path) -> None:
    artifact = make_input(zip_of(zip_link("passwd", "/etc/passwd")))
    assert_failed_cleanly(artifact, workspace, "symbolic link 'passwd' points outside")


def test_zip_device_entry_is_refused(make_input: InputFactory, workspace: Path) -> None:
    artifact = make_input(zip_of((unix_entry("pipe", stat.S_IFIFO | 0o644), b"")))
    assert_failed_cleanly(artifact, workspace, "entry 'pipe' is a device file, fifo or socket")


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tar_member("l", tarfile.SYMTYPE, "../outside"), "symbolic link 'l' points outside"),
        (tar_member("l", tarfile.SYMTYPE, "/etc"), "symbolic link 'l' points outside"),
        (tar_member("h", tarfile.LNKTYPE, "../../etc/passwd"), "hard link 'h' points outside"),
        (tar_member("h", tarfile.LNKTYPE, "/etc/passwd"), "hard link 'h' points outside"),
        (tar_member("../evil.txt"), "entry '../evil.txt' would be written outside"),
        (tar_member("dev", tarfile.CHRTYPE), "entry 'dev' is a device file, fifo or socket"),
        (tar_member("fifo", tarfile.FIFOTYPE), "entry 'fifo' is a device file, fifo or socket"),
    ],
)
def test_tar_unsafe_member_is_refused(
    make_input: InputFactory, workspace: Path, member: tarfile.TarInfo, reason: str
) -> None:
    artifact = make_input(tar_of((tar_member("ok.txt"), b"ok"), (member, b"")), name="Tarred")
    error = assert_failed_cleanly(artifact, workspace, "input artifact 'Tarred' is unsafe: ")
    assert reason in error.message


def test_tar_symlink_then_write_through_it(make_input: InputFactory, workspace: Path) -> None:
    data = tar_of((tar_member("d", tarfile.SYMTYPE, ".."), b""), (tar_member("d/evil.txt"), b"x"))
    assert_failed_cleanly(make_input(data), workspace, "symbolic link 'd' points outside")


@pytest.mark.parametrize("target", ["h", "missing", "dir"])
def test_tar_hardlink_to_nothing_usable(
    make_input: InputFactory, workspace: Path, target: str
) -> None:
    data = tar_of(
        (tar_member("dir", tarfile.DIRTYPE), b""), (tar_member("h", tarfile.LNKTYPE, target), b"")
    )
    assert_failed_cleanly(
        make_input(data),
        workspace,
        f"input artifact 'SourceOutput' is not a valid tar archive: hard link 'h' refers to "
        f"'{target}', which is not a file before it",
    )


def test_too_many_entries(make_input: InputFactory, workspace: Path) -> None:
    artifact = make_input(zip_of(*[(f"f{i}", b"") for i in range(20)]), max_entries=10)
    assert_failed_cleanly(
        artifact,
        workspace,
        "input artifact 'SourceOutput' exceeds the extraction limits: "
        "it has more than 10 entries (max_entries)",
    )


def test_zip_bomb_is_stopped(make_input: InputFactory, workspace: Path) -> None:
    artifact = make_input(zip_of(("zeros", bytes(5_000_000))), max_total_bytes=1_000_000)
    assert_failed_cleanly(
        artifact, workspace, "exceeds the extraction limits: it expands to more than 1000000 bytes"
    )


def test_zip_that_lies_about_its_size(make_input: InputFactory, workspace: Path) -> None:
    data = bytearray(zip_of(("zeros", bytes(500_000))))
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 10)  # declared uncompressed size: 10 bytes
    struct.pack_into("<I", data, central + 24, 10)
    artifact = make_input(bytes(data), max_total_bytes=1000)
    error = assert_failed_cleanly(artifact, workspace, "input artifact 'SourceOutput' ")
    assert "is not a valid zip archive" in error.message


def test_tar_gz_bomb_is_counted_while_written(make_input: InputFactory, workspace: Path) -> None:
    data = tar_of((tar_member("zeros"), bytes(3_000_000)), mode="w:gz")
    artifact = make_input(data, max_total_bytes=1_000_000)
    assert_failed_cleanly(artifact, workspace, "it expands to more than 1000000 bytes")


def test_oversize_single_file(make_input: InputFactory, workspace: Path) -> None:
    artifact = make_input(b"x" * 5000, key="big.bin", max_total_bytes=4096)
    assert_failed_cleanly(artifact, workspace, "exceeds the extraction limits")


def test_truncated_zip(make_input: InputFactory, workspace: Path) -> None:
    data = zip_of(("a.txt", os.urandom(4000)), ("b.txt", b"b"))
    artifact = make_input(data[: len(data) // 2])
    assert artifact.kind == "zip"
    assert_failed_cleanly(
        artifact, workspace, "input artifact 'SourceOutput' is not a valid zip archive: "
    )
    with pytest.raises(JobFailed, match="is not a valid zip archive"):
        artifact.names()


def test_file_and_directory_with_one_name(make_input: InputFactory, workspace: Path) -> None:
    artifact = make_input(zip_of(("a", b"file"), ("a/b", b"nested")))
    assert_failed_cleanly(artifact, workspace, "entry 'a/b' is both a file and a directory")


# ---------------------------------------------------------------- good archives


def test_duplicate_entries_last_wins(make_input: InputFactory) -> None:
    artifact = make_input(zip_of(("a.txt", b"first"), ("a.txt", b"second")))
    assert (artifact.extract() / "a.txt").read_bytes() == b"second"
    assert artifact.read_text("a.txt") == "second"


def test_zip_extract_keeps_modes_and_inner_links(make_input: InputFactory) -> None:
    artifact = make_input(
        zip_of(
            (unix_entry("bin/run.sh", stat.S_IFREG | 0o755), b"#!/bin/sh\necho hi\n"),
            (unix_entry("bin/suid", stat.S_IFREG | 0o4755), b"x"),
            ("data/real.txt", b"real"),
            zip_link("alias.txt", "data/real.txt"),
            zip_link("data/self", "."),
            ("empty/", b""),
        )
    )
    dest = artifact.extract()
    assert dest == artifact.extract()  # a second call returns the same extraction
    assert stat.S_IMODE((dest / "bin/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "bin/suid").stat().st_mode) == 0o755  # never setuid
    assert os.readlink(dest / "alias.txt") == "data/real.txt"
    assert (dest / "alias.txt").read_text() == "real"
    assert (dest / "data/self/real.txt").read_text() == "real"
    assert (dest / "empty").is_dir()
    result = subprocess.run([dest / "bin/run.sh"], capture_output=True, text=True, check=True)
    assert result.stdout == "hi\n"


def test_tar_gz_extract_names_and_read(make_input: InputFactory, workspace: Path) -> None:
    data = tar_of(
        (tar_member("./", tarfile.DIRTYPE, mode=0o755), b""),
        (tar_member("./src/main.py", mode=0o755), b"print('hi')\n"),
        (tar_member("./README", mode=0o600), b"readme"),
        (tar_member("./README.link", tarfile.LNKTYPE, "./README"), b""),
        mode="w:gz",
    )
    artifact = make_input(data, name="TarOutput", key="out/archive.zip")  # key lies
    assert artifact.kind == "tar"
    assert artifact.names() == ["src/main.py", "README", "README.link"]
    assert artifact.read_text("./src/main.py") == "print('hi')\n"
    dest = artifact.extract("custom/place")
    assert dest == workspace / "custom" / "place"
    assert (dest / "src/main.py").read_text() == "print('hi')\n"
    assert stat.S_IMODE((dest / "src/main.py").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "README").stat().st_mode) == 0o600
    assert (dest / "README.link").read_text() == "readme"


def test_large_zip_extracted_while_downloading(make_input: InputFactory, workspace: Path) -> None:
    # Over 8 MiB: its directory comes by a ranged GET, its entries follow the download
    blob = os.urandom(9 * 1024 * 1024)
    artifact = make_input(zip_of(("a/blob.bin", blob), ("b.txt", b"text")))
    dest = artifact.extract()
    assert (dest / "a/blob.bin").read_bytes() == blob
    assert artifact.names() == ["a/blob.bin", "b.txt"]  # kept, or downloaded again
    assert artifact.kind == "zip"
    assert not list(workspace.rglob("*.part"))


class _Scripted:
    """A response body that holds its reads once ``hold_after`` bytes were read, until
    ``gate`` opens, and fails, as a dropped connection does, once ``break_after`` were."""

    def __init__(
        self, body: Any, gate: threading.Event, hold_after: int, break_after: int | None = None
    ) -> None:
        self._body, self._gate, self._read = body, gate, 0
        self._hold_after, self._break_after = hold_after, break_after

    def read(self, amount: int | None = None) -> bytes:
        if self._read >= self._hold_after:
            assert self._gate.wait(timeout=120), "the test never opened the gate"
        if self._break_after is not None and self._read >= self._break_after:
            raise ResponseStreamingError(error="Connection broken: connection reset by peer")
        data: bytes = self._body.read(amount)
        self._read += len(data)
        return data

    def __enter__(self) -> _Scripted:
        return self

    def __exit__(self, *exc: object) -> None:
        self._body.close()


def _script_first_get(client: Any, **script: Any) -> None:
    """Script the body of ``client``'s next GetObject (a whole object's, not its end's)."""
    gets: list[int] = []

    def scripted(parsed: dict[str, Any], **_: Any) -> None:
        gets.append(1)
        if len(gets) == 1:
            parsed["Body"] = _Scripted(parsed["Body"], **script)

    client.meta.events.register("after-call.s3.GetObject", scripted)


@pytest.fixture
def lent_gate(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set once an extraction asked its download to lend an entry's bytes."""
    gate = threading.Event()
    lend = _Download.lend

    def lend_then_open(download: _Download, start: int, end: int) -> Any:
        try:
            return lend(download, start, end)
        finally:
            gate.set()

    monkeypatch.setattr(_Download, "lend", lend_then_open)
    return gate


def test_a_large_entry_is_written_once_and_no_copy_of_the_zip_is_kept(
    make_input: InputFactory, job_client: Any, workspace: Path, lent_gate: threading.Event
) -> None:
    # The stream is held until the extraction borrows the blob's bytes, which then go
    # from the response to the blob's file; its last 8 MiB came with the zip's end
    blob = os.urandom(12 * 1024 * 1024)
    artifact = make_input(zip_of(("blob.bin", blob), ("b.txt", b"b")))
    _script_first_get(job_client, gate=lent_gate, hold_after=1024 * 1024)
    dest = artifact.extract()
    assert (dest / "blob.bin").read_bytes() == blob
    assert (dest / "b.txt").read_bytes() == b"b"
    assert list((workspace / ".cpworker" / "inputs").iterdir()) == []  # the tree alone
    assert artifact.read_text("b.txt") == "b"  # asked for later: downloaded again


def test_a_download_that_breaks_in_a_lent_entry_fails_the_job_and_leaves_nothing(
    make_input: InputFactory, job_client: Any, workspace: Path, lent_gate: threading.Event
) -> None:
    # The connection breaks inside the blob's bytes, while they are lent to the extraction
    artifact = make_input(zip_of(("blob.bin", os.urandom(12 * 1024 * 1024)), ("b.txt", b"b")))
    mib = 1024 * 1024
    _script_first_get(job_client, gate=lent_gate, hold_after=mib, break_after=3 * mib)
    failure = assert_failed_cleanly(artifact, workspace, "could not download input artifact")
    assert "connection reset by peer" in failure.message
    assert list((workspace / ".cpworker" / "inputs").iterdir()) == []


def test_a_lent_range_comes_from_the_response_and_is_never_written_to_the_file(
    s3: Any, job_client: Any, bucket: str, workspace: Path
) -> None:
    # What lets a large zip entry go to its file once: the bytes a reader borrows skip
    # the download's file; the rest, before and after, is written there as usual
    mib = 1024 * 1024
    data = os.urandom(6 * mib)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    gate = threading.Event()
    _script_first_get(job_client, gate=gate, hold_after=mib)
    part = workspace / "obj.part"
    download = _Download(job_client, bucket, "obj", part, ArtifactSettings(chunk_bytes=mib // 4))
    download.wait(0, mib)  # the stream is held after its first MiB
    borrowed = download.lend(2 * mib, 4 * mib)
    assert borrowed is not None
    gate.set()
    with borrowed:
        lent = borrowed.read()

    assert download.join()  # complete, the response's length and checksum checked
    assert lent == data[2 * mib : 4 * mib]
    on_disk = part.read_bytes()
    assert on_disk[: 2 * mib] == data[: 2 * mib]
    assert on_disk[2 * mib : 4 * mib] == bytes(2 * mib)  # never written
    assert on_disk[4 * mib :] == data[4 * mib :]
    assert download.lent
    assert download.lend(5 * mib, 6 * mib) is None  # the stream is past it: read the file


def test_large_hostile_zip_is_refused_while_downloading(
    make_input: InputFactory, workspace: Path
) -> None:
    artifact = make_input(zip_of(("blob.bin", os.urandom(9 * 1024 * 1024)), ("../evil", b"x")))
    assert_failed_cleanly(artifact, workspace, "entry '../evil' would be written outside")
    assert not list(workspace.rglob("*.part"))


def test_zip_names_open_and_missing_member(make_input: InputFactory, workspace: Path) -> None:
    artifact = make_input(zip_of(("dir/", b""), ("dir/a.txt", b"A"), ("b.bin", b"\x00\x01")))
    assert artifact.kind == "zip"
    assert artifact.names() == ["dir/a.txt", "b.bin"]
    with artifact.open("b.bin") as reader:
        assert reader.read() == b"\x00\x01"
    with pytest.raises(KeyError) as caught:
        artifact.open("nope.txt")
    assert str(caught.value) == "input artifact 'SourceOutput' has no member 'nope.txt'"
    assert not (workspace / "inputs").exists()  # nothing was extracted


def test_single_object_is_one_file(make_input: InputFactory) -> None:
    artifact = make_input(b'{"a": 1}', name="Config", key="configs/app.json")
    assert (artifact.kind, artifact.names()) == ("file", ["app.json"])
    assert artifact.read_text("app.json") == '{"a": 1}'
    dest = artifact.extract()
    assert [p.name for p in dest.iterdir()] == ["app.json"]
    assert (dest / "app.json").read_bytes() == b'{"a": 1}'
    assert artifact.download().read_bytes() == b'{"a": 1}'


def test_extract_outside_workspace_is_refused(make_input: InputFactory, tmp_path: Path) -> None:
    artifact = make_input(zip_of(("a.txt", b"a")))
    for dest in (tmp_path / "elsewhere", "../elsewhere", "/tmp"):
        with pytest.raises(ValueError, match="outside the job's workspace"):
            artifact.extract(dest)
    assert not (tmp_path / "elsewhere").exists()
    assert not (tmp_path / "jobs" / "elsewhere").exists()


def test_missing_object_is_revision_unavailable(
    job_client: Any, bucket: str, workspace: Path
) -> None:
    artifact = InputArtifact(
        name="Gone",
        bucket=bucket,
        key="no/such/key",
        revision=None,
        client=job_client,
        workspace=workspace,
    )
    with pytest.raises(RevisionUnavailable, match="input artifact 'Gone' was not found"):
        artifact.extract()
    assert not list(workspace.rglob("*.part"))


# ---------------------------------------------------------------- outputs


def output(job_client: Any, bucket: str, workspace: Path, **kwargs: Any) -> OutputArtifact:
    return OutputArtifact(
        name=kwargs.pop("name", "BuildOutput"),
        bucket=bucket,
        key=kwargs.pop("key", f"pipeline/BuildOutput/{uuid.uuid4().hex[:8]}"),
        client=job_client,
        workspace=workspace,
        **kwargs,
    )


def test_upload_dir_round_trip_with_kms_key(
    aws: Callable[..., Any], s3: Any, job_client: Any, bucket: str, workspace: Path
) -> None:
    key_id = aws("kms").create_key()["KeyMetadata"]["KeyId"]
    src = workspace / "build"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "run.sh").write_text("#!/bin/sh\necho built\n")
    (src / "bin" / "run.sh").chmod(0o755)
    (src / "notes.txt").write_text("notes")
    (src / "latest").symlink_to("bin/run.sh")
    (src / "abs-latest").symlink_to(src / "notes.txt")
    artifact = output(job_client, bucket, workspace, encryption_key_id=key_id)
    assert not artifact.uploaded
    artifact.upload_dir("build")
    assert artifact.uploaded

    head = s3.head_object(Bucket=bucket, Key=artifact.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]
    back = InputArtifact(
        name="Back",
        bucket=bucket,
        key=artifact.key,
        revision=None,
        client=job_client,
        workspace=workspace,
    )
    assert back.names() == ["abs-latest", "bin/run.sh", "latest", "notes.txt"]
    dest = back.extract()
    assert stat.S_IMODE((dest / "bin/run.sh").stat().st_mode) == 0o755
    assert os.readlink(dest / "latest") == "bin/run.sh"
    assert os.readlink(dest / "abs-latest") == "notes.txt"  # made relative
    result = subprocess.run([dest / "latest"], capture_output=True, text=True, check=True)
    assert result.stdout == "built\n"
    with zipfile.ZipFile(back.download()) as zf:
        assert {i.create_system for i in zf.infolist()} == {3}
    assert not (workspace / ".cpworker" / "outputs" / "BuildOutput.zip").exists()


def test_upload_files_without_key_uses_aws_managed_kms(
    s3: Any, job_client: Any, bucket: str, workspace: Path
) -> None:
    (workspace / "report.html").write_text("<p>ok</p>")
    artifact = output(job_client, bucket, workspace)
    artifact.upload_files(
        {"b/data.bin": b"\x00\x01", "a.txt": "text", "report.html": workspace / "report.html"}
    )
    head = s3.head_object(Bucket=bucket, Key=artifact.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    body = s3.get_object(Bucket=bucket, Key=artifact.key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.namelist() == ["a.txt", "b/data.bin", "report.html"]
        assert zf.read("report.html") == b"<p>ok</p>"
        assert zf.read("a.txt") == b"text"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", "entry '../x' would be written outside the extraction directory"),
        ("/etc/x", "entry '/etc/x' would be written outside the extraction directory"),
        ("a\x00b", "entry 'a\\x00b' contains a NUL byte"),
        ("./", "entry './' has no file name"),
    ],
)
def test_upload_files_refuses_unsafe_names(
    job_client: Any, bucket: str, workspace: Path, name: str, reason: str
) -> None:
    artifact = output(job_client, bucket, workspace)
    with pytest.raises(JobFailed) as caught:
        artifact.upload_files({"ok.txt": "fine", name: b"x"})
    assert caught.value.message == f"output artifact 'BuildOutput' is unsafe: {reason}"
    assert not artifact.uploaded


def test_upload_dir_refuses_link_outside(
    s3: Any, job_client: Any, bucket: str, workspace: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("do not ship")
    (workspace / "dist").mkdir()
    (workspace / "dist" / "leak").symlink_to(tmp_path / "secret.txt")
    artifact = output(job_client, bucket, workspace, key="out/leaky")
    with pytest.raises(JobFailed, match=r"'leak' is a symbolic link to .*outside the directory"):
        artifact.upload_dir(workspace / "dist")
    assert not artifact.uploaded
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="out/leaky")


def test_upload_file_as_is_and_multipart(
    s3: Any, job_client: Any, bucket: str, workspace: Path
) -> None:
    big = workspace / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    settings = ArtifactSettings(
        multipart_threshold_bytes=1024 * 1024, multipart_chunk_bytes=5 * 1024 * 1024
    )
    artifact = output(job_client, bucket, workspace, settings=settings)
    artifact.upload_file("big.bin")
    head = s3.head_object(Bucket=bucket, Key=artifact.key)
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert head["ServerSideEncryption"] == "aws:kms"
    assert s3.get_object(Bucket=bucket, Key=artifact.key)["Body"].read() == big.read_bytes()


def tree_of_every_kind(src: Path) -> None:
    """Text (deflated), random bytes over a part (stored), empty, non-ASCII, modes, links."""
    (src / "bin").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    (src / "bin" / "run.sh").write_text("#!/bin/sh\necho built\n")
    (src / "bin" / "run.sh").chmod(0o755)
    (src / "big.txt").write_text("a line of build output\n" * 400_000)  # 9 MB, compresses
    (src / "random.bin").write_bytes(os.urandom(6 * 1024 * 1024))  # does not
    (src / "empty").write_bytes(b"")
    (src / "read-only.cfg").write_text("x=1\n")
    (src / "read-only.cfg").chmod(0o444)
    (src / "ünïcödé.txt").write_text("accents")
    (src / "latest").symlink_to("bin/run.sh")


def test_streamed_multipart_zip_is_valid_and_identical_to_the_tree(
    aws: Callable[..., Any], s3: Any, job_client: Any, bucket: str, workspace: Path
) -> None:
    key_id = aws("kms").create_key()["KeyMetadata"]["KeyId"]
    src = workspace / "dist"
    tree_of_every_kind(src)
    settings = ArtifactSettings(multipart_chunk_bytes=5 * 1024 * 1024)
    artifact = output(job_client, bucket, workspace, encryption_key_id=key_id, settings=settings)
    artifact.upload_dir("dist")
    assert not (workspace / ".cpworker").exists()  # no temporary zip
    head = s3.head_object(Bucket=bucket, Key=artifact.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]
    assert int(head["ETag"].strip('"').split("-")[1]) == 2  # two parts: the zip was streamed
    local = workspace / "uploaded.zip"
    local.write_bytes(s3.get_object(Bucket=bucket, Key=artifact.key)["Body"].read())
    with zipfile.ZipFile(local) as zf:
        assert zf.testzip() is None
        infos = {info.filename: info for info in zf.infolist()}
        assert infos["random.bin"].compress_type == zipfile.ZIP_STORED
        assert infos["big.txt"].compress_type == zipfile.ZIP_DEFLATED
        for path in src.rglob("*"):
            name = path.relative_to(src).as_posix() + (
                "/" if path.is_dir() and not path.is_symlink() else ""
            )
            info = infos.pop(name)
            assert info.create_system == 3
            assert info.external_attr >> 16 == os.lstat(path).st_mode, name
            if path.is_symlink():
                assert zf.read(info) == os.readlink(path).encode()
            elif path.is_file():
                assert zf.read(info) == path.read_bytes(), name
        assert not infos
    if shutil.which("unzip") is None:
        pytest.skip("unzip is not installed: checked with zipfile only")
    tested = subprocess.run(["unzip", "-t", str(local)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout


def test_small_zip_is_one_put_object(
    s3: Any, job_client: Any, bucket: str, workspace: Path
) -> None:
    artifact = output(job_client, bucket, workspace)
    artifact.upload_files({"a.txt": "a"})
    head = s3.head_object(Bucket=bucket, Key=artifact.key)
    assert "-" not in head["ETag"]
    assert head["ServerSideEncryption"] == "aws:kms"


def test_failed_streamed_upload_is_aborted(
    s3: Any, job_client: Any, bucket: str, workspace: Path, tmp_path: Path
) -> None:
    # Two parts are sent, then a link out of the tree fails the zip
    (workspace / "dist").mkdir()
    (workspace / "dist" / "a.bin").write_bytes(os.urandom(11 * 1024 * 1024))
    (tmp_path / "secret.txt").write_text("do not ship")
    (workspace / "dist" / "z-leak").symlink_to(tmp_path / "secret.txt")
    settings = ArtifactSettings(multipart_chunk_bytes=5 * 1024 * 1024)
    artifact = output(job_client, bucket, workspace, key="out/aborted", settings=settings)
    with pytest.raises(JobFailed, match="outside the directory being zipped"):
        artifact.upload_dir("dist")
    assert not artifact.uploaded
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="out/aborted")


def test_a_part_sent_again_after_a_server_error_is_sent_whole(
    s3: Any, job_client: Any, bucket: str, workspace: Path
) -> None:
    """Parts are read from the upload's buffer, not copied: a retry reads them from the start."""
    (workspace / "dist").mkdir()
    blob = os.urandom(7 * 1024 * 1024)
    (workspace / "dist" / "a.bin").write_bytes(blob)
    failures = []

    def fail_first(request: Any, **_: Any) -> AWSResponse | None:
        if failures:
            return None
        failures.append(request.body.read(1000))  # partly sent, then the server fails
        error = b"<Error><Code>InternalError</Code><Message>try again</Message></Error>"
        return AWSResponse(request.url, 500, {}, _Raw(error))

    job_client.meta.events.register("before-send.s3.UploadPart", fail_first)
    settings = ArtifactSettings(multipart_chunk_bytes=5 * 1024 * 1024)
    artifact = output(job_client, bucket, workspace, settings=settings)
    artifact.upload_dir("dist")
    assert len(failures) == 1
    body = s3.get_object(Bucket=bucket, Key=artifact.key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.read("a.bin") == blob


class _Raw:
    """The raw stream of a made-up HTTP response."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def test_failed_upload_raises_without_credentials(job_client: Any, workspace: Path) -> None:
    artifact = output(job_client, "no-such-bucket-here", workspace)
    with pytest.raises(JobFailed) as caught:
        artifact.upload_files({"a.txt": "a"})
    assert caught.value.message.startswith(
        "could not upload output artifact 'BuildOutput': NoSuchBucket"
    )
    assert not artifact.uploaded
    shown = f"{caught.value} {caught.value!r} {caught.value.__cause__}"
    assert not any(secret in shown for secret in SECRETS)


def test_upload_twice_replaces(s3: Any, job_client: Any, bucket: str, workspace: Path) -> None:
    artifact = output(job_client, bucket, workspace)
    artifact.upload_files({"v.txt": "1"})
    artifact.upload_files({"v.txt": "2"})
    body = s3.get_object(Bucket=bucket, Key=artifact.key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.read("v.txt") == b"2"


def test_access_denied_becomes_permission_error(workspace: Path) -> None:
    class Denying:
        def get_object(self, **_: Any) -> Any:
            error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise ClientError(error, "GetObject")  # type: ignore[arg-type]

    client: Any = Denying()
    artifact = InputArtifact(
        name="Src", bucket="b", key="k", revision=None, client=client, workspace=workspace
    )
    with pytest.raises(
        PermissionError, match=r"could not download input artifact 'Src' .*AccessDenied: Access"
    ):
        artifact.download()


# ---------------------------------------------------------------- client and collection


def test_client_reads_endpoint_from_environment(
    local: Any, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", local.endpoint_url)
    client = artifact_s3_client(
        access_key_id="AKIAEXAMPLE",
        secret_access_key="x",
        session_token=None,
        region="us-east-1",
        endpoint_url=None,
    )
    assert client.meta.endpoint_url == local.endpoint_url
    config: Any = client.meta.config
    assert config.s3["addressing_style"] == "path"
    assert config.signature_version == "s3v4"
    client.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


def test_collection() -> None:
    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

    two = ArtifactCollection([Named("A"), Named("B")], kind="input")
    assert (two.names, len(two), [a.name for a in two]) == (["A", "B"], 2, ["A", "B"])
    assert two["B"].name == "B"
    assert two.get("C") is None
    with pytest.raises(KeyError) as caught:
        two["C"]
    assert str(caught.value) == "no input artifact named 'C'; available: A, B"
    with pytest.raises(ConfigurationError, match="exactly one input artifact, got 2: A, B"):
        two.one()
    none = ArtifactCollection[Named]([], kind="output")
    with pytest.raises(ConfigurationError, match=r"exactly one output artifact, got 0$"):
        none.one()
    assert ArtifactCollection([Named("X")], kind="output").one().name == "X"


# ---------------------------------------------------------------- memory


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def moto_process() -> Iterator[str]:
    """moto in its own process, so tracemalloc sees only this process's allocations."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_large_artifact_memory_stays_flat(moto_process: str, tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf, zf.open("big.bin", "w") as out:
        for _ in range(size // (1024 * 1024)):
            out.write(os.urandom(1024 * 1024))
    client = artifact_s3_client(
        access_key_id="testing",
        secret_access_key="testing",
        session_token=None,
        region="us-east-1",
        endpoint_url=moto_process,
    )
    client.create_bucket(Bucket="big")
    seeding = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=moto_process,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    seeding.upload_file(str(archive), "big", "big.zip")  # boto3's transfer methods
    workspace = tmp_path / "ws"
    workspace.mkdir()
    artifact = InputArtifact(
        name="Big", bucket="big", key="big.zip", revision=None, client=client, workspace=workspace
    )
    tracemalloc.start()
    try:
        dest = artifact.extract()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (dest / "big.bin").stat().st_size == size
    assert peak < 8 * 1024 * 1024, f"peak traced allocations {peak} bytes"
