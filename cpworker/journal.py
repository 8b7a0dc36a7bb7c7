"""A durable record of the jobs a worker has acknowledged, so a crash loses none.

Every job is written (sqlite, WAL) before it is acknowledged, and again before its
handler starts, with its action, deadline, the step's continuation token, the
worker's identity and, for a third-party job, its client id (never its client token:
a restarted worker resolves it again). A decided result is written before it is sent, and marked
reported once CodePipeline has it. A worker that starts reads the rows of
workers that are gone — killed with ``kill -9``, by the OOM killer, or with
their machine — and resolves them (see ``cpworker.worker``).

Commits survive the worker's own death (the OS has them) in any case. The two that
decide what a restart does — the claim before AcknowledgeJob and the decided result
before it is sent — are also synced to disk (``synchronous=FULL``), so they survive
the host losing power; the others (handler started, its process, result reported)
are not, since each has a synced fallback: a claimed job is acknowledged again and
resolved, a decided result is sent again and found already accepted.

Several workers on one host may share a state directory: each claims a dead
worker's row in a ``BEGIN IMMEDIATE`` transaction, so exactly one resolves it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "journal.sqlite3"
KEEP_REPORTED_S = 7 * 24 * 3600.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id    TEXT PRIMARY KEY,
    action    TEXT NOT NULL,
    worker    TEXT NOT NULL,
    deadline  REAL NOT NULL,
    token     TEXT,
    child     TEXT,
    workspace TEXT,
    state     TEXT NOT NULL,
    operation TEXT,
    request   TEXT,
    updated   REAL NOT NULL,
    client_id TEXT,
    nonce     TEXT
)
"""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/cpworker``, else ``~/.local/state/cpworker``: per user, and
    kept across reboots, which a journal needs (``/tmp`` may not be)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cpworker"


def process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot), or ``None`` if there is no such
    process; a pid and its start time name one process, even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Identity:
    """One process on one host: ``host/pid/start``."""

    host: str
    pid: int
    start: str

    @classmethod
    def of(cls, pid: int) -> Identity:
        return cls(socket.gethostname(), pid, process_start(pid) or "?")

    @classmethod
    def parse(cls, text: str) -> Identity:
        host, pid, start = text.rsplit("/", 2)
        return cls(host, int(pid), start)

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.start}"

    def alive(self) -> bool:
        """Whether this process still runs; another host's process counts as gone,
        because a state directory belongs to one host (see the README)."""
        return self.host == socket.gethostname() and process_start(self.pid) == self.start


@dataclass(frozen=True)
class Entry:
    """A journaled job that has no confirmed report."""

    job_id: str
    action: str
    worker: Identity
    deadline: float
    token: str | None
    child: Identity | None
    workspace: str | None
    state: str
    operation: str | None
    request: dict[str, Any] | None
    client_id: str | None = None
    nonce: str | None = None


