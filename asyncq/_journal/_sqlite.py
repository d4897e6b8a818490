"""The SQLite journal: WAL, group commit, batched claims and leases.

Every write goes through one writer task. Calls that arrive while a
transaction is being committed wait for the next one, so a turn carries all of
them — new jobs, acks, failures and claims — in one `BEGIN IMMEDIATE`
transaction and one thread hop. Throughput grows with load instead of paying a
commit per job. Bulk statements take their rows as one JSON array
(`json_each`), so a turn is a handful of statements whatever its size; this
also keeps the connection thread from queueing for the GIL once per row.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast

import aiosqlite

from .._codec import storable_text
from .._errors import JournalCorrupt, JournalError, PayloadError
from .._limiter import schedule_calls
from .._policy import Rate
from .._records import JobInfo, JobState
from ._base import (
    Booked,
    Claim,
    ClaimedJob,
    ClaimLimits,
    DestinationCounts,
    DestinationRecord,
    ExpiredJob,
    Failed,
    Inserted,
    JournalStats,
    NewBatch,
    NewJob,
    Released,
    RetryDecision,
    Started,
    Succeeded,
)
from ._groupcommit import GroupCommit, Outcomes, Turn
from ._schema import MIGRATIONS, SCHEMA_VERSION
from ._sqlite_file import Identity, check_identity, identity, prepare_file
from ._thread import ConnectionThread

log = logging.getLogger("asyncq.journal")
T = TypeVar("T")

MIN_SQLITE = (3, 35, 0)
_MIN_SHARE = 16  # jobs a claim takes at least from each destination that has them
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 8, 11, 26
# Faults that may clear by themselves: out of memory, I/O error, disk full, a lock
# protocol race. The queue's background work retries these.
_TRANSIENT = frozenset({5, 6, 7, 10, 13, 15})

# Stored states. `scheduled` is a pending job whose time has not come; it is
# promoted to `pending` when due, so the claim's index holds only ready jobs
# and a claim never walks past delayed ones. Callers see both as PENDING.
_PUBLIC_STATE = {
    "pending": JobState.PENDING,
    "scheduled": JobState.PENDING,
    "running": JobState.RUNNING,
    "succeeded": JobState.SUCCEEDED,
    "dead": JobState.DEAD,
    "cancelled": JobState.CANCELLED,
}

# Every unkeyed job of a turn, whoever submitted it, in one statement:
# [[task, payload, destination, priority, run_at, created_at], ...].
_INSERT_ROWS = """
INSERT INTO jobs (task, payload, destination, priority, run_at, state, created_at)
SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
       CASE WHEN j.value ->> 4 <= j.value ->> 5 THEN 'pending' ELSE 'scheduled' END,
       j.value ->> 5
FROM json_each(:rows) AS j
"""
# A `submit_many` batch: the payloads arrive as one JSON array of objects, and each
# element's text is stored as it is (no per-job encoding in Python).
_INSERT_PAYLOADS = """
INSERT INTO jobs (task, payload, destination, priority, run_at, state, created_at)
SELECT :task, j.value, :destination, :priority, :run_at, :state, :now
FROM json_each(:payloads) AS j
WHERE j.type = 'object' AND length(CAST(j.value AS BLOB)) <= :limit
"""
_REFUSED_PAYLOAD = """
SELECT j.key, j.type, length(CAST(j.value AS BLOB)) FROM json_each(:payloads) AS j
WHERE j.type != 'object' OR length(CAST(j.value AS BLOB)) > :limit LIMIT 1
"""
_INSERT_ONE = """
INSERT INTO jobs (task, payload, destination, priority, run_at, key, state, created_at)
VALUES (?, ?, ?, ?, ?, ?, CASE WHEN ? <= ? THEN 'pending' ELSE 'scheduled' END, ?)
"""
_FIND_LIVE_KEY = (
    "SELECT id FROM jobs WHERE key = ? AND state IN ('pending', 'scheduled', 'running')"
)
_PROMOTE_DUE = """
UPDATE jobs SET state = 'pending' WHERE state = 'scheduled' AND run_at <= ? RETURNING destination
"""
# A claim starts no attempt: `started_at` stays empty until the handler's start is
# written (with the owner's outcomes), and `attempts` counts handler starts only.
_CLAIM_FROM = """
UPDATE jobs SET state = 'running', owner = :owner, claim_token = :token,
       lease_until = :lease_until, started_at = NULL
WHERE id IN (
    SELECT id FROM jobs WHERE state = 'pending' AND destination = :destination
    ORDER BY priority DESC, run_at, id LIMIT :limit
)
"""
_READY_DESTINATIONS = """
SELECT json_group_array(destination) FROM (
    SELECT destination FROM ready_destinations WHERE destination > ?
    ORDER BY destination LIMIT ?
)
"""
_FORGET_IF_EMPTY = """
DELETE FROM ready_destinations WHERE destination = ?1
AND NOT EXISTS (SELECT 1 FROM jobs WHERE state = 'pending' AND destination = ?1)
"""
# A payload that is not valid JSON (a journal edited by hand, say) comes back as
# null, for the worker to mark that one job dead, rather than failing the claim.
_CLAIMED = """
SELECT json_group_array(json_array(id, task,
                                   iif(json_valid(payload), json(payload), NULL),
                                   destination, priority,
                                   attempts + 1, created_at, first_started_at, snoozes,
                                   claim_token))
