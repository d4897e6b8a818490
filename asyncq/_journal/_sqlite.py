"""The SQLite journal: one file in WAL mode, shared by any number of processes.

Writes go through the group-commit writer (`_groupcommit.py`): a turn of many
callers' inserts, outcomes and claims is one `BEGIN IMMEDIATE` transaction and
one hop to the connection's thread. Reads go through a second connection, so
neither waits for the other (both connections: `_sqlite_connections.py`). The SQL
is in `_sqlite_sql.py`, what a transaction runs in `_sqlite_writes.py`, what a read
makes of rows in `_sqlite_reads.py`, the file's checks in `_sqlite_file.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from .._codec import storable_text
from .._errors import JournalError
from .._policy import Rate
from .._records import JobInfo, JobState
from . import _sqlite_activity as monitoring
from . import _sqlite_cancel as cancelling
from . import _sqlite_dead as dead
from . import _sqlite_deps as deps
from . import _sqlite_leases as leases
from . import _sqlite_reads as reads
from . import _sqlite_retention as retention
from . import _sqlite_setup as setup
from . import _sqlite_sql as sql
from . import _sqlite_writes as writes
from ._activity import Activity
from ._activity_writes import PendingWrites
from ._groupcommit import GroupCommit, Turn
from ._messages import (
    Booked,
    Cancellation,
    Cancelled,
    Claim,
    ClaimLimits,
    DestinationRecord,
    ExpiredJob,
    Failed,
    Inserted,
    JournalStats,
    NewBatch,
    NewJob,
    Pruned,
    Released,
    RetryDecision,
    Started,
    Succeeded,
    WorkerRecord,
)
from ._rows import job_info
from ._sqlite_connections import SqliteConnections
from ._sqlite_file import check_identity

log = logging.getLogger("asyncq.journal")

T = TypeVar("T")


class SqliteJournal(SqliteConnections):
    """The default journal: one SQLite file in WAL mode, shared by any number of processes."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        max_wal_bytes: int = retention.MAX_WAL_BYTES,
    ) -> None:
        super().__init__(
            path, synchronous=synchronous, busy_timeout=busy_timeout, max_wal_bytes=max_wal_bytes
        )
        self._checkpoints = 0  # calls of checkpoint(), for PASSIVE_EVERY
        self._writer: GroupCommit[sqlite3.Connection] = GroupCommit(
            self._execute_turn, description=path, lock_timeout=setup.is_lock_timeout
        )
        # The counts the running transaction changes (only the connection's thread
        # touches it, inside a transaction).
        self._deltas: writes.Deltas = Counter()
        # The jobs the running transaction cancelled because a parent ended (see
        # `_sqlite_deps`), and who wants to hear of children settled.
        self._children_cancelled: list[int] = []
        self._on_children_settled: Callable[[list[int]], None] | None = None
        # Whether the turn took a path that can move blocked jobs (a settle, a
        # failure, a cancel): most turns cannot, and skip the look at their counts.
        self._blocked_may_have_moved = False
        self._pruner = retention.Pruner()
        # What the running turn did (only the connection's thread touches it, inside
        # a transaction), and what earlier turns did that is not written yet.
        self._activity = Activity()
        self._activity_written = False
        self._activity_log = monitoring.SqliteActivityLog()
        self._pending_writes = PendingWrites(
            self._activity_log, lambda: self._writer.call(lambda conn: None)
        )
        self._tokens = itertools.count(1)
        self._cursor = ""  # the destination served last by a claim

    @property
    def commits(self) -> int:
        """Transactions committed by the writer (for tests and benchmarks of group commit)."""
        return self._writer.commits

    # -- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        await self._connect()
        self._writer.start()

    async def close(self) -> None:
        if self._db is None:
            return
        await self._pending_writes.close()  # what this process counted, not written yet
        try:
            await self._writer.stop()
        finally:
            await self._close_connections()

    def _enqueue_call(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        return self._writer.call(fn)

    async def _execute_turn(self, turn: Turn[sqlite3.Connection]) -> list[Any]:
        if self._thread is None:
            raise JournalError(self.path, "the journal is not open")
        # Committed: the callers hear of it before this task resumes, so that a lone
        # submit's next one joins the next turn a loop turn sooner.
        try:
            return await self._thread.run_then(
                lambda conn: self._transaction(conn, turn),
                lambda results: self._committed(turn, results),
            )
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _committed(self, turn: Turn[sqlite3.Connection], results: list[Any]) -> None:
        """On the event loop, once a turn has committed and before the next one."""
        # Counted here, not in the transaction: the writer's thread is what a lone
        # submit waits for.
        self._activity_log.committed(self._activity, self._activity_written)
        if self._blocked_may_have_moved:
            self._tell_children_settled()
        self._pending_writes.after_commit()
        self._writer.committed(turn, results)

    def _transaction(self, conn: sqlite3.Connection, turn: Turn[sqlite3.Connection]) -> list[Any]:
        """One turn of the writer, run on the connection thread."""
        if self._identity is not None:
            # Before every write: acknowledging a write into a file that the path
            # no longer names would lose it silently (one stat, ~2 us per turn).
            check_identity(self.path, self._identity)
        conn.execute("BEGIN IMMEDIATE")
        deltas = self._deltas  # emptied, not made anew: a Counter's init is Python
        deltas.clear()
        activity = self._activity = Activity()
        self._children_cancelled = []
        self._blocked_may_have_moved = False
        try:
            # Inserts first, so a claim in the same turn can take the jobs just written.
            results = deps.insert_all(conn, turn.inserts, deltas)
            if turn.inserts:  # every count changed so far is an insert's (at about one time)
                activity.arrived(deltas, turn.inserts[-1][1])
                if turn.calls:
                    # A claim may follow: the inserts' counts now, not with the rest
                    # at the end, so that their triggers list the destinations that
                    # have ready jobs before it looks (see `_schema._V7`).
                    writes.save_counts(conn, deltas)
                    deltas.clear()
            for owner, outcomes in turn.outcomes.items():
                for batch in outcomes.batches:
                    self._write_outcomes(conn, owner, outcomes.now, batch)
            results.extend(call(conn) for call, _ in turn.calls)
            writes.save_counts(conn, deltas)
            self._activity_written = self._activity_log.save(conn, activity)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _write_outcomes(
        self, conn: sqlite3.Connection, owner: str, now: float, batch: writes.EncodedOutcomes
    ) -> None:
        """One batch of outcomes and the children they settle, and what they count
        for monitoring: a batch of successes alone (the common case) from the batch
        itself, one with failures, releases or cancels from what its statements
        moved, so that a retry is told from a job cancelled instead."""
        activity = self._activity
        successes: Mapping[str, int] | None = None
        if batch.fail or batch.release or batch.cancel:
            moves: writes.Deltas = Counter()
            every_success = writes.write_outcomes(conn, owner, now, batch, moves)
            self._ended(moves, now, retries=True)
        else:
            every_success = writes.write_outcomes(conn, owner, now, batch, self._deltas)
            if every_success:  # a stale ack (its lease had expired) is not counted
                successes = batch.complete_by_destination
        activity.batch(
            now,
            successes,
            batch.samples,
            batch.sample_weight,
            batch.other_calls,
            batch.other_samples,
        )
        cancelled = deps.settle_outcomes(
            conn, now, batch, self._deltas, every_success=every_success
        )
        if cancelled is None:
            return
        self._blocked_may_have_moved = True
        if cancelled:  # children of jobs that failed: rare, counted by a query
            self._children_cancelled += cancelled
            for destination, n in monitoring.destinations_of(conn, cancelled):
                activity.count("finished", destination, n, now)

    def _ended(self, moves: writes.Deltas, now: float, *, retries: bool) -> None:
        """Count what a write apart from the turn's counts did (see `Activity.ended`),
        then add it to them."""
        self._activity.ended(moves, now, retries=retries)
        self._deltas.update(moves)
        self._blocked_may_have_moved = True  # (the rare paths: no need to look closer)

    # -- writes -----------------------------------------------------------

    async def insert_many(self, jobs: Sequence[NewJob], now: float) -> list[Inserted]:
        if not jobs:
            return []
        return await self._writer.insert_jobs(jobs, now)

    async def insert_batch(self, batch: NewBatch, now: float) -> Sequence[int]:
        if not batch.job_count:
            return range(0)
        return await self._writer.insert_batch(batch, now)

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_until: float,
        now: float,
        limits: ClaimLimits | None = None,
    ) -> Claim:
        token = next(self._tokens)

        def claim(conn: sqlite3.Connection) -> leases.ClaimedRows:
            found, self._cursor = leases.claim(
                conn, owner, token, limit, lease_until, now, limits, self._cursor, self._deltas
            )
            return found

        # The rows become jobs here, on the event loop's thread, not inside the
        # transaction: Python work there holds the GIL while the turn waits for it,
        # and at 20,000 jobs/s turns that long doubled the submit latency.
        found = await self._enqueue_call(claim)
        jobs = leases.claimed_jobs(found, token)
        traces = leases.claimed_traces(found)
        return Claim(jobs, found.booked, found.taken, traces, found.at_cap)

    async def record_outcomes(
        self,
        owner: str,
        now: float,
        *,
        started: Sequence[Started] = (),
        succeeded: Sequence[Succeeded] = (),
        failed: Sequence[Failed] = (),
        released: Sequence[Released] = (),
        cancelled: Sequence[Cancelled] = (),
    ) -> list[int]:
        if not (started or succeeded or failed or released or cancelled):
            return []
        # An error's text may hold anything a handler put in its message.
        failed = [
            f if f.error.isascii() else f._replace(error=storable_text(f.error)) for f in failed
        ]
        batch = writes.encode_outcomes(started, succeeded, failed, released, cancelled, now=now)
        await self._writer.record(owner, now, batch)
        return batch.settled

    async def renew(self, owner: str, lease_until: float) -> int:
        return await self._enqueue_call(
            lambda conn: conn.execute(sql.RENEW, (lease_until, owner)).rowcount
        )

    async def reclaim_expired(
        self, now: float, decide: RetryDecision | None = None
    ) -> list[tuple[ExpiredJob, float | None]]:
        def reclaim(conn: sqlite3.Connection) -> list[tuple[ExpiredJob, float | None]]:
            moves: writes.Deltas = Counter()
            reclaimed, dead = leases.reclaim(conn, now, decide, moves)
            self._ended(moves, now, retries=True)
            for job, _ in reclaimed:
                if job.started:  # a call made, of unknown duration
                    self._activity.count("calls", job.destination, 1, now)
            self._settle(conn, [], dead, now)
            return reclaimed

        return await self._enqueue_call(reclaim)

    # -- reads ------------------------------------------------------------

    async def get(self, job_id: int) -> JobInfo | None:
        def get(conn: sqlite3.Connection) -> JobInfo | None:
            row = conn.execute(f"SELECT {sql.COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else job_info(row)

        return await self._read(get)

    async def next_run_at(self) -> float | None:
        # The dispatcher asks this whenever it goes idle: on the writer's own thread
        # it costs less than a hop to the read connection's (measured: one producer
        # awaiting each submit ran 12 % slower with it there).
        return await self._run(reads.next_run_at)

    def on_failure(self, callback: Callable[[BaseException], None] | None) -> None:
        self._writer.on_stopped = callback

    def on_change_elsewhere(self, callback: Callable[[], None] | None) -> None:
        """SQLite cannot tell one process of another's commit: polling it is."""

    async def changed_elsewhere(self) -> bool:
        version = (await self._run(lambda c: c.execute("PRAGMA data_version").fetchone()))[0]
        changed = version != self._data_version
        self._data_version = version
        return bool(changed)

    async def stats(self, now: float) -> JournalStats:
        unwritten = self._activity_log.unwritten()
        return await self._read(lambda conn: reads.stats(conn, now, unwritten))

    async def heartbeat(self, worker: WorkerRecord, now: float, alive_until: float) -> None:
        await self._enqueue_call(lambda conn: monitoring.heartbeat(conn, worker, now, alive_until))

    async def sign_off(self, owner: str) -> None:
        await self._enqueue_call(lambda conn: conn.execute(monitoring.SIGN_OFF, (owner,)))

    async def save_rates(self, rates: Mapping[str, float | None]) -> None:
        if rates:
            await self._enqueue_call(lambda conn: monitoring.save_rates(conn, rates))

    async def load_destinations(self) -> list[DestinationRecord]:
        return await self._read(reads.destinations)

    async def save_destinations(self, records: Sequence[DestinationRecord]) -> None:
        rows = [(r.name, int(r.paused), r.hold_until, r.circuit, r.circuit_until) for r in records]
        if rows:
            await self._enqueue_call(lambda conn: conn.executemany(sql.SAVE_DESTINATION, rows))

    async def take_tokens(
        self,
        wants: Mapping[str, int],
        rates: Mapping[str, Rate],
        clock: Callable[[], float],
        horizon: float,
    ) -> dict[str, Booked]:
        if not wants:
            return {}
        return await self._enqueue_call(
            lambda conn: writes.book(conn, wants, rates, clock, horizon)
        )

    async def dead_letters(
        self, *, destination: str | None, since: float | None, limit: int
    ) -> list[JobInfo]:
        return await self._read(lambda conn: dead.listed(conn, destination, since, limit))

    async def redrive(
        self,
        *,
        ids: Sequence[int] | None,
        destination: str | None,
        now: float,
        spacing: float = 0.0,
    ) -> int:
        return await self._enqueue_call(
            lambda conn: dead.redrive(conn, ids, destination, now, spacing, self._deltas)
        )

    async def purge(
        self, *, ids: Sequence[int] | None, destination: str | None, before: float | None
    ) -> int:
        return await self._enqueue_call(
            lambda conn: dead.purge(conn, ids, destination, before, self._deltas)
        )

    # -- periodic ticks ----------------------------------------------------

    async def make_tick(self, name: str, tick: float, job: NewJob, now: float) -> int | None:
        def make(conn: sqlite3.Connection) -> int | None:
            if conn.execute(sql.ADVANCE_TICK, (name, tick)).fetchone() is None:
                return None  # made already, here or by another process
            # The job is counted like any insert of the turn (`self._deltas`).
            inserted = writes.insert_keyed(conn, job, now, self._deltas)
            conn.execute(sql.TICK_JOB, (inserted.id, name))
            if inserted.created:
                # Listed as ready at once, for a claim later in this turn (an insert
                # turn's counts do it for its inserts: see `_transaction`).
                conn.execute(sql.MARK_READY, (job.destination,))
                self._activity.count("arrived", job.destination, 1, now)
            return inserted.id

        return await self._enqueue_call(make)

    async def last_ticks(self) -> dict[str, float]:
        return await self._read(reads.last_ticks)

    # -- dependencies (see `_sqlite_deps`) ----------------------------------

    def on_children_settled(self, callback: Callable[[list[int]], None] | None) -> None:
        self._on_children_settled = callback

    def _settle(
        self, conn: sqlite3.Connection, succeeded: Sequence[int], failed: Sequence[int], now: float
    ) -> None:
        """`settle_children` inside a write of this journal, for every path that makes
        jobs final; the jobs it cancels are told with the turn (see `_execute_turn`),
        and counted as finished."""
        moves: writes.Deltas = Counter()
        self._children_cancelled += deps.settle_children(conn, succeeded, failed, now, moves)
        self._ended(moves, now, retries=False)

    def _tell_children_settled(self) -> None:
        """After a commit: if blocked jobs moved (ready, or cancelled), say so."""
        self._blocked_may_have_moved = False
        callback = self._on_children_settled
        if callback is None:
            return
        if self._children_cancelled or any(
            n < 0 and state == "blocked" for (_, state), n in self._deltas.items()
        ):
            cancelled, self._children_cancelled = self._children_cancelled, []
            callback(cancelled)

    # -- cancellation (see _sqlite_cancel.py) ------------------------------

    async def cancel(self, job_id: int, now: float) -> Cancellation | None:
        return await self._ending(
            lambda conn, moves: cancelling.cancel_one(conn, job_id, now, moves), now
        )

    async def cancel_where(
        self,
        *,
        destination: str | None,
        task: str | None,
        states: Sequence[JobState],
        now: float,
    ) -> Cancellation:
        return await self._ending(
            lambda conn, moves: cancelling.cancel_where(
                conn, destination=destination, task=task, states=states, now=now, deltas=moves
            ),
            now,
        )

    def _ending(
        self, write: Callable[[sqlite3.Connection, writes.Deltas], T], now: float
    ) -> asyncio.Future[T]:
        """`write(conn, moves)` in the next turn, the jobs it moved counted as ended."""

        def run(conn: sqlite3.Connection) -> T:
            moves: writes.Deltas = Counter()
            result = write(conn, moves)
            self._ended(moves, now, retries=False)
            return result

        return self._enqueue_call(run)

    async def cancel_requests(self, owner: str) -> list[int]:
        rows = await self._read(lambda conn: conn.execute(cancelling.REQUESTS, (owner,)).fetchall())
        return [job_id for (job_id,) in rows]

    # -- retention (see `_sqlite_retention.py`) ----------------------------

    async def prune_finished(self, before: float | None, keep: int | None = None) -> Pruned:
        # One window per call, in a writer turn: a turn's share stays bounded.
        return await self._enqueue_call(
            lambda conn: self._pruner.prune(conn, self._deltas, before, keep)
        )

    async def checkpoint(self) -> None:
        if self.path == ":memory:":
            return
        max_wal, busy_ms = self.max_wal_bytes, self._busy_timeout_ms
        passive = self._checkpoints % retention.PASSIVE_EVERY == 0
        self._checkpoints += 1
        # On the writer's thread between its turns: a checkpoint cannot run inside
        # a transaction, and the writer's own connection never holds a snapshot.
        await self._run(
            lambda conn: retention.checkpoint(conn, self.path, max_wal, busy_ms, passive=passive)
        )
