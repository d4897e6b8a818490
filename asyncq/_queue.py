"""Queue: the public API, and the lifecycle of one queue: it opens the journal and
the lifespan, starts the engine, supervises every background task, and stops in
bounded time."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from ._backoff import retried_at_start
from ._clock import Clock, SystemClock
from ._codec import DEFAULT_MAX_PAYLOAD_BYTES
from ._context import as_state
from ._destinations import DestinationPolicy, Destinations
from ._engine import Engine
from ._errors import JobNotFound, QueueFailed, QueueNotRunning, WrongEventLoop
from ._http import Http, HttpMethods, http_concurrency
from ._instrument import Instrument
from ._journal import Failed, Journal, PostgresJournal, SqliteJournal, WorkerRecord
from ._journal._postgres_dsn import is_postgres_dsn
from ._monitoring import BacklogWatch, Monitoring
from ._operating import Operating
from ._periodic import PeriodicJobs
from ._policy import Circuit, Rate, Retry
from ._records import JobInfo
from ._results import Waiters
from ._retention import (
    DEFAULT_KEEP_FINISHED,
    DEFAULT_KEEP_FINISHED_JOBS,
    Retention,
    check_retention,
)
from ._scheduling import Scheduling
from ._submitting import Submitting
from ._tasks import DEFAULT_DESTINATION, Task, TaskRegistry, default_task_name
from ._upkeep import Upkeep
from ._validate import check_name

log = logging.getLogger("asyncq")

#: Seconds `stop()` gives handlers, after cancelling them at `shutdown_timeout`,
#: to end before it hands their jobs back to the journal and closes anyway.
SHUTDOWN_GRACE = 1.0

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: `Queue(lifespan=...)`: given the queue, an async context manager whose value
#: (a mapping, or None) handlers read as `current_job().state`.
Lifespan = Callable[["Queue"], AbstractAsyncContextManager[Mapping[str, Any] | None]]


class Queue(Submitting, Scheduling, Operating, Monitoring, HttpMethods):
    """A durable job queue in this process.

    `path` is the SQLite journal file (":memory:" for throwaway use), or a
    `postgresql://` connection string for a journal that several hosts share
    (extra `asyncq[postgres]`; `?schema=` names the schema, default "asyncq").
    `concurrency` is the number of worker coroutines; 0 makes a producer that
    only submits, for a web process whose jobs a separate `asyncq worker` runs.
    Times are seconds.

    `lifespan(queue)`, an async context manager, opens resources that handlers
    share (an HTTP session): it is entered when a queue that runs jobs starts,
    and exited when it stops, after the last handler ended; what it yields is
    `current_job().state`.

    Stopping is bounded: running handlers get `shutdown_timeout` seconds to
    finish, are then cancelled, and one that ignores its cancellation gets
    `SHUTDOWN_GRACE` (1 s) more. After that its job is handed back to the
    journal (it runs again later) and `stop()` returns, leaving that handler to
    the event loop. A caller's own timeout around `stop()` cuts the wait short
    the same way, without the grace.

    If a background part fails (the journal breaks), every waiting caller and
    every later call gets `QueueFailed`. Transient journal faults (a full disk)
    are waited out instead: outcomes are kept and written when the fault clears.

    A running queue belongs to the event loop that started it: a call from
    another thread or loop raises `WrongEventLoop` at once. After `stop()`, it
    can be started again in any loop.
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
        keep_finished: float | None = DEFAULT_KEEP_FINISHED,
        lifespan: Lifespan | None = None,
        keep_finished_jobs: int | None = DEFAULT_KEEP_FINISHED_JOBS,
    ) -> None:
        check_retention(keep_finished, keep_finished_jobs)
        if concurrency < 0:
            raise ValueError("concurrency must be >= 0")
        if lease <= 0:
            raise ValueError("lease must be > 0 seconds")
        self.path = os.fspath(path)
        if journal is None and is_postgres_dsn(self.path):
            journal = PostgresJournal(self.path)
            self.path = journal.description  # the connection string without its password
        self.concurrency = concurrency
        self.lease = lease
        self.default_timeout = default_timeout
        self.shutdown_timeout = shutdown_timeout
        self.poll_interval = poll_interval
        self.prefetch = prefetch
        self.max_payload_bytes = max_payload_bytes
        #: Seconds succeeded and cancelled jobs stay in the journal (None: forever).
        self.keep_finished = keep_finished
        #: At most this many succeeded and cancelled jobs stay, the newest (None: no bound).
        self.keep_finished_jobs = keep_finished_jobs
        # On PostgreSQL, the database server's time, whatever this host's clock says.
        default_clock = journal.clock() if isinstance(journal, PostgresJournal) else SystemClock()
        self.clock: Clock = clock or default_clock
        self._journal: Journal = journal or SqliteJournal(self.path, synchronous=synchronous)
        self._registry = TaskRegistry()
        self._periodic = PeriodicJobs()
        self._destinations = Destinations(self.clock)
        #: Called once for each job that exhausts its retry policy (after the death is written).
        self.on_dead = on_dead
        self._lifespan = lifespan
        # Metrics and traces (`asyncq.contrib`), attached by `_instrument.attach`.
        self._instrument: Instrument | None = None
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._open = False
        self._stopping = False
        # What one run (start to stop) owns. Nothing here is made before start():
        # futures and events belong to the loop that runs the queue.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: Waiters | None = None
        self._failure: QueueFailed | None = None
        self._engine: Engine | None = None
        self._hooks: set[asyncio.Task[None]] = set()
        self._watchers: list[asyncio.Task[None]] = []  # the instrument's background parts
        self._resources: AsyncExitStack | None = None
        self._add_http_task()
        # Backlog alerts (`on_backlog`): the rules outlive a run, the watch's task does not.
        self._backlog = BacklogWatch(self._journal, self.clock)
        self._backlog_task: asyncio.Task[None] | None = None

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
        http: Http | None = None,
    ) -> None:
        """Declare how calls to `name` are paced, capped, retried and timed out.

        `name` may be a pattern (`"endpoint:*"`): each matching name gets its own
        bucket and state with this policy. `"*"` sets the defaults. `circuit=None`
        turns circuit breaking off. `timeout` (seconds) applies to tasks that set none.
        `http` says how `submit_http` deliveries to it are made (see `Http`).
        """
        self._destinations.declare(
            check_name(name, "destination name"),
            DestinationPolicy(
                rate=rate,
                concurrency=http_concurrency(concurrency, http),
                retry=retry or Retry(),
                timeout=timeout,
                circuit=circuit,
                http=http,
            ),
        )

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
        if name is not None:
            check_name(name, "task name")
        check_name(destination, "destination name")

        def register(handler: Callable[P, Awaitable[R]]) -> Task[P, R]:
            task = Task(
                self,
                handler,
                name=check_name(name or default_task_name(handler), "task name"),
                destination=destination,
                timeout=timeout,
            )
            self._registry.add(task)
            return task

        return register if fn is None else register(fn)

    # -- looking at jobs ----------------------------------------------------

    async def get(self, job_id: int) -> JobInfo:
        """The job as the journal holds it now; `JobNotFound` if there is none."""
        self._require_open()
        info = await self._journal.get(job_id)
        if info is None:
            raise JobNotFound(job_id)
        return info

    async def _wait_result(self, job_id: int, timeout: float | None) -> Any:
        self._require_open()
        assert self._waiters is not None
        return await self._waiters.result(self.get, job_id, timeout, self.poll_interval)

    async def _wait_idle(self) -> None:
        """Wait until nothing can run now (see `asyncq.testing.run_until_idle`)."""
        self._require_open()
        if self._engine is None:
            raise RuntimeError("a producer queue (concurrency=0) runs no jobs")
        await self._engine.wait_idle(self._require_open)

    async def _until_failed(self) -> None:
        """Return once a part of the engine has failed (or the queue stopped)."""
        if self._waiters is not None:
            await self._waiters.failed.wait()

    def _outcomes_written(self, ids: list[int], failed: list[Failed]) -> None:
        assert self._waiters is not None
        self._waiters.finished(ids)
        self._job_died([f.id for f in failed if f.retry_at is None])

    def _children_settled(self, cancelled: list[int]) -> None:
        """Blocked jobs became ready or were cancelled (a parent ended, see `after=`)."""
        self._notify_dispatcher()
        if cancelled and self._waiters is not None:
            self._waiters.finished(cancelled)

    def _require_open(self) -> None:
        if not self._open:
            raise QueueNotRunning()
        if self._failure is not None:
            raise QueueFailed(self._failure.part, self._failure.cause)
        if asyncio.get_running_loop() is not self._loop:
            raise WrongEventLoop()

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
        try:
            await self.stop()
        except QueueFailed:
            if exc is None:
                raise
            # The body's own error goes on; the failure was logged when it happened.

    async def start(self) -> None:
        """Open the journal, take back expired leases, enter the lifespan, and
        start the workers."""
        if self._open:
            raise RuntimeError("the queue is already running")
        self._loop = asyncio.get_running_loop()
        self._waiters = Waiters()
        self._failure = None
        self._hooks = set()
        # The journal's own writer task is supervised too: if it dies, every
        # waiting caller learns it now, not at its next call.
        self._journal.on_failure(functools.partial(self._fail, "journal writer"))
        self._journal.on_children_settled(self._children_settled)
        await self._journal.open()
        resources = AsyncExitStack()
        engine = None
        try:
            self._destinations.load(await retried_at_start(self._journal.load_destinations))
            # For stats() in processes that do not declare them (the CLI, say).
            rates = self._destinations.declared_rates()
            await retried_at_start(lambda: self._journal.save_rates(rates))
            if self.concurrency:
                upkeep = Upkeep(
                    self._journal,
                    self.clock,
                    self._destinations,
                    owner=self._owner,
                    lease=self.lease,
                    on_reclaimed=self._reclaimed,
                    worker=WorkerRecord(
                        owner=self._owner,
                        host=socket.gethostname(),
                        pid=os.getpid(),
                        concurrency=self.concurrency,
                        started_at=self.clock.now(),
                    ),
                )
                await retried_at_start(upkeep.reclaim_expired)
                await retried_at_start(upkeep.heartbeat)
                state = None
                if self._lifespan is not None:
                    state = await resources.enter_async_context(self._lifespan(self))
                # HTTP sessions open at their first delivery; they close at stop.
                resources.push_async_callback(self._http_clients.close)
                engine = self._new_engine(upkeep, as_state(state))
        except BaseException:
            await resources.aclose()
            # The journal's thread would keep the process from exiting.
            await self._journal.close()
            raise
        self._resources = resources
        self._open = True
        self._stopping = False
        if engine is not None:
            self._engine = engine
            engine.start(self._spawn)
            self._periodic.start(self._journal, self.clock, self._spawn, self._notify_dispatcher)
        if self._instrument is not None:
            parts = self._instrument.background(self)
            self._watchers = [self._spawn(coro, part) for coro, part in parts]
        self._start_backlog_watch()

    def _new_engine(self, upkeep: Upkeep, state: Mapping[str, Any]) -> Engine:
        assert self._waiters is not None
        return Engine(
            self._journal,
            self.clock,
            self._destinations,
            self._registry,
            upkeep,
            self._waiters,
            owner=self._owner,
            concurrency=self.concurrency,
            prefetch=self.prefetch,
            lease=self.lease,
            poll_interval=self.poll_interval,
            default_timeout=self.default_timeout,
            state=state,
            instrument=self._instrument,
            reload=self._reload_destinations,
            on_written=self._outcomes_written,
            hook=self._hook,
            retention=Retention(
                self._journal,
                self.clock,
                keep_finished=self.keep_finished,
                keep_finished_jobs=self.keep_finished_jobs,
            ),
        )

    async def _reload_destinations(self) -> None:
        self._destinations.load(await self._journal.load_destinations())

    def _reclaimed(self, dead: list[int]) -> None:
        self._notify_dispatcher()
        self._job_died(dead)

    # -- supervision ------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], part: str) -> asyncio.Task[None]:
        """Start a background part; if it fails, the queue fails (see `_fail`)."""
        task = asyncio.create_task(coro, name=f"asyncq {part}")
        task.add_done_callback(functools.partial(self._part_ended, part))
        return task

    def _hook(self, coro: Coroutine[Any, Any, None], part: str) -> None:
        """A short background job (a hook, a state write), awaited at stop."""
        task = self._spawn(coro, part)
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    def _part_ended(self, part: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self._fail(part, error)

    def _fail(self, part: str, error: BaseException) -> None:
        """A part died: log it once, fail every waiting caller now, make every
        later call raise `QueueFailed`, and start no more jobs."""
        if self._failure is not None:
            return
        self._failure = QueueFailed(part, error)
        log.error("asyncq %s failed; the queue has stopped working", part, exc_info=error)
        if self._waiters is not None:
            self._waiters.fail(lambda: QueueFailed(part, error))
        if self._engine is not None:
            self._engine.halt()

    # -- stopping -------------------------------------------------------------

    async def stop(self) -> None:
        """Let running jobs finish (up to `shutdown_timeout`, then `SHUTDOWN_GRACE`),
        hand back the rest, exit the lifespan, close the journal.

        Raises `QueueFailed` if a part of the engine had failed, or what the
        lifespan raised on exit, once everything is closed."""
        if not self._open or self._stopping:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        end = loop.time()  # if the caller's own timeout cuts the wait short: no grace
        errors: list[BaseException] = []
        try:
            if self._engine is not None:
                await self._engine.let_workers_finish(deadline, self.shutdown_timeout)
            end = max(deadline, loop.time()) + SHUTDOWN_GRACE
        finally:
            # Also when the caller's timeout cancelled the wait above: what still
            # runs is cut off and handed back, and the journal is closed.
            await self._close(end, errors)
        if self._failure is not None:
            raise QueueFailed(self._failure.part, self._failure.cause)
        if errors:
            raise errors[0]

    async def _close(self, end: float, errors: list[BaseException]) -> None:
        loop = asyncio.get_running_loop()
        try:
            watchers, self._watchers = self._watchers, []
            for watcher in watchers:
                watcher.cancel()
            if watchers:
                await asyncio.wait(watchers)
            await self._stop_backlog_watch()
            await self._periodic.stop()
            if self._engine is not None:
                errors += await self._engine.close(end, SHUTDOWN_GRACE)
                await self._sign_off(self._engine.upkeep)
            if self._hooks:
                await asyncio.wait(set(self._hooks), timeout=max(0.0, end - loop.time()))
                for hook in self._hooks:
                    hook.cancel()
        finally:
            self._open = False
            self._engine = None
            if self._waiters is not None:
                self._waiters.fail(QueueNotRunning)
            try:
                if self._resources is not None:
                    resources, self._resources = self._resources, None
                    await resources.aclose()
            except Exception as exc:  # raised by stop() once all is closed
                log.exception("asyncq: the lifespan failed on exit")
                errors.append(exc)
            finally:
                await self._journal.close()

    async def _sign_off(self, upkeep: Upkeep) -> None:
        """This process no longer runs jobs: say so, so that it stops counting as a
        worker at once (if the journal cannot hear it, its heartbeat runs out)."""
        try:
            await upkeep.sign_off()
        except Exception as exc:  # noqa: BLE001 - the journal may be gone; stopping goes on
            log.warning("asyncq: could not sign this worker off (%s)", exc)
