"""Retention: a journal that stays small on a busy service. Every round (a second
of the queue's clock), finished jobs past `keep_finished` seconds or beyond the
newest `keep_finished_jobs` are pruned, then the journal checkpoints its files
(for SQLite, the WAL: see `_journal/_sqlite_retention.py`).

Each prune call is one bounded share of a writer turn (a window of ids), so a
round that has much to delete takes many turns, and submits, claims and acks
keep going in between. Transient journal faults are waited out (`_backoff.py`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable

from ._backoff import Backoff
from ._clock import Clock
from ._errors import JournalError
from ._journal import Journal

#: Seconds of the queue's clock between rounds: at 1,000 jobs a second, a round
#: finds about 1,000 jobs over the count.
ROUND_EVERY = 1.0
#: Prune calls a round makes at most (each looks at one window of ids): a journal
#: whose excess cannot go (parents waiting for their children) is not walked
#: round and round within one round.
MAX_CALLS_PER_ROUND = 200

#: The defaults: a week, and 100,000 finished jobs (whichever removes first).
DEFAULT_KEEP_FINISHED = 7 * 86400.0
DEFAULT_KEEP_FINISHED_JOBS = 100_000


def check_retention(keep_finished: object, keep_finished_jobs: object) -> None:
    """Refuse retention settings that are not what they claim to be."""
    if keep_finished is not None:
        if isinstance(keep_finished, bool) or not isinstance(keep_finished, int | float):
            raise TypeError("keep_finished must be a number of seconds or None")
        if not math.isfinite(keep_finished) or keep_finished < 0:
            raise ValueError("keep_finished must be a finite number of seconds >= 0, or None")
    if keep_finished_jobs is not None:
        if isinstance(keep_finished_jobs, bool) or not isinstance(keep_finished_jobs, int):
            raise TypeError("keep_finished_jobs must be an int or None")
        if keep_finished_jobs < 0:
            raise ValueError("keep_finished_jobs must be >= 0, or None")


class Retention:
    """Prunes finished jobs and checkpoints the journal, every `ROUND_EVERY` seconds."""

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        *,
        keep_finished: float | None,
        keep_finished_jobs: int | None,
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._keep_finished = keep_finished
        self._keep_jobs = keep_finished_jobs
        self.rounds = 0  # rounds done (for tests)
        self._round_done: asyncio.Event | None = None

    async def run(self) -> None:
        """Do a round every `ROUND_EVERY` seconds, until cancelled."""
        backoff = Backoff("journal retention")
        while True:
            await self._clock.sleep(ROUND_EVERY)
            while True:
                try:
                    await self.round()
                except JournalError as exc:
                    await backoff.failed(exc)
                else:
                    backoff.succeeded()
                    break

    async def round(self) -> int:
        """Prune until caught up (or `MAX_CALLS_PER_ROUND`), then checkpoint; the
        number of jobs deleted."""
        deleted = 0
        if self._keep_finished is not None or self._keep_jobs is not None:
            before = None
            if self._keep_finished is not None:
                before = self._clock.now() - self._keep_finished
            for _ in range(MAX_CALLS_PER_ROUND):
                pruned = await self._journal.prune_finished(before, self._keep_jobs)
                deleted += pruned.deleted
                if not pruned.more:
                    break
        await self._journal.checkpoint()
        self.rounds += 1
        if self._round_done is not None:
            self._round_done.set()
            self._round_done = None
        return deleted

    def next_round(self) -> Awaitable[bool]:
        """Something to await until the next round has finished (for tests: then
        advance the clock by `ROUND_EVERY` to start it)."""
        if self._round_done is None:
            self._round_done = asyncio.Event()
        return self._round_done.wait()
