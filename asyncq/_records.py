"""Plain job records: the states and the snapshot of a job. They import nothing above them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class JobState(enum.StrEnum):
    """Where a job is in its life.

    ========== ============================================= =====================================
    state      how a job enters it                           how it leaves it
    ========== ============================================= =====================================
    blocked    submitted `after=` parents not all succeeded  pending (the last parent succeeded),
                                                             cancelled (a parent failed)
    pending    submitted; a retry is scheduled; a lease      claimed (running), cancelled
               expired; released at shutdown; redriven
    running    claimed by a worker process under a lease     succeeded, dead, cancelled, pending
                                                             (retry, release, expired lease)
    succeeded  the handler returned                          never
    dead       the handler failed for good                   redriven (pending)
    cancelled  `queue.cancel`, or a parent failed            redriven parent (blocked)
    ========== ============================================= =====================================
    """

    BLOCKED = "blocked"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobInfo:
    """A snapshot of one job as the journal holds it. Times are seconds since the epoch."""

    id: int
    task: str
    state: JobState
    destination: str
    priority: int
    payload: dict[str, Any] | None  # None if what the journal holds is not JSON
    key: str | None
    attempts: int
    created_at: float
    run_at: float
    started_at: float | None
    finished_at: float | None
    result: Any
    last_error: str | None
    snoozes: int = 0  # RetryAfter answers, which do not use attempts
    #: One entry per failed attempt: (started_at, ended_at, first line of the error).
    history: list[tuple[float, float, str]] = field(default_factory=list)
