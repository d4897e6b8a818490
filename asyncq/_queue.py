"""Queue: wires the journal, dispatcher and worker pool, and owns their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

import anyio

from ._clock import Clock, SystemClock
from ._codec import DEFAULT_MAX_PAYLOAD_BYTES, encode_payload, encode_payloads
from ._destinations import DestinationPolicy, Destinations, DestinationState
from ._dispatcher import Dispatcher
from ._errors import JobCancelled, JobDead, JobNotFound, QueueNotRunning
from ._job import Job
from ._journal import (
    ExpiredJob,
    Failed,
    Journal,
    JournalStats,
    NewBatch,
    NewJob,
    SqliteJournal,
)
from ._journal._sqlite import LEASE_EXPIRED
from ._policy import Circuit, Rate, Retry
from ._pool import WorkerPool
from ._records import JobInfo, JobState
from ._tasks import DEFAULT_DESTINATION, Task, TaskRegistry, default_task_name

log = logging.getLogger("asyncq")
_MAX_ADAPTIVE_PREFETCH = 2048

P = ParamSpec("P")
R = TypeVar("R")


class Queue:
    """A durable job queue in this process.

    `path` is the SQLite journal file (":memory:" for throwaway use).
    `concurrency` is the number of worker coroutines; 0 makes a producer that
    only submits, for a web process whose jobs a separate `asyncq worker` runs.
    Times are seconds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        concurrency: int = 64,
        lease: float = 30.0,
        default_timeout: float | None = 300.0,
        shutdown_timeout: float = 30.0,
        poll_interval: float = 0.05,
        prefetch: int | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        clock: Clock | None = None,
        journal: Journal | None = None,
        on_dead: Callable[[JobInfo], Awaitable[None] | None] | None = None,
        keep_finished: float | None = 7 * 86400.0,
    ) -> None:
        if concurrency < 0:
            raise ValueError("concurrency must be >= 0")
        if lease <= 0:
            raise ValueError("lease must be > 0 seconds")
        self.path = os.fspath(path)
        self.concurrency = concurrency
        self.lease = lease
        self.default_timeout = default_timeout
        self.shutdown_timeout = shutdown_timeout
        self.poll_interval = poll_interval
        self.prefetch = prefetch
        self.max_payload_bytes = max_payload_bytes
        #: Seconds succeeded and cancelled jobs stay in the journal (None: forever).
        self.keep_finished = keep_finished
        self.clock: Clock = clock or SystemClock()
        self._journal: Journal = journal or SqliteJournal(self.path, synchronous=synchronous)
        self._registry = TaskRegistry()
        self._destinations = Destinations(self.clock)
        #: Called once for each job that exhausts its retry policy (after the death is written).
        self.on_dead = on_dead
        self._hooks: set[asyncio.Task[None]] = set()
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._open = False
        self._dispatcher: Dispatcher | None = None
        self._pool: WorkerPool | None = None
        self._workers: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._broken: BaseException | None = None  # what stopped a part of the engine
        self._finished: dict[int, asyncio.Future[None]] = {}
        self._activity = asyncio.Event()

    # -- destinations ---------------------------------------------------------

    def destination(
        self,
        name: str,
        *,
        rate: Rate | None = None,
        concurrency: int | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        circuit: Circuit | None = Circuit(),  # noqa: B008 - frozen, shared safely
    ) -> None:
        """Declare how calls to `name` are paced, capped, retried and timed out.

        `name` may be a pattern (`"endpoint:*"`): each matching name gets its own
        bucket and state with this policy. `"*"` sets the defaults. `circuit=None`
        turns circuit breaking off. `timeout` (seconds) applies to tasks that set none.
        """
        self._destinations.declare(
            name,
            DestinationPolicy(
                rate=rate,
                concurrency=concurrency,
                retry=retry or Retry(),
                timeout=timeout,
                circuit=circuit,
            ),
        )

    async def pause(self, name: str) -> None:
        """Stop starting calls to `name` (in every process sharing the journal)."""
        await self._set_paused(name, paused=True)

    async def resume(self, name: str) -> None:
        """Start calls to `name` again."""
        await self._set_paused(name, paused=False)

    async def _set_paused(self, name: str, *, paused: bool) -> None:
        self._require_open()
        state = self._destinations.state(name)
        state.paused = paused
        await self._journal.save_destinations([self._destinations.record(state)])
        if self._dispatcher is not None:
            self._dispatcher.recheck(name)
            self._dispatcher.notify()

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
        Returns how many were sent."""
        self._require_open()
        if ids is None and destination is None:
            raise ValueError("redrive needs ids or destination=")
        count = await self._journal.redrive(
            ids=ids, destination=destination, now=self.clock.now(), spacing=spacing
        )
        if self._dispatcher is not None:
            self._dispatcher.notify()
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
        if self.on_dead is None or not job_ids:
            return
        hook = asyncio.create_task(self._call_on_dead(job_ids))
        self._hooks.add(hook)
        hook.add_done_callback(self._hooks.discard)

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

    # -- tasks -------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        destination: str = DEFAULT_DESTINATION,
        timeout: float | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, Awaitable[R]] | None = None,
        /,
        *,
        name: str | None = None,
        destination: str = DEFAULT_DESTINATION,
        timeout: float | None = None,
    ) -> Task[P, R] | Callable[[Callable[P, Awaitable[R]]], Task[P, R]]:
        """Register an `async def` handler. `name` defaults to `module.qualname`;
        `timeout` (seconds) defaults to the queue's `default_timeout`."""

        def register(handler: Callable[P, Awaitable[R]]) -> Task[P, R]:
            task = Task(
                self,
                handler,
                name=name or default_task_name(handler),
                destination=destination,
                timeout=timeout,
            )
            self._registry.add(task)
            return task

        return register if fn is None else register(fn)

    # -- submitting ---------------------------------------------------------

    # Only the result type is checked here (option keywords cannot sit between
    # P.args and P.kwargs); `task.options(...).submit(...)` checks the arguments too.
    @overload
    async def submit(
        self,
        task: Task[..., R],
        /,
        *args: Any,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        key: str | None = None,
        destination: str | None = None,
        **kwargs: Any,
    ) -> Job[R]: ...

    @overload
    async def submit(
        self,
        task: str,
        /,
        *args: Any,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        key: str | None = None,
        destination: str | None = None,
        **kwargs: Any,
    ) -> Job[Any]: ...

    async def submit(
        self,
        task: Task[..., Any] | str,
        /,
        *args: Any,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        key: str | None = None,
        destination: str | None = None,
        **kwargs: Any,
    ) -> Job[Any]:
        """Write one job; returns once it is durable.

        `delay` (seconds) or `at` (seconds since the epoch) hold it back;
        a higher `priority` runs first; `key` returns the live job with that key
        instead of writing a second one; `destination` overrides the task's.
        """
        resolved = self._registry.resolve(task)
        payload = resolved.payload_from_call(args, kwargs)
        return await self._submit_payload(
            resolved,
            payload,
            delay=delay,
            at=at,
            priority=priority,
            key=key,
            destination=destination,
        )

    async def _submit_payload(
        self,
        task: Task[..., R],
        payload: dict[str, Any],
        *,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        key: str | None = None,
        destination: str | None = None,
    ) -> Job[R]:
        now = self.clock.now()
        job = NewJob(
            task.name,
            encode_payload(task.name, payload, self.max_payload_bytes),
            destination or task.destination,
            priority,
            _run_at(now, delay, at),
            key,
        )
        (inserted,) = await self._insert([job], now)
        return Job(self, inserted.id, created=inserted.created)

    async def submit_many(
        self,
        task: Task[..., Any] | str,
        payloads: Sequence[dict[str, Any]],
        *,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        destination: str | None = None,
    ) -> list[Job[Any]]:
        """Write many jobs, one keyword dict each, in one transaction: all or none."""
        resolved = self._registry.resolve(task)
        now = self.clock.now()
        run_at = _run_at(now, delay, at)
        name = resolved.name
        dest = destination or resolved.destination
        self._require_open()
        check = resolved.check_payload
        for payload in payloads:
            check(payload)
        limit = self.max_payload_bytes
        # One encoder call for the whole list; the journal checks each payload's size.
        text = encode_payloads(name, payloads, limit)
        batch = NewBatch(name, text, len(payloads), dest, priority, run_at, limit)
        ids = await self._journal.insert_batch(batch, now)
        self._notify_dispatcher()
        return [Job(self, job_id) for job_id in ids]

    async def _insert(self, jobs: list[NewJob], now: float) -> list[Any]:
        self._require_open()
        inserted = await self._journal.insert_many(jobs, now)
        self._notify_dispatcher()
        return inserted

    def _notify_dispatcher(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.notify()

    # -- looking at jobs ----------------------------------------------------

    async def get(self, job_id: int) -> JobInfo:
        """The job as the journal holds it now; `JobNotFound` if there is none."""
        self._require_open()
        info = await self._journal.get(job_id)
        if info is None:
            raise JobNotFound(job_id)
        return info

    async def cancel(self, job_id: int) -> bool:
        """Cancel a job that has not started. True if it is now cancelled."""
        self._require_open()
        state = await self._journal.cancel(job_id, self.clock.now())
        if state is None:
            raise JobNotFound(job_id)
        if state is JobState.CANCELLED:
            self._job_finished([job_id])
        return state is JobState.CANCELLED

    async def stats(self) -> JournalStats:
        """Jobs per destination and state, from the journal."""
        self._require_open()
        return await self._journal.stats(self.clock.now())

    async def _wait_result(self, job_id: int, timeout: float | None) -> Any:
        with anyio.fail_after(timeout):
            poll = self.poll_interval
            while True:
                info = await self.get(job_id)
                if info.state is JobState.SUCCEEDED:
                    return info.result
                if info.state is JobState.DEAD:
                    raise JobDead(job_id, info.last_error)
                if info.state is JobState.CANCELLED:
                    raise JobCancelled(job_id)
                finished = self._finished.get(job_id)
                if finished is None:
                    finished = self._finished[job_id] = asyncio.get_running_loop().create_future()
                # The job may run in another process: look again now and then.
                with anyio.move_on_after(poll):
                    await asyncio.shield(finished)
                poll = min(poll * 2, 1.0)
                if finished.done():
                    self._finished.pop(job_id, None)

    def _outcomes_written(self, ids: list[int], failed: list[Failed]) -> None:
        self._job_finished(ids)
        self._job_died([f.id for f in failed if f.retry_at is None])

    def _job_finished(self, ids: list[int]) -> None:
        finished = self._finished
        if finished:
            for job_id in ids:
                future = finished.pop(job_id, None)
                if future is not None and not future.done():
                    future.set_result(None)
        self._activity.set()

    # -- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> Queue:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the journal, take back expired leases, and start the workers."""
        if self._open:
            raise RuntimeError("the queue is already running")
        await self._journal.open()
        self._broken = None
        try:
            self._destinations.load(await self._journal.load_destinations())
            if self.concurrency:
                await self._reclaim_expired()
        except BaseException:
            # The journal's thread would keep the process from exiting.
            await self._journal.close()
            raise
        self._open = True
        if self.concurrency == 0:
            return
        # Unless set, the prefetch follows the pace: 50 ms of work, from 256 up to 2048.
        prefetch = self.prefetch or max(2 * self.concurrency, 256)
        max_prefetch = self.prefetch or max(prefetch, _MAX_ADAPTIVE_PREFETCH)
        self._dispatcher = Dispatcher(
            self._journal,
            self.clock,
            self._destinations,
            owner=self._owner,
            prefetch=prefetch,
            max_prefetch=max_prefetch,
            lease=self.lease,
            poll_interval=self.poll_interval,
            reload=self._reload_destinations,
        )
        self._dispatcher.on_change = self._activity.set
        self._pool = WorkerPool(
            self._journal,
            self._dispatcher,
            self._registry,
            self._destinations,
            self.clock,
            owner=self._owner,
            concurrency=self.concurrency,
            default_timeout=self.default_timeout,
            on_written=self._outcomes_written,
            on_destination_change=self._destination_changed,
        )
        self._dispatcher.on_refused = self._pool.fail_unstarted
        self._workers = asyncio.create_task(self._pool.run_workers(), name="asyncq-workers")
        self._background = [
            asyncio.create_task(self._dispatcher.run(), name="asyncq-dispatcher"),
            asyncio.create_task(self._pool.write_outcomes(), name="asyncq-outcomes"),
            asyncio.create_task(self._keep_leases(), name="asyncq-leases"),
        ]
        for task in [self._workers, *self._background]:
            task.add_done_callback(self._background_ended)

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        """A part of the engine stopped on its own: say so now, loudly, and make
        the next call on the queue raise it (rather than run on half an engine)."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error(
            "asyncq %s failed; the queue has stopped working", task.get_name(), exc_info=error
        )
        if self._broken is None:
            self._broken = error
            self._activity.set()

    async def _reclaim_expired(self) -> int:
        now = self.clock.now()
        error = _LeaseExpired(LEASE_EXPIRED)

        def decide(job: ExpiredJob) -> float | None:
            retry = self._destinations.policy_for(job.destination).retry
            return retry.decide(
                attempt=job.attempts,
                error=error,
                first_attempt_at=job.first_started_at or now,
                now=now,
            )

        reclaimed = await self._journal.reclaim_expired(now, decide)
        self._job_died([job.id for job, retry_at in reclaimed if retry_at is None])
        return len(reclaimed)

    async def _reload_destinations(self) -> None:
        self._destinations.load(await self._journal.load_destinations())

    def _destination_changed(self, state: DestinationState) -> None:
        save = asyncio.create_task(
            self._journal.save_destinations([self._destinations.record(state)])
        )
        self._hooks.add(save)
        save.add_done_callback(self._hooks.discard)

    async def stop(self) -> None:
        """Let running jobs finish (up to `shutdown_timeout`), hand back the rest, close."""
        if not self._open:
            return
        try:
            if self._dispatcher is not None and self._pool is not None:
                await self._stop_workers(self._dispatcher, self._pool)
        finally:
            self._open = False
            self._dispatcher = self._pool = self._workers = None
            await self._journal.close()

    async def _stop_workers(self, dispatcher: Dispatcher, pool: WorkerPool) -> None:
        claimer, outcomes, leases = self._background
        dispatcher.close()
        # Let a claim in flight land, so its jobs are handed back, not orphaned.
        await asyncio.wait({claimer}, timeout=self.shutdown_timeout)
        pool.release(dispatcher.drain())
        assert self._workers is not None
        done, _ = await asyncio.wait({self._workers}, timeout=self.shutdown_timeout)
        if not done:
            log.warning("jobs still running after %gs: cutting them off", self.shutdown_timeout)
            self._workers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._workers
        for task in (claimer, outcomes, leases):
            task.cancel()
        errors = []
        for task in (claimer, outcomes, leases):
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the final flush
                errors.append(exc)
        await pool.flush()
        if self._hooks:
            await asyncio.wait(set(self._hooks), timeout=self.shutdown_timeout)
        if errors:
            raise errors[0]

    async def _keep_leases(self) -> None:
        assert self._dispatcher is not None
        interval = self.lease / 3
        while True:
            await self.clock.sleep(interval)
            now = self.clock.now()
            # Renew first: after a long pause, this process's own live jobs must
            # not look expired to the reclaim below.
            await self._journal.renew(self._owner, now + self.lease)
            if await self._reclaim_expired():
                self._dispatcher.notify()
            if self.keep_finished is not None:
                await self._journal.prune_finished(now - self.keep_finished)

    def _require_open(self) -> None:
        if not self._open:
            raise QueueNotRunning()
        if self._broken is not None:
            raise self._broken

    async def _wait_idle(self) -> None:
        """Wait until nothing can run now: no job running or unwritten, no buffered
        job whose destination can take a call, nothing left to claim (see `testing`)."""
        self._require_open()
        dispatcher, pool = self._dispatcher, self._pool
        if dispatcher is None or pool is None:
            raise RuntimeError("a producer queue (concurrency=0) runs no jobs")
        while True:
            self._activity.clear()
            self._require_open()
            if pool.in_flight or pool.has_unwritten or dispatcher.has_work_now():
                await self._activity.wait()
                continue
            # This process holds no running claim now, so an expired lease is
            # another process's: take it back here rather than wait for the timer.
            await self._reclaim_expired()
            if await dispatcher.claim_now():
                continue
            if not (pool.in_flight or pool.has_unwritten or dispatcher.has_work_now()):
                return


class _LeaseExpired(Exception):
    """The worker running the job stopped renewing its lease."""


def _run_at(now: float, delay: float | None, at: float | None) -> float:
    if delay is not None and at is not None:
        raise ValueError("give delay= or at=, not both")
    if delay is not None:
        if delay < 0:
            raise ValueError("delay must be >= 0 seconds")
        return now + delay
    return now if at is None else float(at)
