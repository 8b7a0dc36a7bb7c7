"""cpworker: run AWS CodePipeline actions written as Python functions.

Commands: serve (the worker), register / unregister / action-types (custom action
types), local (a local CodePipeline), invoke (a Lambda handler, once), demo.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from cpworker.app import ActionApp, ActionSpec
from cpworker.loading import load_app
from cpworker.logs import SDK_LOGGERS, configure_logging
from cpworker.mistakes import UsageError, aws_problem

if TYPE_CHECKING:
    from cpworker.local.faults import FaultSettings


def _selected(
    app: ActionApp, names: Sequence[str], *, custom_only: bool = False
) -> list[ActionSpec]:
    """The actions ``--action`` names (all by default); custom ones only if asked."""
    try:
        specs = app.select(names)
    except KeyError as exc:
        raise UsageError(f"--action: {exc.args[0]}") from None
    if custom_only:
        specs = [spec for spec in specs if spec.type_id.owner == "Custom"]
        if not specs:
            raise UsageError(
                "no custom action to act on: CodePipeline registers third-party action types"
            )
    return specs


def _codepipeline(args: argparse.Namespace) -> Any:
    from cpworker.api import codepipeline_client

    return codepipeline_client(
        region=args.region, endpoint_url=args.endpoint_url, profile=args.profile
    )


def _query(text: str) -> tuple[str, dict[str, str]]:
    action, _, pair = text.rpartition(":")
    name, sep, value = pair.partition("=")
    if not (action and sep and name and value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ACTION:Property=value")
    return action, {name: value}


def _queue_url(text: str) -> str:
    if not text.startswith(("https://", "http://")):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected the queue's URL (the QueueUrl output of "
            "templates/wake-queue.yaml, or: aws sqs get-queue-url --queue-name NAME), "
            "not its name or ARN"
        )
    return text


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
    from cpworker.api import CodePipelineAPI
    from cpworker.startup import STARTUP_RETRIES, check_account, queries_for
    from cpworker.worker import Worker, WorkerSettings
    from cpworker.workspace import WorkspaceRootError

    app = load_app(args.app)
    specs = _selected(app, args.action)
    queries = queries_for(specs, args.query)
    client = _codepipeline(args)
    if args.register:
        STARTUP_RETRIES.wrap(lambda: app.register(client, args.action))
    check_account(client, specs)
    defaults = WorkerSettings()
    settings = WorkerSettings(
        concurrency=args.concurrency,
        isolation=args.isolation,
        jobs_per_process=args.jobs_per_process,
        poll_interval_min_s=args.poll_min,
        poll_interval_max_s=_poll_max(args),
        drain_timeout_s=args.drain_timeout,
        state_dir=args.state_dir or defaults.state_dir,
        workspace_root=args.workspace or defaults.workspace_root,
        keep_workspace=args.keep_workspace,
        queries=queries,
        credential_refresh_s=args.credential_refresh,
        region=client.meta.region_name,
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        emf=args.emf,
        wake_queue=args.wake_queue,
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


def _poll_max(args: argparse.Namespace) -> float:
    """``--poll-max``, else its default: the idle backoff's cap, or with a wake queue the
    safety poll's period."""
    if args.poll_max is not None:
        return float(args.poll_max)
    from cpworker.wake import WAKE_POLL_MAX_S
    from cpworker.worker import WorkerSettings

    return WAKE_POLL_MAX_S if args.wake_queue else WorkerSettings.poll_interval_max_s


def register(args: argparse.Namespace) -> int:
    """Create the missing types; a registered one that differs is reported (exit 1), or
    registered as the next version with ``--bump``."""
    from cpworker.registration import (
        create_document,
        differences,
        matching_version,
        next_version,
        registered_custom_types,
    )

    specs = _selected(load_app(args.app), args.action, custom_only=True)
    if args.dry_run and len(specs) > 1:
        names = ", ".join(spec.name for spec in specs)
        raise UsageError(f"--dry-run prints one document: name one action with --action ({names})")
    if args.dry_run and not args.bump:
        print(json.dumps(create_document(specs[0]), indent=2))
        return 0
    client = _codepipeline(args)
    registered = registered_custom_types(client)
    status = 0
    for spec in specs:
        found = registered.get(spec.type_id)
        changed = differences(spec, found) if found is not None else []
        version = None
        if changed and args.bump:
            version = matching_version(spec, registered)
            if version is not None and not args.dry_run:
                _roll_over(spec, version)
                continue
            try:
                version = version or next_version(spec.type_id, registered)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        elif changed:
            print(
                f"cpworker register: {spec.type_id} differs from the declaration of action "
                f"{spec.name!r}: {'; '.join(changed)}. Action types cannot be edited: register "
                "the declaration as the next version with --bump",
                file=sys.stderr,
            )
            status = 1
            continue
        document = create_document(spec, version)
        if args.dry_run:
            print(json.dumps(document, indent=2))
        elif found is None or version is not None:
            client.create_custom_action_type(**document)
            print(f"created custom action type {_with_version(spec, document['version'])}")
        if version is not None and not args.dry_run:
            _roll_over(spec, version)
    return status


