"""``cpworker`` command line: serve | register | local | demo."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from cpworker.app import ActionApp
from cpworker.logs import configure_logging

if TYPE_CHECKING:
    from cpworker.local.faults import FaultSettings


def load_app(reference: str) -> ActionApp:
    """Import ``module:attribute`` (default attribute ``app``) from the current directory."""
    module_name, _, attribute = reference.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, ActionApp):
        raise SystemExit(f"{reference}: expected an ActionApp, found {type(app).__name__}")
    return app


def _query(text: str) -> tuple[str, dict[str, str]]:
    action, _, pair = text.rpartition(":")
    name, sep, value = pair.partition("=")
    if not (action and sep and name and value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ACTION:Property=value")
    return action, {name: value}


def _on_signals(first: Callable[[], None]) -> None:
    """Call ``first`` on the first SIGTERM/SIGINT; exit at once on the second."""
    received: list[int] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            os._exit(128 + signum)
        first()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def serve(args: argparse.Namespace) -> int:
    from cpworker.api import CodePipelineAPI, codepipeline_client
    from cpworker.worker import Worker, WorkerSettings
    from cpworker.workspace import WorkspaceRootError

    app = load_app(args.app)
    specs = app.select(args.action)
    client = codepipeline_client(
        region=args.region, endpoint_url=args.endpoint_url, profile=args.profile
    )
    if args.register:
        app.register(client, args.action)
    defaults = WorkerSettings()
    settings = WorkerSettings(
        concurrency=args.concurrency,
        isolation=args.isolation,
        jobs_per_process=args.jobs_per_process,
        poll_interval_min_s=args.poll_min,
        poll_interval_max_s=args.poll_max,
        drain_timeout_s=args.drain_timeout,
        state_dir=args.state_dir or defaults.state_dir,
        workspace_root=args.workspace or defaults.workspace_root,
        keep_workspace=args.keep_workspace,
        queries=dict(args.query),
        credential_refresh_s=args.credential_refresh,
        region=client.meta.region_name,
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        emf=args.emf,
    )
    try:
        worker = Worker(CodePipelineAPI(client), specs, settings, app.client_tokens)
    except ValueError as exc:  # an action a child cannot run, or no client token resolver
        print(f"cpworker serve: {exc}", file=sys.stderr)
        return 2
    _on_signals(worker.shutdown)
    try:
        worker.run()
    except WorkspaceRootError as exc:
        print(f"cpworker serve: {exc}", file=sys.stderr)
        return 2
    return 0


def register(args: argparse.Namespace) -> int:
    from cpworker.api import codepipeline_client

    app = load_app(args.app)
    client = codepipeline_client(
        region=args.region, endpoint_url=args.endpoint_url, profile=args.profile
    )
    for created in app.register(client, args.action):
        print(f"created custom action type {created}")
    return 0


def _loopback(host: str) -> str:
    from cpworker.local.hosts import loopback_address

    try:
        return loopback_address(host)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _faults(text: str) -> FaultSettings:
    from cpworker.local.faults import FaultSettings

    try:
        return FaultSettings.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def local(args: argparse.Namespace) -> int:
    import threading

    from cpworker.local.declarations import load_definition
    from cpworker.local.engine import EngineSettings
    from cpworker.local.lambdas import parse_function_option, parse_functions_file
    from cpworker.local.server import LocalCodePipeline

    overrides = {
        name: value
        for name, value in (
            ("continuation_delay_s", args.continuation_delay),
            ("redispatch_after_s", args.redispatch_after),
            ("job_timeout_s", args.job_timeout),
            ("lambda_timeout_s", args.lambda_timeout),
            ("lambda_reply_window_s", args.reply_window),
            ("credential_ttl_s", args.credential_ttl),
        )
        if value is not None
    }
    try:
        functions = (
            parse_functions_file(args.functions_file.read_text()) if args.functions_file else {}
        )
        functions.update(parse_function_option(option) for option in args.function)
    except (OSError, ValueError) as exc:
        print(f"cpworker local: {exc}", file=sys.stderr)
        return 2
    declarations = []
    for path in args.action_type:
        try:
            declarations.append(load_definition(path.read_text()))
        except (OSError, ValueError) as exc:
            print(f"cpworker local: --action-type {path}: {exc}", file=sys.stderr)
            return 2
    stop = threading.Event()
    _on_signals(stop.set)
    settings = EngineSettings(**overrides)
    options = (settings, functions, args.faults, declarations)
    with LocalCodePipeline(args.host, args.port, *options) as server:
        print(f"cpworker local ready at {server.endpoint_url}", flush=True)
        stop.wait()
    return 0


def invoke(args: argparse.Namespace) -> int:
    from cpworker.invoke import InvokeRequest, run_invoke
    from cpworker.local.errors import ServiceError

    request = InvokeRequest(
        handler=args.handler,
        event_file=args.event,
        function_name=args.function_name,
        user_parameters=args.user_parameters,
        inputs=[(name, Path(folder)) for name, folder in args.input],
        outputs=args.output,
        endpoint_url=args.endpoint_url,
        timeout_s=args.timeout,
        max_steps=args.max_steps,
    )
    try:
        return run_invoke(request)
    except ServiceError as exc:
        raise SystemExit(f"cpworker invoke: {exc.code}: {exc.message}") from None


def _named_folder(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not (sep and name and folder):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIRECTORY")
    if not Path(folder).is_dir():
        raise argparse.ArgumentTypeError(f"{folder!r} is not a directory")
    return name, folder


def demo(_args: argparse.Namespace) -> int:
    from cpworker.demo import run_demo

    return run_demo()


def systemd_unit(_args: argparse.Namespace) -> int:
    from cpworker.systemd import unit_text

    sys.stdout.write(unit_text())
    return 0


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", help="the ActionApp to load, as module:attribute")
    parser.add_argument(
        "--action", action="append", default=[], help="serve only this action (repeatable)"
    )
    parser.add_argument("--region", help="AWS Region (default: the boto3 chain)")
    parser.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        help="CodePipeline and S3 endpoint, e.g. a cpworker local (default: $AWS_ENDPOINT_URL)",
    )
    parser.add_argument("--profile", help="AWS profile (default: the boto3 chain)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cpworker", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        default=os.environ.get("CPWORKER_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: $CPWORKER_LOG_LEVEL or INFO)",
    )
    common.add_argument(
        "--log-format",
        choices=("json", "text"),
        default=os.environ.get("CPWORKER_LOG_FORMAT", "json"),
        help="JSON lines, or text for a terminal (default: $CPWORKER_LOG_FORMAT or json)",
    )
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    run = command("serve", "poll for and run the app's custom and third-party action jobs")
    _client_options(run)
    run.add_argument("--concurrency", type=int, default=4, help="jobs at once (default 4)")
    run.add_argument("--poll-min", type=float, default=0.5, help="first idle wait, s (0.5)")
    run.add_argument("--poll-max", type=float, default=10.0, help="longest idle wait, s (10)")
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=25.0,
        help="on SIGTERM, s running jobs may finish before they are handed back (25)",
    )
    run.add_argument(
        "--isolation",
        choices=("process", "thread"),
        default="process",
        help="run each job in a child process that its deadline can kill (default), or in a thread",
    )
    run.add_argument(
        "--jobs-per-process",
        type=int,
        default=100,
        help="jobs a child process may run one after another, while each leaves no thread "
        "or process running; 1 gives every job a fresh process (100)",
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        help="journal of acknowledged jobs; must survive the worker "
        "(default: $XDG_STATE_HOME/cpworker or ~/.local/state/cpworker)",
    )
    run.add_argument(
        "--credential-refresh",
        type=float,
        default=900.0,
        help="s between renewals of a job's artifact credentials (900)",
    )
    run.add_argument(
        "--query",
        type=_query,
        action="append",
        default=[],
        metavar="ACTION:Property=value",
        help="poll only jobs whose queryable property has this value",
    )
    run.add_argument(
        "--workspace",
        type=Path,
        help="root of job workspaces, this user's alone (default: <tmp>/cpworker-<uid>)",
    )
    run.add_argument("--keep-workspace", action="store_true", help="keep job workspaces")
    run.add_argument("--register", action="store_true", help="create missing action types first")
    metrics = run.add_argument_group("metrics and health")
    metrics.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus /metrics and /healthz on this port (0: a free one, logged at start)",
    )
    metrics.add_argument(
        "--metrics-host", default="127.0.0.1", help="the address of the metrics port (127.0.0.1)"
    )
    metrics.add_argument(
        "--emf",
        action="store_true",
        help="write CloudWatch EMF metrics of each job to stdout "
        "(namespace: $POWERTOOLS_METRICS_NAMESPACE)",
    )
    run.set_defaults(func=serve)

    reg = command("register", "create the app's custom action types")
    _client_options(reg)
    reg.set_defaults(func=register)

    loc = command("local", "run the local CodePipeline on loopback")
    loc.add_argument(
        "--host", type=_loopback, default="127.0.0.1", help="a loopback address (127.0.0.1)"
    )
    loc.add_argument("--port", type=int, default=4566)
    loc.add_argument("--continuation-delay", type=float, help="s before a continuation job")
    loc.add_argument(
        "--redispatch-after", type=float, help="s before an unacknowledged job requeues"
    )
    loc.add_argument("--job-timeout", type=float, help="s before a job without result times out")
    loc.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="NAME=REF",
        help="map a Lambda FunctionName to module:attr or file.py:attr (repeatable)",
    )
    loc.add_argument(
        "--functions-file", type=Path, help='JSON {"Name": "ref" or {"handler", "timeout"}}'
    )
    loc.add_argument(
        "--action-type",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="declare an action type with an executor: a definition file in the User Guide's"
        ' format, {"actionType": {...}} (repeatable)',
    )
    loc.add_argument("--lambda-timeout", type=float, help="s before a function is stopped (900)")
    loc.add_argument(
        "--reply-window", type=float, help="s a Lambda job may go without result (1200)"
    )
    loc.add_argument(
        "--credential-ttl",
        type=float,
        metavar="SECONDS",
        help="job credentials expire this long after issue; S3 then answers ExpiredToken"
        " and GetJobDetails issues fresh ones (default: never)",
    )
    loc.add_argument(
        "--faults",
        type=_faults,
        metavar="SPEC",
        help="inject faults, e.g. 'throttle=0.3,5xx=0.1,reset=0.05,lost=0.02,"
        "ops=PollForJobs|PutJobSuccessResult|GetObject,seed=7': throttle answers"
        " ThrottlingException (S3: SlowDown), 5xx a 500/503, reset drops the connection"
        " before the request is processed, lost after it; ops limits them to those"
        " CodePipeline or S3 operations ('S3': all of S3); seed makes them repeatable",
    )
    loc.set_defaults(func=local)

    inv = command("invoke", "run a Lambda handler once against a local CodePipeline")
    inv.add_argument("handler", help="module:attribute or path/file.py:attribute")
    source = inv.add_mutually_exclusive_group(required=True)
    source.add_argument("--event", type=Path, help="a CodePipeline.job event (JSON file)")
    source.add_argument(
        "--build-event", action="store_true", help="build the event from the flags below"
    )
    inv.add_argument("--user-parameters", help="UserParameters of the built event")
    inv.add_argument(
        "--input", type=_named_folder, action="append", default=[], metavar="NAME=DIR",
        help="an input artifact, zipped from DIR (repeatable)",
    )  # fmt: skip
    inv.add_argument("--output", action="append", default=[], metavar="NAME",
                     help="an output artifact name (repeatable)")  # fmt: skip
    inv.add_argument("--function-name", default="cpworker-invoke")
    inv.add_argument("--timeout", type=float, default=900.0, help="Lambda timeout, s (900)")
    inv.add_argument("--max-steps", type=int, default=20, help="continuations to follow (20)")
    inv.add_argument(
        "--endpoint-url", help="a running cpworker local (default: start one in this process)"
    )
    inv.set_defaults(func=invoke)

    dem = command("demo", "run the example build action end to end, locally")
    dem.set_defaults(func=demo)

    unit = command("systemd-unit", "print the systemd unit that runs cpworker serve on a host")
    unit.set_defaults(func=systemd_unit)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level.upper(), log_format=args.log_format)
    command: Callable[[Any], int] = args.func
    return command(args)


if __name__ == "__main__":
    raise SystemExit(main())
