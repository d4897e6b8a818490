"""The SQLite journal's two connections: opening the file (and waiting out other
processes that open it at the same time), the writer's connection and the read
connection, each on a thread of its own, and their errors as `JournalError`.
`SqliteJournal` (`_sqlite.py`) builds the journal on them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Literal, TypeVar

import aiosqlite

from .._errors import JournalError
from . import _sqlite_retention as retention
from . import _sqlite_setup as setup
from ._sqlite_file import Identity, identity, prepare_file
from ._thread import ConnectionThread

T = TypeVar("T")


class SqliteConnections:
    """The connections under a `SqliteJournal`: `_run` runs a function on the
    writer's connection (between its turns), `_read` on the read connection."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        max_wal_bytes: int = retention.MAX_WAL_BYTES,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        if isinstance(max_wal_bytes, bool) or not isinstance(max_wal_bytes, int):
            raise TypeError("max_wal_bytes must be an int (bytes)")
        if max_wal_bytes < 0:
            raise ValueError("max_wal_bytes must be >= 0")
        #: The WAL file's bound, bytes (see `_sqlite_retention.py`).
        self.max_wal_bytes = max_wal_bytes
        self.path = path
        self.description = path
        self.synchronous = synchronous
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._db: aiosqlite.Connection | None = None
        self._thread: ConnectionThread | None = None
        self._reader: aiosqlite.Connection | None = None
        self._reader_thread: ConnectionThread | None = None
        self._identity: Identity | None = None  # what the path named when opened
        self._data_version: int | None = None

    async def _connect(self) -> None:
        """Open and prepare the file (schema, WAL, mode 0600), then both connections."""
        setup.check_sqlite_version(self.path)
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

    async def _open_reader(self) -> None:
        try:
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(self.path, f"cannot open: {exc}") from exc
        self._reader_thread = ConnectionThread(self._reader)
        busy_ms = self._busy_timeout_ms
        await self._reader_thread.run(lambda conn: setup.prepare_reader(conn, busy_ms))

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
                if not setup.is_lock_timeout(exc) or waited > self._busy_timeout_ms:
                    raise
            await asyncio.sleep(delay)
            waited += delay * 1000
            delay = min(delay * 2, 0.2)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        self._data_version = setup.prepare(conn, self.path, self.synchronous, self._busy_timeout_ms)
        if self.path != ":memory:":
            self._identity = identity(self.path)
            retention.limit_wal(conn, self.max_wal_bytes)

    def _translate(self, exc: BaseException) -> BaseException:
        return setup.translate(self.path, exc)

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
