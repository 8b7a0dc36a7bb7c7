"""``ActionApp``: the registry of action handlers and how a handler's outcome becomes a result."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from cpworker.config import ConfigProperty, properties_of
from cpworker.errors import ActionFailed, FailureType
from cpworker.job import Job, _current
from cpworker.limits import INTEGRATION_JOB_TIMEOUT_MAX_S, bounds, result_limits, shape
from cpworker.logs import JobLogger
from cpworker.model import ActionTypeId
from cpworker.redact import scrub
from cpworker.result import Continue, Failure, InvalidResult, Result, Success, bounded

if TYPE_CHECKING:
    from cpworker.client_tokens import ClientTokens

Handler = Callable[[Job[Any]], Result | None]
OnTimeout = Literal["fail", "continue"]
OnShutdown = Literal["fail", "continue"]
Owner = Literal["Custom", "ThirdParty"]
DEFAULT_TIMEOUT_S = 3600.0
HandlerT = TypeVar("HandlerT", bound=Handler)
Counts = tuple[int, int]
MAX_ARTIFACTS = 5  # ArtifactDetails.maximumCount is 0-5
MIN_JOB_TIMEOUT_S = 60  # ActionTypeExecutor.jobTimeout is 60-43200


@dataclass(frozen=True)
class ActionSettings:
    """Links the console shows for the action (``{Config:Name}``, ``{ExternalExecutionId}``)."""

    entity_url_template: str | None = None
    execution_url_template: str | None = None
    revision_url_template: str | None = None
    third_party_configuration_url: str | None = None

    def to_wire(self) -> dict[str, str]:
        wire = {
            "entityUrlTemplate": self.entity_url_template,
            "executionUrlTemplate": self.execution_url_template,
            "revisionUrlTemplate": self.revision_url_template,
            "thirdPartyConfigurationUrl": self.third_party_configuration_url,
        }
        return {name: value for name, value in wire.items() if value}


@dataclass(frozen=True)
class ActionSpec:
    """One registered action: its type, its configuration and its handler."""

    name: str
    type_id: ActionTypeId
    handler: Handler
    config_model: type[BaseModel] | None
    properties: tuple[ConfigProperty, ...]
    inputs: Counts
    outputs: Counts
    settings: ActionSettings
    on_timeout: OnTimeout = "fail"
    timeout_s: float = DEFAULT_TIMEOUT_S
    on_shutdown: OnShutdown = "fail"
    optional_outputs: frozenset[str] = frozenset()

    @property
    def queryable(self) -> ConfigProperty | None:
        """The queryable property, if the action has one."""
        return next((p for p in self.properties if p.queryable), None)

    def custom_action_type(self) -> dict[str, Any]:
        """The CreateCustomActionType request for this action."""
        request: dict[str, Any] = {
            "category": self.type_id.category,
            "provider": self.type_id.provider,
            "version": self.type_id.version,
            "configurationProperties": [p.to_wire() for p in self.properties],
            "inputArtifactDetails": _artifact_details(self.inputs),
            "outputArtifactDetails": _artifact_details(self.outputs),
        }
        if settings := self.settings.to_wire():
            request["settings"] = settings
        return request

    def action_type_definition(self, lambda_function_arn: str) -> dict[str, Any]:
        """An action-type definition file (the User Guide's format) for this action as a
        ThirdParty type run by the Lambda integration model: the function's ARN as its
        Lambda executor, ``timeout`` as its ``jobTimeout`` (60 s to 15 minutes)."""
        job_timeout = min(math.ceil(self.timeout_s), INTEGRATION_JOB_TIMEOUT_MAX_S)
        properties = []
        for p in self.properties:
            declared = {"name": p.name, "optional": not p.required, "key": p.key}
            declared |= {"noEcho": p.secret, "queryable": p.queryable}
            properties.append(declared | ({"description": p.description} if p.description else {}))
        declaration: dict[str, Any] = {
            "executor": {
                "configuration": {
                    "lambdaExecutorConfiguration": {"lambdaFunctionArn": lambda_function_arn}
                },
                "type": "Lambda",
                "jobTimeout": max(MIN_JOB_TIMEOUT_S, job_timeout),
            },
            "id": self.type_id.model_dump() | {"owner": "ThirdParty"},
            "inputArtifactDetails": _artifact_details(self.inputs),
            "outputArtifactDetails": _artifact_details(self.outputs),
            "properties": properties,
        }
        urls = self.settings.to_wire()
        if "thirdPartyConfigurationUrl" in urls:
            urls["configurationUrl"] = urls.pop("thirdPartyConfigurationUrl")
        if urls:
            declaration["urls"] = urls
        return {"actionType": declaration}


def _artifact_details(counts: Counts) -> dict[str, int]:
    return {"minimumCount": counts[0], "maximumCount": counts[1]}


def _check_name(what: str, value: str, shape_name: str) -> None:
    limit = bounds(shape_name)
    too_short = limit.min is not None and len(value) < limit.min
    too_long = limit.max is not None and len(value) > limit.max
    if too_short or too_long or (limit.pattern and not limit.pattern.fullmatch(value)):
        raise ValueError(
            f"{what} {value!r} is invalid: {limit.min}-{limit.max} characters of "
            f"{limit.pattern.pattern if limit.pattern else 'any kind'}"
        )


def _check_counts(what: str, counts: Counts) -> Counts:
    low, high = counts
    if not 0 <= low <= high <= MAX_ARTIFACTS:
        raise ValueError(f"{what}={counts} is invalid: need 0 <= min <= max <= {MAX_ARTIFACTS}")
    return low, high


class ActionApp:
    """The actions one worker (or one Lambda function) serves.

    ``@app.action(...)`` registers a handler and fails at import time for a
    duplicate action type, an invalid name, or a config model that cannot become
    CodePipeline configuration properties.

    ``client_tokens`` finds the client token of a third-party job's client id
    (:mod:`cpworker.client_tokens`); ``cpworker serve`` needs it for actions declared
    with ``owner="ThirdParty"``.
    """

    def __init__(self, *, client_tokens: ClientTokens | None = None) -> None:
        self._actions: dict[str, ActionSpec] = {}
        self.client_tokens = client_tokens

    def action(
        self,
        *,
        category: str,
        provider: str,
        version: str = "1",
        config: type[BaseModel] | None = None,
        inputs: Counts = (0, 5),
        outputs: Counts = (0, 5),
        name: str | None = None,
        settings: ActionSettings | None = None,
        on_timeout: OnTimeout = "fail",
        timeout: float | timedelta = DEFAULT_TIMEOUT_S,
        on_shutdown: OnShutdown = "fail",
        optional_outputs: Sequence[str] = (),
        owner: Owner = "Custom",
    ) -> Callable[[HandlerT], HandlerT]:
        """Register the decorated function as the handler of a custom action type, or
        of a third-party one (``owner="ThirdParty"``).

        ``timeout`` (seconds or a ``timedelta``; default one hour) bounds one step of
        the action: at that deadline ``cpworker serve`` stops the handler (it kills
        its process group) and reports per ``on_timeout``. The Lambda runtime's
        deadline is the function's own timeout less a margin; for the Lambda integration
        model, the earliest of that, ``timeout`` and 15 minutes, less the margin.

        ``on_timeout`` says what is reported when the handler has not returned by
        its deadline: ``"fail"`` (``JobFailed: timed out after N s``) or
        ``"continue"`` (a continuation, so the next job runs the step again from the
        state the previous step returned — the handler must be idempotent).

        ``on_shutdown`` says what ``cpworker serve`` reports for a job still running
        when the worker stops (drain timeout, or a worker found dead on restart):
        ``"fail"`` (SystemUnavailable) or ``"continue"`` (the step is handed back
        with a continuation and runs again on any worker, from the last state).

        ``optional_outputs`` names the output artifacts the handler may leave unwritten.
        Every other output artifact of the job must have been uploaded (an empty zip
        counts) when the handler returns ``Success``; if one was not, the job fails with
        ``JobFailed: output artifact 'X' was not uploaded`` rather than succeeding and
        failing a later action that finds no artifact. A ``Continue`` is not checked.

        ``owner="ThirdParty"`` makes ``cpworker serve`` poll the action's jobs with
        PollForThirdPartyJobs and prove itself with the client token the app's
        ``client_tokens`` resolves. CodePipeline registers such a type (``register``
        skips it). Its jobs have no account id, pipeline ARN or execution id, and cannot
        carry output variables: a ``Success`` with some fails the job.
        """
        if owner not in ("Custom", "ThirdParty"):
            raise ValueError(f"owner={owner!r} is invalid: use 'Custom' or 'ThirdParty'")
        for option, value in (("on_timeout", on_timeout), ("on_shutdown", on_shutdown)):
            if value not in ("fail", "continue"):
                raise ValueError(f"{option}={value!r} is invalid: use 'fail' or 'continue'")
        if isinstance(optional_outputs, str):
            raise ValueError(
                f"optional_outputs={optional_outputs!r} is invalid: give a sequence of "
                f"artifact names, e.g. ({optional_outputs!r},)"
            )
        timeout_s = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        if not timeout_s > 0:
            raise ValueError(f"timeout={timeout!r} is invalid: give a positive number of seconds")
        categories = shape("ActionCategory")["enum"]
        if category not in categories:
            raise ValueError(
                f"category {category!r} is invalid: use one of {', '.join(categories)}"
            )
        _check_name("provider", provider, "ActionProvider")
        _check_name("version", version, "Version")
        type_id = ActionTypeId(category=category, owner=owner, provider=provider, version=version)
        properties = properties_of(config) if config is not None else ()
        counts_in, counts_out = _check_counts("inputs", inputs), _check_counts("outputs", outputs)

        def register(handler: HandlerT) -> HandlerT:
            spec_name = name or handler.__name__
            for existing in self._actions.values():
                if existing.type_id == type_id or existing.name == spec_name:
                    raise ValueError(
                        f"action {spec_name!r} ({type_id}) clashes with {existing.name!r} "
                        f"({existing.type_id}): give each action its own name and type"
                    )
            self._actions[spec_name] = ActionSpec(
                spec_name,
                type_id,
                handler,
                config,
                properties,
                counts_in,
                counts_out,
                settings or ActionSettings(),
                on_timeout,
                timeout_s,
                on_shutdown,
                frozenset(optional_outputs),
            )
            return handler

        return register

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(self._actions.values())

    def __len__(self) -> int:
        return len(self._actions)

    def __getitem__(self, name: str) -> ActionSpec:
        try:
            return self._actions[name]
        except KeyError:
            known = ", ".join(self._actions) or "none"
            raise KeyError(f"no action named {name!r} (known: {known})") from None

    def select(self, names: Sequence[str] = ()) -> list[ActionSpec]:
        """The named actions (all when ``names`` is empty)."""
        return [self[n] for n in names] if names else list(self)

    def register(self, codepipeline: Any, names: Sequence[str] = ()) -> list[str]:
        """Create the custom action types (skipping those that exist, and third-party ones,
        which CodePipeline registers); returns the created ones. A registered type is left
        as it is even when it differs from its declaration (``cpworker.registration``)."""
        from cpworker.registration import registered_custom_types

        existing = registered_custom_types(codepipeline)
        created = []
        for spec in self.select(names):
            if spec.type_id.owner == "Custom" and spec.type_id not in existing:
                codepipeline.create_custom_action_type(**spec.custom_action_type())
                created.append(str(spec.type_id))
        return created


def run_handler(
    spec: ActionSpec, make_job: Callable[[], Job[Any]], log: JobLogger, secrets: Sequence[str]
) -> Result:
    """Build the job and run its handler; every exception becomes a typed ``Failure``.

    ``ActionFailed`` keeps its type and message; any other exception becomes
    ``JobFailed`` with ``"<ExceptionType>: <message>"`` and its traceback is logged.
    A ``Success`` that left a required output artifact unwritten becomes ``JobFailed``.
    ``secrets`` are masked out of the message (the log formatter masks the rest).
    """
    try:
        job = make_job()
        token = _current.set(job)
        try:
            result = _checked(spec.handler(job))
        finally:
            _current.reset(token)
        if isinstance(result, Success):
            result = _with_outputs(result, spec, job, log)
        return _redacted(result, secrets)
    except ActionFailed as exc:
        log.info("handler failed the job", extra={"failure_type": exc.failure_type.value})
        return Failure(
            _message(exc.message, secrets) or exc.failure_type.value,
            type=exc.failure_type,
            external_execution_id=exc.external_execution_id,
        )
    except Exception as exc:
        log.exception("handler raised %s", type(exc).__name__)
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Failure(_message(text, secrets), type=FailureType.JOB_FAILED)


def _checked(result: object) -> Result:
    if result is None:
        return Success()
    if isinstance(result, Success | Continue | Failure):
        return result
    raise InvalidResult(
        f"the handler returned {type(result).__name__}; return Success, Continue or Failure"
    )


def _with_outputs(result: Success, spec: ActionSpec, job: Job[Any], log: JobLogger) -> Result:
    """``result``, or a failure naming the required output artifacts nobody uploaded."""
    missing = [
        output.name
        for output in job.outputs
        if not output.uploaded and output.name not in spec.optional_outputs
    ]
    if not missing:
        return result
    log.error("the handler returned Success without its outputs", extra={"missing": missing})
    names = ", ".join(repr(name) for name in missing)
    what = f"output artifact {names} was" if len(missing) == 1 else f"output artifacts {names} were"
    return Failure(
        f"{what} not uploaded",
        type=FailureType.JOB_FAILED,
        external_execution_id=result.external_execution_id,
    )


def _redacted(result: Result, secrets: Sequence[str]) -> Result:
    """``result`` with secrets masked in every text a pipeline user sees."""

    def clean(text: str | None) -> str | None:
        return None if text is None else scrub(text, secrets)

    if isinstance(result, Failure):
        return replace(
            result,
            message=_message(result.message, secrets),
            external_execution_id=clean(result.external_execution_id),
        )
    if isinstance(result, Continue):
        return replace(
            result,
            summary=clean(result.summary),
            external_execution_id=clean(result.external_execution_id),
        )
    return replace(
        result,
        summary=clean(result.summary),
        external_execution_id=clean(result.external_execution_id),
        output_variables={
            name: scrub(value, secrets) for name, value in result.output_variables.items()
        },
    )


def _message(text: str, secrets: Sequence[str]) -> str:
    return bounded(scrub(text, secrets), result_limits().failure_message.max)
