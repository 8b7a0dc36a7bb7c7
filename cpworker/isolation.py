"""Where a job's handler runs: a child process (the default) or a thread.

``process``: each job runs in a child forked from a forkserver that has already
imported cpworker, boto3 and the app's modules, so a job never costs a new
interpreter; a child that ends a job clean runs the next one, so most jobs cost no
fork either. The child starts its own session (and process group), so at the
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
_PR_SET_CHILD_SUBREAPER = 36
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
    """A handler in a job process, reading its logs and result as they come.

    When the job ends clean (the process says so with its result), the process goes
    back to its runner for the next job; otherwise it exits and whatever it left in its
    session is killed.
    """

    def __init__(self, process: _JobProcess, ended: Callable[[_JobProcess, bool], None]) -> None:
        self._job_process = process
        self._ended = ended
        self._result: Result | None = None
        self._reusable = False
        self._lock = threading.Lock()
        self._returned = False
        self.pid: int | None = process.process.pid

    def wait(self, timeout: float | None) -> Ended | None:
        process, conn = self._job_process.process, self._job_process.results
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([conn, process.sentinel], left)
            if not ready:
                return None
            if conn in ready and self._receive():
                if self._result is not None and self._reusable and self._give_back():
                    return Ended(self._result)
                continue
            process.join(timeout=None if self._result is None else 10.0)
            self._job_process.close()
            self._ended(self._job_process, False)
            if self._result is not None:
                self.kill()  # whatever the handler left running
                return Ended(self._result)
            return Ended(None, signal_name(process.exitcode or 0))

    def _give_back(self) -> bool:
        """Hand the process back for another job, unless the job was killed meanwhile."""
        with self._lock:
            if self.pid is None:
                return False
            self._returned = True
        self._ended(self._job_process, True)
        return True

    def _receive(self) -> bool:
        """Handle one message; ``False`` once the child has closed its end."""
        try:
            kind, payload = self._job_process.results.recv()
        except (EOFError, OSError):
            return False
        if kind == _LOG:
            record = logging.makeLogRecord(payload)
            logging.getLogger(record.name).handle(record)
        elif kind == _RESULT:
            self._result, self._reusable = payload
        return True

    def kill(self) -> None:
        """Kill the job's session, unless its process already went back for another job."""
        with self._lock:
            if self._returned or self.pid is None:
                return
            pid, self.pid = self.pid, None
        kill_session(pid)


