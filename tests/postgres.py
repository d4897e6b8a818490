"""The PostgreSQL server the tests use, and a fresh schema per test.

The server is `ASYNCQ_TEST_POSTGRES` (a `postgresql://` connection string), by
default the local one (`postgresql://postgres@127.0.0.1:5432/test`). Tests that
need it skip, with the reason, where it cannot be reached or asyncpg is not
installed; `.ci/run` sets ASYNCQ_REQUIRE_POSTGRES=1, which turns that skip into a
failure, since CI runs where the server is.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_dsn() -> str:
    return os.environ.get("ASYNCQ_TEST_POSTGRES", DEFAULT_DSN)


@cache
def _unreachable_reason() -> str | None:
    """Why the tests cannot use the server (None: they can). Asked once per run."""
    try:
        import asyncpg
    except ModuleNotFoundError:
        return "asyncpg is not installed (pip install -e '.[dev]')"

    async def probe() -> None:
        conn = await asyncpg.connect(postgres_dsn(), timeout=3)
        await conn.close()

    try:
        # In a thread of its own: the caller may be inside a running event loop.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, probe()).result()
    except Exception as exc:  # noqa: BLE001 - any failure is the reason to skip
        return f"PostgreSQL at {postgres_dsn()} cannot be reached ({type(exc).__name__}: {exc})"
    return None


def postgres_dsn_or_skip() -> str:
    """The test server's connection string, or a skip (a failure under
    ASYNCQ_REQUIRE_POSTGRES=1) saying why it cannot be used."""
    reason = _unreachable_reason()
    if reason is not None:
        if os.environ.get("ASYNCQ_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"ASYNCQ_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return postgres_dsn()


@asynccontextmanager
async def fresh_schema(dsn: str) -> AsyncIterator[str]:
    """A connection string naming a new, empty schema, dropped afterwards."""
    import asyncpg

    schema = f"asyncq_test_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in dsn else "?"
    try:
        yield f"{dsn}{separator}schema={schema}"
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


def query(dsn: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Rows of `sql` run in the schema that `dsn` names (`?schema=`), from code
    that is not async (in a thread of its own, like the probe above)."""
    import asyncpg

    from asyncq._journal._postgres_connections import split_dsn

    server, schema = split_dsn(dsn, None)

    async def run() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(server, server_settings={"search_path": schema})
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result()


async def kept_and_counted(schema_dsn: str) -> tuple[dict[Any, int], dict[Any, int]]:
    """The PostgreSQL journal's kept counts of jobs by destination and state (every
    writer's rows summed), and those counted in the jobs table: equal whenever no
    transaction is moving jobs."""
    import asyncpg

    from asyncq._journal._postgres_connections import split_dsn

    server, schema = split_dsn(schema_dsn, None)
    conn = await asyncpg.connect(server, server_settings={"search_path": schema})
    try:
        kept = await conn.fetch(
            "SELECT destination, state, sum(n) FROM counts GROUP BY 1, 2 HAVING sum(n) != 0"
        )
        counted = await conn.fetch(
            "SELECT destination, state, count(*) FROM jobs WHERE state != 'running' GROUP BY 1, 2"
        )
    finally:
        await conn.close()
    return {(d, s): int(n) for d, s, n in kept}, {(d, s): int(n) for d, s, n in counted}


class CommitCutter:
    """A TCP proxy to the test server on 127.0.0.1 that, once armed, forwards a
    COMMIT but cuts the client's connection before the server's answer reaches
    it: the transaction committed, and the client cannot know.

    `dsn(schema_dsn)` is the connection string through the proxy."""

    # The server's answer to COMMIT: CommandComplete, length 11, tag "COMMIT".
    COMMITTED = b"C\x00\x00\x00\x0bCOMMIT\x00"

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.armed = False
        self.cuts = 0
        #: Connections to refuse right after a cut (the server "still down").
        self.refuse_after_cut = 0
        self._refusing = 0

    async def __aenter__(self) -> CommitCutter:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def dsn(self, dsn: str) -> str:
        import urllib.parse

        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        parts = urllib.parse.urlsplit(dsn)
        user = f"{parts.username}@" if parts.username else ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        if self._refusing:
            self._refusing -= 1
            client_out.close()
            return
        server_in, server_out = await asyncio.open_connection(*self._target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, answers: bool) -> None:
            try:
                while data := await src.read(65536):
                    if answers and self.armed and self.COMMITTED in data:
                        self.armed = False
                        self.cuts += 1
                        self._refusing = self.refuse_after_cut
                        break  # the answer is dropped, and both connections closed
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                for writer in (client_out, server_out):
                    writer.close()

        for task in (
            asyncio.create_task(pump(client_in, server_out, answers=False)),
            asyncio.create_task(pump(server_in, client_out, answers=True)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
