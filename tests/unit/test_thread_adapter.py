"""asyncq reaches into aiosqlite in one place; pin what it relies on."""

import sqlite3
import threading
from pathlib import Path

import aiosqlite

from asyncq._journal._thread import TESTED_AIOSQLITE, ConnectionThread


def test_the_installed_aiosqlite_is_one_the_adapter_was_checked_against() -> None:
    major_minor = ".".join(aiosqlite.__version__.split(".")[:2])
    assert major_minor in TESTED_AIOSQLITE, (
        f"aiosqlite {aiosqlite.__version__}: check ConnectionThread against it, then add it"
    )


async def test_a_function_runs_on_the_connection_thread_with_the_live_connection(
    tmp_path: Path,
) -> None:
    async with aiosqlite.connect(tmp_path / "t.db") as db:
        thread = ConnectionThread(db)
        seen: dict[str, object] = {}

        def probe(conn: sqlite3.Connection) -> int:
            seen["thread"] = threading.current_thread()
            seen["conn"] = conn
            return int(conn.execute("SELECT 41 + 1").fetchone()[0])

        assert await thread.run(probe) == 42
        assert seen["thread"] is not threading.current_thread()
        assert isinstance(seen["conn"], sqlite3.Connection)