class ProcessRunner:
    """Runs jobs in processes forked from a forkserver that preloads cpworker and the
    app's modules.

    ``spares`` processes are forked ahead and wait for a task, so a job does not wait
    for a fork. A process runs up to ``jobs_per_process`` jobs, one at a time: it goes
    back for another only after a job that left nothing behind (no thread, no process
    of its session still alive) and ended by itself, not by a deadline, a hand-back or
    a crash. As with any ``multiprocessing`` program, a script that runs a worker must
    keep its entry point under ``if __name__ == "__main__":``.
    """

    def __init__(
        self, specs: Sequence[ActionSpec], spares: int = 2, jobs_per_process: int = 100
    ) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._modules = sorted({spec.handler.__module__ for spec in specs} - {"__main__"})
        self._context.set_forkserver_preload(["cpworker.prefork"])
        self.stopping = StopSignal()
        self._wanted = spares
        self._jobs_per_process = jobs_per_process
        self._idle: list[_JobProcess] = []
        self._lock = threading.Lock()
        self._closed = False
        self._refilling = False

    def start(self, task: JobTask) -> ProcessRun:
        while True:
            with self._lock:
                process = self._idle.pop() if self._idle else None
                short = len(self._idle) < self._wanted and not self._refilling
            if process is None:
                process = self._fork()
            if short:
                threading.Thread(target=self._refill, name="cpworker-spares", daemon=True).start()
            pid = process.process.pid or 0
            self.stopping.watch(pid)
            try:
                process.tasks.send((task, self.stopping.is_set()))
            except OSError:  # the process died while it waited: take another
                self.stopping.forget(pid)
                process.discard()
                continue
            return ProcessRun(process, self._ended)

    def _ended(self, process: _JobProcess, reusable: bool) -> None:
        """A job's run is over: keep its process for the next job, or let it go."""
        self.stopping.forget(process.process.pid or 0)
        if not reusable:
            return
        with self._lock:
            if not self._closed:
                self._idle.append(process)
                return
        process.discard()

    def _fork(self) -> _JobProcess:
        tasks_in, tasks_out = self._context.Pipe(duplex=False)
        results_in, results_out = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main,
            args=(tasks_in, results_out, self._jobs_per_process),
            name="cpworker-job",
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
        return _JobProcess(process, tasks_out, results_in)

    def _start_forkserver(self) -> None:
        """Start the forkserver (once), telling cpworker.prefork what to import.

        The variable goes into the process's C environment only (``os.putenv``), which
        the forkserver inherits: changing ``os.environ`` would break other threads
        iterating it meanwhile (a handler, or boto3 reading proxy settings)."""
        os.putenv(PREFORK_ENV, json.dumps({"path": sys.path, "modules": self._modules}))
        try:
            forkserver.ensure_running()
        finally:
            os.unsetenv(PREFORK_ENV)

    def _refill(self) -> None:
        """Fork spares until there are enough again (one refill at a time)."""
        with self._lock:
            if self._refilling:
                return
            self._refilling = True
        try:
            while True:
                with self._lock:
                    if self._closed or len(self._idle) >= self._wanted:
                        return
                process = self._fork()
                with self._lock:
                    if self._closed:
                        process.discard()
                        return
                    self._idle.insert(0, process)  # behind processes that have run a job
        finally:
            with self._lock:
                self._refilling = False

    def prepare(self) -> None:
        """Start the forkserver and fork the spares now, so that the first jobs do not
        spend their deadline waiting for them."""
        self._refill()

    def close(self) -> None:
        """End the waiting processes (a worker embedded in a longer-lived program)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for process in idle:
            process.discard()


@dataclass
class _JobProcess:
    """A job process and its two pipes: tasks to it, logs and results from it."""

    process: multiprocessing.process.BaseProcess
    tasks: Connection
    results: Connection

    def close(self) -> None:
        self.tasks.close()
        self.results.close()

    def discard(self) -> None:
        self.close()  # the process reads EOF and exits
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

    def send_result(self, result: Result, reusable: bool) -> None:
        """Send the job's result, and whether the process can take another job."""
        with self.lock or contextlib.nullcontext():
            self.conn.send((_RESULT, (result, reusable)))


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


def _become_subreaper() -> None:
    """Adopt this process's orphaned descendants, so that after a job the ones its
    handler left behind are seen (``_left_behind``) instead of passing to init."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _left_behind() -> bool:
    """Whether the job left a thread or a process running (zombies are reaped)."""
    if threading.active_count() > 1:
        return True
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _child_main(tasks: Connection, conn: Connection, jobs: int) -> None:
    """A job process: set up once, then run up to ``jobs`` jobs while each ends clean."""
    stopping = threading.Event()
    signal.signal(STOP_SIGNAL, lambda _signum, _frame: stopping.set())
    os.setsid()
    _die_with_parent()
    _become_subreaper()
    forward = _Forward(conn)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(forward)
    limit_sdk_loggers()
    home = os.getcwd()
    for done in range(1, jobs + 1):
        try:
            task, stopped = tasks.recv()
        except EOFError:  # a spare the worker no longer needs
            break
        result, clean = _run_one(task, stopped, stopping)
        os.chdir(home)
        reusable = clean and done < jobs
        forward.send_result(result, reusable)
        if not reusable:
            break
    conn.close()
    # Exit now: threads a handler left behind must not keep the process alive.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run_one(task: JobTask, stopped: bool, stopping: threading.Event) -> tuple[Result, bool]:
    """Run one job: its result, and ``True`` when it left nothing running behind it."""
    stopping.clear()
    if stopped:
        stopping.set()
    os.environ.clear()
    os.environ.update(task.environ)
    logging.getLogger().setLevel(task.log_level)

    def fetch() -> JobEnvelope:
        client = codepipeline_client(
            region=task.region, endpoint_url=task.endpoint_url, profile=task.profile
        )
        return task.job.details(CodePipelineAPI(client))

    result = run_job(task, stopping, fetch)
    return result, not _left_behind()
