"""``Job``: everything a handler sees of one CodePipeline job."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from cpworker.errors import ConfigurationError
from cpworker.logs import JobLogger
from cpworker.model import ActionTypeId, JobEnvelope, PipelineContext
from cpworker.result import decode_token

if TYPE_CHECKING:
    from cpworker.artifacts import ArtifactCollection, InputArtifact, OutputArtifact

ConfigT = TypeVar("ConfigT")


class Flag(Protocol):
    """A flag another thread or process sets (a ``threading`` or ``multiprocessing`` Event)."""

    def is_set(self) -> bool: ...


_current: ContextVar[Job[Any] | None] = ContextVar("cpworker_current_job", default=None)


def current_job() -> Job[Any]:
    """The job the calling code runs for (set while a handler runs, per thread)."""
    job = _current.get()
    if job is None:
        raise RuntimeError("no cpworker job is running in this context")
    return job


@dataclass(frozen=True, eq=False)
class Job(Generic[ConfigT]):
    """One job, as the handler sees it.

    ``config`` is the action configuration validated into the action's config
    model; ``configuration`` is the raw string mapping (secret values included —
    do not log it). ``continuation`` is the state a previous step returned with
    ``Continue`` (decoded from JSON), or ``None`` on the first step.

    What the runtime knows varies: ``account_id`` is ``None`` for third-party jobs (and
    ``pipeline.pipeline_arn`` and ``pipeline.pipeline_execution_id`` are ``None`` there
    too: only custom-action jobs carry them); a Lambda invoke job has no
    ``action_type`` and no ``pipeline``.
    """

    id: str
    config: ConfigT
    configuration: Mapping[str, str]
    inputs: ArtifactCollection[InputArtifact]
    outputs: ArtifactCollection[OutputArtifact]
    workspace: Path
    log: JobLogger
    deadline: float
    envelope: JobEnvelope = field(repr=False)
    account_id: str | None = None
    action_type: ActionTypeId | None = None
    pipeline: PipelineContext | None = None
    continuation_token: str | None = None
    _stopping: Flag = field(default_factory=threading.Event, repr=False)

    @property
    def continuation(self) -> Any:
        """The decoded continuation state, or ``None`` on a job's first step.

        A token written by something other than cpworker is handed over as a string.
        """
        return decode_token(self.continuation_token)

    @property
    def user_parameters(self) -> str | None:
        """The ``UserParameters`` configuration value, if any."""
        return self.configuration.get("UserParameters")

    def user_parameters_json(self) -> Any:
        """``UserParameters`` decoded as JSON; a ``ConfigurationError`` if it is not JSON."""
        if self.user_parameters is None:
            raise ConfigurationError("the action has no UserParameters")
        try:
            return json.loads(self.user_parameters)
        except ValueError as exc:
            raise ConfigurationError(f"UserParameters is not valid JSON: {exc.args[0]}") from None

    def remaining(self) -> float:
        """Seconds left before the job's deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def is_shutting_down(self) -> bool:
        """True once the worker is stopping: long handlers should return a ``Continue``."""
        return self._stopping.is_set()

    @property
    def raw(self) -> Mapping[str, Any]:
        """The job envelope as received (credentials stay ``SecretStr``)."""
        return self.envelope.model_dump(by_alias=True, mode="python")
