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

The SQL is in `_postgres_sql.py`, what a turn runs in `_postgres_writes.py`,
dependencies and cancellation in `_postgres_deps.py`, the schema and its
migrations in `_postgres_schema.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from .._errors import JournalError
from .._policy import Rate
from .._records import JobInfo, JobState
from . import _postgres_activity as monitoring
from . import _postgres_deps as deps
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
from ._postgres_deps import Deltas, Settled
from ._postgres_dsn import describe, scrub
from ._postgres_schema import checked_schema_name, migrate

# A worker that stopped beating a day ago is forgotten (killed, it never signed off).
_GONE_AFTER = 86_400.0

log = logging.getLogger("asyncq.journal")

T = TypeVar("T")
Conn = Any  # asyncpg.Connection: asyncpg ships no type information

DEFAULT_SCHEMA = "asyncq"
_MISSING_DRIVER = "the PostgreSQL journal needs the asyncpg driver: pip install 'asyncq[postgres]'"
# Faults that a moment later may be gone: the server restarting, a connection cut.
_CONNECTION_LOST = frozenset(
    {"08000", "08003", "08006", "08001", "08004", "57P01", "57P02", "57P03"}
)
# Another transaction held what this one needed: the turn is run again as it was.
_CONFLICT = frozenset({"40P01", "40001", "55P03"})


def _driver() -> Any:
    try:
        import asyncpg
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(_MISSING_DRIVER, name=exc.name) from None
    return asyncpg


def split_dsn(dsn: str, schema: str | None) -> tuple[str, str]:
    """The connection string for the driver (without asyncq's own `schema` query
    parameter) and the schema: `schema` if given, else the DSN's, else "asyncq"."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in query if key == "schema"]
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    chosen = schema if schema is not None else (named[-1] if named else DEFAULT_SCHEMA)
    return urllib.parse.urlunsplit(parts._replace(query=rest)), checked_schema_name(chosen)


class DatabaseClock:
    """This host's clock, corrected by its offset from the database server's clock
    (`PostgresJournal.clock_offset`), so that every host sharing the database reads
    one time. Sleeps are local: only the time read is corrected."""

    def __init__(self, journal: PostgresJournal) -> None:
        self._journal = journal

    def now(self) -> float:
        return self._journal.local_clock() + self._journal.clock_offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class PostgresJournal:
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
        self._asyncpg = _driver()
        self._dsn, self.schema = split_dsn(dsn, schema)
        #: The connection string without its password, with the schema: for
        #: messages, logs and `repr`.
        self.description = describe(dsn)
        base = describe(self._dsn)
        self.description = f"{base}{'&' if '?' in base else '?'}schema={self.schema}"
        self._connect_timeout = connect_timeout
        self._server_settings = {"search_path": self.schema}
        if "application_name" not in urllib.parse.parse_qs(urllib.parse.urlsplit(self._dsn).query):
            # The DSN's own name, if it has one, names the connections in pg_stat_activity.
            self._server_settings["application_name"] = "asyncq"
        self._writer: GroupCommit[Conn] = GroupCommit(
            self._execute_turn, description=self.description, lock_timeout=self._is_conflict
        )
        self._conn: Conn | None = None
        self._reader: Conn | None = None
        self._reader_lock = asyncio.Lock()
        self._open = False
        self._tokens = itertools.count(1)
        self._cursor = ""  # the destination served last by a claim
        self._channel = f"asyncq_{self.schema}"
        self._instance = secrets.token_hex(8)  # names this journal's notifications
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
        self._changed = False  # another process's notification came since the last poll
        self._on_change: Callable[[], None] | None = None
        self._on_children_settled: Callable[[list[int]], None] | None = None
        #: This host's clock (seconds since the epoch), and the seconds to add to it
        #: to read the database server's (measured at `open`).
        self.local_clock = local_clock
        self.clock_offset = 0.0

    def __repr__(self) -> str:
        return f"PostgresJournal({self.description!r})"

    @property
    def commits(self) -> int:
        """Transactions committed by the writer (for tests and benchmarks of group commit)."""
        return self._writer.commits

    def clock(self) -> DatabaseClock:
        """A clock that reads the database server's time (see the module's docstring)."""
        return DatabaseClock(self)

    # -- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        self._reader_lock = asyncio.Lock()
        self._conn = await self._connect()
        try:
            await migrate(self._conn, self.schema, self.description)
            await self._fold_counts(self._conn)
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

    async def _close_connections(self) -> None:
        for conn in (self._reader, self._conn):
            if conn is not None and not conn.is_closed():
                try:
                    await conn.close(timeout=5)
                except Exception:  # noqa: BLE001 - closing a broken connection
                    conn.terminate()
        self._reader = self._conn = None

    async def _connect(self) -> Conn:
        try:
            return await self._asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout,
                server_settings=self._server_settings,
            )
        except Exception as exc:  # noqa: BLE001 - every cause is reported the same way
            # The driver's message may quote the connection string: never its password.
            reason = scrub(f"{type(exc).__name__}: {exc}", self._dsn)
            raise JournalError(self.description, f"cannot connect ({reason})") from None

    async def _connect_reader(self) -> Conn:
        reader = await self._connect()
        await reader.add_listener(self._channel, self._notified)
        # A new listener may have missed notifications while it was not listening.
        self._changed = True
        return reader

    async def _fold_counts(self, conn: Conn) -> None:
        """Fold every other process's counts into the shared rows (see
        `_postgres_activity.FOLD_COUNTS`): housekeeping, tried a few times."""
        for _ in range(3):
            try:
                async with conn.transaction():
                    await conn.execute(monitoring.FOLD_COUNTS, None)
                return
            except self._asyncpg.PostgresError as exc:
                if not self._is_conflict(exc):
                    raise
        log.info("journal %s: counts not folded at open (busy)", self.description)

    async def _measure_offset(self, conn: Conn) -> float:
        """The database server's clock less this host's, from the quickest of a few
        round trips (its error is at most half that round trip)."""
        best: tuple[float, float] | None = None
        for _ in range(5):
            before = self.local_clock()
            server = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
            after = self.local_clock()
            if best is None or after - before < best[0]:
                best = (after - before, server - (before + after) / 2)
        assert best is not None
        return best[1]

    # -- the writer --------------------------------------------------------

    async def _writer_connection(self) -> Conn:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        return self._conn

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
                _terminate(self._conn)  # the next turn connects afresh
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

    async def _committed(self, xid: str) -> bool:
        """Whether transaction `xid`, whose COMMIT got no answer, committed: asked on
        a new connection (False if the server cannot say yet: the caller's error
        then stands, transient)."""
        try:
            conn = await self._writer_connection()
            for _ in range(50):
                status = await conn.fetchval(sql.TRANSACTION_STATUS, xid)
                if status != "in progress":  # its backend may still be ending
                    return bool(status == "committed")
                await asyncio.sleep(0.02)
        except Exception:  # noqa: BLE001 - cannot tell: the turn's fault stands
            _terminate(self._conn)
            self._conn = None
        return False

    def _is_conflict(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in _CONFLICT

    def _is_lost(self, exc: BaseException) -> bool:
        return isinstance(exc, JournalError) and exc.transient

    def _translate(self, exc: BaseException) -> BaseException:
        """A driver error as a `JournalError` naming the journal (others unchanged);
        a lock conflict stays as it is, for the writer to run the turn again."""
        if not isinstance(exc, Exception) or self._is_conflict(exc):
            return exc
        asyncpg = self._asyncpg
        state = getattr(exc, "sqlstate", None)
        if (
            state in _CONNECTION_LOST
            or isinstance(exc, (OSError, asyncpg.exceptions.ConnectionDoesNotExistError))
            or (isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc))
            # A connection cut in the middle of an operation can leave the driver's
            # protocol stuck in it: the connection is as good as lost.
            or isinstance(exc, asyncpg.exceptions.InternalClientError)
        ):
            return JournalError(
                self.description,
                f"lost the connection ({scrub(str(exc), self._dsn)})",
                transient=True,
            )
        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
            return JournalError(self.description, scrub(str(exc), self._dsn))
        return exc

    def _call(self, fn: Callable[[Conn], Awaitable[T]], *, news: bool = False) -> asyncio.Future[T]:
        """Run `fn(connection)` in the next turn's transaction; `news`: the change is
        one that other processes should hear of (NOTIFY)."""

        async def run(conn: Conn) -> T:
            if news:
                self._turn_news = True
            return await fn(conn)

        return cast("asyncio.Future[T]", self._writer.call(run))

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run a read on the read connection (reconnecting, and listening again, if
        it was lost)."""
        if not self._open:
            raise JournalError(self.description, "the journal is not open")
        async with self._reader_lock:
            try:
                if self._reader is None or self._reader.is_closed():
                    self._reader = await self._connect_reader()
                return await fn(self._reader)
            except Exception as exc:
                translated = self._translate(exc)
                if self._is_lost(translated):
                    _terminate(self._reader)
                    self._reader = None
                raise translated from exc

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
        async def get(conn: Conn) -> JobInfo | None:
            row = await conn.fetchrow(f"SELECT {sql.COLUMNS} FROM jobs WHERE id = $1", job_id)
            return None if row is None else _info(row)

        return await self._read(get)

    async def next_run_at(self) -> float | None:
        async def next_run_at(conn: Conn) -> float | None:
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'pending')"):
                return float("-inf")
            due = await conn.fetchval("SELECT min(run_at) FROM jobs WHERE state = 'scheduled'")
            return None if due is None else float(due)

        return await self._read(next_run_at)

    def on_failure(self, callback: Callable[[BaseException], None] | None) -> None:
        self._writer.on_stopped = callback

    def on_change_elsewhere(self, callback: Callable[[], None] | None) -> None:
        self._on_change = callback

    def _notified(self, conn: Conn, pid: int, channel: str, payload: str) -> None:
        if payload == self._instance:
            return  # this journal's own write
        self._changed = True
        if self._on_change is not None:
            self._on_change()

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
        async def beat(conn: Conn) -> None:
            await conn.execute(
                sql.HEARTBEAT,
                worker.owner,
                worker.host,
                worker.pid,
                worker.concurrency,
                worker.started_at,
                now,
                alive_until,
            )
            await conn.execute(sql.FORGET_GONE, now - _GONE_AFTER)

        await self._call(beat)

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
        return [_info(row) for row in rows]

    async def redrive(
        self,
        *,
        ids: Sequence[int] | None,
        destination: str | None,
        now: float,
        spacing: float = 0.0,
    ) -> int:
        return await self._call(
            lambda conn: writes.redrive(conn, ids, destination, now, spacing, self._deltas),
            news=True,
        )

    async def purge(
        self, *, ids: Sequence[int] | None, destination: str | None, before: float | None
    ) -> int:
        return await self._call(
            lambda conn: writes.purge(conn, ids, destination, before, self._deltas)
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
        return await self._call(lambda conn: writes.prune(conn, before, keep, self._deltas))

    async def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL keeps its own write-ahead log bounded."""


async def _nothing(conn: Conn) -> None:
    """A turn's call that writes nothing of its own (the turn writes the counts)."""


def _terminate(conn: Conn | None) -> None:
    """Close a connection that was lost (at once: it may be stuck mid-operation)."""
    if conn is not None:
        conn.terminate()


def _info(row: Sequence[Any]) -> JobInfo:
    (id_, task, state, dest, prio, payload, key, attempts, created, run_at, started,
     finished, result, error, snoozes, history) = row  # fmt: skip
    return JobInfo(
        id=id_,
        task=task,
        state=deps.PUBLIC_STATE[state],
        destination=dest,
        priority=prio,
        payload=writes.decoded(payload),
        key=key,
        attempts=attempts,
        created_at=created,
        run_at=run_at,
        started_at=started,
        finished_at=finished,
        result=None if result is None else writes.decoded(result),
        last_error=error,
        snoozes=snoozes,
        history=[(float(a), float(b), e) for a, b, e in json.loads(history)] if history else [],
    )
