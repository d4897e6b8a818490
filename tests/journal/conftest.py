from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncq._journal import Journal, SqliteJournal
from tests.postgres import fresh_schema, postgres_dsn_or_skip


@pytest.fixture(params=["sqlite", "postgres"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    """Every backend, behind the same interface: a SQLite file, and a fresh schema
    in the PostgreSQL server that tests/postgres.py finds (dropped after the test)."""
    if request.param == "sqlite":
        backend: Journal = SqliteJournal(str(tmp_path / "journal.db"))
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()
        return
    dsn = postgres_dsn_or_skip()
    async with fresh_schema(dsn) as schema_dsn:
        from asyncq._journal import PostgresJournal

        backend = PostgresJournal(schema_dsn)
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()
        # Whatever the test did, the counts that stats() reads are the jobs' own.
        kept, counted = await kept_and_counted(schema_dsn)
        assert kept == counted


async def kept_and_counted(schema_dsn: str) -> tuple[dict[Any, int], dict[Any, int]]:
    """The PostgreSQL journal's kept counts of jobs by destination and state (every
    writer's rows summed), and those counted in the jobs table."""
    import asyncpg

    from asyncq._journal._postgres import split_dsn

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
