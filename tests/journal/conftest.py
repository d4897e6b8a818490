from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncq._journal import Journal, SqliteJournal


@pytest.fixture(params=["sqlite"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    """Every backend, behind the same interface. PostgreSQL joins this list later."""
    backend = SqliteJournal(str(tmp_path / "journal.db"))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