FROM (SELECT * FROM jobs WHERE state = 'running' AND owner = ? AND claim_token = ?
      ORDER BY priority DESC, run_at, id)
"""
# Outcomes name the claim they answer (owner and token): if a lease expired and
# the job was claimed again, a stale outcome matches nothing. The unary `+` keeps
# the planner from driving the update from the owner index (a scan of every
# running job per row); it must look each row up by id. An attempt whose start was
# not written yet (the job ran between two turns) is counted with its outcome.
_START = """
UPDATE jobs SET started_at = o.value ->> 2, attempts = attempts + 1,
       first_started_at = coalesce(first_started_at, o.value ->> 2)
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND +jobs.claim_token = o.value ->> 1
  AND +jobs.owner = :owner AND +jobs.state = 'running' AND jobs.started_at IS NULL
"""
_COMPLETE = """
UPDATE jobs SET state = 'succeeded', result = o.value ->> 2, finished_at = :now,
       owner = NULL, lease_until = NULL,
       attempts = attempts + (started_at IS NULL),
       started_at = coalesce(started_at, o.value ->> 3),
       first_started_at = coalesce(first_started_at, started_at, o.value ->> 3)
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND +jobs.claim_token = o.value ->> 1
  AND +jobs.owner = :owner AND +jobs.state = 'running'
RETURNING jobs.destination
"""
# A failure: dead when retry_at is null, else scheduled again. A snooze
# (RetryAfter) gives the attempt back and counts a snooze instead.
# [id, token, error, retry_at, snoozed, started_at]
_FAIL = """
UPDATE jobs SET
    state = CASE WHEN o.value ->> 3 IS NULL THEN 'dead' ELSE 'scheduled' END,
    run_at = coalesce(o.value ->> 3, jobs.run_at),
    finished_at = CASE WHEN o.value ->> 3 IS NULL THEN :now END,
    attempts = jobs.attempts + (jobs.started_at IS NULL) - (o.value ->> 4),
    snoozes = jobs.snoozes + (o.value ->> 4),
    last_error = o.value ->> 2,
    history = json_insert(coalesce(jobs.history, '[]'), '$[#]',
                          json_array(coalesce(jobs.started_at, o.value ->> 5, :now), :now,
                                     substr(o.value ->> 2, 1, 300))),
    first_started_at = coalesce(jobs.first_started_at, jobs.started_at, o.value ->> 5, :now),
    started_at = coalesce(jobs.started_at, o.value ->> 5, :now),
    owner = NULL, lease_until = NULL
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND +jobs.claim_token = o.value ->> 1
  AND +jobs.owner = :owner AND +jobs.state = 'running'
RETURNING jobs.destination, jobs.state
"""
# Handed back: no attempt is charged, even for a handler cut off at shutdown.
_RELEASE = """
UPDATE jobs SET state = 'pending', owner = NULL, lease_until = NULL, started_at = NULL,
       attempts = attempts - (started_at IS NOT NULL),
       first_started_at = CASE WHEN attempts - (started_at IS NOT NULL) = 0 THEN NULL
                               ELSE first_started_at END
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND +jobs.claim_token = o.value ->> 1
  AND +jobs.owner = :owner AND +jobs.state = 'running'
RETURNING jobs.destination
"""
_RENEW = "UPDATE jobs SET lease_until = ? WHERE state = 'running' AND owner = ?"
_EXPIRED = """
SELECT json_group_array(json_array(id, task, destination, attempts, first_started_at,
                                   started_at IS NOT NULL, lost))
