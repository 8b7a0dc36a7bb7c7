"""Where a job's handler runs: a child process (the default) or a thread.

``process``: each job runs in a child forked from a forkserver that has already
imported cpworker, boto3 and the app's modules, so a job costs a fork, not a new
interpreter. The child starts its own session (and process group), so at the
deadline, at shutdown or after a crash the worker stops the handler and every
process it started, and a handler that dies (a signal, the OOM killer,
``os._exit``) fails only its own job. The child sends its log records and its
result back over a pipe; the worker logs them through its own handlers, with the
job's secrets masked on both sides.

``thread``: the handler runs in a thread of the worker. It is cheaper, but a
thread cannot be stopped: at the deadline the job is reported and its slot is
freed, while the handler runs on until it returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

from cpworker.api import CodePipelineAPI, codepipeline_client
from cpworker.app import ActionSpec, run_handler
from cpworker.artifacts import ArtifactSettings
from cpworker.job import Flag
from cpworker.logs import limit_sdk_loggers, logger
from cpworker.model import ArtifactCredentials, JobEnvelope
from cpworker.redact import SECRETS
from cpworker.result import Result
from cpworker.sources.jobdata import (
    DEFAULT_CREDENTIAL_REFRESH_S,
    JobContext,
    build_job,
    log_fields,
    secrets_of,
)
from cpworker.sources.polling import JobRef

Isolation = Literal["process", "thread"]
_PR_SET_PDEATHSIG = 1
_MAIN_HIDDEN = threading.Lock()
STOP_SIGNAL = signal.SIGUSR1
PREFORK_ENV = "CPWORKER_PREFORK"
_LOG, _RESULT = "log", "result"


@dataclass(frozen=True)
class JobTask:
    """Everything one run of a handler needs; picklable, so it can cross to a child.

    ``job`` reads the job's current details (credential refresh) as its runtime does.
    """

    spec: ActionSpec
    envelope: JobEnvelope
    job: JobRef
    workspace: Path
    timeout_s: float
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    credential_refresh_s: float = DEFAULT_CREDENTIAL_REFRESH_S
    log_level: int = logging.INFO
    # The worker's environment when the job starts: a forkserver child would
    # otherwise see the environment the forkserver was started with.
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(frozen=True)
class Ended:
    """How a run ended: the handler's result, or how its process died."""

    result: Result | None
    death: str | None = None


class Running(Protocol):
    """A handler being run."""

    @property
    def pid(self) -> int | None:
        """The child's pid (the id of its session), ``None`` for a thread."""

    def wait(self, timeout: float | None) -> Ended | None:
        """The end of the run, or ``None`` if it has not ended within ``timeout`` s."""

    def kill(self) -> None:
        """Stop the handler and what it started (a no-op for a thread)."""


def run_job(
    task: JobTask, stopping: Flag, fetch: Callable[[], JobEnvelope] | None = None
) -> Result:
    """Run the handler of ``task`` here and now; every failure becomes a ``Failure``, and
    so does a result the job's runtime cannot report (``JobRef.check``).

    ``fetch`` gets the job's current details (``task.job.details``) for credential refresh.
    """
    log = logger("cpworker.job", **log_fields(task.envelope))
    secrets = secrets_of(task.envelope, task.spec) + task.job.secrets()
    with ExitStack() as stack:
        stack.enter_context(SECRETS.active(secrets))

        def fresh_credentials() -> ArtifactCredentials:
            assert fetch is not None
            credentials = fetch().data.artifact_credentials
            if credentials is None:
                raise RuntimeError("GetJobDetails returned no artifact credentials")
            stack.enter_context(SECRETS.active(credentials.secrets()))
            log.info("artifact credentials refreshed")
            return credentials

        context = JobContext(
            workspace=task.workspace,
            deadline_s=task.timeout_s,
            log=log,
            artifact_settings=task.artifacts,
            region=task.region,
            endpoint_url=task.endpoint_url,
            stopping=stopping,
            refresh_credentials=fresh_credentials if fetch is not None else None,
            credential_refresh_s=task.credential_refresh_s,
        )
        result = run_handler(
            task.spec, lambda: build_job(task.envelope, task.spec, context), log, secrets
        )
        return task.job.check(result, log)


# -- threads ---------------------------------------------------------------------------------


