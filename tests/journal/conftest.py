from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Contract tests of the activity counts (rates, latencies, call rates against the
    limit) are expected to fail on PostgreSQL, strictly: they flip loudly once it
    keeps them."""
    for item in items:
        if item.get_closest_marker("needs_activity") and "[postgres" in item.nodeid:
            item.add_marker(
                pytest.mark.xfail(
                    strict=True,
                    reason="the PostgreSQL journal does not record activity yet (issue 13)",
                )
            )
