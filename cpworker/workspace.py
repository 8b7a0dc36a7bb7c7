"""A job's private directory: created per job, removed after it (unless kept).

Job workspaces live under a root that must be this user's alone: a root another user
can write into, or has replaced with a symbolic link, would let them read a job's
sources or redirect its files. ``prepare_root`` refuses such a root, and every
``job_workspace`` checks it again before creating a job's directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

log = logging.getLogger("cpworker.workspace")


class WorkspaceRootError(ValueError):
    """The workspace root is not safe to hold job workspaces; the message says how to fix it."""


def default_workspace_root() -> Path:
    """``<system temp>/cpworker-<uid>``: one root per user, never shared between users.

    The system temp directory (``$TMPDIR``, else ``/tmp``) has room for builds, unlike
    ``$XDG_RUNTIME_DIR`` (a small tmpfs, absent for service users), and needs no home
    directory, unlike ``$XDG_CACHE_HOME``. Another user who creates this name first
    gets the root refused by ``prepare_root``, never used.
    """
    return Path(tempfile.gettempdir()) / f"cpworker-{os.geteuid()}"


def prepare_root(root: Path) -> Path:
    """Create ``root`` (mode 0700) if it is missing, and return it once it is safe.

    Raises ``WorkspaceRootError`` when ``root`` is a symbolic link, not a directory,
    owned by another user, or writable by its group or by others.
    """
    with suppress(FileExistsError):
        root.mkdir(parents=True, mode=0o700)
    info = os.lstat(root)
    fix = "remove it, or choose another workspace root (--workspace)"
    if stat.S_ISLNK(info.st_mode):
        raise WorkspaceRootError(
            f"workspace root {root} is a symbolic link (to {os.readlink(root)}): {fix}"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise WorkspaceRootError(f"workspace root {root} is not a directory: {fix}")
    if info.st_uid != os.geteuid():
        raise WorkspaceRootError(
            f"workspace root {root} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.geteuid()}): {fix}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise WorkspaceRootError(
            f"workspace root {root} is writable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}): run chmod 700 {root}, or choose another "
            "workspace root (--workspace)"
        )
    return root


@contextmanager
def job_workspace(root: Path, job_id: str, *, keep: bool = False) -> Iterator[Path]:
    """``<root>/<job id>-<random>``, mode 0700, deleted afterwards unless ``keep``.

    ``root`` is checked (and created) by ``prepare_root`` first.
    """
    path = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=prepare_root(root)))
    try:
        yield path
    finally:
        if not keep:
            remove_tree(path)


def remove_tree(path: Path) -> None:
    """Delete a job's workspace, even where the handler left read-only directories
    (Go's module cache is one); a root worker never needs this, a service user does."""

    def make_writable(function: Callable[..., object], failed: str, _exc: object) -> None:
        parent = os.path.dirname(failed)
        os.chmod(parent, stat.S_IRWXU)
        if os.path.isdir(failed) and not os.path.islink(failed):
            os.chmod(failed, stat.S_IRWXU)
        function(failed)

    try:
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=make_writable)
        else:
            shutil.rmtree(path, onerror=make_writable)
    except OSError as exc:
        log.warning(
            "could not remove a job workspace", extra={"path": str(path), "error": repr(exc)}
        )
