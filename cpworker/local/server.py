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

import json
import logging
import socket
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from cpworker.local.aws import ENGINE_ACCESS_KEY
from cpworker.local.credentials import signer_of
from cpworker.local.engine import Engine, EngineSettings
from cpworker.local.faults import ConnectionDropped, Fault, FaultInjector, FaultSettings
from cpworker.local.hosts import host_allowed, loopback_address
from cpworker.local.lambdas import FunctionSpec
from cpworker.local.ops import Operations, ServiceError
from cpworker.local.private import PRIVATE_PREFIX, PrivateOperations
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
    """moto's request handler without werkzeug's line per request (errors still log),
    and able to reset a connection instead of answering (an injected fault)."""

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
        self._server: BaseWSGIServer = make_server(
            address, port, self.app, threaded=True, request_handler=QuietRequestHandler
        )
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
