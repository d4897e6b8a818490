"""Reading a PostgreSQL journal without changing it: what the CLI's `stats`, `top`,
`jobs`, `show` and `dead` use on a `postgresql://` connection string (the counterpart
of `_sqlite_readonly.py`).

A `Queue` on a connection string creates its schema and tables, or migrates them,
when it opens; a command that only looks must do neither. This reader connects,
checks that the schema holds an asyncq journal of this asyncq's version (a missing
schema is an error naming it, never created), and reads in one read-only
transaction (`REPEATABLE READ`: one snapshot for every query of a call). The
connection string is shown without its password in every message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._errors import JournalError
from .._records import JobInfo, JobState
from ._messages import JournalStats
from ._postgres_activity import stats as read_stats
from ._postgres_connections import driver, split_dsn
from ._postgres_dsn import describe, scrub
from ._postgres_schema import SCHEMA_VERSION
from ._postgres_sql import COLUMNS, LIST_DEAD
from ._rows import PUBLIC_STATE, job_info
from ._sqlite_readonly import JobDetail

T = TypeVar("T")
Conn = Any  # asyncpg.Connection: asyncpg ships no type information

#: Stored states of each public state (a scheduled job is pending, not due yet).
STORED_STATES: dict[JobState, list[str]] = {
    public: [stored for stored, state in PUBLIC_STATE.items() if state is public]
    for public in JobState
}

_PAGE = f"""
SELECT {COLUMNS} FROM jobs
WHERE id > $1 AND ($2::text[] IS NULL OR state = ANY($2))
AND ($3::text IS NULL OR destination = $3) AND ($4::text IS NULL OR task = $4)
ORDER BY id LIMIT $5
"""
_DETAIL = """
SELECT owner, lease_until, first_started_at, cancel_requested, cancelled_by, on_parent_failure
FROM jobs WHERE id = $1
"""
_VERSION_TABLE = "SELECT to_regclass(quote_ident($1) || '.schema_version') IS NOT NULL"
_SCHEMA_EXISTS = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)"


class PostgresReadOnly:
    """A PostgreSQL journal, read and never written: every call connects, reads one
    snapshot and disconnects, so nothing is held between calls.

    Raises `JournalError` (the connection string shown without its password) when
    the server cannot be reached, the schema does not exist or holds no asyncq
    journal, or its version is not this asyncq's. Nothing is created or changed.
    """

    def __init__(self, dsn: str, *, connect_timeout: float = 10.0) -> None:
        self._dsn, self.schema = split_dsn(dsn, None)
        base = describe(self._dsn)
        #: The connection string without its password, with the schema.
        self.description = f"{base}{'&' if '?' in base else '?'}schema={self.schema}"
        self._connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return f"PostgresReadOnly({self.description!r})"

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
        states = None if state is None else STORED_STATES[state]

        async def page(conn: Conn) -> list[JobInfo]:
            rows = await conn.fetch(_PAGE, after, states, destination, task, limit)
            return [job_info(row) for row in rows]

        return self.read(page)

    def stats(self, now: float) -> JournalStats:
        """What `Queue.stats()` reports at `now`, read by the statement it uses."""
        # A queue adds the activity it has not written yet; this reader has none.
        return self.read(lambda conn: read_stats(conn, now, []))

    def dead_letters(
        self, destination: str | None = None, *, since: float | None = None, limit: int = 100
    ) -> list[JobInfo]:
        """Dead jobs, the most recent death first, as `Queue.dead_letters` lists them."""

        async def dead(conn: Conn) -> list[JobInfo]:
            return [job_info(row) for row in await conn.fetch(LIST_DEAD, destination, since, limit)]

        return self.read(dead)

    def read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """`fn(connection)` run on one snapshot of the journal (its own event loop)."""
        return asyncio.run(self._read(fn))

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        asyncpg = driver()
        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout,
                server_settings={
                    "search_path": self.schema,
                    "application_name": "asyncq-cli",
                    # A second guard: the server refuses any write of this session.
                    "default_transaction_read_only": "on",
                },
            )
        except Exception as exc:  # noqa: BLE001 - every cause is reported the same way
            reason = scrub(f"{type(exc).__name__}: {exc}", self._dsn)
            raise JournalError(self.description, f"cannot connect ({reason})") from None
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await self._check_schema(conn)
                return await fn(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # A server gone mid-read too (`top` shows it and tries again).
            raise JournalError(self.description, scrub(str(exc), self._dsn)) from None
        finally:
            await conn.close()

    async def _check_schema(self, conn: Conn) -> None:
        schema = self.schema
        if not await conn.fetchval(_VERSION_TABLE, schema):
            if await conn.fetchval(_SCHEMA_EXISTS, schema):
                raise JournalError(self.description, f"schema {schema!r} holds no asyncq journal")
            raise JournalError(
                self.description,
                f"no schema {schema!r} in this database: no queue has used it yet "
                "(the connection string's ?schema= names another one?)",
            )
        version = await conn.fetchval(f"SELECT version FROM {schema}.schema_version")
        if version < SCHEMA_VERSION:
            raise JournalError(
                self.description,
                f"has schema version {version}, older than this asyncq's {SCHEMA_VERSION}: "
                "start a worker or open a Queue on it once to migrate it, then read it",
            )
        if version > SCHEMA_VERSION:
            raise JournalError(
                self.description,
                f"schema version {version} was written by a newer asyncq "
                f"(this one knows up to {SCHEMA_VERSION})",
            )


async def _detail(conn: Conn, job_id: int) -> JobDetail | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM jobs WHERE id = $1", job_id)
    if row is None:
        return None
    (
        owner,
        lease_until,
        first_started,
        cancel_requested,
        cancelled_by,
        on_failure,
    ) = await conn.fetchrow(_DETAIL, job_id)
    parents = await conn.fetch("SELECT parent FROM deps WHERE child = $1 ORDER BY parent", job_id)
    children = await conn.fetch("SELECT child FROM deps WHERE parent = $1 ORDER BY child", job_id)
    return JobDetail(
        info=job_info(row),
        owner=owner,
        lease_until=lease_until,
        first_started_at=first_started,
        cancel_requested=bool(cancel_requested),
        cancelled_by=cancelled_by,
        on_parent_failure=on_failure,
        parents=[r[0] for r in parents],
        children=[r[0] for r in children],
    )
