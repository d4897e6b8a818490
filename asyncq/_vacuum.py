"""`asyncq vacuum FILE`: compact a journal offline.

Pruning frees pages inside the file, and later jobs reuse them, but the file never
shrinks by itself. VACUUM rewrites it at its smallest (it needs free disk for a
copy of the data, and time in proportion to it), then the WAL is checkpointed and
truncated. It needs the journal to itself: a journal that a queue or worker has
open is refused with an error at once, not waited for.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from dataclasses import dataclass

from ._errors import JournalCorrupt, JournalError
from ._journal._sqlite_retention import wal_bytes

_HEADER = b"SQLite format 3\x00"
#: Seconds to wait for another connection to let go of the journal before refusing.
WAIT = 0.2


@dataclass(frozen=True, slots=True)
class Vacuumed:
    """The journal's sizes in bytes, before and after."""

    file_before: int
    wal_before: int
    file_after: int
    wal_after: int

    @property
    def before(self) -> int:
        return self.file_before + self.wal_before

    @property
    def after(self) -> int:
        return self.file_after + self.wal_after


def vacuum(path: str, *, wait: float = WAIT) -> Vacuumed:
    """Compact the journal at `path`; `JournalError` if it is missing, not an asyncq
    journal, or open in another connection (waited for at most `wait` seconds)."""
    _check_file(path)
    file_before, wal_before = os.path.getsize(path), wal_bytes(path)
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=wait)
    except sqlite3.Error as exc:
        raise JournalError(path, f"cannot open: {exc}") from exc
    try:
        # Exclusive: while this connection is open no other may read or write, and
        # none may have the file open when it starts (SQLITE_BUSY after `wait`).
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        try:
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (5, 6):  # BUSY, LOCKED
                raise JournalError(
                    path,
                    "is in use (a queue or a worker has it open): stop them, then vacuum",
                ) from exc
            raise
        _check_journal(conn, path)
        conn.execute("COMMIT")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.DatabaseError as exc:
        raise JournalCorrupt(path, f"damaged or not a database ({exc})") from exc
    finally:
        conn.close()
    return Vacuumed(file_before, wal_before, os.path.getsize(path), wal_bytes(path))


def _check_file(path: str) -> None:
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
        raise JournalCorrupt(path, "not a SQLite database (bad header), not an asyncq journal")


def _check_journal(conn: sqlite3.Connection, path: str) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    has_jobs = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
    ).fetchone()
    if not version or not has_jobs:
        raise JournalError(path, "is a SQLite database of something else, not an asyncq journal")


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def report(path: str, done: Vacuumed) -> str:
    """What `asyncq vacuum` prints."""
    return (
        f"{path}: {megabytes(done.before)} (file {megabytes(done.file_before)}, "
        f"WAL {megabytes(done.wal_before)}) -> {megabytes(done.after)}"
    )
