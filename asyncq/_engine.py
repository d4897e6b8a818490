"""The engine of a queue that runs jobs, for one run (start to stop): the
dispatcher, the worker pool and the upkeep, the background tasks that drive
them, and their shutdown in bounded time.

The Queue starts the tasks through its supervisor (`spawn`), which turns the
death of any of them into a `QueueFailed` for every caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from ._backoff import Backoff, is_transient
from ._cancelling import CancelWatch
from ._clock import Clock
from ._destinations import Destinations, DestinationState
from ._dispatcher import Dispatcher
from ._instrument import Instrument
from ._journal import Failed, Journal
from ._pool import WorkerPool
from ._results import Waiters, wait_idle
from ._retention import Retention
from ._tasks import TaskRegistry
from ._upkeep import Upkeep

log = logging.getLogger("asyncq")

_MAX_ADAPTIVE_PREFETCH = 2048

Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]


class Engine:
    """Claims, runs and records jobs, and keeps their leases, until stopped."""

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        destinations: Destinations,
        registry: TaskRegistry,
        upkeep: Upkeep,
        waiters: Waiters,
        *,
        owner: str,
        concurrency: int,
        prefetch: int | None,
        lease: float,
        poll_interval: float,
        default_timeout: float | None,
        state: Mapping[str, Any],
        instrument: Instrument | None,
        reload: Callable[[], Awaitable[None]],
        on_written: Callable[[list[int], list[Failed]], None],
        hook: Callable[[Coroutine[Any, Any, None], str], None],
        retention: Retention,
    ) -> None:
        self._journal = journal
        self._destinations = destinations
        self._waiters = waiters
        self._hook = hook
        self.upkeep = upkeep
        self.retention = retention
        # Unless set, the prefetch follows the pace: 50 ms of work, from 256 up to 2048.
        low = prefetch or max(2 * concurrency, 256)
        high = prefetch or max(low, _MAX_ADAPTIVE_PREFETCH)
        self.dispatcher = Dispatcher(
            journal,
            clock,
            destinations,
            owner=owner,
            prefetch=low,
            max_prefetch=high,
            lease=lease,
            poll_interval=poll_interval,
            reload=reload,
        )
        self.dispatcher.on_change = waiters.activity.set
        self.dispatcher.keep_traces = instrument is not None and instrument.wants_traces
        self.pool = WorkerPool(
            journal,
            self.dispatcher,
            registry,
            destinations,
            clock,
            owner=owner,
            concurrency=concurrency,
            default_timeout=default_timeout,
            on_written=on_written,
            on_destination_change=self._destination_changed,
            state=state,
            instrument=instrument,
        )
        # Jobs an open circuit refuses are failed without a worker.
        self.dispatcher.on_refused = self.pool.fail_unstarted
        # Cancel requests from other processes: looked for on news of their writes.
        self.cancels = CancelWatch(
            journal, clock, self.pool, owner=owner, poll_interval=poll_interval
        )
        self.dispatcher.on_news_elsewhere = self.cancels.news
        self._workers: asyncio.Task[None] | None = None
        self._claimer: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []

    def start(self, spawn: Spawn) -> None:
        """Start the workers, the dispatcher, the outcome writer, the lease keeper
        and the journal's retention."""
        self._workers = spawn(self.pool.run_workers(), "workers")
        self._claimer = spawn(self.dispatcher.run(), "dispatcher")
        self._background = [
            self._claimer,
            spawn(self.pool.write_outcomes(), "outcome writer"),
            spawn(self.upkeep.run(), "lease keeper"),
            spawn(self.cancels.run(), "cancel watch"),
            spawn(self.retention.run(), "journal retention"),
        ]

    def halt(self) -> None:
        """Start no more jobs (a part failed; `stop` cleans up)."""
        self.dispatcher.close()

    async def wait_idle(self, check: Callable[[], None]) -> None:
        await wait_idle(
            self.dispatcher, self.pool, self._waiters, self.upkeep.reclaim_expired, check
        )

    def _destination_changed(self, state: DestinationState) -> None:
        self._hook(self._save_destination(state), "destination writer")

    async def _save_destination(self, state: DestinationState) -> None:
        backoff = Backoff("destination writer")
        while True:
            try:
                await self._journal.save_destinations([self._destinations.record(state)])
                return
            except Exception as exc:  # noqa: BLE001 - Backoff re-raises what is not transient
                await backoff.failed(exc)

    # -- stopping -------------------------------------------------------------

    async def let_workers_finish(self, deadline: float, shutdown_timeout: float) -> None:
        """Start no more jobs, hand back the unstarted ones, and wait until the
        running ones finish or `deadline` (loop time) passes."""
        assert self._workers is not None
        self.dispatcher.close()
        await self._hand_back_unstarted(deadline)
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        done, _ = await asyncio.wait({self._workers}, timeout=timeout)
        if not done:
            log.warning("jobs still running after %gs: cutting them off", shutdown_timeout)

    async def close(self, end: float, grace: float) -> list[BaseException]:
        """Cut off what still runs, hand its jobs back, write the last outcomes.

        Waits end by `end` (loop time), except that a claim in flight gets up to
        `grace` to land. Returns the errors the background tasks ended with."""
        assert self._workers is not None
        loop = asyncio.get_running_loop()
        workers = self._workers
        self.dispatcher.close()
        await self._hand_back_unstarted(max(end, loop.time() + grace))
        if not workers.done():
            workers.cancel()
            await asyncio.wait({workers}, timeout=max(0.0, end - loop.time()))
        if not workers.done():
            count = self.pool.abandon()
            log.warning(
                "%d handler(s) ignored their cancellation: their jobs go back to the journal",
                count,
            )
        for task in self._background:
            task.cancel()
        await asyncio.wait(self._background)
        errors = [
            error
            for task in self._background
            if not task.cancelled() and (error := task.exception()) is not None
        ]
        await self._final_flush(end)
        return errors

    async def _hand_back_unstarted(self, until: float) -> None:
        """Release the jobs claimed and not started, once a claim in flight has landed
        (cancelling it would leave what it claims orphaned until its lease expires)."""
        assert self._claimer is not None
        timeout = max(0.0, until - asyncio.get_running_loop().time())
        await asyncio.wait({self._claimer}, timeout=timeout)
        self.pool.release(self.dispatcher.drain())

    async def _final_flush(self, end: float) -> None:
        """Write the last outcomes, waiting out a transient fault until `end`."""
        loop = asyncio.get_running_loop()
        backoff = Backoff("outcome writer")
        while True:
            try:
                await self.pool.flush()
                return
            except Exception as exc:  # noqa: BLE001 - logged; the journal may be gone
                if not is_transient(exc) or loop.time() >= end:
                    log.error(
                        "asyncq: the last outcomes could not be written (%s); their jobs "
                        "run again once their leases expire",
                        exc,
                    )
                    return
                await backoff.failed(exc)
