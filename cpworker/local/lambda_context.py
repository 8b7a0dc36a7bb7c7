"""A Lambda-like ``context`` object for running Lambda handlers outside Lambda.

It has the attributes and the method of the context the AWS Python runtime passes
(``awslambdaric``), with the same types: ``memory_limit_in_mb`` and
``function_version`` are strings there too, read from the environment, and the
remaining time counts down to an absolute deadline in epoch milliseconds, as the
runtime's ``Lambda-Runtime-Deadline-Ms`` does. Used by ``cpworker.local.lambda_runner``
(the local CodePipeline's invocations) and by ``cpworker invoke``; imports nothing heavy.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LambdaContext", "function_arn"]

DEFAULT_MEMORY_MB = "128"
LATEST = "$LATEST"


def function_arn(region: str, account_id: str, function_name: str) -> str:
    """The unqualified ARN of a function, as ``invoked_function_arn`` shows it."""
    return f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class LambdaContext:
    """What a handler's ``context`` argument offers in AWS Lambda (Python runtime)."""

    function_name: str
    invoked_function_arn: str
    deadline_ms: int
    """Epoch milliseconds at which the function is stopped."""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = LATEST
    memory_limit_in_mb: str = DEFAULT_MEMORY_MB
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: Any = None
    client_context: Any = None

    def __post_init__(self) -> None:
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        if not self.log_stream_name:
            day = time.strftime("%Y/%m/%d", time.gmtime())
            self.log_stream_name = f"{day}/[{self.function_version}]{uuid.uuid4().hex}"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function is stopped (never negative)."""
        return max(0, self.deadline_ms - _now_ms())

    @classmethod
    def start(
        cls,
        function_name: str,
        timeout_s: float,
        *,
        region: str,
        account_id: str,
        request_id: str | None = None,
    ) -> LambdaContext:
        """A context whose clock starts now and runs for ``timeout_s`` seconds."""
        return cls(
            function_name=function_name,
            invoked_function_arn=function_arn(region, account_id, function_name),
            deadline_ms=_now_ms() + int(timeout_s * 1000),
            aws_request_id=request_id or str(uuid.uuid4()),
        )

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        *,
        request_id: str,
        deadline_ms: int,
        invoked_function_arn: str,
    ) -> LambdaContext:
        """The context of one invocation, as the runtime builds it from Lambda's variables."""
        name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
        return cls(
            function_name=name,
            invoked_function_arn=invoked_function_arn,
            deadline_ms=deadline_ms,
            aws_request_id=request_id,
            function_version=environ.get("AWS_LAMBDA_FUNCTION_VERSION", LATEST),
            memory_limit_in_mb=environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", DEFAULT_MEMORY_MB),
            log_group_name=environ.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
            log_stream_name=environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
        )
