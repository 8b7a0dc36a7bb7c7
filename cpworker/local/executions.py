"""Pipeline executions and action executions, and how an execution moves forward.

Everything here is in-memory state changed under the engine lock; nothing does I/O.
Stages run in order; inside a stage, actions run in groups of equal ``runOrder``,
lowest first, the actions of one group in parallel. When a group has a failed
action and nothing left running, the stage and the execution fail.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cpworker.local.actiontypes import ActionTypeRecord, ActionTypeRegistry, key_of

IN_PROGRESS, SUCCEEDED, FAILED, SUPERSEDED = "InProgress", "Succeeded", "Failed", "Superseded"
_ALNUM = string.ascii_letters + string.digits
_VARIABLE = re.compile(r"#\{([A-Za-z0-9@_-]+)\.([A-Za-z0-9@_-]+)\}")


class StateChanges(Protocol):
    """Who hears the state changes of executions, stages and actions (the engine's
    EventBridge publisher), with EventBridge's state names. Called under the engine
    lock: no I/O."""

    def pipeline(self, ex: Execution, state: str) -> None: ...

    def stage(self, ex: Execution, stage: str, state: str) -> None: ...

    def action(self, run: ActionRun, state: str) -> None: ...


class Unheard:
    """No one listens (executions built outside an engine)."""

    def pipeline(self, ex: Execution, state: str) -> None:
        pass

    def stage(self, ex: Execution, stage: str, state: str) -> None:
        pass

    def action(self, run: ActionRun, state: str) -> None:
        pass


_EVENT_STATE = {SUCCEEDED: "SUCCEEDED", FAILED: "FAILED", SUPERSEDED: "SUPERSEDED"}


class UnresolvedVariable(Exception):  # noqa: N818 - a condition, reported as an action failure
    """A ``#{Namespace.Name}`` reference with no value."""


@dataclass
class Artifact:
    """One artifact of one execution, stored at ``bucket``/``key`` in the artifact store."""

    name: str
    bucket: str
    key: str
    revision: str | None = None

    def wire(self) -> dict[str, Any]:
        """The ``Artifact`` structure of job data."""
        artifact: dict[str, Any] = {
            "name": self.name,
            "location": {
                "type": "S3",
                "s3Location": {"bucketName": self.bucket, "objectKey": self.key},
            },
        }
        if self.revision is not None:
            artifact["revision"] = self.revision
        return artifact

    def detail(self) -> dict[str, Any]:
        """The ``ArtifactDetail`` structure of ListActionExecutions."""
        return {"name": self.name, "s3location": {"bucket": self.bucket, "key": self.key}}


@dataclass(eq=False)
class ActionRun:
    """One action execution: what ListActionExecutions and GetPipelineState show."""

    execution: Execution = field(repr=False)
    stage: str
    declaration: dict[str, Any]
    action_type: ActionTypeRecord
    configuration: dict[str, str]
    inputs: list[Artifact]
    outputs: list[Artifact]
    started: float
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = IN_PROGRESS
    updated: float = 0.0
    summary: str | None = None
    external_id: str | None = None
    percent: int | None = None
    error: dict[str, str] | None = None
    output_variables: dict[str, str] = field(default_factory=dict)
    continuation_token: str | None = None
    due_at: float | None = None
    """When the scheduler must next act for this run (start it, or queue a follow-up job)."""
    preparing: bool = False
    """True while the scheduler does I/O for this run outside the lock."""
    announced: bool = False
    """Whether its STARTED state change went out."""

    def __post_init__(self) -> None:
        self.updated = self.started
        self.due_at = self.started

    @property
    def name(self) -> str:
        name: str = self.declaration["name"]
        return name

    @property
    def run_order(self) -> int:
        order: int = self.declaration["runOrder"]
        return order

    @property
    def external_url(self) -> str | None:
        if self.external_id is None:
            return None
        return self.action_type.url(
            "executionUrlTemplate", self.configuration, ExternalExecutionId=self.external_id
        )

    def announce(self) -> None:
        """The action has started: its job can be polled, or its function was invoked."""
        if not self.announced:
            self.announced = True
            self.execution.changes.action(self, "STARTED")

    def report(self, now: float, details: Mapping[str, Any]) -> None:
        """Record the ``executionDetails`` a worker sent."""
        self.updated = now
        self.summary = details.get("summary", self.summary)
        self.external_id = details.get("externalExecutionId", self.external_id)
        self.percent = details.get("percentComplete", self.percent)

    def succeed(
        self, now: float, variables: Mapping[str, str], revision: str | None = None
    ) -> None:
        self.status, self.updated, self.due_at = SUCCEEDED, now, None
        self.output_variables = dict(variables)
        for artifact in self.outputs:
            artifact.revision = revision
            self.execution.artifacts[artifact.name] = artifact
        namespace = self.declaration.get("namespace")
        if namespace is not None:
            self.execution.namespaces[namespace] = self.output_variables
        self.announce()
        self.execution.changes.action(self, "SUCCEEDED")

    def fail(self, now: float, code: str, message: str, external_id: str | None = None) -> None:
        self.status, self.updated, self.due_at = FAILED, now, None
        self.error = {"code": code, "message": message}
        if external_id is not None:
            self.external_id = external_id
        self.announce()
        self.execution.changes.action(self, "FAILED")


