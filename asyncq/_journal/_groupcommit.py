"""Group commit, for any backend: one writer task, one transaction per turn.

Calls that arrive while a transaction is being committed wait for the next one,
so a turn carries all of them (new jobs, outcomes, claims) in one transaction.
Throughput grows with load instead of paying a commit per job.

Faults stay with their callers. A turn that fails is retried as it is when
another process held the lock too long, failed whole when the store itself
failed (a full disk: every part would fail), and otherwise split into its parts,
so one bad call fails only its own caller. Whatever happens, the writer goes on;
if its task ever dies, every waiting caller and every later call gets the error
at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .._errors import JournalError
from ._messages import Inserted, NewBatch, NewJob

log = logging.getLogger("asyncq.journal")

C = TypeVar("C")  # the backend's connection
T = TypeVar("T")


@dataclass(slots=True)
class Outcomes:
    """The outcomes of one owner's jobs that a turn writes: one batch per `record`
    call, in the form the backend gave it (the SQLite journal encodes its
    batches before they reach the writer: see `SqliteJournal.record_outcomes`)."""

    now: float = 0.0
    batches: list[Any] = field(default_factory=list)


Call = Callable[[C], Any]
Insert = tuple[Sequence[NewJob] | NewBatch, float, "asyncio.Future[Any]"]


class Turn(Generic[C]):
    """What one transaction carries, and who waits for each part. (A plain class:
    one is made per turn, and a dataclass's default factories cost twice this.)"""

    __slots__ = ("calls", "inserts", "outcome_waiters", "outcomes", "resolved")

    def __init__(
        self,
        inserts: list[Insert] | None = None,
        outcomes: dict[str, Outcomes] | None = None,
        outcome_waiters: list[asyncio.Future[Any]] | None = None,
        calls: list[tuple[Call[C], asyncio.Future[Any]]] | None = None,
    ) -> None:
        self.inserts: list[Insert] = [] if inserts is None else inserts
        self.outcomes: dict[str, Outcomes] = {} if outcomes is None else outcomes
        self.outcome_waiters: list[asyncio.Future[Any]] = (
            [] if outcome_waiters is None else outcome_waiters
        )
        self.calls: list[tuple[Call[C], asyncio.Future[Any]]] = [] if calls is None else calls
        #: Set once `resolve` has run: a backend may resolve a committed turn itself,
        #: from its thread's wake-up, before the writer task resumes (see `GroupCommit`).
        self.resolved = False

    def __bool__(self) -> bool:
        return bool(self.inserts or self.outcome_waiters or self.calls)

    def futures(self) -> list[asyncio.Future[Any]]:
        return [f for *_, f in self.inserts] + self.outcome_waiters + [f for _, f in self.calls]

    def resolve(self, results: list[Any]) -> None:
        """Hand each waiter its result; `results` are the inserts' then the calls'."""
        values = iter(results)
        for *_, future in self.inserts:
            _settle(future, next(values))
        for future in self.outcome_waiters:
            _settle(future, None)
        for _, future in self.calls:
            _settle(future, next(values))
        self.resolved = True

    def fail(self, exc: BaseException) -> None:
        for future in self.futures():
            if not future.done():
                future.set_exception(exc)

    def split(self) -> list[Turn[C]]:
        """One turn per independent part, to find the part that fails."""
        parts: list[Turn[C]] = [Turn(inserts=[insert]) for insert in self.inserts]
        if self.outcome_waiters:
            parts.append(Turn(outcomes=self.outcomes, outcome_waiters=self.outcome_waiters))
        parts.extend(Turn(calls=[call]) for call in self.calls)
        return parts


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():  # the caller may have been cancelled while it waited
        future.set_result(value)


class GroupCommit(Generic[C]):
    """The writer: folds what callers hand it into one transaction per turn.

    `execute(turn)` runs a turn as one transaction and returns the inserts' then
    the calls' results. It may also resolve the turn itself once it has committed
    (`committed`), from a callback that runs before the writer task resumes:
    the callers then run first, and their next calls join the next turn without
    the loop turning once more for the writer. `lock_timeout(exc)` says whether a
    failure only means that another process held the write lock too long (the
    turn is then retried as it is).
    """

    def __init__(
        self,
        execute: Callable[[Turn[C]], Awaitable[list[Any]]],
        *,
        description: str,
        lock_timeout: Callable[[BaseException], bool],
    ) -> None:
        #: Called at once if the writer task ends on its own (see `_ended`).
        self.on_stopped: Callable[[BaseException], None] | None = None
        self._execute = execute
        self._description = description
        self._lock_timeout = lock_timeout
        self._turn: Turn[C] = Turn()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped: BaseException | None = None  # why the writer task ended early
        self._committing: Turn[C] | None = None
        #: Transactions committed (for tests and benchmarks of group commit).
        self.commits = 0

    def start(self) -> None:
        """Start the writer task on the running event loop."""
        # Created here, not in __init__: a queue may be opened again in a new loop.
        self._wake = asyncio.Event()
        self._turn = Turn()
        self._closing = False
        self._stopped = None
        self._task = asyncio.create_task(self._write_loop(), name="asyncq-journal-writer")
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        """Commit what is queued, then end the writer task."""
        task = self._task
        if task is None:
            return
        self._closing = True
        assert self._wake is not None
        self._wake.set()
        try:
            await asyncio.shield(task)
        except (Exception, asyncio.CancelledError):
            if not task.done():
                raise  # it is this caller that is being cancelled
            # Otherwise the task ended early: `_ended` logged it and failed its callers.
        finally:
            self._task = None

    # -- what callers hand the writer ----------------------------------------

    def call(self, fn: Callable[[C], T]) -> asyncio.Future[T]:
        """Run `fn(connection)` inside the next turn's transaction."""
        future: asyncio.Future[T] = self._new_future()
        self._turn.calls.append((fn, future))
        return future

    def insert_jobs(self, jobs: Sequence[NewJob], now: float) -> asyncio.Future[list[Inserted]]:
        """Insert jobs in the next turn: one `Inserted` per job, in order."""
        future: asyncio.Future[list[Inserted]] = self._new_future()
        self._turn.inserts.append((jobs, now, future))
        return future

    def insert_batch(self, batch: NewBatch, now: float) -> asyncio.Future[Sequence[int]]:
        """Insert a `submit_many` batch in the next turn: the new ids, in order."""
        future: asyncio.Future[Sequence[int]] = self._new_future()
        self._turn.inserts.append((batch, now, future))
        return future

    def record(self, owner: str, now: float, batch: object) -> asyncio.Future[None]:
        """Write `owner`'s outcomes `batch` (the backend's own form) in the next turn."""
        future: asyncio.Future[None] = self._new_future()
        outcomes = self._turn.outcomes.setdefault(owner, Outcomes())
        outcomes.now = max(outcomes.now, now)
        outcomes.batches.append(batch)
        self._turn.outcome_waiters.append(future)
        return future

    def committed(self, turn: Turn[C], results: list[Any]) -> None:
        """`turn` committed with `results`: count it and hand each caller its result."""
        self.commits += 1
        turn.resolve(results)

    def _new_future(self) -> asyncio.Future[Any]:
        if self._stopped is not None:
            raise JournalError(
                self._description, f"the journal's writer stopped ({self._stopped!r})"
            ) from self._stopped
        if self._task is None or self._closing or self._wake is None:
            raise JournalError(self._description, "the journal is not open")
        self._wake.set()
        return asyncio.get_running_loop().create_future()

    # -- the writer task --------------------------------------------------------

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            turn, self._turn = self._turn, Turn()
            if turn:
                self._committing = turn
                resolved_early = await self._commit(turn)
                self._committing = None
                if not resolved_early:
                    # Let the callers this commit woke run first: the next batch of
                    # outcomes, claims and submits then joins the next turn, instead
                    # of each kind taking a transaction of its own in alternation.
                    # (A turn resolved by `execute` itself woke them before this task.)
                    await asyncio.sleep(0)
                if self._closing and not self._turn:
                    # stop()'s wake may have been taken by this turn (a call handed
                    # over just before stop() and not awaited): nothing is left.
                    return
            elif self._closing:
                return

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The writer task ended: on its own only at close. Anything else fails
        every waiting caller now, and every later call."""
        if task.cancelled():
            error: BaseException = asyncio.CancelledError("the journal's writer was cancelled")
        else:
            exc = task.exception()
            if exc is None:
                return
            error = exc
            log.error("journal %s: the writer stopped", self._description, exc_info=exc)
        self._stopped = error
        failure = JournalError(self._description, f"the journal's writer stopped ({error!r})")
        if self._committing is not None:
            self._committing.fail(failure)
        self._turn.fail(failure)
        if self.on_stopped is not None:
            self.on_stopped(failure)

    async def _commit(self, turn: Turn[C]) -> bool:
        """Run `turn` until it commits or fails its callers; whether `execute`
        resolved it itself."""
        delay = 0.01
        while True:
            try:
                results = await self._execute(turn)
            except Exception as exc:  # noqa: BLE001 - every fault goes to its callers
                if self._lock_timeout(exc):
                    # Another process held the write lock past the busy timeout. The
                    # turn is intact (rolled back): wait and try again, so "database
                    # is locked" never reaches the caller.
                    log.warning("journal %s is locked; retrying in %.2fs", self._description, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                parts = turn.split()
                if len(parts) == 1 or getattr(exc, "transient", False):
                    # One caller, or a fault of the store that every part would meet.
                    turn.fail(exc)
                    return False
                # Something in the turn is bad: run each part alone so one bad
                # call fails only its own caller.
                for part in parts:
                    await self._commit(part)
                return False
            if turn.resolved:
                return True
            self.committed(turn, results)
            return False
