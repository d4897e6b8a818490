"""The worker pool: N coroutines that run jobs under their timeouts, turn each
outcome into a journal record through the destination's policy, and write
outcomes in batches."""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import anyio

# anyio imports its asyncio backend on first use, which made the first
# `async with queue` in a process some 20 ms slower than the next. Import it
# with the package instead (a Starlette or FastAPI app has it loaded already).
# The module is anyio's private one: if a release moves it, anyio's own lazy
# import still works, only later.
with contextlib.suppress(ImportError):
    import anyio._backends._asyncio

from . import _events as events
from ._backoff import Backoff
from ._clock import Clock, SystemClock
from ._codec import encode_result
from ._context import lifespan_state, running_job
from ._deadlines import Deadlines
from ._destinations import CircuitState, Destinations, DestinationState
from ._dispatcher import Dispatcher
from ._errors import (
    CircuitOpen,
    JournalError,
    PayloadError,
    PermanentFailure,
    RetryAfter,
    UnknownTask,
)
from ._instrument import AttemptEnd, Ended, Instrument
from ._journal import Cancelled, ClaimedJob, Failed, Journal, Released, Started, Succeeded
from ._tasks import TaskRegistry

_MAX_ERROR_CHARS = 4000
_YIELD_EVERY = 0.0005  # seconds of handlers that do not await before a worker yields

# How attempts end (see `_instrument.Outcome`), as constants: a success returns one
# without building anything.
_SUCCEEDED: Ended = ("succeeded", None)
_CANCELLED: Ended = ("cancelled", None)
_RELEASED: Ended = ("released", None)


def _seconds(micros: int | None) -> float | None:
    return None if micros is None else micros / 1_000_000