FROM jobs WHERE state = 'running' AND lease_until < ?
"""
# A crash: [id, error, retry_at, charge]. A started job's attempt was counted with
# its start; an unstarted one is charged only when `charge` says so (its third loss).
_CRASHED = """
UPDATE jobs SET
    state = CASE WHEN o.value ->> 2 IS NULL THEN 'dead' ELSE 'scheduled' END,
    run_at = coalesce(o.value ->> 2, jobs.run_at),
    finished_at = CASE WHEN o.value ->> 2 IS NULL THEN :now END,
    attempts = jobs.attempts + (o.value ->> 3),
    last_error = o.value ->> 1,
    history = json_insert(coalesce(jobs.history, '[]'), '$[#]',
                          json_array(coalesce(jobs.started_at, :now), :now,
                                     substr(o.value ->> 1, 1, 300))),
    first_started_at = coalesce(jobs.first_started_at, jobs.started_at, :now),
    owner = NULL, lease_until = NULL
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND +jobs.state = 'running'
RETURNING jobs.destination, jobs.state
"""
# An unstarted claim lost to a crash: back to ready, uncharged, the loss counted.
_LOST = """
UPDATE jobs SET state = 'pending', owner = NULL, lease_until = NULL, lost = lost + 1
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'running'
RETURNING destination
"""
_CHARGE_AFTER_LOSSES = 2  # the third loss of an unstarted claim is charged
# Finished jobs are pruned a window of ids at a time, the windows walking the whole
# table and wrapping around: without an index on finish times, which every ack would
# pay to maintain, each scan stays bounded, and rows that stay (dead letters,
# far-delayed jobs) never stop the walk. Finished rows are in no index, so deleting
# them is cheap.
_PRUNE_WINDOW_END = """
SELECT max(id), count(*) FROM (SELECT id FROM jobs WHERE id > ? ORDER BY id LIMIT ?)
"""
_PRUNE = """
DELETE FROM jobs WHERE id > ? AND id <= ?
AND state IN ('succeeded', 'cancelled') AND finished_at < ?
RETURNING destination, state
"""
_DUE_SCHEDULED = """
SELECT destination, count(*), min(run_at) FROM jobs
WHERE state = 'scheduled' AND run_at <= ? GROUP BY destination
"""
_RUNNING = """
SELECT destination, started_at IS NOT NULL AND lease_until >= ?, count(*) FROM jobs
WHERE state = 'running' GROUP BY 1, 2
"""
_TOP_PRIORITY = "SELECT max(priority) FROM jobs WHERE state = 'pending' AND destination = ?"
_NEXT_PRIORITY = """
SELECT max(priority) FROM jobs WHERE state = 'pending' AND destination = ? AND priority < ?
"""
_FIRST_AT_PRIORITY = """
SELECT min(run_at) FROM jobs WHERE state = 'pending' AND destination = ? AND priority = ?
"""
_ADD_TO_COUNT = """
INSERT INTO counts (destination, state, n) VALUES (?, ?, ?)
ON CONFLICT (destination, state) DO UPDATE SET n = n + excluded.n
"""
_PRUNE_WINDOW = 20_000
_PRUNE_BATCHES = 5
_SAVE_DESTINATION = """
INSERT INTO destinations (name, paused, hold_until, circuit, circuit_until)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused,
    hold_until = max(hold_until, excluded.hold_until),
    circuit = excluded.circuit, circuit_until = excluded.circuit_until
"""
_SAVE_BUCKET = """
INSERT INTO destinations (name, full_at) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET full_at = excluded.full_at
"""
# A redriven job starts over: attempts, snoozes and the first-attempt time are
# reset (its history of attempts is kept).
_REDRIVE = """
UPDATE jobs SET state = CASE WHEN o.value ->> 1 <= :now THEN 'pending' ELSE 'scheduled' END,
       run_at = o.value ->> 1, attempts = 0, snoozes = 0, first_started_at = NULL,
       finished_at = NULL
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND jobs.state = 'dead'
RETURNING jobs.destination, jobs.state
"""
LEASE_EXPIRED = (
    "LeaseExpired: the worker running this job stopped renewing its lease "
    "(killed, or its event loop was blocked)"
)
_COLUMNS = (
    "id, task, state, destination, priority, payload, key, attempts, created_at, run_at, "
    "started_at, finished_at, result, last_error, snoozes, history"
)


def _text(raw: bytes) -> str:
    """A TEXT value as a str. Invalid UTF-8 (stored by an older asyncq, or written by
    hand) must not fail the whole query it is part of, a claim above all: such bytes
    come back with surrogate escapes, and the job that holds them is buried alone."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def _is_utf8(text: str) -> bool:
    """False if `text` holds a lone surrogate: bytes that were not valid UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _isolate_broken_text(jobs: list[ClaimedJob]) -> None:
    """Jobs whose stored text is not valid UTF-8 get no payload: the worker buries
    them with a reason, and the rest of the claim runs as usual."""
    for job in jobs:
        if not _is_utf8(json.dumps([job.task, job.destination, job.payload], ensure_ascii=False)):
            job.payload = None


def _decoded(text: str) -> Any:
    """JSON text as a value; None if it is not JSON (a journal edited by hand)."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _info(row: tuple[Any, ...]) -> JobInfo:
    (id_, task, state, dest, prio, payload, key, attempts, created, run_at, started,
     finished, result, error, snoozes, history) = row  # fmt: skip
    return JobInfo(
        id=id_,
        task=task,
        state=_PUBLIC_STATE[state],
        destination=dest,
        priority=prio,
        payload=_decoded(payload),
        key=key,
        attempts=attempts,
        created_at=created,
        run_at=run_at,
        started_at=started,
        finished_at=finished,
        result=None if result is None else _decoded(result),
        last_error=error,
        snoozes=snoozes,
        history=[tuple(h) for h in json.loads(history)] if history else [],
    )


