"""What callers wait on: one job's outcome, or the whole engine going idle.

A job's outcome is written by this process (its waiters are woken at once) or
by another one sharing the journal (found by polling). Should the engine fail,
every waiter is failed with the same error at once, never left to hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from ._errors import JobCancelled, JobDead
from ._records import JobInfo, JobState

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._pool import WorkerPool

_MAX_POLL = 1.0  # seconds between looks at a job another process may run


class Waiters:
    """The futures callers wait on; one set per run of the queue (they belong to
    that run's event loop)."""

    def __init__(self) -> None:
        self._finished: dict[int, asyncio.Future[None]] = {}
        self._watchers: dict[int, int] = {}  # callers watching each job, by id
        #: Set whenever something finishes or a claim ends: idle detection looks again.
        self.activity = asyncio.Event()
        self._error: Callable[[], BaseException] | None = None
        #: Set once every waiter has been failed (the engine broke, or the queue stopped).
        self.failed = asyncio.Event()

    def finished(self, ids: list[int]) -> None:
        """These jobs' outcomes are written: wake their waiters."""
        finished = self._finished
        if finished:
            for job_id in ids:
                future = finished.pop(job_id, None)
                if future is not None and not future.done():
                    future.set_result(None)
        self.activity.set()

    def fail(self, error: Callable[[], BaseException]) -> None:
        """Fail every waiter, now and later, with the error `error()` makes."""
        if self._error is None:
            self._error = error
        for future in self._finished.values():
            if not future.done():
                future.set_exception(error())
                future.exception()  # marked as seen: a waiter that timed out reads none
        self._finished.clear()
        self.activity.set()
        self.failed.set()

    async def result(
        self,
        get: Callable[[int], Awaitable[JobInfo]],
        job_id: int,
        timeout: float | None,
        poll: float,
    ) -> Any:
        """The job's result once it succeeded; `JobDead`, `JobCancelled`, `TimeoutError`.
        `poll` is the first wait (seconds) before looking at the journal again."""
        with anyio.fail_after(timeout):
            async with self._watching(job_id) as watch:
                while True:
                    # Watch before looking: an outcome written while the journal is
                    # read must still wake this waiter (else it waits for a poll).
                    finished = watch()
                    info = await get(job_id)
                    if info.state is JobState.SUCCEEDED:
                        return info.result
                    if info.state is JobState.DEAD:
                        raise JobDead(job_id, info.last_error)
                    if info.state is JobState.CANCELLED:
                        raise JobCancelled(job_id)
                    if self._error is not None:
                        raise self._error()
                    # The job may run in another process: look again now and then.
                    with anyio.move_on_after(poll):
                        await asyncio.shield(finished)
                    poll = min(poll * 2, _MAX_POLL)

    async def finished_or_after(self, job_id: int, seconds: float) -> None:
        """Wait until this job's outcome is written by this process (`finished`), or
        `seconds` pass (it may be written by another). Raises if the engine failed."""
        if self._error is not None:
            raise self._error()
        async with self._watching(job_id) as watch:
            with anyio.move_on_after(seconds):
                await asyncio.shield(watch())

    @contextlib.asynccontextmanager
    async def _watching(self, job_id: int) -> AsyncIterator[Callable[[], asyncio.Future[None]]]:
        """While inside, `job_id` is watched: the function given returns the future
        that the job's next `finished` resolves. The future is dropped once its last
        watcher leaves, so that waiting on finished jobs leaves nothing behind."""
        self._watchers[job_id] = self._watchers.get(job_id, 0) + 1

        def watch() -> asyncio.Future[None]:
            future = self._finished.get(job_id)
            if future is None or future.done():
                future = self._finished[job_id] = asyncio.get_running_loop().create_future()
            return future

        try:
            yield watch
        finally:
            left = self._watchers.pop(job_id) - 1
            if left:
                self._watchers[job_id] = left
            else:
                self._finished.pop(job_id, None)


async def wait_idle(
    dispatcher: Dispatcher,
    pool: WorkerPool,
    waiters: Waiters,
    reclaim: Callable[[], Awaitable[int]],
    check: Callable[[], None],
) -> None:
    """Wait until nothing can run now: no job running or unwritten, no buffered
    job whose destination can take a call, nothing left to claim (see `testing`).
    `check` raises if the queue cannot go on."""
    activity = waiters.activity
    while True:
        activity.clear()
        check()
        if pool.in_flight or pool.has_unwritten or dispatcher.has_work_now():
            await activity.wait()
            continue
        # This process holds no running claim now, so an expired lease is
        # another process's: take it back here rather than wait for the timer.
        await reclaim()
        if await dispatcher.claim_now():
            continue
        if not (pool.in_flight or pool.has_unwritten or dispatcher.has_work_now()):
            return
