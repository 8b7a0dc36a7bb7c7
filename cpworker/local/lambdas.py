"""Lambda functions of the local CodePipeline: the FunctionName registry and the invoker.

A function is a handler reference (see :mod:`cpworker.local.lambda_runner`) run as a
subprocess per invocation, like Lambda's isolation: the server's environment minus
every ``AWS_*`` variable (no real credential, profile or endpoint can leak in), plus
what Lambda sets and what points boto3 at the local endpoint. An Invoke action's
invocation is asynchronous, as CodePipeline's is: the job's outcome comes only from
PutJob*Result. An action type's Lambda executor is invoked synchronously: the handler's
return value comes back (``Invocation.on_return``).
The function's output goes to the ``cpworker.local`` logger at INFO, one record per
line prefixed ``[FunctionName request-id]``; the event (which carries credentials) is
never logged nor put in argv.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from cpworker.local.lambda_context import DEFAULT_MEMORY_MB, LATEST, function_arn
from cpworker.local.lambda_runner import STARTED, HandlerRef

log = logging.getLogger("cpworker.local")

# Set by the invoker for every invocation; a function's own environment may not set them.
RESERVED = frozenset(
    {
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_TIMEOUT",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "LAMBDA_TASK_ROOT",
        "_HANDLER",
    }
)
_DUMMY_CREDENTIAL = "cpworker-local"
INIT_TIMEOUT_S = 10.0  # Lambda's limit for the init phase
MAX_RESPONSE_BYTES = 6 * 1024 * 1024  # Lambda's limit for a synchronous response


@dataclass(frozen=True)
class FunctionSpec:
    """One function: its handler reference, its own timeout (capped by the engine's
    ``lambda_timeout_s``; None means that setting) and its own environment variables."""

    handler: str
    timeout_s: float | None = None
    environment: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        HandlerRef(self.handler).check()
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"the timeout of {self.handler} must be positive")
        reserved = sorted(RESERVED & set(self.environment))
        if reserved:
            raise ValueError(f"{reserved} are set by cpworker local, as Lambda reserves them")

    def timeout(self, limit_s: float) -> float:
        """The function's own timeout, never above the engine's ``lambda_timeout_s``."""
        return min(self.timeout_s or limit_s, limit_s)


def as_spec(value: str | FunctionSpec) -> FunctionSpec:
    return value if isinstance(value, FunctionSpec) else FunctionSpec(value)


def parse_function_option(option: str) -> tuple[str, FunctionSpec]:
    """``NAME=REF`` (the ``--function`` flag of ``cpworker local``)."""
    name, sep, ref = option.partition("=")
    if not sep or not name or not ref:
        raise ValueError(f"--function {option!r}: use NAME=module:attribute or NAME=file.py:attr")
    return name, FunctionSpec(ref)


def parse_functions_file(text: str) -> dict[str, FunctionSpec]:
    """``{"Name": "ref"}`` or ``{"Name": {"handler": ref, "timeout": s, "environment": {}}}``."""
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("a functions file is a JSON object of FunctionName to handler")
    functions: dict[str, FunctionSpec] = {}
    for name, value in document.items():
        if isinstance(value, str):
            functions[name] = FunctionSpec(value)
        elif isinstance(value, dict) and isinstance(value.get("handler"), str):
            unknown = sorted(set(value) - {"handler", "timeout", "environment"})
            if unknown:
                raise ValueError(f"function {name!r}: unknown keys {unknown}")
            timeout = value.get("timeout")
            functions[name] = FunctionSpec(
                value["handler"],
                None if timeout is None else float(timeout),
                {str(k): str(v) for k, v in (value.get("environment") or {}).items()},
            )
        else:
            raise ValueError(f"function {name!r}: give a handler reference or {{'handler': ...}}")
    return functions


class FunctionRegistry:
    """FunctionName → FunctionSpec; tests register functions while the server runs."""

    def __init__(self, functions: Mapping[str, str | FunctionSpec] | None = None) -> None:
        self._lock = threading.Lock()
        self._functions = {name: as_spec(spec) for name, spec in (functions or {}).items()}

    def register(self, name: str, spec: FunctionSpec) -> None:
        with self._lock:
            self._functions[name] = spec

    def unregister(self, name: str) -> None:
        with self._lock:
            self._functions.pop(name, None)

    def get(self, name: str) -> FunctionSpec | None:
        with self._lock:
            return self._functions.get(name)

    def unknown(self, name: str) -> str:
        """The failure message for a FunctionName nobody mapped."""
        with self._lock:
            known = sorted(self._functions)
        return (
            f"cpworker local has no function named {name!r}; known functions: "
            f"{', '.join(known) if known else 'none'} (map one with --function NAME=module:attr)"
        )


@dataclass(frozen=True)
class Returned:
    """How a synchronous invocation ended: the handler's return value, or why there is none.

    ``error`` says what went wrong, for a failure message ("it ..."); it never holds the
    function's output, which may carry secrets. ``timed_out``: the handler ran out of its timeout.
    """

    payload: Any = None
    error: str | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class Invocation:
    """One invocation of a function with one event: asynchronous, or synchronous when
    ``on_return`` is set (it is called once, with how the invocation ended).

    ``timeout_s`` counts from the handler call; ``init_timeout_s`` bounds what comes
    before it (interpreter start-up, importing the handler's module), as Lambda's init
    phase has its own limit (10 s).
    """

    function_name: str
    spec: FunctionSpec
    event: dict[str, Any] = field(repr=False)  # carries credentials: never log it
    timeout_s: float
    init_timeout_s: float = INIT_TIMEOUT_S
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    on_return: Callable[[Returned], None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Ended:
    """How a function's process ended: its exit status, the handler's duration (None if
    it was never called) and, if it was killed at a time limit, the log line saying so."""

    status: int
    duration_s: float | None
    killed: str | None = None


class Invoker:
    """Runs invocations as subprocesses and kills them at their timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._endpoint_url = ""
        self._region = "us-east-1"
        self._account_id = "123456789012"

    def start(self, endpoint_url: str, region: str, account_id: str) -> None:
        self._endpoint_url, self._region, self._account_id = endpoint_url, region, account_id

    def stop(self) -> None:
        """Kill every running function (the server is going away)."""
        with self._lock:
            running = list(self._running)
        for process in running:
            _kill(process)

    def invoke(self, invocation: Invocation) -> None:
        """Start the invocation and return at once (InvocationType Event)."""
        threading.Thread(
            target=self._run, args=(invocation,), name="cpworker-local-lambda", daemon=True
        ).start()

    def environment(self, invocation: Invocation) -> dict[str, str]:
        """The function's variables: the server's without AWS_*, then Lambda's own."""
        name, spec = invocation.function_name, invocation.spec
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(spec.environment)
        env.update(
            {
                "AWS_ENDPOINT_URL": self._endpoint_url,
                "AWS_REGION": self._region,
                "AWS_DEFAULT_REGION": self._region,
                "AWS_ACCESS_KEY_ID": _DUMMY_CREDENTIAL,
                "AWS_SECRET_ACCESS_KEY": _DUMMY_CREDENTIAL,
                "AWS_SESSION_TOKEN": _DUMMY_CREDENTIAL,
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}."
                f"{sys.version_info.minor}",
                "AWS_LAMBDA_FUNCTION_NAME": name,
                "AWS_LAMBDA_FUNCTION_VERSION": LATEST,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": DEFAULT_MEMORY_MB,
                "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{invocation.timeout_s:g}",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": f"cpworker-local/{invocation.request_id}",
                "LAMBDA_TASK_ROOT": os.getcwd(),
                "_HANDLER": spec.handler,
                "CPWORKER_LOCAL": "1",
            }
        )
        return env

    def _run(self, invocation: Invocation) -> None:
        """Run the invocation; a synchronous one hears how it ended, whatever happens."""
        returned = Returned(error="cpworker local could not run it")
        try:
            returned = self._call(invocation)
        except Exception:
            log.exception("[%s] the invocation failed", invocation.function_name)
        finally:
            if invocation.on_return is not None:
                invocation.on_return(returned)

    def _call(self, invocation: Invocation) -> Returned:
        prefix = f"[{invocation.function_name} {invocation.request_id}]"
        arn = function_arn(self._region, self._account_id, invocation.function_name)
        started_read, started_write = os.pipe()
        result_read, result_write = os.pipe()
        command = [
            *(sys.executable, "-u", "-m", "cpworker.local.lambda_runner"),
            *(invocation.spec.handler, "--request-id", invocation.request_id),
            *("--function-arn", arn, "--started-fd", str(started_write)),
        ]
        passed = [started_write]
        if invocation.on_return is not None:
            command += ["--result-fd", str(result_write)]
            passed.append(result_write)
        log.info("%s START Version: %s", prefix, LATEST)
        init_began = time.monotonic()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.environment(invocation),
                pass_fds=passed,
                start_new_session=True,  # its own process group: a timeout kills its children
            )
        except OSError as exc:
            os.close(started_read)
            os.close(result_read)
            log.error("%s could not start the function: %s", prefix, exc)
            return Returned(error=f"it could not start ({type(exc).__name__})")
        finally:
            os.close(started_write)
            os.close(result_write)
        with self._lock:
            self._running.add(process)
        assert process.stdin is not None
        assert process.stdout is not None
        reader = threading.Thread(target=_relay, args=(process.stdout, prefix), daemon=True)
        reader.start()
        response = _Response(result_read)
        try:
            process.stdin.write(json.dumps(invocation.event).encode())
            process.stdin.close()
        except OSError:
            pass  # the function exited before reading its event; its output says why
        try:
            ended = self._supervise(process, started_read, init_began, invocation, prefix)
        finally:
            os.close(started_read)
            with self._lock:
                self._running.discard(process)
        reader.join(timeout=5)
        if ended.status > 0:
            log.warning("%s the function exited with status %d", prefix, ended.status)
        if ended.duration_s is None:
            log.info("%s END (the handler was never called)", prefix)
        else:
            log.info("%s END Duration: %.0f ms", prefix, ended.duration_s * 1000)
        return response.returned(ended)

    @staticmethod
    def _supervise(
        process: subprocess.Popen[bytes],
        started: int,
        init_began: float,
        invocation: Invocation,
        prefix: str,
    ) -> _Ended:
        """Wait for the process: init within ``init_timeout_s``, then the handler within
        ``timeout_s`` of its call."""
        init_left = invocation.init_timeout_s - (time.monotonic() - init_began)
        ready, _, _ = select.select([started], [], [], max(init_left, 0.0))
        if ready and os.read(started, len(STARTED)) == STARTED:
            handler_began = time.monotonic()
            log.info("%s Init Duration: %.0f ms", prefix, (handler_began - init_began) * 1000)
            killed = None
            try:
                status = process.wait(invocation.timeout_s)
            except subprocess.TimeoutExpired:
                status = _kill(process)
                killed = f"Task timed out after {invocation.timeout_s:.2f} seconds"
                log.warning("%s %s", prefix, killed)
            return _Ended(status, time.monotonic() - handler_began, killed)
        # The pipe closed without a word (init failed, the process is ending) or init is
        # still running at its limit.
        left = invocation.init_timeout_s - (time.monotonic() - init_began)
        try:
            return _Ended(process.wait(max(left, 0.0)), None)
        except subprocess.TimeoutExpired:
            status = _kill(process)
            killed = f"Init timed out after {invocation.init_timeout_s:.2f} seconds"
            log.warning("%s %s", prefix, killed)
            return _Ended(status, None, killed)


