"""The PostgreSQL journal: the same queue on a database that several hosts share.

Writes go through the group-commit writer (`_groupcommit.py`), as on SQLite: a turn
of many callers' inserts, outcomes and claims is one transaction on the writer's
connection. Reads (get, stats, dead letters) go through a second connection, which
also LISTENs: a turn that makes work for others (new jobs, retries, jobs handed
back, cancels, pauses) NOTIFYs the schema's channel at commit, and every other
process's journal calls `on_change_elsewhere` at once. Claims take rows with
`FOR UPDATE SKIP LOCKED`, so processes on several hosts never wait for each other's
claims and never take one job twice; the calls of paced destinations are booked in
their shared bucket rows in the claim's transaction.

Time. Like every journal, this one takes the time from its caller and never reads
a clock in SQL, so the contract suite runs on a controlled clock. What makes hosts
agree is the clock the queue gives it: `DatabaseClock`, the host's clock corrected
by its offset from the database server's, measured when the journal opens (the
round trip with the smallest delay of a few, halved, bounds the error). So leases,
delays, retry times and buckets are all on the database's time, whatever the
hosts' own clocks say.

The connections are in `_postgres_connections.py` (a base class), the SQL in
`_postgres_sql.py`, what a turn runs in `_postgres_writes.py` and (dead letters,
pruning) `_postgres_dead.py`, reads in `_postgres_reads.py`, dependencies and
cancellation in `_postgres_deps.py`, the schema in `_postgres_schema.py`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from .._policy import Rate
from .._records import JobInfo, JobState
from . import _postgres_activity as monitoring
from . import _postgres_dead as dead
from . import _postgres_deps as deps
from . import _postgres_reads as reads
from . import _postgres_sql as sql
from . import _postgres_writes as writes
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
from ._postgres_connections import Conn, PostgresConnections, terminate
from ._postgres_deps import Deltas, Settled
from ._postgres_schema import migrate
from ._rows import job_info

log = logging.getLogger("asyncq.journal")

T = TypeVar("T")


class PostgresJournal(PostgresConnections):
    """A journal in a PostgreSQL database, shared by any number of processes on any
    number of hosts. `dsn` is a `postgresql://` connection string; asyncq's tables
    live in `schema` (default: the DSN's `?schema=` parameter, else "asyncq")."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        connect_timeout: float = 10.0,
        local_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            dsn, schema=schema, connect_timeout=connect_timeout, local_clock=local_clock
        )
        self._writer: GroupCommit[Conn] = GroupCommit(
            self._execute_turn, description=self.description, lock_timeout=self._is_conflict
        )
        self._tokens = itertools.count(1)
        self._cursor = ""  # the destination served last by a claim
        self._turn_news = False
        self._turn_settled = Settled()
        # What the running turn changed: counts of jobs by destination and state,
        # and the activity it counts for stats() (see `_postgres_activity.py`); and
        # what earlier turns counted that is not written yet.
        self._deltas: Deltas = Counter()
        self._activity = Activity()
        self._activity_written = False
        self._activity_log = monitoring.PostgresActivityLog(self._instance)
        self._pending_writes = PendingWrites(self._activity_log, lambda: self._call(_nothing))
        self._on_children_settled: Callable[[list[int]], None] | None = None

    @property
    def commits(self) -> int:
        """Transactions committed by the writer (for tests and benchmarks of group commit)."""
        return self._writer.commits

    # -- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        self._reader_lock = asyncio.Lock()
        self._conn = await self._connect()
        try:
            await migrate(self._conn, self.schema, self.description)
            await monitoring.fold_counts(self._conn, self.description)
            self.clock_offset = await self._measure_offset(self._conn)
            self._reader = await self._connect_reader()
        except BaseException as exc:  # noqa: BLE001 - closed, then raised as it was
            await self._close_connections()
            raise self._translate(exc) from None
        self._open = True
        self._writer.start()

    async def close(self) -> None:
        if not self._open:
            return
        await self._pending_writes.close()  # what this process counted, not written yet
        # This process's counts join the shared rows, so that the rows of processes
        # that closed do not pile up (a killed one's are folded by the next to start).
        with contextlib.suppress(Exception):  # the writer's fault is told elsewhere
            await self._call(lambda conn: conn.execute(monitoring.FOLD_COUNTS, self._instance))
        self._open = False
        try:
            await self._writer.stop()
        finally:
            await self._close_connections()

    # -- the writer --------------------------------------------------------

    async def _execute_turn(self, turn: Turn[Conn]) -> list[Any]:
        settled = self._turn_settled = Settled()
        deltas = self._deltas = Counter()
        activity = self._activity = Activity()
        self._activity_written = False
        self._turn_news = bool(turn.inserts)
        xid: str | None = None
        try:
            conn = await self._writer_connection()
            transaction = conn.transaction()
            await transaction.start()
            try:
                # Inserts first, so a claim in the same turn can take the jobs just written.
                results = await writes.insert_all(conn, turn.inserts, deltas)
                if turn.inserts:  # every count changed so far is an insert's
                    activity.arrived(deltas, turn.inserts[-1][1])
                for owner, outcomes in turn.outcomes.items():
                    for batch in outcomes.batches:
                        await self._write_outcomes(conn, owner, outcomes.now, batch)
                        self._turn_news |= batch.news
                for call, _ in turn.calls:
                    results.append(await call(conn))
                self._activity_written = await self._activity_log.save(conn, activity)
                # NOTIFY: delivered at commit, to every process listening but this one.
                # Outcomes name their attempt and can be written twice; new jobs and
                # claims cannot: keep the transaction's id, to ask the server whether
                # it committed if the connection is lost at COMMIT.
                news = self._turn_news or settled.moved
                xid = await monitoring.end_turn(
                    conn,
                    self._instance,
                    deltas,
                    (self._channel, self._instance) if news else None,
                    xid=bool(turn.inserts or turn.calls),
                )
            except BaseException:
                if not conn.is_closed():
                    with contextlib.suppress(Exception):  # the fault raised below says why
                        await transaction.rollback()
                raise
            await transaction.commit()
        except Exception as exc:
            translated = self._translate(exc)
            if self._is_lost(translated):
                terminate(self._conn)  # the next turn connects afresh
                self._conn = None
                if xid is not None and await self._committed(xid):
                    log.warning(
                        "journal %s: lost the connection at COMMIT; the server says the "
                        "transaction committed",
                        self.description,
                    )
                    self._committed_turn(settled)
                    return results
            raise translated from exc
        self._committed_turn(settled)
        return results

    def _committed_turn(self, settled: Settled) -> None:
        """After a turn's commit: count its activity, and tell of children settled."""
        self._activity_log.committed(self._activity, self._activity_written)
        self._tell_children_settled(settled)
        self._pending_writes.after_commit()

    async def _write_outcomes(self, conn: Conn, owner: str, now: float, batch: Any) -> None:
        """One batch of outcomes, and what it counts for stats()."""
        moves: Deltas = Counter()
        await writes.write_outcomes(conn, owner, now, batch, self._turn_settled, moves)
        self._ended(moves, now, retries=True)
        self._children_ended(now)
        samples, weight, other_calls, other_samples = monitoring.outcome_samples(
            batch.succeeded, batch.failed, batch.cancelled, now
        )
        self._activity.batch(now, None, samples, weight, other_calls, other_samples)

    def _ended(self, moves: Deltas, now: float, *, retries: bool) -> None:
        """Count what a write did (see `Activity.ended`), and add it to the turn's
        changes of counts."""
        self._activity.ended(moves, now, retries=retries)
        self._deltas.update(moves)

    def _children_ended(self, now: float) -> None:
        """Count the children that the turn's writes so far settled (their moves to
        `scheduled` are not retries)."""
        moves = self._turn_settled.moves
        if moves:
            self._ended(moves, now, retries=False)
            moves.clear()

    def _call(self, fn: Callable[[Conn], Awaitable[T]], *, news: bool = False) -> asyncio.Future[T]:
        """Run `fn(connection)` in the next turn's transaction; `news`: the change is
        one that other processes should hear of (NOTIFY)."""

        async def run(conn: Conn) -> T:
            if news:
                self._turn_news = True
            return await fn(conn)

        return cast("asyncio.Future[T]", self._writer.call(run))

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

        async def claim(conn: Conn) -> writes.ClaimResult:
            found = await writes.claim(
                conn, owner, token, limit, lease_until, now, limits, self._cursor, self._deltas
            )
            self._cursor = found.cursor
            return found

        found = await self._call(claim)
        return Claim(found.jobs, found.booked, found.taken, found.traces, at_cap=found.at_cap)

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
        batch = writes.Outcomes(started, succeeded, failed, released, cancelled, [])
        await self._writer.record(owner, now, batch)
        return batch.settled

    async def renew(self, owner: str, lease_until: float) -> int:
        async def renew(conn: Conn) -> int:
            return writes.rowcount(await conn.execute(sql.RENEW, lease_until, owner))

        return await self._call(renew)

    async def reclaim_expired(
        self, now: float, decide: RetryDecision | None = None
    ) -> list[tuple[ExpiredJob, float | None]]:
        async def reclaim(conn: Conn) -> list[tuple[ExpiredJob, float | None]]:
            moves: Deltas = Counter()
            reclaimed = await writes.reclaim(conn, now, decide, self._turn_settled, moves)
            self._ended(moves, now, retries=True)
            for job, _ in reclaimed:
                if job.started:  # a call made, of unknown duration
                    self._activity.count("calls", job.destination, 1, now)
            self._children_ended(now)
            self._turn_news |= bool(reclaimed)
            return reclaimed

        return await self._call(reclaim)

    # -- reads ------------------------------------------------------------

    async def get(self, job_id: int) -> JobInfo | None:
        return await self._read(lambda conn: reads.get(conn, job_id))

    async def next_run_at(self) -> float | None:
        return await self._read(reads.next_run_at)

    def on_failure(self, callback: Callable[[BaseException], None] | None) -> None:
        self._writer.on_stopped = callback

    def on_change_elsewhere(self, callback: Callable[[], None] | None) -> None:
        self._on_change = callback

    async def changed_elsewhere(self) -> bool:
        # A round trip on the listening connection: the server sends every
        # notification committed before it ahead of its answer.
        await self._read(lambda conn: conn.execute("SELECT 1"))
        changed, self._changed = self._changed, False
        return changed

    async def stats(self, now: float) -> JournalStats:
        unwritten = self._activity_log.unwritten()
        return await self._read(lambda conn: monitoring.stats(conn, now, unwritten))

    async def heartbeat(self, worker: WorkerRecord, now: float, alive_until: float) -> None:
        await self._call(lambda conn: monitoring.heartbeat(conn, worker, now, alive_until))

    async def sign_off(self, owner: str) -> None:
        async def sign_off(conn: Conn) -> None:
            await conn.execute(sql.SIGN_OFF, owner)

        await self._call(sign_off)

    async def save_rates(self, rates: Mapping[str, float | None]) -> None:
        if not rates:
            return
        names, values = list(rates), list(rates.values())

        async def save(conn: Conn) -> None:
            await conn.execute(sql.SAVE_RATES, names, values)

        await self._call(save)

    async def load_destinations(self) -> list[DestinationRecord]:
        rows = await self._read(lambda conn: conn.fetch(sql.LOAD_DESTINATIONS))
        return [DestinationRecord(*row) for row in rows]

    async def save_destinations(self, records: Sequence[DestinationRecord]) -> None:
        if not records:
            return
        columns = (
            [r.name for r in records],
            [r.paused for r in records],
            [r.hold_until for r in records],
            [r.circuit for r in records],
            [r.circuit_until for r in records],
        )

        async def save(conn: Conn) -> None:
            await conn.execute(sql.SAVE_DESTINATIONS, *columns)

        await self._call(save, news=True)

    async def take_tokens(
        self,
        wants: Mapping[str, int],
        rates: Mapping[str, Rate],
        clock: Callable[[], float],
        horizon: float,
    ) -> dict[str, Booked]:
        if not wants:
            return {}
        return await self._call(lambda conn: writes.book(conn, wants, rates, clock, horizon))

    async def dead_letters(
        self, *, destination: str | None, since: float | None, limit: int
    ) -> list[JobInfo]:
        rows = await self._read(lambda conn: conn.fetch(sql.LIST_DEAD, destination, since, limit))
        return [job_info(row) for row in rows]

    async def redrive(
        self,
        *,
        ids: Sequence[int] | None,
        destination: str | None,
        now: float,
        spacing: float = 0.0,
    ) -> int:
        return await self._call(
            lambda conn: dead.redrive(conn, ids, destination, now, spacing, self._deltas),
            news=True,
        )

    async def purge(
        self, *, ids: Sequence[int] | None, destination: str | None, before: float | None
    ) -> int:
        return await self._call(
            lambda conn: dead.purge(conn, ids, destination, before, self._deltas)
        )

    # -- periodic ticks ----------------------------------------------------

    async def make_tick(self, name: str, tick: float, job: NewJob, now: float) -> int | None:
        async def make(conn: Conn) -> int | None:
            if await conn.fetchval(sql.ADVANCE_TICK, name, tick) is None:
                return None  # made already, here or by another process
            moves: Deltas = Counter()
            inserted = await writes.insert_one(conn, job, now, moves)
            self._activity.arrived(moves, now)
            self._deltas.update(moves)
            await conn.execute(sql.TICK_JOB, inserted.id, name)
            return inserted.id

        return await self._call(make, news=True)

    async def last_ticks(self) -> dict[str, float]:
        rows = await self._read(lambda conn: conn.fetch("SELECT name, last_tick FROM periodic"))
        return {name: float(tick) for name, tick in rows}

    # -- dependencies ----------------------------------------------------------

    def on_children_settled(self, callback: Callable[[list[int]], None] | None) -> None:
        self._on_children_settled = callback

    def _tell_children_settled(self, settled: Settled) -> None:
        """After a commit: if blocked jobs moved (ready, or cancelled), say so."""
        if self._on_children_settled is not None and (settled.moved or settled.cancelled):
            self._on_children_settled(settled.cancelled)

    # -- cancellation ------------------------------------------------------

    async def cancel(self, job_id: int, now: float) -> Cancellation | None:
        async def cancel(conn: Conn) -> Cancellation | None:
            moves: Deltas = Counter()
            cancellation = await deps.cancel_one(conn, job_id, now, self._turn_settled, moves)
            self._ended(moves, now, retries=False)
            self._children_ended(now)
            return cancellation

        return await self._call(cancel, news=True)

    async def cancel_where(
        self,
        *,
        destination: str | None,
        task: str | None,
        states: Sequence[JobState],
        now: float,
    ) -> Cancellation:
        async def cancel(conn: Conn) -> Cancellation:
            moves: Deltas = Counter()
            cancellation = await deps.cancel_where(
                conn,
                destination=destination,
                task=task,
                states=states,
                now=now,
                settled=self._turn_settled,
                moves=moves,
            )
            self._ended(moves, now, retries=False)
            self._children_ended(now)
            return cancellation

        return await self._call(cancel, news=True)

    async def cancel_requests(self, owner: str) -> list[int]:
        rows = await self._read(lambda conn: conn.fetch(deps.REQUESTS, owner))
        return [row[0] for row in rows]

    # -- retention ---------------------------------------------------------

    async def prune_finished(self, before: float | None, keep: int | None = None) -> Pruned:
        return await self._call(lambda conn: dead.prune(conn, before, keep, self._deltas))

    async def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL keeps its own write-ahead log bounded."""


async def _nothing(conn: Conn) -> None:
    """A turn's call that writes nothing of its own (the turn writes the counts)."""