def describe_error(exc: BaseException) -> str:
    """`Type: message` and the last frames of the traceback, bounded in size.

    Always storable: a lone surrogate (`"\\udcff"`, from `os.fsdecode` or
    `surrogateescape`) is written as its escape, and an exception whose `str()`
    itself fails is still described."""
    try:
        message = str(exc)
    except Exception as broken:  # noqa: BLE001 - a user's __str__ may raise anything
        message = f"<str() failed: {type(broken).__qualname__}>"
    head = f"{type(exc).__qualname__}: {message}"
    frames = "".join(traceback.format_tb(exc.__traceback__, limit=-4))
    text = f"{head}\n{frames}".rstrip()
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS] + "\n[...]"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class WorkerPool:
    """Runs jobs from the dispatcher; owns the buffer of outcomes not yet written."""

    def __init__(
        self,
        journal: Journal,
        dispatcher: Dispatcher,
        registry: TaskRegistry,
        destinations: Destinations,
        clock: Clock,
        *,
        owner: str,
        concurrency: int,
        default_timeout: float | None,
        on_written: Callable[[list[int], list[Failed]], None],
        on_destination_change: Callable[[DestinationState], None],
        state: Mapping[str, Any],
        instrument: Instrument | None = None,
    ) -> None:
        self._journal = journal
        self._dispatcher = dispatcher
        self._registry = registry
        self._destinations = destinations
        self._existing = destinations.existing
        self._clock = clock
        self._owner = owner
        self._concurrency = concurrency
        self._default_timeout = default_timeout
        self._on_written = on_written
        self._on_destination_change = on_destination_change
        self._state = state  # the lifespan's, for `current_job().state`
        self._instrument = instrument  # metrics, traces: see `_worker`
        self._ends: dict[str, AttemptEnd | None] = {}  # see `Instrument.ends_by_destination`
        self._done: list[Succeeded] = []
        self._failed: list[Failed] = []
        self._released: list[Released] = []
        self._cancelled: list[Cancelled] = []
        # Running jobs stopped by `cancel` (recorded already): their handlers were
        # cancelled and may not have ended yet.
        self._stopped: set[int] = set()
        self._have_outcomes = asyncio.Event()
        # The outcome writer was woken since the last flush (by a start or an outcome).
        self._writer_woken = False
        self._running: dict[int, ClaimedJob] = {}
        self._deadlines = Deadlines()
        self._writing = False
        self._last_turn = 0.0  # loop time of the last turn the workers forced
        self._turn_wanted = False  # a worker yielded; the others follow until it comes

    @property
    def in_flight(self) -> int:
        """Jobs running now."""
        return len(self._running)

    @property
    def holds_jobs(self) -> bool:
        """Jobs of this process are running or claimed and waiting to start."""
        return bool(self._running) or self._dispatcher.buffered > 0

    @property
    def has_unwritten(self) -> bool:
        """Outcomes are waiting to be written, or being written."""
        return bool(
            self._done or self._failed or self._released or self._cancelled or self._writing
        )

    async def run_workers(self) -> None:
        async with anyio.create_task_group() as workers:
            for _ in range(self._concurrency):
                workers.start_soon(self._worker)

    async def _worker(self) -> None:
        dispatcher = self._dispatcher
        execute = self._execute
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        assert current is not None
        lifespan_state.set(self._state)  # this worker's own context: set once
        set_job = running_job.set
        # The instrument (metrics, traces) hears of each attempt's start and end, here
        # rather than in a coroutine wrapping `_execute`: a frame less per job. Chosen
        # once: without an instrument, a job costs one test more than without the hook.
        instrument = self._instrument
        attempt = None if instrument is None else instrument.attempt
        # Each destination's end, if the instrument gives one per destination.
        ends = self._ends if instrument is not None and instrument.ends_by_destination else None
        clock = self._clock
        now = time.time if type(clock) is SystemClock else clock.now  # its own now, a call less
        traces = dispatcher.traces  # filled only if the instrument wants them
        while True:
            job = dispatcher.take()
            if job is None:
                job = await dispatcher.next_job()
                if job is None:
                    return
            set_job(job)  # for current_job(); the next job replaces it
            try:
                if attempt is None:
                    await execute(job, current)
                else:
                    if ends is None:
                        end = attempt(job, traces.pop(job.id, None) if traces else None)
                    elif (end := ends.get(job.destination)) is None:
                        end = ends[job.destination] = attempt(job, None)
                    ended = _RELEASED  # if the worker is cancelled (shutdown): the job goes back
                    try:
                        ended = await execute(job, current)
                    finally:
                        if end is not None:
                            # Its duration on the queue's clock, from the start that
                            # `take` stamped just now (one clock reading, not two).
                            started_us = job.started_us
                            assert started_us is not None
                            end(ended[0], ended[1], now() - started_us / 1_000_000)
            finally:
                dispatcher.finished(job.destination)
            # Handlers that never await would let the workers run the whole prefetch
            # without the loop turning, starving the writer that acks and claims (and
            # the app sharing the loop). Yield when the loop has not turned for a
            # while, not after every job: a yield costs about a tenth of a no-op job.
            # Once one worker yields, every worker yields after its current job until
            # the loop has turned, so that a turn never waits for each ready worker's
            # own slice.
            if self._turn_wanted or loop.time() - self._last_turn > _YIELD_EVERY:
                if not self._turn_wanted:
                    self._turn_wanted = True
                    loop.call_soon(self._loop_turned, loop)
                await asyncio.sleep(0)

    def _loop_turned(self, loop: asyncio.AbstractEventLoop) -> None:
        self._turn_wanted = False
        self._last_turn = loop.time()

    async def _execute(self, job: ClaimedJob, current: asyncio.Task[Any]) -> Ended:
        """Run one job's handler and gather its outcome; how it ended."""
        task = self._registry.get(job.task)
        state = self._existing.get(job.destination) or self._destinations.state(job.destination)
        if task is None:
            return self._bury(
                job,
                UnknownTask(job.task),
                f"UnknownTask: no task named {job.task!r} is registered in the worker "
                f"process that claimed it (known: {self._registry.names()})",
            )
        payload = job.payload
        if not isinstance(payload, dict):
            reason = "the payload in the journal is not a JSON object"
            return self._bury(job, PayloadError(job.task, reason), f"PayloadError: {reason}")
        timeout = task.timeout
        if timeout is None:
            timeout = state.policy.timeout
        if timeout is None:
            timeout = self._default_timeout
        self._running[job.id] = job
        # The start is written with the next outcomes if the job still runs then, so
        # that a crash charges an attempt to this job (see Journal.reclaim_expired).
        # The start was stamped by `Lanes.take`, which handed the job over just now.
        started_us = job.started_us
        assert started_us is not None
        if not self._writer_woken:  # once per flush: an Event.set per job cost 1 %
            self._writer_woken = True
            self._have_outcomes.set()
        self._deadlines.start(job.id, current, timeout)
        try:
            value = await task.fn(**payload)
        except asyncio.CancelledError:
            if self._stopped and self._was_stopped(job.id, current):
                if current.cancelling():
                    raise  # this worker is being cancelled as well (shutdown)
                return _CANCELLED
            if self._deadlines.finish(job.id):
                return self._overran(job, state, timeout)
            if current.cancelling():
                # This worker is being cancelled (shutdown deadline): the job goes
                # back to the journal unfinished and runs again later.
                self._released.append(Released(job.id, job.token))
                self._have_outcomes.set()
                raise
            error = asyncio.CancelledError("cancelled inside the handler")
            return self._failure(job, state, error)
        except BaseException as exc:  # noqa: BLE001 - a handler may raise anything at all
            if self._stopped and self._was_stopped(job.id, current):
                return _CANCELLED  # its cancellation became an error: recorded cancelled
            if self._deadlines.finish(job.id):  # it turned our cancellation into an error
                return self._overran(job, state, timeout)
            return self._failure(job, state, exc)
        else:
            if self._stopped and self._was_stopped(job.id, current):
                return _CANCELLED  # it swallowed its cancellation: it was recorded cancelled
            if self._deadlines.finish(job.id):  # it swallowed our cancellation
                return self._overran(job, state, timeout)
            # tuple.__new__: a NamedTuple's own __new__ is a Python call (3.4k instructions
            # against 1.9k), and one is made per job.
            outcome = (job.id, job.token, encode_result(value), started_us, job.destination)
            self._done.append(tuple.__new__(Succeeded, outcome))
            if not self._writer_woken:
                self._writer_woken = True
                self._have_outcomes.set()
            if state.consecutive_failures or state.circuit != CircuitState.CLOSED:
                self._circuit(state, failed=False)
            return _SUCCEEDED
        finally:
            del self._running[job.id]

    def cancel(self, ids: list[int]) -> int:
        """Stop these jobs if this process holds them, and record them cancelled now:
        a running handler's coroutine gets `CancelledError` (whatever it does then,
        the job stays cancelled), a job not started leaves the prefetch. The number
        found; a job not here (finished, or another process's) is left alone."""
        outcomes = [
            Cancelled(job.id, job.token, None, job.destination)
            for job in self._dispatcher.remove(set(ids))
        ]
        for job_id in ids:
            job = self._running.get(job_id)
            task = self._deadlines.task_of(job_id)
            if job is None or task is None or job_id in self._stopped:
                continue
            self._stopped.add(job_id)
            outcomes.append(Cancelled(job_id, job.token, job.started_us, job.destination))
            task.cancel()
        if outcomes:
            self._cancelled += outcomes
            self._have_outcomes.set()
        return len(outcomes)

    def _was_stopped(self, job_id: int, current: asyncio.Task[Any]) -> bool:
        """Whether `cancel` stopped this job; if so, its cancellation is withdrawn
        from the worker (and a timeout's with it: the job is cancelled, not overrun)."""
        if job_id not in self._stopped:
            return False
        self._stopped.discard(job_id)
        self._deadlines.finish(job_id)
        if current.cancelling():
            current.uncancel()
        self._on_written([], [])  # no outcome, but news for whoever waits for idle
        return True

    def _bury(self, job: ClaimedJob, exc: BaseException, error: str) -> Ended:
        """Dead at once, without a policy: no retry could ever run this job."""
        self._failed.append(Failed(job.id, job.token, error, None, 0, None, job.destination))
        self._have_outcomes.set()
        events.dead_lettered(job.id, job.task, job.destination, job.attempts, error)
        return "dead", exc

    def _overran(self, job: ClaimedJob, state: DestinationState, timeout: float | None) -> Ended:
        error = TimeoutError(f"the handler ran longer than {timeout:g} s")
        return self._failure(job, state, error)

    def _failure(self, job: ClaimedJob, state: DestinationState, exc: BaseException) -> Ended:
        """Turn a failed attempt into a journal record through the destination's
        policy; how the attempt ended."""
        now = self._clock.now()
        policy = state.policy.retry
        error = describe_error(exc)
        if isinstance(exc, PermanentFailure):
            # The receiver answered, and said no: no retry, and not a sign it is down.
            record = Failed(job.id, job.token, error, None, 0, job.started_us, job.destination)
        elif isinstance(exc, RetryAfter) and job.snoozes < policy.max_snoozes:
            until = now + exc.seconds
            record = Failed(job.id, job.token, error, until, 1, job.started_us, job.destination)
            if until > state.hold_until:
                state.hold_until = until
                self._on_destination_change(state)
                events.retry_after_hold(
                    job.id, job.task, job.destination, job.attempts, exc.seconds, until
                )
        else:
            retry_at = policy.decide(
                attempt=job.attempts,
                error=exc,
                first_attempt_at=job.first_started_at or _seconds(job.started_us) or now,
                now=now,
            )
            record = Failed(job.id, job.token, error, retry_at, 0, job.started_us, job.destination)
            self._circuit(state, failed=True)
        self._failed.append(record)
        self._have_outcomes.set()
        if record.snoozed:
            return "snoozed", exc
        if record.retry_at is None:
            events.dead_lettered(job.id, job.task, job.destination, job.attempts, error)
            return "dead", exc
        events.retry_scheduled(
            job.id, job.task, job.destination, job.attempts, error, record.retry_at, now
        )
        return "retry", exc

    def _circuit(self, state: DestinationState, *, failed: bool) -> None:
        if state.record_outcome(failed, self._clock.now()):
            if state.circuit is CircuitState.OPEN:
                events.circuit_opened(state.name, state.consecutive_failures, state.circuit_until)
            elif state.circuit is CircuitState.CLOSED:
                events.circuit_closed(state.name)
            self._on_destination_change(state)

    def release(self, jobs: list[ClaimedJob]) -> None:
        """Hand claimed-but-unstarted jobs back to the journal."""
        self._released.extend(Released(job.id, job.token) for job in jobs)
        self._have_outcomes.set()

    def abandon(self) -> int:
        """Hand back the jobs whose handlers still run after being cut off (they
        ignored the cancellation): the journal gets them back as unfinished
        before it closes, whatever the handlers do later. The number handed back."""
        running = list(self._running.values())
        self.release(running)
        return len(running)

    async def write_outcomes(self) -> None:
        """Write outcomes as they come, one batch per journal turn, until cancelled.
        A transient journal fault (a full disk) is waited out: the outcomes are
        kept and written once it clears."""
        backoff = Backoff("outcome writer")
        while True:
            await self._have_outcomes.wait()
            try:
                await self.flush()
            except JournalError as exc:
                self._have_outcomes.set()  # they were put back: try again
                await backoff.failed(exc)
            else:
                backoff.succeeded()

    def _unwritten_starts(self) -> list[Started]:
        """Starts of running jobs not yet written (a finished job's outcome carries
        its start instead)."""
        starts = []
        for job in self._running.values():
            if job.started_us is not None and not job.start_written:
                job.start_written = True
                starts.append(Started(job.id, job.token, job.started_us))
        return starts

    async def flush(self) -> None:
        """Write every outcome gathered so far. If the write fails, they are kept
        for the next flush."""
        self._have_outcomes.clear()
        self._writer_woken = False
        done, self._done = self._done, []
        failed, self._failed = self._failed, []
        released, self._released = self._released, []
        cancelled, self._cancelled = self._cancelled, []
        started = self._unwritten_starts()
        if not (done or failed or released or cancelled or started):
            return
        self._writing = True
        # The outcomes reach the journal's writer before this task yields: a claim
        # made from now on is written after them, and sees the slots they free.
        self._dispatcher.outcomes_sent()
        try:
            settled = await self._journal.record_outcomes(
                self._owner,
                self._clock.now(),
                started=started,
                succeeded=done,
                failed=failed,
                released=released,
                cancelled=cancelled,
            )
        except BaseException:
            # Put them back ahead of any that came meanwhile; nothing is dropped.
            self._done[:0], self._failed[:0], self._released[:0] = done, failed, released
            self._cancelled[:0] = cancelled
            for start in started:
                job = self._running.get(start.id)
                if job is not None:
                    job.start_written = False
            raise
        finally:
            self._writing = False
        if done or failed or cancelled or settled:
            finished = [o.id for o in done] + [o.id for o in failed]
            self._on_written(finished + [o.id for o in cancelled] + settled, failed)

    def fail_unstarted(self, jobs: list[ClaimedJob], error: CircuitOpen) -> None:
        """Jobs refused without calling their handlers (their destination's circuit
        is open): each is a failed attempt, rescheduled by its policy's wait and stop."""
        now = self._clock.now()
        text = describe_error(error)
        instrument = self._instrument
        traces = self._dispatcher.traces
        events.circuit_refused(error.destination, len(jobs), error.until)
        for job in jobs:
            retry_at = self._destinations.policy_for(job.destination).retry.decide(
                attempt=job.attempts,
                error=error,
                first_attempt_at=job.first_started_at or now,
                now=now,
            )
            # Charged as an attempt with no handler start: the circuit answered for
            # the receiver, as a call failing fast would have.
            self._failed.append(Failed(job.id, job.token, text, retry_at, 0, None, job.destination))
            if retry_at is None:
                events.dead_lettered(job.id, job.task, job.destination, job.attempts, text)
            if instrument is not None:
                end = instrument.attempt(job, traces.pop(job.id, None))
                if end is not None:
                    end("retry" if retry_at is not None else "dead", error, 0.0)
        self._have_outcomes.set()
