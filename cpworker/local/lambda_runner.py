"""Run one Lambda invocation in this process: ``python -m cpworker.local.lambda_runner REF``.

The local CodePipeline starts one such process per invocation, so a function gets its
own environment variables (as in Lambda) and can be killed at its timeout. The event
comes as JSON on stdin, never in argv, because it carries artifact credentials.
Per-invocation facts the Lambda runtime gets from its API (request id, invoked ARN)
come as options; the function's own facts come from the ``AWS_LAMBDA_*`` variables, as
in Lambda. For an Invoke action (an asynchronous invocation) the handler's return value
is ignored: the function reports through PutJob*Result. For an action type's Lambda
executor (a synchronous one), ``--result-fd`` names a pipe that gets the return value as
JSON, as Lambda returns it to its caller; nothing is written if the handler raises or
returns a value JSON cannot carry.

As in Lambda, the function's timeout counts from the handler call, not from process
start: interpreter start-up and importing the handler's module are the init phase,
which has its own limit. With ``--started-fd`` the runner writes one byte to that pipe
as it calls the handler, and the invoker starts the timeout then; the context's
deadline starts at the same moment.

``REF`` is ``module:attribute`` (imported from the working directory / PYTHONPATH) or
``path/to/file.py:attribute`` (loaded from that file, whose directory goes first on
``sys.path`` like Lambda's task root, so sibling modules import).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cpworker.local.lambda_context import LambdaContext, function_arn

__all__ = ["STARTED", "HandlerRef", "load_handler", "main"]

Handler = Callable[[Any, Any], Any]
STARTED = b"S"  # written to --started-fd as the handler is called


class HandlerRef:
    """A parsed handler reference: a module name or a ``.py`` file, and an attribute."""

    def __init__(self, ref: str) -> None:
        target, sep, attribute = ref.rpartition(":")
        if not sep or not target or not attribute:
            raise ValueError(
                f"{ref!r} is not a handler reference: use module:attr or path/file.py:attr"
            )
        self.ref, self.attribute = ref, attribute
        self.is_file = target.endswith(".py") or "/" in target or os.sep in target
        self.target = str(Path(target).resolve()) if self.is_file else target

    def check(self) -> None:
        """Fail early (ValueError) for a file that does not exist; modules load later."""
        if self.is_file and not Path(self.target).is_file():
            raise ValueError(f"handler file {self.target} does not exist")

    def __str__(self) -> str:
        return f"{self.target}:{self.attribute}"


def load_handler(ref: str | HandlerRef) -> Handler:
    """Import the callable a handler reference names."""
    handler_ref = ref if isinstance(ref, HandlerRef) else HandlerRef(ref)
    if handler_ref.is_file:
        path = Path(handler_ref.target)
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(handler_ref.target)
    found: Any = module
    for part in handler_ref.attribute.split("."):
        found = getattr(found, part)
    if not callable(found):
        raise TypeError(f"{handler_ref} is not callable")
    handler: Handler = found
    return handler


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cpworker.local.lambda_runner")
    parser.add_argument("ref", help="module:attribute or path/file.py:attribute")
    parser.add_argument("--request-id", default=None)
    parser.add_argument("--function-arn", default=None)
    parser.add_argument(
        "--started-fd", type=int, default=None, help="pipe told when the handler is called"
    )
    parser.add_argument(
        "--result-fd", type=int, default=None, help="pipe that gets the return value as JSON"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Read the event, load the handler (init), then call it; 1 if anything raised."""
    args = _arguments(argv)
    for fd in (args.started_fd, args.result_fd):
        if fd is not None:
            os.set_inheritable(fd, False)  # the handler's children must not hold it
    # Lambda's runtime gives the root logger a handler, so a handler's basicConfig()
    # is a no-op there too; WARNING is the root's default level in both.
    logging.basicConfig(format="[%(levelname)s]\t%(asctime)s\t%(message)s", stream=sys.stderr)
    environ = os.environ
    name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
    timeout_s = float(environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3"))
    try:
        event = json.load(sys.stdin)
        handler = load_handler(args.ref)
        context = LambdaContext.from_environment(
            environ,
            request_id=args.request_id or str(uuid.uuid4()),
            deadline_ms=int((time.time() + timeout_s) * 1000),
            invoked_function_arn=args.function_arn
            or function_arn(environ.get("AWS_REGION", "us-east-1"), "123456789012", name),
        )
        if args.started_fd is not None:
            os.write(args.started_fd, STARTED)
            os.close(args.started_fd)
        returned = handler(event, context)
        if args.result_fd is not None:
            payload = json.dumps(returned).encode()
            with os.fdopen(args.result_fd, "wb") as result:
                result.write(payload)
    except Exception as exc:  # noqa: BLE001 - whatever the handler raises ends this invocation
        # Lambda's form: the error type and message, then the stack; never the event.
        print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
