"""Reading a SQLite journal without changing it: what the CLI's reading commands use.

A `Queue`, or the journal behind it, creates a missing file, migrates an older
schema and writes its version at every open; a command that only looks must do
none of that. This reader opens the file with SQLite's `mode=ro` (never creating
it), checks the schema without migrating it, and runs the same queries as the
queue's read connection (`_sqlite_reads.py`).

One subtlety: a WAL reader needs the `-wal` and `-shm` files, and creates them when
no other connection has the journal open (they go when the last connection
closes, but a read-only one cannot delete them). A journal at rest, with no `-wal`
file, is therefore read as immutable, which creates nothing; if a queue opened it
during that read, the read is done again as an ordinary WAL reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from .._errors import JournalCorrupt, JournalError
from .._records import JobInfo, JobState
from . import _sqlite_dead as dead
from . import _sqlite_reads as reads
from . import _sqlite_setup as setup
from . import _sqlite_sql as sql
from ._messages import JournalStats
from ._rows import job_info
from ._schema import SCHEMA_VERSION

T = TypeVar("T")

_HEADER = b"SQLite format 3\x00"
#: Milliseconds a read waits for a lock (a checkpoint restarting the WAL, say).
_BUSY_TIMEOUT_MS = 5000

#: Stored states of each public state (a scheduled job is pending, not due yet).
STORED_STATES: dict[JobState, tuple[str, ...]] = {
    public: tuple(stored for stored, state in sql.PUBLIC_STATE.items() if state is public)
    for public in JobState
}

_PAGE = f"""
SELECT {sql.COLUMNS} FROM jobs
WHERE id > :after
AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
AND (:destination IS NULL OR destination = :destination)
AND (:task IS NULL OR task = :task)
ORDER BY id LIMIT :limit
"""
_DETAIL = """
SELECT owner, lease_until, first_started_at, cancel_requested, cancelled_by, on_parent_failure
FROM jobs WHERE id = ?
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobDetail:
    """A job as `asyncq show` prints it: its `JobInfo` and what only the journal knows.
    Times are seconds since the epoch."""

    info: JobInfo
    owner: str | None  # the worker process holding it: host:pid:token
    lease_until: float | None
    first_started_at: float | None
    cancel_requested: bool
    cancelled_by: int | None  # the parent whose failure cancelled it
    on_parent_failure: str
    parents: list[int]
    children: list[int]


class ReadOnlyJournal:
    """A journal file, read and never written: every call opens the file, reads one
    consistent snapshot and closes it, so a long-lived reader (`asyncq top`) holds
    no lock and sees a queue that starts or stops meanwhile.

    Raises `JournalError` for a missing file, a directory or a schema this asyncq
    cannot read (older: a queue must migrate it first; newer), and `JournalCorrupt`
    for a file that is not SQLite or is damaged. Nothing is created or changed.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def stats(self, now: float) -> JournalStats:
        """Jobs per destination and state, as `Queue.stats()` gives them."""
        return self.read(lambda conn: reads.stats(conn, now, []))

    def get(self, job_id: int) -> JobDetail | None:
        """The job with this id, or None."""
        return self.read(lambda conn: _detail(conn, job_id))

    def jobs(
        self,
        *,
        state: JobState | None = None,
        destination: str | None = None,
        task: str | None = None,
        after: int = 0,
        limit: int = 50,
    ) -> list[JobInfo]:
        """Jobs with ids above `after`, in id order, at most `limit` of them."""
        states = None if state is None else json.dumps(STORED_STATES[state])
        params = {
            "after": after,
            "states": states,
            "destination": destination,
            "task": task,
            "limit": limit,
        }
        return self.read(
            lambda conn: [job_info(row) for row in conn.execute(_PAGE, params).fetchall()]
        )

    def dead_letters(
        self, destination: str | None = None, *, since: float | None = None, limit: int = 100
    ) -> list[JobInfo]:
        """Dead jobs, the most recent death first, as `Queue.dead_letters` lists them."""
        return self.read(lambda conn: dead.listed(conn, destination, since, limit))

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` run on one snapshot of the journal."""
        _check_file(self.path)
        at_rest = _at_rest(self.path)
        before = _stamp(self.path)
        try:
            result = self._read(fn, immutable=at_rest)
            if at_rest and not (_at_rest(self.path) and _stamp(self.path) == before):
                # A queue opened the journal during a read that assumed nobody would:
                # read again as a WAL reader, which sees its writes consistently.
                result = self._read(fn, immutable=False)
        except sqlite3.Error as exc:
            raise setup.translate(self.path, exc) from exc
        return result

    def _read(self, fn: Callable[[sqlite3.Connection], T], *, immutable: bool) -> T:
        with self._connect(immutable=immutable) as conn:
            conn.execute("BEGIN")  # one snapshot for all of `fn`'s queries
            try:
                self._check_schema(conn)
                return fn(conn)
            finally:
                conn.execute("COMMIT")

    @contextlib.contextmanager
    def _connect(self, *, immutable: bool) -> Iterator[sqlite3.Connection]:
        options = "mode=ro&immutable=1" if immutable else "mode=ro"
        uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?{options}"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"cannot open: {exc}") from exc
        try:
            conn.text_factory = reads.text_factory
            # Settings of this connection only: nothing is written to the file.
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only = 1")
            yield conn
        finally:
            conn.close()

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        version = setup.check_schema(conn, self.path)
        if version == 0:
            raise JournalError(self.path, "is an empty SQLite database, not an asyncq journal")
        if version < SCHEMA_VERSION:
            raise JournalError(
                self.path,
                f"has schema version {version}, older than this asyncq's {SCHEMA_VERSION}: "
                "start a worker or open a Queue on it once to migrate it, then read it",
            )


def _detail(conn: sqlite3.Connection, job_id: int) -> JobDetail | None:
    row = conn.execute(f"SELECT {sql.COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    owner, lease_until, first_started, cancel_requested, cancelled_by, on_failure = conn.execute(
        _DETAIL, (job_id,)
    ).fetchone()
    return JobDetail(
        info=job_info(row),
        owner=owner,
        lease_until=lease_until,
        first_started_at=first_started,
        cancel_requested=bool(cancel_requested),
        cancelled_by=cancelled_by,
        on_parent_failure=on_failure,
        parents=_ids(conn, "SELECT parent FROM deps WHERE child = ? ORDER BY parent", job_id),
        children=_ids(conn, "SELECT child FROM deps WHERE parent = ? ORDER BY child", job_id),
    )


def _ids(conn: sqlite3.Connection, query: str, job_id: int) -> list[int]:
    return [row[0] for row in conn.execute(query, (job_id,))]


def _check_file(path: str) -> None:
    """Refuse, without creating anything, a path that is not a journal file."""
    if os.path.isdir(path):
        raise JournalError(path, "is a directory, not a journal file")
    try:
        with open(path, "rb") as file:
            header = file.read(len(_HEADER))
    except FileNotFoundError:
        raise JournalError(path, "no such file") from None
    except OSError as exc:
        raise JournalError(path, f"cannot read: {exc}") from exc
    if header != _HEADER:
        what = "an empty file" if not header else "not a SQLite database (bad header)"
        raise JournalCorrupt(path, f"{what}, not an asyncq journal")


def _at_rest(path: str) -> bool:
    """No connection has the journal open: in WAL mode, the first connection creates
    the -wal file and the last one deletes it."""
    return not os.path.exists(path + "-wal")


def _stamp(path: str) -> tuple[int, int, int]:
    """What changes when the file is written or replaced."""
    found = os.stat(path)
    return found.st_ino, found.st_size, found.st_mtime_ns
