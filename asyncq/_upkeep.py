"""The periodic chores of a queue that runs jobs: renew this process's leases,
beat its heartbeat (so that any process can tell that a worker runs), take back
expired leases (transient journal faults waited out, see `_backoff.py`).
Pruning and checkpoints are `_retention.py`'s."""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import _events as events
from ._backoff import Backoff
from ._clock import Clock
from ._destinations import Destinations
from ._errors import JournalError, LeaseExpired
from ._journal import LEASE_EXPIRED, ExpiredJob, Journal, WorkerRecord

log = logging.getLogger("asyncq")


class Upkeep:
    """Every `lease / 3` seconds of the queue's clock: renew, beat, reclaim.

    The heartbeat says this process is alive until a lease from now: as long as
    other processes would wait before taking its jobs back.

    `on_reclaimed(dead_ids, any_reclaimed)` runs after a reclaim wrote something.
    """

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        destinations: Destinations,
        *,
        owner: str,
        lease: float,
        on_reclaimed: Callable[[list[int]], None],
        worker: WorkerRecord,
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._destinations = destinations
        self._owner = owner
        self._worker = worker
        self._lease = lease
        self._on_reclaimed = on_reclaimed
        # Until when this process's leases were last made to last (None: not yet).
        self._leased_until: float | None = None
        # When reclaim_expired last found nothing (None: it found some, or never ran).
        self._found_none_at: float | None = None

    async def reclaim_expired(self) -> int:
        """Take back jobs whose lease ran out; the number taken back.

        A crashed attempt counts, and the policy's wait and stop decide its future,
        but not its `retry=` predicate: a crash says nothing about whether the
        call can succeed (a `retry_if_exception_type(ConnectionError)` policy
        must not bury a job because its worker was killed).
        """
        now = self._clock.now()
        if now == self._found_none_at:
            # Asked again at the same instant (a controlled clock: run_until_idle asks
            # at every round): a lease expires only as time passes, so there is none.
            return 0
        error = LeaseExpired(LEASE_EXPIRED)
        policy_for = self._destinations.policy_for

        def decide(job: ExpiredJob) -> float | None:
            return policy_for(job.destination).retry.decide(
                attempt=job.attempts,
                error=error,
                first_attempt_at=job.first_started_at or now,
                now=now,
                ignore_predicate=True,
            )

        reclaimed = await self._journal.reclaim_expired(now, decide)
        self._found_none_at = None if reclaimed else now
        if reclaimed:
            for job, retry_at in reclaimed:
                events.lease_expired(
                    job.id,
                    job.task,
                    job.destination,
                    job.attempts,
                    started=job.started,
                    retry_at=retry_at,
                    now=now,
                )
                if retry_at is None:
                    events.dead_lettered(
                        job.id, job.task, job.destination, job.attempts, LEASE_EXPIRED
                    )
            self._on_reclaimed([job.id for job, retry_at in reclaimed if retry_at is None])
        return len(reclaimed)

    async def heartbeat(self) -> None:
        """Say that this process runs jobs, for a lease from now."""
        now = self._clock.now()
        await self._journal.heartbeat(self._worker, now, now + self._lease)

    async def sign_off(self) -> None:
        """Say that this process stopped running jobs."""
        await self._journal.sign_off(self._owner)

    async def run(self) -> None:
        """Do the chores every `lease / 3` seconds, until cancelled."""
        backoff = Backoff("lease keeper")
        while True:
            await self._clock.sleep(self._lease / 3)
            while True:
                try:
                    await self._chores()
                except JournalError as exc:
                    await backoff.failed(exc)
                else:
                    backoff.succeeded()
                    break

    async def _chores(self) -> None:
        now = self._clock.now()
        if self._leased_until is not None and now > self._leased_until:
            # Renewed too late: another process may have taken the jobs back already.
            events.lease_lost(self._owner, now - self._leased_until)
        # Renew first: after a long pause, this process's own live jobs must
        # not look expired to the reclaim below.
        await self._journal.renew(self._owner, now + self._lease)
        self._leased_until = now + self._lease
        await self.heartbeat()
        await self.reclaim_expired()