class Journal:
    """The journal in ``state_dir``; thread-safe, one short transaction per change."""

    def __init__(self, state_dir: Path, identity: Identity) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / FILE_NAME
        self.identity = identity
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._synced = True
        with self._transaction() as db:
            db.execute(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            if "client_id" not in columns:  # a journal written before third-party jobs
                db.execute("ALTER TABLE jobs ADD COLUMN client_id TEXT")
            if "nonce" not in columns:  # a journal written before claims were journaled
                db.execute("ALTER TABLE jobs ADD COLUMN nonce TEXT")
            db.execute(
                "DELETE FROM jobs WHERE state = 'reported' AND updated < ?",
                (time.time() - KEEP_REPORTED_S,),
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Several statements as one synced write transaction."""
        with self._lock:
            self._sync(True)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write(self, sql: str, parameters: tuple[Any, ...], synced: bool = True) -> None:
        """One statement, its own transaction (autocommit): one call into sqlite, since
        each call gives up the GIL and a busy worker's threads wait to get it back."""
        with self._lock:
            self._sync(synced)
            self._db.execute(sql, parameters)

    def _sync(self, synced: bool) -> None:
        """``synced``: a commit is on disk when it returns, not only in the OS."""
        if synced != self._synced:
            self._db.execute(f"PRAGMA synchronous={'FULL' if synced else 'NORMAL'}")
            self._synced = synced

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claiming(
        self, job_id: str, action: str, nonce: str, client_id: str | None, token: str | None
    ) -> None:
        """Record a job about to be acknowledged, with its nonce and the continuation token
        it carries: a worker killed between AcknowledgeJob and ``started`` must not leave
        a job nobody knows about, nor lose the step's state when it is handed back."""
        now = time.time()
        self._write(
            "INSERT OR REPLACE INTO jobs (job_id, action, worker, deadline, token, state, "
            "updated, client_id, nonce) VALUES (?, ?, ?, ?, ?, 'claiming', ?, ?, ?)",
            (job_id, action, str(self.identity), now, token, now, client_id, nonce),
        )

    def started(
        self,
        job_id: str,
        action: str,
        deadline: float,
        token: str | None,
        workspace: Path,
        client_id: str | None = None,
    ) -> None:
        """Record an acknowledged job before its handler starts (``deadline``: epoch s;
        ``client_id`` for a third-party job)."""
        now = time.time()
        self._write(
            "INSERT INTO jobs (job_id, action, worker, deadline, token, workspace, state, "
            "updated, client_id) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET action = excluded.action, "
            "worker = excluded.worker, deadline = excluded.deadline, token = excluded.token, "
            "workspace = excluded.workspace, state = 'running', updated = excluded.updated, "
            "client_id = excluded.client_id",
            (job_id, action, str(self.identity), deadline, token, str(workspace), now, client_id),
            synced=False,
        )

    def child(self, job_id: str, child: Identity) -> None:
        """Record the process running the job, so a restart can stop what it left."""
        self._write(
            "UPDATE jobs SET child = ? WHERE job_id = ?", (str(child), job_id), synced=False
        )

    def decided(self, job_id: str, operation: str, request: dict[str, Any]) -> None:
        """Record the result about to be sent, so a crash mid-report sends it again."""
        self._write(
            "UPDATE jobs SET state = 'decided', operation = ?, request = ?, updated = ? "
            "WHERE job_id = ?",
            (operation, json.dumps(request), time.time(), job_id),
        )

    def reported(self, job_id: str) -> None:
        """CodePipeline has the job's result (or the job is gone): nothing is left to do."""
        self._write(
            "UPDATE jobs SET state = 'reported', updated = ? WHERE job_id = ?",
            (time.time(), job_id),
            synced=False,
        )

    def orphans(self) -> list[Entry]:
        """Claim the unreported jobs of workers that are gone; each goes to one claimant."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT job_id, action, worker, deadline, token, child, workspace, state, "
                "operation, request, client_id, nonce FROM jobs "
                "WHERE state != 'reported' AND worker != ?",
                (str(self.identity),),
            ).fetchall()
            claimed = []
            for row in rows:
                entry = _entry(row)
                if entry.worker.alive():
                    continue
                db.execute(
                    "UPDATE jobs SET worker = ?, updated = ? WHERE job_id = ?",
                    (str(self.identity), time.time(), entry.job_id),
                )
                claimed.append(entry)
        return claimed


def _entry(row: tuple[Any, ...]) -> Entry:
    job_id, action, worker, deadline, token, child, workspace, state, operation, request = row[:10]
    client_id, nonce = row[10:]
    return Entry(
        job_id=job_id,
        action=action,
        worker=Identity.parse(worker),
        deadline=deadline,
        token=token,
        child=Identity.parse(child) if child else None,
        workspace=workspace,
        state=state,
        operation=operation,
        request=json.loads(request) if request else None,
        client_id=client_id,
        nonce=nonce,
    )
