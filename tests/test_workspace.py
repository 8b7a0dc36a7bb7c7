"""The workspace root: private to this user, created 0700, and refused when another user
could redirect it or write into it — by prepare_root and by every job_workspace."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from cpworker.workspace import (
    WorkspaceRootError,
    default_workspace_root,
    job_workspace,
    prepare_root,
)

OTHER_UID = 54321


def _refused(root: Path) -> str:
    """The message both prepare_root and job_workspace refuse ``root`` with."""
    with pytest.raises(WorkspaceRootError) as refused:
        prepare_root(root)
    with pytest.raises(WorkspaceRootError, match="workspace root"), job_workspace(root, "job"):
        pytest.fail("a job got a workspace under an unsafe root")
    return str(refused.value)


def test_the_default_root_is_per_user_and_created_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = default_workspace_root()
    assert root == tmp_path / f"cpworker-{os.geteuid()}"

    assert prepare_root(root) == root

    info = root.lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()


def test_a_job_workspace_is_private_and_removed_afterwards(tmp_path: Path) -> None:
    root = tmp_path / "missing" / "root"
    with job_workspace(root, "job-1") as workspace:
        assert workspace.parent == root
        assert workspace.name.startswith("job-1-")
        assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        (workspace / "file").write_text("x")
    assert not workspace.exists()


@pytest.mark.parametrize("target", ["directory", "dangling"])
def test_a_planted_symlink_root_is_refused(tmp_path: Path, target: str) -> None:
    planted = tmp_path / "attacker"
    if target == "directory":
        planted.mkdir(mode=0o700)
    root = tmp_path / "cpworker"
    root.symlink_to(planted)

    message = _refused(root)

    assert message == (
        f"workspace root {root} is a symbolic link (to {planted}): remove it, or choose "
        "another workspace root (--workspace)"
    )
    assert not planted.exists() or not any(planted.iterdir()), "nothing went through the link"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_root_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cpworker"
    root.mkdir(mode=0o700)
    os.chown(root, OTHER_UID, -1)

    message = _refused(root)

    assert message == (
        f"workspace root {root} belongs to uid {OTHER_UID}, not to this user "
        f"(uid {os.geteuid()}): remove it, or choose another workspace root (--workspace)"
    )
    assert not any(root.iterdir())


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o1777])
def test_a_root_others_can_write_into_is_refused(tmp_path: Path, mode: int) -> None:
    root = tmp_path / "cpworker"
    root.mkdir()
    root.chmod(mode)

    message = _refused(root)

    assert message == (
        f"workspace root {root} is writable by other users (mode {mode:o}): run chmod 700 "
        f"{root}, or choose another workspace root (--workspace)"
    )
    assert not any(root.iterdir())


def test_a_file_in_place_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cpworker"
    root.write_text("not a directory")

    assert _refused(root) == (
        f"workspace root {root} is not a directory: remove it, or choose another workspace "
        "root (--workspace)"
    )


def test_a_group_readable_root_of_this_user_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "cpworker"
    root.mkdir()
    root.chmod(0o755)
    with job_workspace(root, "job-2") as workspace:
        assert workspace.is_dir()