class SqliteJournal:
    """The default journal: one SQLite file in WAL mode, shared by any number of processes."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        self.path = path
        self.description = path
        self.synchronous = synchronous
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._db: aiosqlite.Connection | None = None
        self._thread: ConnectionThread | None = None
        self._reader: aiosqlite.Connection | None = None
        self._reader_thread: ConnectionThread | None = None
        self._writer: GroupCommit[sqlite3.Connection] = GroupCommit(
            self._execute_turn, description=path, lock_timeout=_is_lock_timeout
        )
        self._identity: Identity | None = None  # what the path named when opened
        # The counts the running transaction changes (only the connection's thread
        # touches it, inside a transaction).
        self._deltas: Deltas = Counter()
        self._prune_after = 0  # pruning walks the ids from here
        self._tokens = itertools.count(1)
        self._cursor = ""  # the destination served last by a claim
        self._data_version: int | None = None

    @property
    def commits(self) -> int:
        """Transactions committed by the writer (for tests and benchmarks of group commit)."""
        return self._writer.commits

    # -- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise JournalError(
                self.path,
                f"SQLite {sqlite3.sqlite_version} is too old; asyncq needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer",
            )
        if self.path != ":memory:":
            prepare_file(self.path)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"cannot open: {exc}") from exc
        self._thread = ConnectionThread(self._db)
        try:
            await self._prepare_when_free()
        except BaseException as exc:
            await self._db.close()
            self._db = None
            raise self._translate(exc) from exc
        if self.path != ":memory:":  # a second in-memory connection is another database
            try:
                await self._open_reader()
            except BaseException:
                await self._close_connections()
                raise
        self._writer.start()

    async def _open_reader(self) -> None:
        try:
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"cannot open: {exc}") from exc
        self._reader_thread = ConnectionThread(self._reader)

        def prepare(conn: sqlite3.Connection) -> None:
            conn.text_factory = _text
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            conn.execute("PRAGMA query_only = 1")

        await self._reader_thread.run(prepare)

    async def close(self) -> None:
        if self._db is None:
            return
        try:
            await self._writer.stop()
        finally:
            await self._close_connections()

    async def _close_connections(self) -> None:
        for thread, db in ((self._reader_thread, self._reader), (self._thread, self._db)):
            if thread is not None:
                await thread.close()
            if db is not None:
                await db.close()
        self._reader = self._db = None
        self._reader_thread = self._thread = None

    async def _prepare_when_free(self) -> None:
        """Prepare the file, waiting out other processes that open it at the same time."""
        assert self._thread is not None
        delay, waited = 0.005, 0.0
        while True:
            try:
                await self._thread.run(self._prepare)
                return
            except sqlite3.OperationalError as exc:
                # Switching a new file to WAL while another connection does the same
                # fails with SQLITE_BUSY at once, whatever the busy timeout.
                code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
                if code not in (_SQLITE_BUSY, _SQLITE_LOCKED) or waited > self._busy_timeout_ms:
                    raise
            await asyncio.sleep(delay)
            waited += delay * 1000
            delay = min(delay * 2, 0.2)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.text_factory = _text
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        # Check and migrate under the write lock: another process opening the same
        # new file is then either done migrating or not started. Nothing is written
        # before the checks pass, so a damaged file is reported and left as it was.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._check_schema(conn)
            for migrate in MIGRATIONS[version:]:
                migrate(conn)
            # Written even when the version is current: a journal that cannot be
            # written (a read-only file) is refused here, at start, not at the
            # first submit or claim.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if self.path != ":memory:":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise JournalError(self.path, f"cannot switch to WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
        if self.path != ":memory:":
            self._identity = identity(self.path)

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        """The journal's schema version, or an error saying why it is not one."""
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                self.path,
                f"schema version {version} was written by a newer asyncq "
                f"(this one knows up to {SCHEMA_VERSION})",
            )
        has_jobs = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
        ).fetchone()
        if version > 0 and not has_jobs:
            raise JournalCorrupt(self.path, "has a schema version but no jobs table")
        if (
            version == 0
            and conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            ).fetchone()
        ):
            raise JournalError(self.path, "is a SQLite database of something else, not asyncq's")
        return version

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, JournalError):
            return exc
        if isinstance(exc, sqlite3.Error):
            code = _sqlite_code(exc)
            if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                return JournalCorrupt(self.path, f"damaged or not a database ({exc})")
            if code == _SQLITE_READONLY:
                return JournalError(
                    self.path, f"cannot be written ({exc}): check the file's permissions"
                )
            if isinstance(exc, sqlite3.IntegrityError) and "jobs.key" in str(exc):
                return JournalError(self.path, f"a live job already holds that key ({exc})")
            return JournalError(self.path, str(exc), transient=code in _TRANSIENT)
        return exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the read connection: WAL readers never wait for the writer,
        and the writer never waits for them."""
        if self._reader_thread is None:
            return await self._run(fn)
        try:
            return await self._reader_thread.run(fn)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread is None:
            raise JournalError(self.path, "the journal is not open")
        try:
            return await self._thread.run(fn)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _enqueue_call(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        return self._writer.call(fn)

    async def _execute_turn(self, turn: Turn[sqlite3.Connection]) -> list[Any]:
        return await self._run(lambda conn: self._transaction(conn, turn))

    def _transaction(self, conn: sqlite3.Connection, turn: Turn[sqlite3.Connection]) -> list[Any]:
        """One turn of the writer, run on the connection thread."""
        if self._identity is not None:
            # Before every write: acknowledging a write into a file that the path
            # no longer names would lose it silently (one stat, ~2 us per turn).
            check_identity(self.path, self._identity)
        conn.execute("BEGIN IMMEDIATE")
        deltas = self._deltas = Counter()
        try:
            # Inserts first, so a claim in the same turn can take the jobs just written.
            results = _insert_all(conn, turn.inserts, deltas)
            for owner, outcomes in turn.outcomes.items():
                _write_outcomes(conn, owner, outcomes, deltas)
            results.extend(call(conn) for call, _ in turn.calls)
            _save_counts(conn, deltas)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

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

        def claim(conn: sqlite3.Connection) -> Claim:
            deltas = self._deltas
            _moved(deltas, conn.execute(_PROMOTE_DUE, (now,)).fetchall(), "scheduled", "pending")
            remaining = limit
            params = {"owner": owner, "token": token, "lease_until": lease_until, "now": now}
            # Destinations take turns: start after the one served last, wrap around
            # once, and give each a fair share of the claim.
            (ready,) = conn.execute("SELECT count(*) FROM ready_destinations").fetchone()
            # A share is never tiny: claiming a job or two per destination would
            # spend a statement per job. The cursor gives the rest their turn next.
            share = max(_MIN_SHARE, -(-limit // max(1, ready)))
            start = self._cursor
            taken_from: dict[str, int] = {}
            for destination in _ready_destinations(conn, start, chunk=max(2 * limit, 256)):
                room = min(share, remaining)
                if limits is not None:
                    room = min(room, limits.room(destination))
                if room <= 0:
                    continue
                params["destination"] = destination
                params["limit"] = room
                taken = conn.execute(_CLAIM_FROM, params).rowcount
                if taken < room:
                    conn.execute(_FORGET_IF_EMPTY, (destination,))
                if taken:
                    taken_from[destination] = taken
                remaining -= taken
                self._cursor = destination
                if remaining <= 0:
                    break
            else:
                self._cursor = ""
            for destination, taken in taken_from.items():
                deltas[destination, "pending"] -= taken
                deltas[destination, "running"] += taken
            if remaining == limit:
                return Claim([])
            booked: dict[str, Booked] = {}
            if limits is not None:
                # Book the calls of paced jobs in the claim's own transaction.
                rates = {d: r for d in taken_from if (r := limits.rate(d)) is not None}
                if rates:
                    booked = _book(conn, taken_from, rates, limits.clock, limits.horizon)
            (rows,) = conn.execute(_CLAIMED, (owner, token)).fetchone()
            jobs = [ClaimedJob(*row) for row in json.loads(rows)]
            if not _is_utf8(rows):
                _isolate_broken_text(jobs)
            return Claim(jobs, booked)

        return await self._enqueue_call(claim)

    async def record_outcomes(
        self,
        owner: str,
        now: float,
        *,
        started: Sequence[Started] = (),
        succeeded: Sequence[Succeeded] = (),
        failed: Sequence[Failed] = (),
        released: Sequence[Released] = (),
    ) -> None:
        if not (started or succeeded or failed or released):
            return
        # An error's text may hold anything a handler put in its message.
        failed = [
            f if f.error.isascii() else f._replace(error=storable_text(f.error)) for f in failed
        ]
        await self._writer.record(owner, now, started, succeeded, failed, released)

    async def renew(self, owner: str, lease_until: float) -> int:
        return await self._enqueue_call(
            lambda conn: conn.execute(_RENEW, (lease_until, owner)).rowcount
        )

    async def reclaim_expired(
        self, now: float, decide: RetryDecision | None = None
    ) -> list[tuple[ExpiredJob, float | None]]:
        def reclaim(conn: sqlite3.Connection) -> list[tuple[ExpiredJob, float | None]]:
            (rows,) = conn.execute(_EXPIRED, (now,)).fetchone()
            found = json.loads(rows)
            if not found:
                return []
            deltas = self._deltas
            lost: list[ExpiredJob] = []
            charged: list[ExpiredJob] = []
            for id_, task, destination, attempts, first, started, losses in found:
                if started or losses >= _CHARGE_AFTER_LOSSES:
                    # The crashed attempt's number: counted already if it started.
                    number = attempts if started else attempts + 1
                    charged.append(ExpiredJob(id_, task, destination, number, first, bool(started)))
                else:
                    lost.append(ExpiredJob(id_, task, destination, attempts + 1, first, False))
            if lost:
                ids = json.dumps([job.id for job in lost])
                _moved(deltas, conn.execute(_LOST, (ids,)).fetchall(), "running", "pending")
            decisions = [now if decide is None else decide(job) for job in charged]
            if charged:
                batch = [
                    (job.id, LEASE_EXPIRED, at, 0 if job.started else 1)
                    for job, at in zip(charged, decisions, strict=True)
                ]
                params = {"batch": json.dumps(batch), "now": now}
                _moved(deltas, conn.execute(_CRASHED, params).fetchall(), "running")
            return [(job, now) for job in lost] + list(zip(charged, decisions, strict=True))

        return await self._enqueue_call(reclaim)

    async def cancel(self, job_id: int, now: float) -> JobState | None:
        def cancel(conn: sqlite3.Connection) -> JobState | None:
            row = conn.execute(
                "SELECT state, destination FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None:
                return None
            state, destination = row
            if state not in ("pending", "scheduled"):
                return _PUBLIC_STATE[state]
            conn.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ?", (now, job_id)
            )
            _moved(self._deltas, [(destination,)], state, "cancelled")
            return JobState.CANCELLED

        return await self._enqueue_call(cancel)

    # -- reads ------------------------------------------------------------

    async def get(self, job_id: int) -> JobInfo | None:
        def get(conn: sqlite3.Connection) -> JobInfo | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else _info(row)

        return await self._read(get)

    async def next_run_at(self) -> float | None:
        def next_run_at(conn: sqlite3.Connection) -> float | None:
            if conn.execute("SELECT 1 FROM jobs WHERE state = 'pending' LIMIT 1").fetchone():
                return float("-inf")
            (due,) = conn.execute(
                "SELECT min(run_at) FROM jobs WHERE state = 'scheduled'"
            ).fetchone()
            return None if due is None else float(due)

        return await self._read(next_run_at)

    def on_change_elsewhere(self, callback: Callable[[], None] | None) -> None:
        """SQLite cannot tell one process of another's commit: polling it is."""

    async def changed_elsewhere(self) -> bool:
        version = (await self._run(lambda c: c.execute("PRAGMA data_version").fetchone()))[0]
        changed = version != self._data_version
        self._data_version = version
        return bool(changed)

    async def stats(self, now: float) -> JournalStats:
        return await self._read(lambda conn: _stats(conn, now))

    async def prune_finished(self, before: float) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            deleted = 0
            for _ in range(_PRUNE_BATCHES):
                start = self._prune_after
                end, size = conn.execute(_PRUNE_WINDOW_END, (start, _PRUNE_WINDOW)).fetchone()
                # The last window wraps the walk around to the lowest ids.
                self._prune_after = 0 if size < _PRUNE_WINDOW else end
                if not size:
                    break
                rows = conn.execute(_PRUNE, (start, end, before)).fetchall()
                _moved(self._deltas, rows, None)
                deleted += len(rows)
                if len(rows) < _PRUNE_WINDOW // 2 or not self._prune_after:
                    break  # past the old finished jobs, or the walk went round
            return deleted

        return await self._enqueue_call(prune)

    async def load_destinations(self) -> list[DestinationRecord]:
        def load(conn: sqlite3.Connection) -> list[DestinationRecord]:
            rows = conn.execute(
                "SELECT name, paused, hold_until, circuit, circuit_until, full_at FROM destinations"
            ).fetchall()
            return [
                DestinationRecord(name, bool(paused), hold, circuit, until, full)
                for name, paused, hold, circuit, until, full in rows
            ]

        return await self._read(load)

    async def save_destinations(self, records: Sequence[DestinationRecord]) -> None:
        rows = [(r.name, int(r.paused), r.hold_until, r.circuit, r.circuit_until) for r in records]
        if rows:
            await self._enqueue_call(lambda conn: conn.executemany(_SAVE_DESTINATION, rows))

    async def take_tokens(
        self,
        wants: Mapping[str, int],
        rates: Mapping[str, Rate],
        clock: Callable[[], float],
        horizon: float,
    ) -> dict[str, Booked]:
        if not wants:
            return {}
        return await self._enqueue_call(lambda conn: _book(conn, wants, rates, clock, horizon))

    async def dead_letters(
        self, *, destination: str | None, since: float | None, limit: int
    ) -> list[JobInfo]:
        def dead(conn: sqlite3.Connection) -> list[JobInfo]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = 'dead' "
                "AND (?1 IS NULL OR destination = ?1) AND (?2 IS NULL OR finished_at >= ?2) "
                "ORDER BY finished_at DESC, id DESC LIMIT ?3",
                (destination, since, limit),
            ).fetchall()
            return [_info(row) for row in rows]

        return await self._read(dead)

    async def redrive(
        self,
        *,
        ids: Sequence[int] | None,
        destination: str | None,
        now: float,
        spacing: float = 0.0,
    ) -> int:
        def redrive(conn: sqlite3.Connection) -> int:
            chosen = _keys_free(conn, _select_dead(conn, ids, destination, None))
            batch = json.dumps([[job_id, now + i * spacing] for i, job_id in enumerate(chosen)])
            rows = conn.execute(_REDRIVE, {"batch": batch, "now": now}).fetchall()
            return _moved(self._deltas, rows, "dead")

        return await self._enqueue_call(redrive)

    async def purge(
        self, *, ids: Sequence[int] | None, destination: str | None, before: float | None
    ) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            chosen = _select_dead(conn, ids, destination, before)
            rows = conn.execute(
                "DELETE FROM jobs WHERE state = 'dead' AND id IN (SELECT value FROM json_each(?)) "
                "RETURNING destination, state",
                (json.dumps(chosen),),
            ).fetchall()
            return _moved(self._deltas, rows, None)

        return await self._enqueue_call(purge)


