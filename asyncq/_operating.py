"""The operator's calls of `Queue`: pausing destinations, dead letters (list,
redrive, purge, the `on_dead` hook) and cancelling, by id or by selection. A base
class, as `Submitting` is, so that the queue's module holds its wiring and
lifecycle; `Queue` provides the state."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, overload

from ._cancelling import cancel_job, cancel_selection, check_job_id, select
from ._clock import Clock
from ._destinations import Destinations
from ._journal import Journal
from ._records import JobInfo, JobState
from ._results import Waiters
from ._tasks import Task
from ._validate import check_name

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("asyncq")


class Operating:
    """Pausing, dead letters and cancelling (see the module's docstring)."""

    _journal: Journal
    _destinations: Destinations
    _engine: Engine | None
    _waiters: Waiters | None
    _owner: str
    clock: Clock
    poll_interval: float
    on_dead: Callable[[JobInfo], Awaitable[None] | None] | None

    def _require_open(self) -> None:
        raise NotImplementedError

    def _notify_dispatcher(self) -> None:
        raise NotImplementedError

    def _hook(self, coro: Coroutine[Any, Any, None], part: str) -> None:
        raise NotImplementedError

    # -- pausing destinations -------------------------------------------------

    async def pause(self, name: str) -> None:
        """Stop starting calls to `name` (in every process sharing the journal)."""
        await self._set_paused(name, paused=True)

    async def resume(self, name: str) -> None:
        """Start calls to `name` again."""
        await self._set_paused(name, paused=False)

    async def _set_paused(self, name: str, *, paused: bool) -> None:
        self._require_open()
        state = self._destinations.state(check_name(name, "destination name"))
        state.paused = paused
        await self._journal.save_destinations([self._destinations.record(state)])
        if self._engine is not None:
            self._engine.dispatcher.recheck(name)
            self._engine.dispatcher.notify()

    # -- dead letters ---------------------------------------------------------

    async def dead_letters(
        self, destination: str | None = None, *, since: float | None = None, limit: int = 100
    ) -> list[JobInfo]:
        """Dead jobs, most recent first; `since` in seconds since the epoch."""
        self._require_open()
        return await self._journal.dead_letters(destination=destination, since=since, limit=limit)

    async def redrive(
        self,
        ids: Sequence[int] | None = None,
        *,
        destination: str | None = None,
        spacing: float = 0.0,
    ) -> int:
        """Send dead jobs again, attempts reset: by id, or all of a destination.
        `spacing` (seconds) puts that much time between their new start times.
        The jobs their deaths cancelled (`after=`) come back, blocked again.
        Returns how many dead jobs were sent."""
        self._require_open()
        if ids is None and destination is None:
            raise ValueError("redrive needs ids or destination=")
        count = await self._journal.redrive(
            ids=ids, destination=destination, now=self.clock.now(), spacing=spacing
        )
        self._notify_dispatcher()
        return count

    async def purge(
        self,
        ids: Sequence[int] | None = None,
        *,
        destination: str | None = None,
        before: float | None = None,
    ) -> int:
        """Delete dead jobs: by id, of a destination, dead before a time; all if none given."""
        self._require_open()
        return await self._journal.purge(ids=ids, destination=destination, before=before)

    def _job_died(self, job_ids: list[int]) -> None:
        if self.on_dead is not None and job_ids:
            self._hook(self._call_on_dead(job_ids), "on_dead hook")

    async def _call_on_dead(self, job_ids: list[int]) -> None:
        for job_id in job_ids:
            try:
                info = await self._journal.get(job_id)
                if info is None or info.state is not JobState.DEAD or self.on_dead is None:
                    continue  # a stale outcome: the job lives on elsewhere
                result = self.on_dead(info)
                if result is not None:
                    await result
            except Exception:
                log.exception("on_dead hook failed for job %s", job_id)

    # -- cancelling (see _cancelling.py) ----------------------------------------

    @overload
    async def cancel(self, job_id: int) -> bool: ...

    @overload
    async def cancel(
        self,
        *,
        destination: str | None = None,
        task: Task[Any, Any] | str | None = None,
        state: JobState | str | None = None,
    ) -> int: ...

    async def cancel(
        self,
        job_id: int | None = None,
        *,
        destination: str | None = None,
        task: Task[Any, Any] | str | None = None,
        state: JobState | str | None = None,
    ) -> bool | int:
        """Cancel one job by id, or every job of a selection.

        `cancel(job_id)`: a pending, scheduled or blocked job is cancelled at once; a
        running one is stopped in whichever process runs it (its handler's coroutine
        gets `CancelledError`), and the call waits until the job is final. True if
        it ended cancelled; False if it had finished, or its handler finished first.
        A handler that swallows its `CancelledError` is still recorded cancelled. If
        the process running it died, the job is cancelled once its lease expires.
        A job's children are settled with it. `JobNotFound` for an unknown id.

        `cancel(destination=, task=, state=)` (at least one; `state` is "pending",
        "blocked" or "running", default all three): one transaction, whatever the
        number of jobs. Returns how many jobs were cancelled now plus how many
        running ones were asked to stop (those end cancelled unless their handler
        finishes first); it does not wait for them.
        """
        self._require_open()
        if job_id is not None:
            if not (destination is None and task is None and state is None):
                raise TypeError("cancel takes a job id or a selection, not both")
            return await cancel_job(
                self._journal,
                check_job_id(job_id),
                clock=self.clock,
                waiters=self._require_waiters(),
                owner=self._owner,
                stop_here=self._stop_here(),
                poll=self.poll_interval,
            )
        return await cancel_selection(
            self._journal,
            select(destination, task, state),
            clock=self.clock,
            waiters=self._require_waiters(),
            owner=self._owner,
            stop_here=self._stop_here(),
        )

    def _stop_here(self) -> Callable[[list[int]], object] | None:
        return None if self._engine is None else self._engine.pool.cancel

    def _require_waiters(self) -> Waiters:
        assert self._waiters is not None
        return self._waiters