def _roll_over(spec: ActionSpec, version: str) -> None:
    print(
        f"{_with_version(spec, version)} matches the declaration of action {spec.name!r}: set "
        f'version="{version}" in its @app.action so that serve polls it, then move pipelines '
        "to it (README: Rolling pipelines over to a new version)"
    )


def _with_version(spec: ActionSpec, version: str) -> str:
    return str(spec.type_id.model_copy(update={"version": version}))


def unregister(args: argparse.Namespace) -> int:
    """Delete the app's custom types (``--version``: that version of each)."""
    from cpworker.registration import registered_custom_types

    specs = _selected(load_app(args.app), args.action, custom_only=True)
    client = _codepipeline(args)
    registered = {str(type_id) for type_id in registered_custom_types(client)}
    status = 0
    for spec in specs:
        type_id = _with_version(spec, args.version or spec.type_id.version)
        if type_id not in registered:
            print(f"cpworker unregister: {type_id} is not registered", file=sys.stderr)
            status = 1
            continue
        category, _, provider, version = type_id.split("/")
        client.delete_custom_action_type(category=category, provider=provider, version=version)
        print(f"deleted custom action type {type_id}")
    return status


def action_types(args: argparse.Namespace) -> int:
    """List the registered custom types; with an app, each against its declaration."""
    from cpworker.registration import differences, registered_custom_types

    specs = _selected(load_app(args.app), args.action, custom_only=True) if args.app else []
    registered = registered_custom_types(_codepipeline(args))
    declared = {spec.type_id: spec for spec in specs}
    providers = {(spec.type_id.category, spec.type_id.provider): spec for spec in specs}
    for type_id, found in sorted(registered.items(), key=lambda item: str(item[0])):
        spec = declared.get(type_id)
        if spec is not None:
            changed = differences(spec, found)
            what = (
                f"differs from action {spec.name!r}: {'; '.join(changed)}"
                if changed
                else (f"matches action {spec.name!r}")
            )
        elif (older := providers.get((type_id.category, type_id.provider))) is not None:
            what = f"another version (action {older.name!r} declares {older.type_id.version})"
        else:
            what = "registered" if not specs else "not declared by the app"
        print(f"{type_id}\t{what}")
    for type_id, spec in declared.items():
        if type_id not in registered:
            print(f"{type_id}\tnot registered (action {spec.name!r})")
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


def _client_options(parser: argparse.ArgumentParser, verb: str, app_optional: bool = False) -> None:
    parser.add_argument(
        "app",
        nargs="?" if app_optional else None,
        help="the ActionApp to load, as module:attribute or path/file.py:attribute",
    )
    parser.add_argument(
        "--action", action="append", default=[], help=f"{verb} only this action (repeatable)"
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
    _client_options(run, "serve")
    run.add_argument("--concurrency", type=int, default=4, help="jobs at once (default 4)")
    run.add_argument("--poll-min", type=float, default=0.5, help="first idle wait, s (0.5)")
    run.add_argument(
        "--poll-max",
        type=float,
        help="longest idle wait, s (10); with --wake-queue, the safety poll's period (60)",
    )
    run.add_argument(
        "--wake-queue",
        type=_queue_url,
        metavar="QUEUE_URL",
        help="SQS queue of CodePipeline's action-started events (templates/wake-queue.yaml): "
        "poll when an event says a job waits, not on a timer",
    )
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
        help="poll only jobs whose queryable property has this value; ACTION is the action's "
        "name (required for an action with a queryable property)",
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

    reg = command(
        "register", "create the app's custom action types; report those that differ from the code"
    )
    _client_options(reg, "register")
    reg.add_argument(
        "--bump",
        action="store_true",
        help="register a declaration that differs from its registered type as the next version",
    )
    reg.add_argument(
        "--dry-run",
        action="store_true",
        help="print the create-custom-action-type --cli-input-json document instead",
    )
    reg.set_defaults(func=register)

    unreg = command("unregister", "delete the app's custom action types")
    _client_options(unreg, "unregister")
    unreg.add_argument("--version", help="delete this version (default: the declared one)")
    unreg.set_defaults(func=unregister)

    types = command(
        "action-types", "list the registered custom action types, each against the app's code"
    )
    _client_options(types, "list", app_optional=True)
    types.set_defaults(func=action_types)

    loc = command("local", "run the local CodePipeline on loopback")
    loc.add_argument(
        "--host", type=_loopback, default="127.0.0.1", help="a loopback address (127.0.0.1)"
    )
    loc.add_argument("--port", type=int, default=4566, help="the port to listen on (4566)")
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
        " CodePipeline or S3 operations ('S3': all of S3); seed makes them repeatable;"
        " latency=0.02 holds each of those requests that many seconds",
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


def _quiet_sdk() -> None:
    """The AWS SDK's INFO lines ("Found credentials in ...") only at DEBUG."""
    if logging.getLogger().level <= logging.DEBUG:
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(
            lambda record: (
                record.levelno >= logging.WARNING
                or record.name.partition(".")[0] not in SDK_LOGGERS
            )
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level.upper(), log_format=args.log_format)
    _quiet_sdk()
    command: Callable[[Any], int] = args.func
    try:
        return command(args)
    except UsageError as exc:
        print(f"cpworker {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        problem = aws_problem(exc, getattr(args, "endpoint_url", None))
        if problem is None:
            raise
        print(f"cpworker {args.command}: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