def _book(
    conn: sqlite3.Connection,
    wants: Mapping[str, int],
    rates: Mapping[str, Rate],
    clock: Callable[[], float],
    horizon: float,
) -> dict[str, Booked]:
    """Book calls in destinations' buckets: read each bucket, book, write it back."""
    wanted = [name for name in wants if name in rates]
    (known,) = conn.execute(
        "SELECT json_group_object(name, full_at) FROM destinations "
        "WHERE name IN (SELECT value FROM json_each(?))",
        (json.dumps(wanted),),
    ).fetchone()
    full = json.loads(known)
    now = clock()
    booked = {
        name: schedule_calls(rates[name], wants[name], full.get(name, 0.0), now, horizon)
        for name in wanted
    }
    conn.executemany(_SAVE_BUCKET, [(name, b[1]) for name, b in booked.items()])
    return booked


def _stats(conn: sqlite3.Connection, now: float) -> JournalStats:
    """Jobs per destination and state, from the counts the writer keeps, and the few
    rows that counts cannot tell apart: running jobs, due scheduled ones, the age of
    each destination's oldest ready job. Nothing here scans the backlog."""
    per: dict[str, dict[str, Any]] = {}

    def of(destination: str) -> dict[str, Any]:
        return per.setdefault(destination, {})

    for destination, state, n in conn.execute("SELECT destination, state, n FROM counts"):
        if n and state != "running":
            of(destination)["ready" if state == "pending" else state] = n
    # Scheduled jobs whose time has come are ready, if not promoted yet (bounded:
    # every claim promotes them).
    for destination, n, oldest in conn.execute(_DUE_SCHEDULED, (now,)):
        counts = of(destination)
        counts["ready"] = counts.get("ready", 0) + n
        counts["scheduled"] = counts.get("scheduled", 0) - n
        counts["oldest_ready_at"] = oldest
    for destination, started, n in conn.execute(_RUNNING, (now,)):
        of(destination)["running" if started else "claimed"] = n
    for (destination,) in conn.execute("SELECT destination FROM ready_destinations"):
        oldest = _oldest_ready(conn, destination)
        if oldest is not None:
            counts = of(destination)
            earlier = counts.get("oldest_ready_at")
            counts["oldest_ready_at"] = oldest if earlier is None else min(earlier, oldest)
    for name, paused, hold, circuit, circuit_until in conn.execute(
        "SELECT name, paused, hold_until, circuit, circuit_until FROM destinations "
        "WHERE paused OR hold_until > ?1 OR circuit != 'closed'",
        (now,),
    ):
        counts = of(name)
        counts["paused"] = bool(paused)
        counts["held_until"] = hold if hold > now else None
        counts["circuit"] = circuit
        counts["circuit_until"] = circuit_until if circuit != "closed" else None
    return JournalStats({d: DestinationCounts(**c) for d, c in sorted(per.items())})