class _Response:
    """Collects what a synchronous invocation's handler returned, from its pipe, in a
    thread of its own: a reply bigger than the pipe's buffer must not block the function."""

    def __init__(self, fd: int) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._thread = threading.Thread(target=self._collect, args=(fd,), daemon=True)
        self._thread.start()

    def _collect(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            while chunk := pipe.read(65536):
                self._size += len(chunk)
                if self._size <= MAX_RESPONSE_BYTES:
                    self._chunks.append(chunk)

    def returned(self, ended: _Ended) -> Returned:
        """The handler's return value, or why there is none."""
        self._thread.join(timeout=5)
        if ended.killed is not None:
            return Returned(error=ended.killed, timed_out=ended.duration_s is not None)
        if ended.status < 0:
            return Returned(error=f"its process was killed by signal {-ended.status}")
        if ended.status > 0:
            return Returned(
                error="it raised an error or returned a value JSON cannot carry "
                "(its log says which)"
            )
        if self._size > MAX_RESPONSE_BYTES:
            return Returned(error=f"it returned more than {MAX_RESPONSE_BYTES} bytes")
        try:
            return Returned(payload=json.loads(b"".join(self._chunks)))
        except ValueError:
            return Returned(error="its return value is not JSON")


def _relay(stream: IO[bytes], prefix: str) -> None:
    """Log each line the function writes, prefixed with its name and request id."""
    for line in stream:
        log.info("%s %s", prefix, line.decode(errors="replace").rstrip())
    stream.close()


def _kill(process: subprocess.Popen[bytes]) -> int:
    """Kill the function's process group; returns once the process is reaped (so it is
    gone, not a zombie, when the time-out is logged), with its exit status."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait()
