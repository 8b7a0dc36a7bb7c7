"""One loopback HTTP endpoint for the local CodePipeline and moto's S3/KMS/STS.

Requests that carry ``X-Amz-Target: CodePipeline_20150709.<Operation>`` go to
cpworker's engine, and so do cpworker's own ``CpworkerLocal.<Operation>`` ones
(:mod:`cpworker.local.private`); every other request goes to moto's server
application, so a single ``--endpoint-url`` serves every AWS client a worker or a
test uses.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from cpworker.local.engine import Engine, EngineSettings
from cpworker.local.lambdas import FunctionSpec
from cpworker.local.ops import Operations, ServiceError
from cpworker.local.private import PRIVATE_PREFIX, PrivateOperations

TARGET_PREFIX = "CodePipeline_20150709."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

StartResponse = Callable[..., Any]
Call = Callable[[str, dict[str, Any]], dict[str, Any]]
log = logging.getLogger("cpworker.local")


class LocalApp:
    """The WSGI application: CodePipeline operations to the engine, the rest to moto."""

    def __init__(self, operations: Operations) -> None:
        self.operations = operations
        self.private = PrivateOperations(operations.engine)
        self._moto = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        for prefix, call in (
            (TARGET_PREFIX, self.operations.call),
            (PRIVATE_PREFIX, self.private.call),
        ):
            if target.startswith(prefix):
                return self._json(call, target.removeprefix(prefix), environ, start_response)
        result: Iterable[bytes] = self._moto(environ, start_response)
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
    """moto's request handler without werkzeug's line per request (errors still log)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Access lines would drown the worker's own logs; they carry nothing needed."""


class LocalCodePipeline:
    """A running local CodePipeline on loopback; usable as a context manager.

    ``port=0`` picks a free port (tests); ``endpoint_url`` tells where it is.
    ``functions`` maps the FunctionName of Invoke actions to handlers (``module:attr``,
    ``path/file.py:attr`` or a FunctionSpec); ``engine.register_function`` adds more.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: EngineSettings | None = None,
        functions: Mapping[str, str | FunctionSpec] | None = None,
    ) -> None:
        self.engine = Engine(settings or EngineSettings(), functions)
        self.app = LocalApp(Operations(self.engine))
        self._server: BaseWSGIServer = make_server(
            host, port, self.app, threaded=True, request_handler=QuietRequestHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

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
