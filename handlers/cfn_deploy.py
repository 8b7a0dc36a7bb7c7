"""Create or update a CloudFormation stack from a template in an input artifact.

The User Guide's Python CloudFormation sample, done right: the parameters are
validated before anything starts, only the template file is read from the
artifact (nothing else is extracted), and the stack is watched across
continuation jobs, so no Lambda invocation waits for CloudFormation. When the
stack settles the action succeeds with the stack's outputs as output variables,
or fails with the stack's status and the first reason CloudFormation gives.

UserParameters (the guide's three fields, plus optional ones)::

    {"stack": "MyTestStack", "artifact": "MyTemplate", "file": "template-package/template.json",
     "capabilities": ["CAPABILITY_IAM"], "parameters": {"Environment": "test"},
     "roleArn": "arn:aws:iam::111122223333:role/cfn-deployer"}

``capabilities``, ``parameters`` and ``roleArn`` (the CloudFormation service role,
which holds the permissions to create the stack's resources) are optional.

As a custom action (``cpworker serve handlers.cfn_deploy:app``) the same names
are configuration properties; there ``capabilities`` is comma-separated and
``parameters`` is a JSON object in a string. The CloudFormation client comes from
boto3's default chain (the Lambda's role, its ``AWS_REGION``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, StringConstraints, field_validator

if TYPE_CHECKING:
    from botocore.exceptions import BotoCoreError, ClientError

from cpworker import (
    ActionApp,
    ActionFailed,
    ConfigurationError,
    Continue,
    Failure,
    Job,
    JobFailed,
    PermissionError,
    Result,
    Success,
    SystemUnavailable,
    lambda_handler,
    prop,
)

CAPABILITIES = frozenset({"CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"})
COMPLETE = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE"})
UPDATABLE = COMPLETE | {"UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"}
NO_UPDATES = "No updates are to be performed."
NOT_VARIABLE_CHARACTER = re.compile(r"[^A-Za-z0-9@\-_]")
Operation = Literal["create", "update"]
StackName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][-A-Za-z0-9]{0,127}$")]
RoleArn = Annotated[str, StringConstraints(pattern=r"^(arn:aws[a-z-]*:iam::[0-9]{12}:role/.+)?$")]


class DeployConfig(BaseModel):
    stack: StackName = prop(description="The stack to create or update.")
    artifact: str = prop(description="The input artifact that holds the template.")
    file: str = prop(description="The template's path inside the artifact.")
    capabilities: str = prop(
        "", description="Capabilities to acknowledge, e.g. CAPABILITY_IAM (comma-separated)."
    )
    parameters: str = prop("", description="Template parameters as a JSON object.")
    roleArn: RoleArn = prop(
        "", description="The service role CloudFormation acts with (default: the caller's)."
    )

    @field_validator("capabilities", mode="before")
    @classmethod
    def _join_list(cls, value: object) -> object:
        """In UserParameters a JSON list; as a property a comma-separated string."""
        return ",".join(str(item) for item in value) if isinstance(value, list) else value

    @field_validator("capabilities")
    @classmethod
    def _known_capabilities(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if unknown := sorted(set(names) - CAPABILITIES):
            raise ValueError(f"unknown {unknown}; use {sorted(CAPABILITIES)}")
        return ",".join(names)

    @field_validator("parameters", mode="before")
    @classmethod
    def _dump_object(cls, value: object) -> object:
        """In UserParameters a JSON object; as a property that object in a string."""
        return json.dumps(value) if isinstance(value, dict) else value

    @field_validator("parameters")
    @classmethod
    def _scalar_object(cls, value: str) -> str:
        if value.strip():
            _parameter_map(value)
        return value

    @property
    def capability_list(self) -> list[str]:
        return self.capabilities.split(",") if self.capabilities else []

    @property
    def parameter_list(self) -> list[dict[str, str]]:
        """CloudFormation's ``Parameters`` (values as strings, booleans as true/false)."""
        mapping = _parameter_map(self.parameters) if self.parameters.strip() else {}
        return [{"ParameterKey": key, "ParameterValue": value} for key, value in mapping.items()]


def _parameter_map(text: str) -> dict[str, str]:
    try:
        decoded = json.loads(text)
    except ValueError:
        raise ValueError("must be a JSON object") from None
    if not isinstance(decoded, dict):
        raise ValueError("must be a JSON object")
    mapping = {}
    for key, value in decoded.items():
        if isinstance(value, bool):
            mapping[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            mapping[key] = str(value)
        else:
            raise ValueError(f"parameter {key!r} must be a string, number or boolean")
    return mapping


app = ActionApp()


@app.action(
    category="Deploy",
    provider="CpworkerCfnDeploy",
    version="1",
    config=DeployConfig,
    inputs=(1, 5),
    outputs=(0, 0),
)
def cfn_deploy(job: Job[DeployConfig]) -> Result:
    """First job: start the create or update. Later jobs: watch the stack until it settles."""
    if job.continuation is None:
        return _start(job)
    state = job.continuation
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("stack"), str)
        or state.get("operation") not in ("create", "update")
    ):
        raise JobFailed("the continuation token was not written by this action")
    return _watch(job, state["stack"], state["operation"])


