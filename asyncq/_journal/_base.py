"""The journal interface: domain actions on durable jobs, with time passed in
(the records it takes and gives are in `_messages.py`).

Callers never see SQL and the storage never reads the clock, so every
time-based path runs on a controlled clock. A second backend implements the
same protocol and passes the same contract suite (tests/journal/).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from .._policy import Rate
from .._records import JobInfo, JobState
from ._messages import (
    Booked,
    Cancellation,
    Cancelled,
    Claim,
    ClaimLimits,
    DestinationRecord,
    ExpiredJob,
    Failed,
    Inserted,
    JournalStats,
    NewBatch,
    NewJob,
    Pruned,
    Released,
    RetryDecision,
    Started,
    Succeeded,
    WorkerRecord,
)


class Journal(Protocol):
    """Durable storage of jobs. Every method is safe to call concurrently."""

    #: What the journal is, for messages and logs (a file's path; never a password).
    description: str

    async def open(self) -> None:
        """Create or migrate the schema; raise `JournalError` if the store cannot be used."""
        ...

    async def close(self) -> None: ...

    async def insert_many(self, jobs: Sequence[NewJob], now: float) -> list[Inserted]:
        """Insert jobs atomically; a live job with the same key is returned instead.

        A job with parents (`after`) is `blocked` until they all succeeded; a parent
        id that is not in the journal raises `JobNotFound` and nothing is written.
        """
        ...

    async def insert_batch(self, batch: NewBatch, now: float) -> Sequence[int]:
        """Insert a batch atomically; the new ids, in payload order (increasing, not
        necessarily consecutive).

        Raises `PayloadError` naming the task and the payload's index, and writes
        nothing, if a payload is not an object or is over `max_payload_bytes`;
        `JobNotFound` for a parent (`after`) that is not in the journal.
        """
        ...

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_until: float,
        now: float,
        limits: ClaimLimits | None = None,
    ) -> Claim:
        """Take up to `limit` ready jobs, stamped with `owner` until `lease_until`.

        Destinations take turns; within one, higher priority first, then FIFO.
        With `limits`, at most `limits.room(name)` jobs come from destination
        `name`, and calls for the jobs taken from paced destinations are booked in
        their shared buckets in the same transaction (as `take_tokens` does).
        """
        ...

    async def record_outcomes(
        self,
        owner: str,
        now: float,
        *,
        started: Sequence[Started] = (),
        succeeded: Sequence[Succeeded] = (),
        failed: Sequence[Failed] = (),
        released: Sequence[Released] = (),
        cancelled: Sequence[Cancelled] = (),
    ) -> list[int]:
        """Write what became of claimed jobs, in one transaction. A start counts the
        attempt (an outcome counts it too if its start was not written). A failure
        is rescheduled at its `retry_at`, or dead when that is None; a released job
        goes back to pending and is not charged; a cancelled one is final. Outcomes
        for a claim that `owner` no longer holds are ignored.

        A job asked to stop (`cancel`) that a failure or a release would send back
        to wait is cancelled instead. Returns the ids of the jobs cancelled in turn
        (those, and the children of every job cancelled here), for their waiters."""
        ...

    async def renew(self, owner: str, lease_until: float) -> int:
        """Extend the lease of every job `owner` holds; the number renewed."""
        ...

    async def reclaim_expired(
        self, now: float, decide: RetryDecision | None = None
    ) -> list[tuple[ExpiredJob, float | None]]:
        """Take back jobs whose lease expired, each with when it runs again (None:
        dead). A job whose handler had started is charged the crashed attempt and
        `decide` says when (default: again now); one that had not goes back to run
        now, uncharged (see `ExpiredJob`)."""
        ...

    async def cancel(self, job_id: int, now: float) -> Cancellation | None:
        """Cancel a job, in one transaction (None: no such job). A pending, scheduled
        or blocked job is cancelled now, and so is a running one whose lease expired
        (its owner is gone); a running one is asked to stop (see `cancel_requests`);
        a finished one is left as it is. Its children are settled with it."""
        ...

    async def get(self, job_id: int) -> JobInfo | None: ...

    async def next_run_at(self) -> float | None:
        """When the next pending job is due (seconds since the epoch): `-inf` if one
        is ready now, None if no job is pending. The dispatcher sleeps until then
        (or until woken) when a claim found nothing."""
        ...

    async def changed_elsewhere(self) -> bool:
        """Whether another process wrote since the last call (cheap; for polling)."""
        ...

    def on_failure(self, callback: Callable[[BaseException], None] | None) -> None:
        """Call `callback` (on the event loop) at once if the journal stops working
        on its own (its writer task died): the queue then fails every waiting caller
        instead of leaving them to find out at their next call."""
        ...

    def on_change_elsewhere(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` (on the event loop) when the journal learns that another
        process wrote: the push beside `changed_elsewhere()`'s polling, for backends
        that can be told (PostgreSQL's LISTEN/NOTIFY). A backend that cannot never
        calls it; the dispatcher's poll covers both."""
        ...

    def on_children_settled(self, callback: Callable[[list[int]], None] | None) -> None:
        """Call `callback` (on the event loop) after a write of this journal in which
        parents' outcomes made blocked jobs ready or cancelled them, with the ids of
        the jobs cancelled (perhaps none): the queue wakes their waiters and its
        dispatcher."""
        ...

    async def stats(self, now: float) -> JournalStats:
        """Jobs per destination and state, the last minute's rates and latencies (of
        every process on the journal), the known rate limits and the live workers,
        as seen at `now`. Never waits for the writer."""
        ...

    # -- monitoring ----------------------------------------------------------

    async def heartbeat(self, worker: WorkerRecord, now: float, alive_until: float) -> None:
        """Record that `worker` runs jobs, and will count as alive until `alive_until`
        (seconds since the epoch) unless it beats again."""
        ...

    async def sign_off(self, owner: str) -> None:
        """The worker `owner` stopped: it no longer counts as alive."""
        ...

    async def save_rates(self, rates: Mapping[str, float | None]) -> None:
        """Record the calls per second each named destination allows (None: no
        rate), so that stats() in any process can show its limit."""
        ...

    async def prune_finished(self, before: float | None, keep: int | None = None) -> Pruned:
        """Delete succeeded and cancelled jobs: those that finished before `before`,
        and, while more than `keep` are kept, the oldest (lowest ids) of the rest.
        None turns either bound off. Dead jobs stay until purged; a job with a child
        that has not finished stays (the child reads its result).

        One call does a bounded share of the work (a part of the table): call again
        while `Pruned.more` says that more may be left."""
        ...

    async def checkpoint(self) -> None:
        """Keep the store's own files bounded (SQLite: checkpoint the write-ahead
        log, and truncate it once it is over its bound). Waits at most briefly for
        other connections; a backend with nothing to do returns."""
        ...

    async def load_destinations(self) -> list[DestinationRecord]: ...

    async def save_destinations(self, records: Sequence[DestinationRecord]) -> None:
        """Write pause, hold and circuit; a bucket's level is `take_tokens`'s alone."""
        ...

    async def take_tokens(
        self,
        wants: Mapping[str, int],
        rates: Mapping[str, Rate],
        clock: Callable[[], float],
        horizon: float,
    ) -> dict[str, Booked]:
        """Book up to `wants[name]` calls in each destination's rate bucket, each at
        the earliest time the bucket allows and none later than `clock() + horizon`
        (the clock is read when the buckets are read),
        reading and writing the bucket in one transaction, so that every process
        sharing the journal draws from one bucket."""
        ...

    async def dead_letters(
        self, *, destination: str | None, since: float | None, limit: int
    ) -> list[JobInfo]:
        """Dead jobs, most recent death first."""
        ...

    async def redrive(
        self,
        *,
        ids: Sequence[int] | None,
        destination: str | None,
        now: float,
        spacing: float = 0.0,
    ) -> int:
        """Dead jobs back to pending with attempts reset, `spacing` seconds apart; the
        jobs their deaths cancelled come back blocked. Returns how many dead jobs went."""
        ...

    async def purge(
        self, *, ids: Sequence[int] | None, destination: str | None, before: float | None
    ) -> int:
        """Delete dead jobs."""
        ...

    # -- periodic ticks ------------------------------------------------------

    async def make_tick(self, name: str, tick: float, job: NewJob, now: float) -> int | None:
        """Make schedule `name`'s `tick` (seconds since the epoch) once: in one
        transaction, record it as the schedule's last tick and insert `job`, but
        only if it is later than the last tick recorded. The new job's id, or None
        if this tick (or a later one) was made already, by any process.

        The record outlives the job (pruning a finished job leaves it), so a tick
        is never made twice."""
        ...

    async def last_ticks(self) -> dict[str, float]:
        """The last tick each periodic schedule made, by schedule name."""
        ...

    # -- cancellation ------------------------------------------------------

    async def cancel_where(
        self,
        *,
        destination: str | None,
        task: str | None,
        states: Sequence[JobState],
        now: float,
    ) -> Cancellation:
        """`cancel` for every job of `destination` and `task` (None: any) in one of
        `states` (PENDING, BLOCKED, RUNNING), in one transaction."""
        ...

    async def cancel_requests(self, owner: str) -> list[int]:
        """The running jobs of `owner` that were asked to stop and are not cancelled yet."""
        ...
