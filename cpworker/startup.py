"""What ``cpworker serve`` checks before it polls, so that a mistake is one line at start
rather than a worker that takes the wrong jobs or logs the same error for ever.

- ``--query``: it must name a served custom action and its queryable property, and an
  action with a queryable property must have one (CodePipeline refuses polls without).
- The account: a first ListActionTypes proves the Region, the credentials and the
  endpoint. It is tried a bounded number of times; once CodePipeline has answered
  (throttled, a 5xx, a connection it reset), it is as patient as every other call.
  It also says which served types are not registered, and which differ from their
  declaration (a warning: jobs may fail). A role without ListActionTypes skips that
  comparison, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError
from botocore.exceptions import ConnectionError as NotConnected

from cpworker.api import RetryPolicy, error_code, is_retryable
from cpworker.app import ActionSpec
from cpworker.mistakes import UsageError
from cpworker.registration import Registered, differences, registered_custom_types

log = logging.getLogger("cpworker.serve")
DENIED = frozenset({"AccessDeniedException", "AccessDenied"})
STARTUP_RETRIES = RetryPolicy(attempts=4, max_elapsed_s=20.0, backoff_max_s=5.0)
BUSY_RETRIES = RetryPolicy()


def queries_for(
    specs: Sequence[ActionSpec], given: Sequence[tuple[str, Mapping[str, str]]]
) -> dict[str, dict[str, str]]:
    """The queryParam of each served action, from ``--query ACTION:Property=value``."""
    by_name = {spec.name: spec for spec in specs}
    queries: dict[str, dict[str, str]] = {}
    for action, pair in given:
        ((name, value),) = pair.items()
        spec = by_name.get(action)
        if spec is None:
            raise UsageError(
                f"--query {action}:{name}={value}: no served action is named {action!r} "
                f"(served: {', '.join(by_name)}); ACTION is the action's name, as in --action"
            )
        queryable = spec.queryable
        if spec.type_id.owner != "Custom" or queryable is None:
            raise UsageError(
                f"--query {action}:{name}={value}: action {action!r} has no queryable property; "
                "drop --query for it (declare one with prop(queryable=True))"
            )
        if name != queryable.name:
            raise UsageError(
                f"--query {action}:{name}={value}: {name!r} is not queryable; action "
                f"{action!r} can be polled by {queryable.name!r} only"
            )
        queries[action] = {name: value}
    for spec in specs:
        queryable = spec.queryable
        if spec.type_id.owner == "Custom" and queryable and spec.name not in queries:
            raise UsageError(
                f"action {spec.name!r} has the queryable property {queryable.name!r}, and "
                f"CodePipeline polls such a type only with a value: add "
                f"--query {spec.name}:{queryable.name}=VALUE"
            )
    return queries


def _registered(codepipeline: Any, policy: RetryPolicy) -> Registered:
    """The registered custom types; past ``policy``'s attempts, only an endpoint that never
    answered is given up on (a wrong endpoint, no network: one line at once), not a busy one."""
    try:
        return policy.wrap(lambda: registered_custom_types(codepipeline))
    except NotConnected:
        raise
    except Exception as exc:
        if not is_retryable(exc):
            raise
        log.warning(
            "CodePipeline is busy at start; still trying",
            extra={"error": error_code(exc) or type(exc).__name__},
        )
        return BUSY_RETRIES.wrap(lambda: registered_custom_types(codepipeline))


def check_account(
    codepipeline: Any, specs: Sequence[ActionSpec], policy: RetryPolicy = STARTUP_RETRIES
) -> None:
    """List the account's custom types (with bounded retries); warn about each served one
    that differs from its declaration, and refuse one not registered. A role allowed the
    job operations only (no ListActionTypes) still serves, with a warning: its answer
    already proved the credentials and the endpoint."""
    try:
        registered = _registered(codepipeline, policy)
    except ClientError as exc:
        if error_code(exc) not in DENIED:
            raise
        log.warning(
            "cannot compare the served action types with their declarations: the role "
            "lacks codepipeline:ListActionTypes",
            extra={"error": error_code(exc)},
        )
        return
    for spec in specs:
        if spec.type_id.owner != "Custom":
            continue  # CodePipeline registers third-party types
        found = registered.get(spec.type_id)
        if found is None:
            raise UsageError(
                f"action type {spec.type_id} (action {spec.name!r}) is not registered in "
                f"{codepipeline.meta.region_name}: run cpworker register first, or serve "
                "with --register"
            )
        if changed := differences(spec, found):
            log.warning(
                "the registered action type differs from its declaration: its jobs may fail; "
                "run cpworker register to see how to register the next version",
                extra={"action_type": str(spec.type_id), "differences": changed},
            )