def _oldest_ready(conn: sqlite3.Connection, destination: str) -> float | None:
    """The earliest `run_at` among a destination's ready jobs: one index seek per
    priority level in use, not a scan of the destination's backlog."""
    oldest: float | None = None
    (priority,) = conn.execute(_TOP_PRIORITY, (destination,)).fetchone()
    while priority is not None:
        (first,) = conn.execute(_FIRST_AT_PRIORITY, (destination, priority)).fetchone()
        oldest = first if oldest is None else min(oldest, first)
        (priority,) = conn.execute(_NEXT_PRIORITY, (destination, priority)).fetchone()
    return oldest


def _select_dead(
    conn: sqlite3.Connection,
    ids: Sequence[int] | None,
    destination: str | None,
    before: float | None,
) -> list[int]:
    """Ids of dead jobs among `ids` (all if None), of `destination`, dead before `before`."""
    rows = conn.execute(
        "SELECT id FROM jobs WHERE state = 'dead' AND (?1 IS NULL OR destination = ?1) "
        "AND (?2 IS NULL OR finished_at < ?2) "
        "AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3))) ORDER BY id",
        (destination, before, None if ids is None else json.dumps(list(ids))),
    ).fetchall()
    return [row[0] for row in rows]


def _ready_destinations(conn: sqlite3.Connection, start: str, chunk: int) -> Iterator[str]:
    """Destinations with ready jobs, in name order from just after `start`,
    wrapping around once."""
    after, wrapped = start, False
    while True:
        (names,) = conn.execute(_READY_DESTINATIONS, (after, chunk)).fetchone()
        batch: list[str] = json.loads(names)
        for name in batch:
            if wrapped and name > start:
                return
            yield name
        if len(batch) == chunk:
            after = batch[-1]
        elif wrapped or not start:
            return
        else:
            after, wrapped = "", True


