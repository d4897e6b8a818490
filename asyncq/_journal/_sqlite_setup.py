"""Opening a SQLite journal: schema checks and migration under the write lock,
the connection's settings, and SQLite's errors as asyncq's."""

from __future__ import annotations

import sqlite3

from .._errors import JournalCorrupt, JournalError
from . import _sqlite_reads as reads
from ._schema import MIGRATIONS, SCHEMA_VERSION

SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_NOTADB = 5, 6, 8, 11, 26
# Faults that may clear by themselves: out of memory, I/O error, disk full, a lock
# protocol race. The queue's background work retries these.
TRANSIENT = frozenset({5, 6, 7, 10, 13, 15})


MIN_SQLITE = (3, 38, 0)  # the ->> operator (3.38); RETURNING and UPDATE FROM are older


def check_sqlite_version(path: str) -> None:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise JournalError(
            path,
            f"SQLite {sqlite3.sqlite_version} is too old; asyncq needs "
            f"{'.'.join(map(str, MIN_SQLITE))} or newer",
        )


def prepare(conn: sqlite3.Connection, path: str, synchronous: str, busy_timeout_ms: int) -> int:
    """Check, migrate and set up a fresh connection; its `PRAGMA data_version`."""
    conn.text_factory = reads.text_factory
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    # Check and migrate under the write lock: another process opening the same
    # new file is then either done migrating or not started. Nothing is written
    # before the checks pass, so a damaged file is reported and left as it was.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = check_schema(conn, path)
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
    if path != ":memory:":
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise JournalError(path, f"cannot switch to WAL mode (got {mode!r})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    data_version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return data_version


def prepare_reader(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Set up the read connection: it never writes."""
    conn.text_factory = reads.text_factory
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    conn.execute("PRAGMA query_only = 1")


def check_schema(conn: sqlite3.Connection, path: str) -> int:
    """The journal's schema version, or an error saying why it is not one."""
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalError(
            path,
            f"schema version {version} was written by a newer asyncq "
            f"(this one knows up to {SCHEMA_VERSION})",
        )
    has_jobs = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
    ).fetchone()
    if version > 0 and not has_jobs:
        raise JournalCorrupt(path, "has a schema version but no jobs table")
    if (
        version == 0
        and conn.execute("SELECT 1 FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchone()
    ):
        raise JournalError(path, "is a SQLite database of something else, not asyncq's")
    return version


def translate(path: str, exc: BaseException) -> BaseException:
    """A SQLite error as a `JournalError` naming the journal (others unchanged)."""
    if isinstance(exc, JournalError) or not isinstance(exc, sqlite3.Error):
        return exc
    code = sqlite_code(exc)
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return JournalCorrupt(path, f"damaged or not a database ({exc})")
    if code == SQLITE_READONLY:
        return JournalError(path, f"cannot be written ({exc}): check the file's permissions")
    if isinstance(exc, sqlite3.IntegrityError) and "jobs.key" in str(exc):
        return JournalError(path, f"a live job already holds that key ({exc})")
    return JournalError(path, str(exc), transient=code in TRANSIENT)


def is_lock_timeout(exc: BaseException) -> bool:
    return sqlite_code(exc.__cause__ if isinstance(exc, JournalError) else exc) in (
        SQLITE_BUSY,
        SQLITE_LOCKED,
    )


def sqlite_code(exc: BaseException | None) -> int:
    """The primary SQLite result code of an error (0 if it is not SQLite's)."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
