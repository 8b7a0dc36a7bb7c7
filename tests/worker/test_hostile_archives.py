"""Hostile source archives (issue 10) through a real pipeline and a serving worker.

Each one must fail its job with a clear, typed message that names no host path, write
nothing outside the job's workspace, and leave the worker serving: the next job, with an
ordinary source, succeeds.
"""

from __future__ import annotations

import tarfile
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Run
from cpw_archives import zip_link, zip_of

from cpworker.artifacts import ArtifactSettings
from cpworker.testing import zip_bytes
from cpworker.worker import Worker

StartPipeline = Callable[..., Run]
StartWorker = Callable[..., Worker]


def _long_name_headers(count: int) -> bytes:
    """A tar.gz whose member has ``count`` GNU long-name headers in a row."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 2
    block = header.tobuf(format=tarfile.GNU_FORMAT) + b"n\x00".ljust(512, b"\x00")
    member = tarfile.TarInfo("f").tobuf(format=tarfile.GNU_FORMAT)
    return zlib.compress(block * count + member + bytes(1024), wbits=31)


MARK = uuid.uuid4().hex
HOSTILE = {
    "zip-slip": (zip_of(("ok.txt", b"x"), (f"../../../zip-slip-{MARK}.txt", b"x")), "outside"),
    "absolute-path": (zip_of((f"/tmp/absolute-{MARK}.txt", b"x")), "absolute"),
    "symlink-escape": (
        zip_of(zip_link("link", "../../.."), (f"link/escape-{MARK}.txt", b"x")),
        "link",
    ),
    "oversize": (zip_bytes({"big.bin": b"0" * 50_000}), "max_total_bytes"),
    "corrupt": (zip_bytes({"a.txt": "x" * 5000})[:-40], "not a valid zip"),
    "ratio-bomb": (zip_of(("zeros", bytes(8 * 1024 * 1024))), "expands more than 20 times its"),
    "deep-nesting": (zip_of(("d/" * 1200 + "f", b"x")), "is nested more than 256 directories"),
    "long-name": (zip_of(("n" * 300, b"x")), "has a name component of 300 bytes"),
    "link-chain": (
        zip_of(("d/", b""), *(zip_link(f"l{i}", f"l{i - 1}" if i else "d") for i in range(1500))),
        "symbolic link 'l40' leads through more than 40 symbolic links",
    ),
    "tar-header-run": (_long_name_headers(3000), "more than 16 extended headers in a row"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_fails_its_job_and_the_worker_serves_the_next(
    case: str,
    start_pipeline: StartPipeline,
    worker: StartWorker,
    workspace_root: Path,
    tmp_path: Path,
) -> None:
    archive, message = HOSTILE[case]
    # Given a worker with a low expansion ratio limit, and a pipeline whose source is hostile
    before = set(tmp_path.rglob("*"))
    # (a bound on total bytes only for the oversize case: it would stop a bomb first)
    total = 10_000 if case == "oversize" else ArtifactSettings().max_total_bytes
    settings = ArtifactSettings(
        max_total_bytes=total, max_ratio=20, ratio_check_after_bytes=1_000_000
    )
    worker("extract", artifacts=settings)
    hostile = start_pipeline("CpwExtract", source=archive)
    # When the job runs, it fails with the reason, named after the artifact
    assert hostile.wait()["status"] == "Failed"
    error = hostile.action_state()["errorDetails"]
    assert error["code"] == "JobFailed"
    assert error["message"].startswith("input artifact 'SourceOutput' ")
    assert message in error["message"].lower()
    assert str(tmp_path) not in error["message"]
    # Then the worker serves the next job, and nothing was left behind or written outside
    assert start_pipeline("CpwExtract").wait()["status"] == "Succeeded"
    assert not list(workspace_root.iterdir()), "the job workspaces are removed"
    assert set(tmp_path.rglob("*")) - before <= {workspace_root}
    for root in (tmp_path, Path("/tmp"), Path("/")):
        assert not list(root.glob(f"*{MARK}*"))