def _insert_all(
    conn: sqlite3.Connection,
    inserts: Sequence[tuple[Sequence[NewJob] | NewBatch, float, object]],
    deltas: Deltas,
) -> list[Any]:
    """Every insert of a turn; one result per insert, in order."""
    results: list[Any] = [None] * len(inserts)
    merged: list[int] = []  # the inserts whose jobs go into one shared statement
    for index, (jobs, now, _) in enumerate(inserts):
        if isinstance(jobs, NewBatch):
            results[index] = _insert_batch(conn, jobs, now)
            state = "pending" if jobs.run_at <= now else "scheduled"
            deltas[jobs.destination, state] += jobs.job_count
        elif any(job.key is not None for job in jobs):
            # The rare path: keyed jobs go one at a time, so a key repeated within
            # one call also finds the job inserted a moment before.
            results[index] = [_insert_keyed(conn, job, now, deltas) for job in jobs]
        else:
            merged.append(index)
    if merged:
        rows = [
            [j.task, j.payload, j.destination, j.priority, j.run_at, inserts[index][1]]
            for index in merged
            for j in cast(Sequence[NewJob], inserts[index][0])
        ]
        for index in merged:
            at = inserts[index][1]
            deltas.update(
                (j.destination, "pending" if j.run_at <= at else "scheduled")
                for j in cast(Sequence[NewJob], inserts[index][0])
            )
        ids = iter(_inserted_ids(conn.execute(_INSERT_ROWS, {"rows": json.dumps(rows)}), len(rows)))
        for index in merged:
            jobs = cast(Sequence[NewJob], inserts[index][0])
            results[index] = [Inserted(next(ids), True) for _ in jobs]
    return results