def _start(job: Job[DeployConfig]) -> Result:
    config = job.config
    optional = {
        "Capabilities": config.capability_list,
        "Parameters": config.parameter_list,
        "RoleARN": config.roleArn,
    }
    arguments: dict[str, Any] = {
        "StackName": config.stack,
        "TemplateBody": _template(job),
        **{name: value for name, value in optional.items() if value},
    }
    stack = _describe(config.stack)
    operation: Operation = "create" if stack is None else "update"
    if stack is not None and stack["StackStatus"] not in UPDATABLE:
        status = stack["StackStatus"]
        hint = ""
        if status == "ROLLBACK_COMPLETE":
            hint = " (its creation failed: delete it, then deploy again)"
        return Failure(f"stack {config.stack} cannot be updated while it is {status}{hint}")
    try:
        call = _cloudformation().create_stack if stack is None else _cloudformation().update_stack
        stack_id = call(**arguments)["StackId"]
    except _aws_errors() as exc:
        if stack is not None and _error_message(exc) == NO_UPDATES:
            return _succeeded(config.stack, stack, "is up to date: no updates to perform")
        raise _failure(f"{operation} stack {config.stack}", exc) from None
    job.log.info("stack operation started", extra={"stack": config.stack, "operation": operation})
    return Continue(
        state={"stack": config.stack, "operation": operation},
        summary=f"stack {config.stack}: {operation} started",
        external_execution_id=stack_id,
        percent_complete=10,
    )


def _watch(job: Job[DeployConfig], name: str, operation: Operation) -> Result:
    stack = _describe(name)
    if stack is None:
        raise JobFailed(f"stack {name} disappeared during its {operation}")
    status = stack["StackStatus"]
    job.log.info("stack status", extra={"stack": name, "status": status})
    if status in COMPLETE:
        return _succeeded(name, stack, f"{operation} complete ({status})")
    if "ROLLBACK" in status or status.endswith("_FAILED"):
        reason = _first_failure(name) or stack.get("StackStatusReason") or "no reason given"
        return Failure(
            f"stack {name} {operation} failed: {status}: {reason}",
            external_execution_id=stack["StackId"],
        )
    return Continue(
        state={"stack": name, "operation": operation},
        summary=f"stack {name}: {status}",
        external_execution_id=stack["StackId"],
        percent_complete=50,  # CloudFormation reports no overall progress
    )


def _succeeded(name: str, stack: Mapping[str, Any], what: str) -> Success:
    """Success with the stack's outputs as output variables (names made valid)."""
    variables = {
        NOT_VARIABLE_CHARACTER.sub("_", output["OutputKey"]): str(output.get("OutputValue", ""))
        for output in stack.get("Outputs", [])
    }
    return Success(
        summary=f"stack {name} {what}",
        external_execution_id=stack["StackId"],
        output_variables=variables,
    )


def _template(job: Job[DeployConfig]) -> str:
    """The template file, read from the named input artifact without extracting the rest."""
    config = job.config
    artifact = job.inputs.get(config.artifact)
    if artifact is None:
        available = ", ".join(job.inputs.names) or "none"
        raise ConfigurationError(
            f"no input artifact named {config.artifact!r} (the action has: {available}); "
            "list it under the action's input artifacts too"
        )
    try:
        return artifact.read_text(config.file)
    except KeyError:
        raise ConfigurationError(
            f"input artifact {config.artifact!r} has no file {config.file!r}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{config.file!r} is not UTF-8 text") from None


def _describe(name: str) -> Mapping[str, Any] | None:
    """The stack's description, or ``None`` if there is no such stack."""
    try:
        stacks = _cloudformation().describe_stacks(StackName=name)["Stacks"]
    except _aws_errors() as exc:
        if "does not exist" in _error_message(exc):
            return None
        raise _failure(f"describe stack {name}", exc) from None
    return dict(stacks[0]) if stacks else None


def _first_failure(name: str) -> str | None:
    """The oldest failure reason among the stack's latest events: the cause, not the echo."""
    try:
        events = _cloudformation().describe_stack_events(StackName=name)["StackEvents"]
    except _aws_errors():
        return None  # the stack's own status and reason still tell the failure
    reasons = [
        f"{event['LogicalResourceId']}: {event['ResourceStatusReason']}"
        for event in events
        if event.get("ResourceStatus", "").endswith("_FAILED") and event.get("ResourceStatusReason")
    ]
    return reasons[-1] if reasons else None


def _aws_errors() -> tuple[type[BotoCoreError], type[ClientError]]:
    """botocore's error classes, imported when first needed: the module imports cheaply."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def _error_message(exc: ClientError | BotoCoreError) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))
    return str(exc)


def _failure(what: str, exc: ClientError | BotoCoreError) -> ActionFailed:
    """A typed failure for a CloudFormation call: denied, throttled/unreachable, or refused."""
    from botocore.exceptions import ClientError

    message = _error_message(exc)
    if not isinstance(exc, ClientError):
        return SystemUnavailable(f"could not {what}: {message}")
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in ("AccessDenied", "AccessDeniedException"):
        return PermissionError(f"not allowed to {what}: {message}")
    if code in ("Throttling", "ThrottlingException", "ServiceUnavailable"):
        return SystemUnavailable(f"CloudFormation is busy, could not {what}: {message}")
    return JobFailed(f"CloudFormation refused to {what}: {code}: {message}")


@functools.cache
def _cloudformation() -> Any:
    """One client per process, made on first use so that importing the module stays cheap."""
    import boto3
    from botocore.config import Config

    return boto3.client("cloudformation", config=Config(retries={"mode": "standard"}))


handler = lambda_handler(app)