class ThreadRun:
    """A handler in a thread of the worker."""

    pid: int | None = None

    def __init__(self, task: JobTask, stopping: Flag, api: CodePipelineAPI) -> None:
        self._box: list[Result] = []
        self._done = threading.Event()

        def target() -> None:
            try:
                self._box.append(run_job(task, stopping, lambda: task.job.details(api)))
            finally:
                self._done.set()

        threading.Thread(target=target, name=f"handler-{task.envelope.id}", daemon=True).start()

    def wait(self, timeout: float | None) -> Ended | None:
        if not self._done.wait(timeout):
            return None
        return Ended(self._box[0] if self._box else None, None if self._box else "crashed")

    def kill(self) -> None:
        """A thread cannot be stopped; it runs on until the handler returns."""


# -- processes -------------------------------------------------------------------------------


def signal_name(exitcode: int) -> str:
    """How a child ended, in words a pipeline user understands."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the OOM killer sends it when memory runs out)" if name == "SIGKILL" else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {exitcode}"


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session ``sid``: the job's child, its process
    group, and groups its commands made (``process_group=0``, shells' job control)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(sid, signal.SIGKILL)  # not yet its own group leader: it has just forked
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getsid(int(entry)) == sid:
                os.kill(int(entry), signal.SIGKILL)


class StopSignal:
    """The worker's stop flag as job processes see it: setting it sends each running
    child ``SIGUSR1``, which sets the child's own flag (``job.is_shutting_down()``). A
    signal, unlike a shared semaphore, leaves nothing behind when a worker is killed."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._lock = threading.Lock()
        self._pids: set[int] = set()

    def is_set(self) -> bool:
        return self._flag.is_set()

    def set(self) -> None:
        with self._lock:
            self._flag.set()
            pids = list(self._pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, STOP_SIGNAL)

    def watch(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def forget(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)


class ProcessRun:
    """A handler in a child process, reading its logs and result as they come."""

    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        conn: Connection,
        ended: Callable[[], None],
    ) -> None:
        self._process = process
        self._conn = conn
        self._ended = ended
        self._result: Result | None = None
        self.pid: int | None = process.pid

    def wait(self, timeout: float | None) -> Ended | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([self._conn, self._process.sentinel], left)
            if not ready:
                return None
            if self._conn in ready and self._receive():
                continue
            self._process.join(timeout=None if self._result is None else 10.0)
            self._conn.close()
            self._ended()
            if self._result is not None:
                self.kill()  # whatever the handler left running
                return Ended(self._result)
            return Ended(None, signal_name(self._process.exitcode or 0))

    def _receive(self) -> bool:
        """Handle one message; ``False`` once the child has closed its end."""
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            return False
        if kind == _LOG:
            record = logging.makeLogRecord(payload)
            logging.getLogger(record.name).handle(record)
        elif kind == _RESULT:
            self._result = payload
        return True

    def kill(self) -> None:
        if self.pid is not None:
            kill_session(self.pid)


class ProcessRunner:
    """Runs each job in a child forked from a forkserver that preloads cpworker and the
    app's modules.

    ``spares`` children are forked ahead and wait for their task, so a job does not
    wait for a fork; each child still runs one job only, then exits. As with any
    ``multiprocessing`` program, a script that runs a worker must keep its entry
    point under ``if __name__ == "__main__":``.
    """

    def __init__(self, specs: Sequence[ActionSpec], spares: int = 2) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._modules = sorted({spec.handler.__module__ for spec in specs} - {"__main__"})
        self._context.set_forkserver_preload(["cpworker.prefork"])
        self.stopping = StopSignal()
        self._wanted = spares
        self._spares: list[_Spare] = []
        self._lock = threading.Lock()
        self._closed = False
        self._refilling = False

    def start(self, task: JobTask) -> ProcessRun:
        while True:
            with self._lock:
                spare = self._spares.pop() if self._spares else None
            if spare is None:
                spare = self._fork()
            threading.Thread(target=self._refill, name="cpworker-spares", daemon=True).start()
            pid = spare.process.pid or 0
            self.stopping.watch(pid)
            try:
                spare.tasks.send((task, self.stopping.is_set()))
            except OSError:  # the spare died while it waited: take another
                self.stopping.forget(pid)
                spare.discard()
                continue
            spare.tasks.close()
            return ProcessRun(spare.process, spare.results, partial(self.stopping.forget, pid))

    def _fork(self) -> _Spare:
        tasks_in, tasks_out = self._context.Pipe(duplex=False)
        results_in, results_out = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main, args=(tasks_in, results_out), name="cpworker-job"
        )
        with _MAIN_HIDDEN:
            self._start_forkserver()
            # Without a main module to name, a child does not run ours again (as
            # multiprocessing would, for each one): handlers come from modules.
            main, sys.modules["__main__"] = sys.modules["__main__"], ModuleType("__main__")
            try:
                process.start()
            finally:
                sys.modules["__main__"] = main
        tasks_in.close()
        results_out.close()
        return _Spare(process, tasks_out, results_in)

    def _start_forkserver(self) -> None:
        """Start the forkserver (once), telling cpworker.prefork what to import."""
        os.environ[PREFORK_ENV] = json.dumps({"path": sys.path, "modules": self._modules})
        try:
            forkserver.ensure_running()
        finally:
            del os.environ[PREFORK_ENV]

    def _refill(self) -> None:
        """Fork spares until there are enough again (one refill at a time)."""
        with self._lock:
            if self._refilling:
                return
            self._refilling = True
        try:
            while True:
                with self._lock:
                    if self._closed or len(self._spares) >= self._wanted:
                        return
                spare = self._fork()
                with self._lock:
                    if self._closed:
                        spare.discard()
                        return
                    self._spares.append(spare)
        finally:
            with self._lock:
                self._refilling = False

    def prepare(self) -> None:
        """Start the forkserver and fork the spares now, so that the first jobs do not
        spend their deadline waiting for them."""
        self._refill()

    def close(self) -> None:
        """End the waiting spares (a worker embedded in a longer-lived program)."""
        with self._lock:
            self._closed = True
            spares, self._spares = self._spares, []
        for spare in spares:
            spare.discard()