def _insert_batch(conn: sqlite3.Connection, batch: NewBatch, now: float) -> range:
    params = {
        "task": batch.task,
        "payloads": batch.payloads,
        "destination": batch.destination,
        "priority": batch.priority,
        "run_at": batch.run_at,
        "state": "pending" if batch.run_at <= now else "scheduled",
        "now": now,
        "limit": batch.max_payload_bytes,
    }
    cursor = conn.execute(_INSERT_PAYLOADS, params)
    if cursor.rowcount != batch.job_count:
        refused = conn.execute(
            _REFUSED_PAYLOAD, {"payloads": batch.payloads, "limit": batch.max_payload_bytes}
        ).fetchone()
        if refused is None:
            raise PayloadError(batch.task, "the batch does not hold the number of payloads given")
        index, kind, size = refused
        if kind != "object":
            raise PayloadError(batch.task, f"payload {index} is a JSON {kind}, not an object")
        raise PayloadError(
            batch.task,
            f"payload {index} is {size} bytes, over the {batch.max_payload_bytes}-byte limit",
        )
    return _inserted_ids(cursor, batch.job_count)


def _inserted_ids(cursor: sqlite3.Cursor, count: int) -> range:
    # Under the write lock, AUTOINCREMENT hands out consecutive ids in row order.
    last = cursor.lastrowid
    if cursor.rowcount != count or last is None:
        raise RuntimeError(f"an insert wrote {cursor.rowcount} rows, not {count}")
    return range(last - count + 1, last + 1)


def _insert_keyed(conn: sqlite3.Connection, job: NewJob, now: float, deltas: Deltas) -> Inserted:
    if job.key is not None:
        row = conn.execute(_FIND_LIVE_KEY, (job.key,)).fetchone()
        if row is not None:
            return Inserted(row[0], False)
    cursor = conn.execute(
        _INSERT_ONE,
        (
            job.task,
            job.payload,
            job.destination,
            job.priority,
            job.run_at,
            job.key,
            job.run_at,
            now,
            now,
        ),
    )
    assert cursor.lastrowid is not None
    deltas[job.destination, "pending" if job.run_at <= now else "scheduled"] += 1
    return Inserted(cursor.lastrowid, True)


def _write_outcomes(
    conn: sqlite3.Connection, owner: str, outcomes: Outcomes, deltas: Deltas
) -> None:
    now = outcomes.now
    if outcomes.started:
        conn.execute(_START, {"batch": json.dumps(outcomes.started), "owner": owner})
    if outcomes.complete:
        batch = json.dumps(outcomes.complete)
        rows = conn.execute(_COMPLETE, {"batch": batch, "owner": owner, "now": now}).fetchall()
        _moved(deltas, rows, "running", "succeeded")
    if outcomes.fail:
        params = {"batch": json.dumps(outcomes.fail), "owner": owner, "now": now}
        _moved(deltas, conn.execute(_FAIL, params).fetchall(), "running")
    if outcomes.release:
        params = {"batch": json.dumps(outcomes.release), "owner": owner}
        _moved(deltas, conn.execute(_RELEASE, params).fetchall(), "running", "pending")


#: Jobs moved in one transaction: (destination, state) -> change in count.
Deltas = Counter[tuple[str, str]]


def _moved(deltas: Deltas, rows: list[Any], old: str | None, new: str | None = None) -> int:
    """Count the rows a statement moved out of state `old` (None: inserted) into
    `new` (None: the row's second column, or deleted when it has none and `old`
    is given). Each row starts with the job's destination. Returns how many."""
    for row, count in Counter(rows).items():
        destination = row[0]
        if old is not None:
            deltas[destination, old] -= count
        else:
            deltas[destination, row[1]] -= count  # deleted from the state it had
            continue
        deltas[destination, new or row[1]] += count
    return len(rows)


def _save_counts(conn: sqlite3.Connection, deltas: Deltas) -> None:
    changes = [(d, state, n) for (d, state), n in deltas.items() if n]
    if changes:
        conn.executemany(_ADD_TO_COUNT, changes)


def _keys_free(conn: sqlite3.Connection, ids: list[int]) -> list[int]:
    """The jobs among `ids` (dead ones, about to be redriven) whose key no live job
    holds: a key names one live job at a time, so the others stay dead. Of two with
    the same key, the older goes."""
    rows = conn.execute(
        "SELECT id, key, EXISTS (SELECT 1 FROM jobs AS live WHERE live.key = dead.key "
        "AND live.state IN ('pending', 'scheduled', 'running')) "
        "FROM jobs AS dead WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
        (json.dumps(ids),),
    ).fetchall()
    free, taken = [], set()
    for job_id, key, held in rows:
        if key is not None:
            if held or key in taken:
                continue
            taken.add(key)
        free.append(job_id)
    if len(free) < len(ids):
        log.warning(
            "redrive: %d dead job(s) stay dead: a live job holds their key", len(ids) - len(free)
        )
    return free


def _is_lock_timeout(exc: BaseException) -> bool:
    return _sqlite_code(exc.__cause__ if isinstance(exc, JournalError) else exc) in (
        _SQLITE_BUSY,
        _SQLITE_LOCKED,
    )


def _sqlite_code(exc: BaseException | None) -> int:
    """The primary SQLite result code of an error (0 if it is not SQLite's)."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
