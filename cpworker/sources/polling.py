"""What ``cpworker serve`` asks of a job source: the custom one (``custom``) and the
third-party one (``thirdparty``) implement this, so the worker's loop has no branches
for either.

* ``JobSource.poll`` asks for up to N jobs of one action, without claiming them;
* ``PolledJob.claim`` claims one: acknowledges it (a third-party job: resolves its client
  token and reads its details first) and hands back a ``Claim``, or ``None`` when the job
  is not this worker's to run (logged once); the worker journals the nonce just before
  the acknowledgement;
* a ``JobRef`` reads and reports that job; it is picklable, so the job's process can
  renew its credentials with it, and it is what the journal rebuilds on restart
  (``JobSource.reopen``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cpworker.api import CodePipelineAPI, Delivery, MalformedJob, RetryPolicy, error_code
from cpworker.app import ActionSpec
from cpworker.logs import JobLogger
from cpworker.model import JobEnvelope
from cpworker.result import Result

T = TypeVar("T")
BeforeAck = Callable[[str, str | None, str | None], None]
TAKEN = frozenset({"InvalidNonceException", "JobNotFoundException"})


class JobRef(Protocol):
    """One claimed job, as its runtime reads and reports it."""

    @property
    def id(self) -> str: ...

    @property
    def client_id(self) -> str | None:
        """What the journal keeps to find the job's client token again (third-party)."""

    def secrets(self) -> list[str]:
        """What must be masked while the job runs (its client token)."""

    def details(self, api: CodePipelineAPI) -> JobEnvelope:
        """The job's current details: fresh artifact credentials."""

    def check(self, result: Result, log: JobLogger) -> Result:
        """``result``, or a failure saying why this kind of job cannot report it."""

    def request(self, result: Result) -> tuple[str, dict[str, Any]]:
        """The operation and members (no job id, no token: the journal keeps them)."""

    def put(
        self,
        api: CodePipelineAPI,
        operation: str,
        request: Mapping[str, Any],
        policy: RetryPolicy | None,
    ) -> Delivery:
        """Send a ``request``'s result for this job."""

    def acknowledge(self, api: CodePipelineAPI, nonce: str) -> str:
        """Acknowledge the job again with the nonce it was claimed with; its status then,
        or InvalidNonce when CodePipeline gave it to another worker since."""


@dataclass(frozen=True)
class Claim:
    """A job this worker acknowledged: its ``ref``, and what it asks (or what makes it
    unreadable: the job is then failed alone)."""

    ref: JobRef
    job: JobEnvelope | MalformedJob


class PolledJob(Protocol):
    """A job a poll returned, not claimed yet."""

    @property
    def id(self) -> str: ...

    @property
    def fields(self) -> Mapping[str, Any]:
        """What the log lines about the job carry before it is claimed."""

    def claim(self, log: JobLogger, before_ack: BeforeAck) -> Claim | None:
        """Claim the job, or ``None`` (logged) when it is not this worker's to run.

        ``before_ack(nonce, client_id, continuation_token)`` runs just before the
        acknowledgement, so that the
        journal knows the job before CodePipeline counts it as taken.
        """


class JobSource(Protocol):
    """Where the jobs of some actions come from."""

    def poll(self, spec: ActionSpec, count: int, abandon: threading.Event) -> list[PolledJob]:
        """Up to ``count`` jobs of ``spec``; once ``abandon`` is set, retries stop."""

    def reopen(self, job_id: str, client_id: str | None) -> JobRef:
        """The ref of a journaled job, to report it after a restart."""


def attempt(call: Callable[[], T], log: JobLogger, step: str) -> T | None:
    """``call()``'s answer, or ``None`` with one log line when the job is not ours to run:
    another worker has it, CodePipeline refused the client token, or ``step`` failed."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - any failure means: not ours, move on
        code = error_code(exc)
        if code in TAKEN:
            log.info("job taken by another worker", extra={"error": code})
        elif code == "InvalidClientTokenException":
            log.error(
                "CodePipeline refused the client token of this job's client id: the app's "
                "client_tokens resolver gave a wrong or outdated token; the job is left to "
                "CodePipeline",
                extra={"error": code},
            )
        else:
            log.error(f"{step} failed", extra={"error": code or repr(exc)})
        return None