@dataclass
class _Spare:
    """A forked child waiting for its task."""

    process: multiprocessing.process.BaseProcess
    tasks: Connection
    results: Connection

    def discard(self) -> None:
        self.tasks.close()  # the child reads EOF and exits
        self.results.close()
        self.process.join(timeout=5)


class ThreadRunner:
    """Runs handlers in threads of the worker (``--isolation thread``)."""

    def __init__(self, api: CodePipelineAPI) -> None:
        self._api = api
        self.stopping = threading.Event()

    def start(self, task: JobTask) -> ThreadRun:
        return ThreadRun(task, self.stopping, self._api)

    def prepare(self) -> None:
        """Nothing to start: threads are made per job."""

    def close(self) -> None:
        """Nothing to end: a thread that runs on is the handler's own."""


# -- inside the child ------------------------------------------------------------------------


class _Forward(logging.Handler):
    """Sends each record to the worker, formatted to plain data and masked."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.conn.send((_LOG, _portable(record)))
        except Exception:  # noqa: BLE001 - a log line must never fail the job
            self.handleError(record)

    def send_result(self, result: Result) -> None:
        with self.lock or contextlib.nullcontext():
            self.conn.send((_RESULT, result))


def _portable(record: logging.LogRecord) -> dict[str, Any]:
    """The record as picklable data: message rendered, traceback as text, secrets masked."""
    data = dict(record.__dict__)
    data["msg"] = SECRETS.scrub(record.getMessage())
    data["args"] = None
    if record.exc_info:
        data["exc_text"] = SECRETS.scrub(logging.Formatter().formatException(record.exc_info))
    data["exc_info"] = None
    data.pop("message", None)
    for key, value in data.items():
        if isinstance(value, str):
            data[key] = SECRETS.scrub(value)
        elif not isinstance(value, int | float | bool | type(None) | list | dict | tuple):
            data[key] = SECRETS.scrub(repr(value))
    return data


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when the forkserver (so the worker) goes away."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_main(tasks: Connection, conn: Connection) -> None:
    stopping = threading.Event()
    signal.signal(STOP_SIGNAL, lambda _signum, _frame: stopping.set())
    os.setsid()
    _die_with_parent()
    try:
        received: tuple[JobTask, bool] = tasks.recv()
    except EOFError:  # a spare the worker no longer needs
        os._exit(0)
    tasks.close()
    task, stopped = received
    if stopped:
        stopping.set()
    os.environ.clear()
    os.environ.update(task.environ)
    forward = _Forward(conn)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(forward)
    root.setLevel(task.log_level)
    limit_sdk_loggers()

    def fetch() -> JobEnvelope:
        client = codepipeline_client(
            region=task.region, endpoint_url=task.endpoint_url, profile=task.profile
        )
        return task.job.details(CodePipelineAPI(client))

    result = run_job(task, stopping, fetch)
    forward.send_result(result)
    conn.close()
    # Exit now: threads the handler left behind must not keep the child alive.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
