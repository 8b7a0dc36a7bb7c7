"""Lambda invoke actions: the ``CodePipeline.job`` event in, PutJob*Result out.

The event's ``data`` has the custom job's shape (``jobdata``) but no actionTypeId
and no pipelineContext. The typed config is validated against the JSON object in
``UserParameters`` when there is one, else against the raw configuration
(``FunctionName``, ``UserParameters``). The deadline trap, abandoned handlers,
logging and metrics are the shared ones (``lambda_runtime``): the deadline is the
Lambda timeout, so the pipeline never waits for CodePipeline's 20-minute reply window.

A result that cannot be reported, even after retries, is logged CRITICAL (naming
the permission the role needs when access was denied) and counted in the
``ReportFailed`` metric, and the invocation returns normally. Raising would make
Lambda retry the asynchronous invocation, which runs the whole handler again (a
second deploy) only to meet the same refusal; the pipeline instead fails the
action when its reply window ends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

from cpworker.api import CodePipelineAPI, RetryPolicy, codepipeline_client, error_code
from cpworker.logs import JobLogger
from cpworker.model import JobEnvelope
from cpworker.result import Failure, Result, outcome_of
from cpworker.sources.lambda_entry import INVOKE_EVENT_KEY as EVENT_KEY
from cpworker.sources.lambda_runtime import LambdaRuntime, Received

DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})


def envelope_from_event(event: Mapping[str, Any]) -> JobEnvelope:
    """The job in a Lambda invoke action's event."""
    if not isinstance(event, Mapping) or EVENT_KEY not in event:
        raise ValueError(f"not a CodePipeline invoke event: it has no {EVENT_KEY!r} key")
    return JobEnvelope.model_validate(event[EVENT_KEY])


def config_values(envelope: JobEnvelope) -> Mapping[str, Any]:
    """What the config model is validated against: a JSON object in UserParameters,
    else the raw configuration."""
    configuration = envelope.data.action_configuration.configuration
    try:
        parameters = json.loads(configuration.get("UserParameters") or "null")
    except ValueError:
        parameters = None
    return parameters if isinstance(parameters, dict) else configuration


class InvokeRuntime(LambdaRuntime):
    """Runs one action's handler for one ``CodePipeline.job`` event and reports the result."""

    def receive(self, event: Mapping[str, Any]) -> Received:
        envelope = envelope_from_event(event)
        return Received(envelope, config_values(envelope))

    def deliver(self, job_id: str, result: Result, log: JobLogger) -> tuple[dict[str, Any], bool]:
        """Report ``result``; False (logged CRITICAL, never raised) if that failed."""
        answer = {"jobId": job_id, "outcome": outcome_of(result)}
        api = CodePipelineAPI(
            function_client(os.environ.get("AWS_REGION")),
            RetryPolicy(attempts=self.settings.report_attempts, max_elapsed_s=20.0),
        )
        try:
            api.put_result(job_id, result)
        except Exception as exc:  # noqa: BLE001 - raising would make Lambda run the job again
            code = error_code(exc)
            operation = (
                "PutJobFailureResult" if isinstance(result, Failure) else "PutJobSuccessResult"
            )
            hint = (
                f": the function's role needs codepipeline:{operation} on Resource '*'"
                if code in DENIED
                else ""
            )
            # Loud on purpose: the pipeline now waits for the action's reply window.
            log.critical(
                f"could not report the result{hint}",
                extra={"outcome": outcome_of(result), "error": code or type(exc).__name__},
            )
            return answer, False
        return answer, True


@cache
def function_client(region: str | None) -> Any:
    """One CodePipeline client per container, in the function's own Region."""
    return codepipeline_client(region=region)
