"""Whether a worker is doing its job, for ``/healthz``: a liveness probe restarts it.

Two ways a live process stops working:

- **the poll loop stalls**: no poll has been answered by CodePipeline (with jobs, none,
  or an error such as throttling) for longer than ``stall_after_s``, while a slot is
  free. A loop that waits for a free slot is not stalled, so the clock starts again
  when a full worker frees one.
- **every slot is held past its job's deadline** by more than ``stall_after_s``: the
  worker should have killed and reported them; new jobs cannot start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# What one CodePipeline call may take, on top of the retry policy's backoff, before the
# loop counts as stalled: calls answer in well under a second when all is well.
CALL_ALLOWANCE_S = 10.0


def stall_bound_s(poll_interval_max_s: float, backoff_max_s: float) -> float:
    """The longest a working poll loop goes without an answer: its longest idle wait or
    backoff between two poll attempts, plus the attempt itself."""
    return poll_interval_max_s + backoff_max_s + CALL_ALLOWANCE_S


class Health:
    """The poll loop's last answer and each slot's deadline (monotonic seconds)."""

    def __init__(
        self, slots: int, stall_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.slots = slots
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._answered = clock()
        self._deadlines: dict[str, float] = {}

    def answered(self) -> None:
        """CodePipeline answered a poll."""
        with self._lock:
            self._answered = self._clock()

    def held(self, job_id: str, deadline: float) -> None:
        with self._lock:
            self._deadlines[job_id] = deadline

    def freed(self, job_id: str) -> None:
        with self._lock:
            if len(self._deadlines) >= self.slots:  # the loop was waiting for this slot
                self._answered = max(self._answered, self._clock())
            self._deadlines.pop(job_id, None)

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._deadlines)

    def problem(self) -> str | None:
        """Why the worker is unhealthy, in a few words; ``None`` when it is healthy."""
        now = self._clock()
        with self._lock:
            deadlines = list(self._deadlines.values())
            answered = self._answered
        if len(deadlines) >= self.slots:
            if all(now > deadline + self.stall_after_s for deadline in deadlines):
                return f"every slot ({self.slots}) is held past its job's deadline"
            return None
        silent = now - answered
        if silent > self.stall_after_s:
            return (
                f"poll loop stalled: no poll answered by CodePipeline for {silent:.0f} s "
                f"(limit {self.stall_after_s:.0f} s)"
            )
        return None