@dataclass(eq=False)
class Execution:
    """One pipeline execution, running against a snapshot of the declaration."""

    pipeline: str
    declaration: dict[str, Any]
    trigger: str
    variables: dict[str, str]
    started: float
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    status: str = IN_PROGRESS
    summary: str | None = None
    updated: float = 0.0
    stage_index: int = 0
    entered: bool = False
    """Whether the execution holds its current stage; False while it waits to enter it."""
    run_order: int = 0
    """The runOrder group running in the current stage; 0 before the first group."""
    stage_status: dict[str, str] = field(default_factory=dict)
    runs: list[ActionRun] = field(default_factory=list)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    changes: StateChanges = field(default_factory=Unheard, repr=False)

    def __post_init__(self) -> None:
        self.updated = self.started
        self.changes.pipeline(self, "STARTED")

    @property
    def version(self) -> int:
        version: int = self.declaration["version"]
        return version

    @property
    def mode(self) -> str:
        mode: str = self.declaration["executionMode"]
        return mode

    @property
    def stage(self) -> dict[str, Any]:
        stage: dict[str, Any] = self.declaration["stages"][self.stage_index]
        return stage

    def finish(self, now: float, status: str, summary: str | None = None) -> None:
        self.status, self.updated, self.summary = status, now, summary
        if self.entered and status != SUCCEEDED:
            self.stage_status[self.stage["name"]] = status if status == FAILED else "Cancelled"
            self.changes.stage(
                self, self.stage["name"], "FAILED" if status == FAILED else "CANCELED"
            )
        self.changes.pipeline(self, _EVENT_STATE.get(status, "CANCELED"))

    def advance(
        self, now: float, stage_free: Callable[[Execution], bool], types: ActionTypeRegistry
    ) -> None:
        """Move forward as far as possible without waiting for an action."""
        while self.status == IN_PROGRESS:
            if not self.entered:
                if not stage_free(self):
                    return
                self.entered, self.run_order = True, 0
                self.stage_status[self.stage["name"]] = IN_PROGRESS
                self.changes.stage(self, self.stage["name"], "STARTED")
            group = [
                r
                for r in self.runs
                if r.stage == self.stage["name"] and r.run_order == self.run_order
            ]
            if any(r.status == IN_PROGRESS for r in group):
                return
            failed = next((r for r in group if r.status == FAILED), None)
            if failed is not None:
                self._fail_stage(now, failed)
                return
            if self._start_next_group(now, types):
                continue  # a group can fail at once (unresolved variables)
            self._finish_stage(now)

    def _start_next_group(self, now: float, types: ActionTypeRegistry) -> bool:
        orders = sorted(
            {a["runOrder"] for a in self.stage["actions"] if a["runOrder"] > self.run_order}
        )
        if not orders:
            return False
        self.run_order = orders[0]
        for action in self.stage["actions"]:
            if action["runOrder"] == self.run_order:
                self.runs.append(self._new_run(now, action, types))
        return True

    def _new_run(self, now: float, action: dict[str, Any], types: ActionTypeRegistry) -> ActionRun:
        record = types.find(key_of(action["actionTypeId"]))
        if record is None:  # deleted since the pipeline was created: no worker can poll it
            record = ActionTypeRecord({"id": action["actionTypeId"]}, tags=[], deleted=True)
        store = self.declaration["artifactStore"]["location"]
        run = ActionRun(
            execution=self,
            stage=self.stage["name"],
            declaration=action,
            action_type=record,
            configuration=dict(action["configuration"]),
            inputs=[self.artifacts[a["name"]] for a in action["inputArtifacts"]],
            outputs=[
                Artifact(a["name"], store, self._object_key(a["name"]))
                for a in action["outputArtifacts"]
            ],
            started=now,
        )
        try:
            run.configuration = {k: self._resolve(v) for k, v in run.configuration.items()}
        except UnresolvedVariable as exc:
            run.fail(now, "ConfigurationError", str(exc))
        return run

    def _object_key(self, artifact: str) -> str:
        """``<pipeline[:20]>/<artifact[:10]>/<7 random>``, the form CodePipeline uses."""
        suffix = "".join(secrets.choice(_ALNUM) for _ in range(7))
        return f"{self.pipeline[:20]}/{artifact[:10]}/{suffix}"

    def _resolve(self, value: str) -> str:
        """Replace ``#{variables.name}``, ``#{Namespace.Name}`` and AWS's one built-in,
        ``#{codepipeline.PipelineExecutionId}``, references."""

        def lookup(match: re.Match[str]) -> str:
            scope, name = match.groups()
            if scope == "variables":
                values = self.variables
            elif scope == "codepipeline":
                values = {"PipelineExecutionId": self.id}
            else:
                values = self.namespaces.get(scope, {})
            if name not in values:
                raise UnresolvedVariable(f"The variable {match.group(0)} could not be resolved")
            return values[name]

        return _VARIABLE.sub(lookup, value)

    def _fail_stage(self, now: float, failed: ActionRun) -> None:
        message = failed.error["message"] if failed.error else "failed"
        self.finish(
            now, FAILED, f"Action {failed.name!r} in stage {failed.stage!r} failed: {message}"
        )

    def _finish_stage(self, now: float) -> None:
        self.stage_status[self.stage["name"]] = SUCCEEDED
        self.changes.stage(self, self.stage["name"], "SUCCEEDED")
        self.updated = now
        if self.stage_index + 1 == len(self.declaration["stages"]):
            self.finish(now, SUCCEEDED)
        else:
            self.stage_index += 1
            self.entered = False

    def source_revisions(self) -> list[tuple[ActionRun, Artifact]]:
        """The artifacts the source actions of this execution produced."""
        return [
            (run, a)
            for run in self.runs
            if run.stage == self.declaration["stages"][0]["name"]
            for a in run.outputs
            if a.revision is not None
        ]
