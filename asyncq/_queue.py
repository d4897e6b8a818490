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
from ._dispatcher import Dispatcher
from ._errors import JobCancelled, JobDead, JobNotFound, QueueNotRunning
from ._job import DEFAULT_MAX_PAYLOAD_BYTES, Job, JobInfo, JobState, encode_payload
from ._journal import Journal, JournalStats, NewJob, SqliteJournal
from ._pool import WorkerPool
from ._tasks import DEFAULT_DESTINATION, Task, TaskRegistry, default_task_name

log = logging.getLogger("asyncq")

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
        self.clock: Clock = clock or SystemClock()
        self._journal: Journal = journal or SqliteJournal(self.path, synchronous=synchronous)
        self._registry = TaskRegistry()
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._open = False
        self._dispatcher: Dispatcher | None = None
        self._pool: WorkerPool | None = None
        self._workers: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._finished: dict[int, asyncio.Future[None]] = {}
        self._activity = asyncio.Event()

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
    ) -> Job:
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
        task: Task[..., Any],
        payload: dict[str, Any],
        *,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        key: str | None = None,
        destination: str | None = None,
    ) -> Job:
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
    ) -> list[Job]:
        """Write many jobs, one keyword dict each, in one transaction: all or none."""
        resolved = self._registry.resolve(task)
        now = self.clock.now()
        run_at = _run_at(now, delay, at)
        name = resolved.name
        dest = destination or resolved.destination
        limit = self.max_payload_bytes
        check = resolved.check_payload
        jobs = [
            NewJob(name, encode_payload(name, check(p), limit), dest, priority, run_at)
            for p in payloads
        ]
        inserted = await self._insert(jobs, now)
        return [Job(self, i.id, created=i.created) for i in inserted]

    async def _insert(self, jobs: list[NewJob], now: float) -> list[Any]:
        if not self._open:
            raise QueueNotRunning()
        inserted = await self._journal.insert_many(jobs, now)
        if self._dispatcher is not None:
            self._dispatcher.notify()
        return inserted

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
        self._open = True
        if self.concurrency == 0:
            return
        await self._journal.reclaim_expired(self.clock.now())
        prefetch = self.prefetch or max(2 * self.concurrency, 256)
        self._dispatcher = Dispatcher(
            self._journal,
            self.clock,
            owner=self._owner,
            prefetch=prefetch,
            lease=self.lease,
            poll_interval=self.poll_interval,
        )
        self._dispatcher.on_idle = self._activity.set
        self._pool = WorkerPool(
            self._journal,
            self._dispatcher,
            self._registry,
            self.clock,
            owner=self._owner,
            concurrency=self.concurrency,
            default_timeout=self.default_timeout,
            on_written=self._job_finished,
        )
        self._workers = asyncio.create_task(self._pool.run_workers(), name="asyncq-workers")
        self._background = [
            asyncio.create_task(self._dispatcher.run(), name="asyncq-dispatcher"),
            asyncio.create_task(self._pool.write_outcomes(), name="asyncq-outcomes"),
            asyncio.create_task(self._keep_leases(), name="asyncq-leases"),
        ]

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
            if await self._journal.reclaim_expired(now):
                self._dispatcher.notify()

    def _require_open(self) -> None:
        if not self._open:
            raise QueueNotRunning()

    async def _wait_idle(self) -> None:
        """Wait until nothing is ready, buffered, running or unwritten (see `testing`)."""
        self._require_open()
        dispatcher, pool = self._dispatcher, self._pool
        if dispatcher is None or pool is None:
            raise RuntimeError("a producer queue (concurrency=0) runs no jobs")
        while True:
            self._activity.clear()
            if not (dispatcher.busy or pool.in_flight or pool.has_unwritten):
                # This process holds no claim now, so any expired lease is another
                # process's: take it back here rather than wait for the lease timer.
                now = self.clock.now()
                await self._journal.reclaim_expired(now)
                due = await self._journal.next_run_at()
                nothing_due = due is None or due > now
                if nothing_due and not (dispatcher.busy or pool.in_flight or pool.has_unwritten):
                    return
                dispatcher.notify()
            await self._activity.wait()


def _run_at(now: float, delay: float | None, at: float | None) -> float:
    if delay is not None and at is not None:
        raise ValueError("give delay= or at=, not both")
    if delay is not None:
        if delay < 0:
            raise ValueError("delay must be >= 0 seconds")
        return now + delay
    return now if at is None else float(at)
