"""A job's private directory: created per job, removed after it (unless kept)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("cpworker.workspace")


@contextmanager
def job_workspace(root: Path, job_id: str, *, keep: bool = False) -> Iterator[Path]:
    """``<root>/<job id>-<random>``, mode 0700, deleted afterwards unless ``keep``."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=root))
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
