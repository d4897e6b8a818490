from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncq._journal import Journal, SqliteJournal
from tests.postgres import fresh_schema, kept_and_counted, postgres_dsn_or_skip


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
