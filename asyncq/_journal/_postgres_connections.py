"""The PostgreSQL journal's connections: the driver, the connection string and
schema, the writer's connection and the read connection (which LISTENs), the
offset of the server's clock, and the driver's errors as `JournalError`.
`PostgresJournal` (`_postgres.py`) builds the journal on them."""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._errors import JournalError
from . import _postgres_sql as sql
from ._postgres_dsn import describe, scrub
from ._postgres_schema import checked_schema_name

T = TypeVar("T")
Conn = Any  # asyncpg.Connection: asyncpg ships no type information

DEFAULT_SCHEMA = "asyncq"
_MISSING_DRIVER = "the PostgreSQL journal needs the asyncpg driver: pip install 'asyncq[postgres]'"
# Faults that a moment later may be gone: the server restarting, a connection cut.
_CONNECTION_LOST = frozenset(
    {"08000", "08003", "08006", "08001", "08004", "57P01", "57P02", "57P03"}
)
# Another transaction held what this one needed: the turn is run again as it was.
CONFLICT = frozenset({"40P01", "40001", "55P03"})


def driver() -> Any:
    """The asyncpg module, or an error naming the extra that installs it."""
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
    (`PostgresConnections.clock_offset`), so that every host sharing the database
    reads one time. Sleeps are local: only the time read is corrected."""

    def __init__(self, journal: PostgresConnections) -> None:
        self._journal = journal

    def now(self) -> float:
        return self._journal.local_clock() + self._journal.clock_offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class PostgresConnections:
    """The connections under a `PostgresJournal`: the writer's (`_writer_connection`,
    opened again after a loss) and the read connection (`_read`), which listens on
    the schema's channel."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        connect_timeout: float = 10.0,
        local_clock: Callable[[], float] = time.time,
    ) -> None:
        self._asyncpg = driver()
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
        self._conn: Conn | None = None
        self._reader: Conn | None = None
        self._reader_lock = asyncio.Lock()
        self._open = False
        self._channel = f"asyncq_{self.schema}"
        self._instance = secrets.token_hex(8)  # names this journal's notifications
        self._changed = False  # another process's notification came since the last poll
        self._on_change: Callable[[], None] | None = None
        #: This host's clock (seconds since the epoch), and the seconds to add to it
        #: to read the database server's (measured at `open`).
        self.local_clock = local_clock
        self.clock_offset = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"

    def clock(self) -> DatabaseClock:
        """A clock that reads the database server's time (see the module's docstring)."""
        return DatabaseClock(self)

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

    async def _writer_connection(self) -> Conn:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        return self._conn

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
            terminate(self._conn)
            self._conn = None
        return False

    def _is_conflict(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in CONFLICT

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
                    terminate(self._reader)
                    self._reader = None
                raise translated from exc

    def _notified(self, conn: Conn, pid: int, channel: str, payload: str) -> None:
        if payload == self._instance:
            return  # this journal's own write
        self._changed = True
        if self._on_change is not None:
            self._on_change()


def terminate(conn: Conn | None) -> None:
    """Close a connection that was lost (at once: it may be stuck mid-operation)."""
    if conn is not None:
        conn.terminate()
