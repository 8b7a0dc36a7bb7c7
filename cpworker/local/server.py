"""One loopback HTTP endpoint for the local CodePipeline and moto's S3/KMS/STS.

Requests that carry ``X-Amz-Target: CodePipeline_20150709.<Operation>`` go to
cpworker's engine, and so do cpworker's own ``CpworkerLocal.<Operation>`` ones
(:mod:`cpworker.local.private`); every other request goes to moto's server
application, so a single ``--endpoint-url`` serves every AWS client a worker or a
test uses.

Before that, every request must be addressed to a loopback host with this server's
port (:mod:`cpworker.local.hosts`), else 403; CORS is never answered (an OPTIONS
preflight gets 403, and moto's ``Access-Control-*`` headers are removed), so no web
page can read the server or drive it. Then come the injected faults
(:mod:`cpworker.local.faults`) and, for S3 requests signed with a job credential
past its expiry, S3's ExpiredToken (:mod:`cpworker.local.credentials`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import struct
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import ThreadedWSGIServer
from werkzeug.wsgi import LimitedStream

from cpworker.local.aws import ENGINE_ACCESS_KEY
from cpworker.local.credentials import signer_of
from cpworker.local.engine import Engine, EngineSettings
from cpworker.local.faults import ConnectionDropped, Fault, FaultInjector, FaultSettings
from cpworker.local.hosts import host_allowed, loopback_address
from cpworker.local.lambdas import FunctionSpec
from cpworker.local.ops import Operations, ServiceError
from cpworker.local.private import PRIVATE_PREFIX, PrivateOperations
from cpworker.local.s3_reads import serving
from cpworker.local.wire import JSON_CONTENT_TYPE, Answer, plain, s3_error

TARGET_PREFIX = "CodePipeline_20150709."

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Call = Callable[[str, dict[str, Any]], dict[str, Any]]
log = logging.getLogger("cpworker.local")


class LocalApp:
    """The WSGI application: CodePipeline operations to the engine, the rest to moto.

    ``port`` is the server's own, for the Host check; the server sets it once bound.
    """

    def __init__(self, operations: Operations, faults: FaultSettings | None = None) -> None:
        self.operations = operations
        self.private = PrivateOperations(operations.engine)
        self.port = 0
        self._expiries = operations.engine.expiries
        self._faults: FaultInjector | None = None
        self.set_faults(faults)
        self._moto = DomainDispatcherApplication(create_backend_app)

    def set_faults(self, faults: FaultSettings | None) -> None:
        """Inject these faults from now on (a fresh random stream), or none."""
        self._faults = FaultInjector(faults) if faults is not None else None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not host_allowed(environ.get("HTTP_HOST", ""), self.port):
            refusal = "cpworker local answers only requests to a loopback host on its own port"
            return _send(start_response, plain(403, refusal))
        if environ["REQUEST_METHOD"] == "OPTIONS":
            return _send(start_response, plain(403, "cpworker local does not answer CORS requests"))
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(TARGET_PREFIX):
            operation = target.removeprefix(TARGET_PREFIX)
            self.private.calls.add(operation)
            fault = self._faults.codepipeline(operation) if self._faults else None

            def codepipeline(env: dict[str, Any], respond: StartResponse) -> Iterable[bytes]:
                return self._json(self.operations.call, operation, env, respond)

            return _faulted(fault, codepipeline, environ, start_response, s3=False)
        if target.startswith(PRIVATE_PREFIX):
            operation = target.removeprefix(PRIVATE_PREFIX)
            return self._json(self.private.call, operation, environ, start_response)
        return self._aws(environ, start_response)

    def _aws(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """moto's answer, unless an injected fault or an expired job credential comes first."""
        faults, expiries = self._faults, self._expiries
        if not (faults or expiries):
            return self._moto_without_cors(environ, start_response)
        signer = signer_of(environ)
        if signer is None or signer.service != "s3" or signer.access_key_id == ENGINE_ACCESS_KEY:
            return self._moto_without_cors(environ, start_response)
        fault = faults.s3(environ) if faults else None

        def s3(env: dict[str, Any], respond: StartResponse) -> Iterable[bytes]:
            if expiries.expired(signer.access_key_id):
                head = env["REQUEST_METHOD"] == "HEAD"
                message = "The provided token has expired."
                return _send(respond, s3_error(400, "ExpiredToken", message, head=head))
            return self._moto_without_cors(env, respond)

        return _faulted(fault, s3, environ, start_response, s3=True)

    def _moto_without_cors(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """moto's answer without its CORS headers, which would let any web page read it."""

        def without_cors(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
            return start_response(status, kept, *exc_info)

        with serving():
            result: Iterable[bytes] = self._moto(environ, without_cors)
        return result

    def _json(
        self, call: Call, operation: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """Answer one JSON 1.1 request with ``call``, errors in the modelled wire form."""
        request_id = str(uuid.uuid4())
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            try:
                params = json.loads(raw or b"{}")
            except ValueError as exc:
                raise ServiceError("SerializationException", f"Malformed JSON body: {exc}") from exc
            if not isinstance(params, dict):
                raise ServiceError(
                    "SerializationException", "The request body must be a JSON object"
                )
            status, body = 200, call(operation, params)
        except ServiceError as exc:
            status, body = exc.status, {"__type": exc.code, "message": exc.message}
        except Exception:
            # An engine bug must still answer in the wire form, and be visible in the log.
            log.exception("local CodePipeline failed on %s", operation)
            status, body = 500, {"__type": "InternalFailure", "message": "internal error"}
        payload = json.dumps(body, default=str).encode()
        start_response(
            f"{status} {'OK' if status == 200 else 'Error'}",
            [
                ("Content-Type", JSON_CONTENT_TYPE),
                ("Content-Length", str(len(payload))),
                ("x-amzn-RequestId", request_id),
            ],
        )
        return [payload]


class QuietRequestHandler(MotoRequestHandler):
    """moto's request handler, keeping connections alive (HTTP/1.1) as AWS does, without
    werkzeug's line per request (errors still log), and able to reset a connection
    instead of answering (an injected fault)."""

    protocol_version = "HTTP/1.1"
    # An answer goes out in several writes (headers, then body): with Nagle's algorithm a
    # kept-alive connection waits for the client's delayed ACK (40 ms) on each one.
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Access lines would drown the worker's own logs; they carry nothing needed."""

    def connection_dropped(
        self, error: BaseException, environ: dict[str, Any] | None = None
    ) -> None:
        """End the connection; for an injected fault, with a TCP reset and no answer."""
        self.close_connection = True
        if isinstance(error, ConnectionDropped):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # the reset goes out when the handler lets go of it

    def run_wsgi(self) -> None:
        """Answer one request and leave the connection at the start of the next one.

        werkzeug's own runner closes every connection, then drains the socket, which on
        a kept-alive connection would swallow the client's next request. Here the request
        body is read to its end, and the answer always says where it ends; a connection
        that cannot be kept in step is closed.
        """
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        body = _request_body(environ)
        reply = _Reply(self, environ["REQUEST_METHOD"])
        try:
            answer = self.server.app(environ, reply.start_response)
            try:
                for data in answer:
                    reply.write(data)
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()
            reply.finish()
            while body.read(_DRAIN_BYTES):
                pass
        except (ConnectionError, TimeoutError, ClientDisconnected) as error:
            self.connection_dropped(error, environ)
        except Exception:  # noqa: BLE001 - logged; the answer must still end
            self._failed(reply)

    def _failed(self, reply: _Reply) -> None:
        """An application error: logged, answered 500 if nothing was sent yet, and the
        connection closed, since its request or answer may be cut short."""
        self.server.log("error", "Error on request:\n%s", traceback.format_exc())
        self.close_connection = True
        if not reply.sent:
            with contextlib.suppress(OSError):
                for data in _send(reply.start_response, plain(500, "internal error")):
                    reply.write(data)
                reply.finish()


_DRAIN_BYTES = 1 << 20


def _request_body(environ: dict[str, Any]) -> io.RawIOBase:
    """The request body, ending where the request does: at its Content-Length (none:
    empty), or at the last chunk of a chunked one (werkzeug has dechunked it)."""
    if environ.get("wsgi.input_terminated"):
        dechunked: io.RawIOBase = environ["wsgi.input"]
        return dechunked
    length = environ.get("CONTENT_LENGTH") or "0"
    body = LimitedStream(environ["wsgi.input"], int(length) if length.isdigit() else 0)
    environ["wsgi.input"] = body
    return body


class _Reply:
    """One answer on a kept-alive connection: the headers on the first write, the body
    framed by its Content-Length (chunked when the application gave none), no body
    where HTTP has none (HEAD, 1xx, 204, 304)."""

    def __init__(self, handler: QuietRequestHandler, method: str) -> None:
        self._handler = handler
        self._method = method
        self._status = "500 Internal Server Error"
        self._headers: list[tuple[str, str]] = []
        self.sent = False
        self._chunked = False
        self._bodiless = False
        self._owed: int | None = None
        """Bytes still due under the Content-Length; anything but 0 at the end desynchronises."""

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.sent:
            raise exc_info[1].with_traceback(exc_info[2])
        self._status, self._headers = status, list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        if not self.sent:
            self._send_headers()
        if self._bodiless or not data:
            return
        out = self._handler.wfile
        if self._chunked:
            out.write(b"%x\r\n" % len(data))
            out.write(data)
            out.write(b"\r\n")
            return
        if self._owed is not None:
            self._owed -= len(data)
        out.write(data)

    def finish(self) -> None:
        """End the answer; close the connection if the body did not match its length."""
        if not self.sent:
            self._send_headers()
        if self._chunked:
            self._handler.wfile.write(b"0\r\n\r\n")
        elif self._owed:
            self._handler.close_connection = True
        self._handler.wfile.flush()

    def _send_headers(self) -> None:
        handler, self.sent = self._handler, True
        code, _, reason = self._status.partition(" ")
        handler.send_response(int(code), reason)
        given = {}
        for name, value in self._headers:
            handler.send_header(name, value)
            given[name.lower()] = value
        status = int(code)
        self._bodiless = self._method == "HEAD" or status < 200 or status in (204, 304)
        if self._bodiless:
            pass
        elif given.get("content-length", "").isdigit():
            self._owed = int(given["content-length"])
        else:
            self._chunked = True
            handler.send_header("Transfer-Encoding", "chunked")
        if handler.close_connection and "connection" not in given:
            handler.send_header("Connection", "close")
        handler.end_headers()


class _KeepAliveServer(ThreadedWSGIServer):
    """werkzeug's threaded server, which also ends the connections its clients keep
    open when it closes, so that no request reaches a stopped engine."""

    def __init__(self, host: str, port: int, app: WSGIApp) -> None:
        super().__init__(host, port, app, handler=QuietRequestHandler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            kept = list(self._open)
        for connection in kept:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _send(start_response: StartResponse, answer: Answer) -> Iterable[bytes]:
    status, headers, body = answer
    start_response(status, headers)
    return [body]


def _faulted(
    fault: Fault | None,
    serve: WSGIApp,
    environ: dict[str, Any],
    start_response: StartResponse,
    *,
    s3: bool,
) -> Iterable[bytes]:
    """``serve`` the request, or answer the injected fault instead (a lost answer: both)."""
    if fault is None:
        return serve(environ, start_response)
    if fault is Fault.RESET:
        raise ConnectionDropped("injected fault: connection reset before the request")
    if fault is Fault.LOST:
        answer = serve(environ, lambda *_: lambda _data: None)
        try:
            for _chunk in answer:
                pass
        finally:
            close = getattr(answer, "close", None)
            if close is not None:
                close()
        raise ConnectionDropped("injected fault: the answer is lost")
    return _send(start_response, fault.answer(s3=s3, head=environ["REQUEST_METHOD"] == "HEAD"))


class LocalCodePipeline:
    """A running local CodePipeline on loopback; usable as a context manager.

    ``host`` must be loopback (``localhost``, 127.0.0.0/8 or ``::1``), else ValueError.
    ``port=0`` picks a free port (tests); ``endpoint_url`` tells where it is.
    ``functions`` maps the FunctionName of Invoke actions to handlers (``module:attr``,
    ``path/file.py:attr`` or a FunctionSpec); ``engine.register_function`` adds more.
    ``action_types`` are declared action types (the ``actionType`` of a definition file,
    :mod:`cpworker.local.declarations`); ``engine.register_action_type`` adds more.
    ``faults`` injects faults from the start; ``set_faults`` changes them later.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: EngineSettings | None = None,
        functions: Mapping[str, str | FunctionSpec] | None = None,
        faults: FaultSettings | None = None,
        action_types: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        address = loopback_address(host)
        self.engine = Engine(settings or EngineSettings(), functions)
        for declaration in action_types:
            self.engine.register_action_type(declaration)
        self.app = LocalApp(Operations(self.engine), faults)
        self._server = _KeepAliveServer(address, port, self.app)
        self.app.port = self._server.port
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        host = self._server.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self._server.port}"

    def set_faults(self, faults: FaultSettings | None) -> None:
        """Inject these faults from now on (e.g. once a benchmark is set up), or none."""
        self.app.set_faults(faults)

    def start(self) -> LocalCodePipeline:
        self.engine.start(self.endpoint_url)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cpworker-local", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.engine.stop()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> LocalCodePipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
