"""The one adapter onto aiosqlite's internals.

A journal transaction must cost one thread hop, not one per statement (an
aiosqlite await costs 65-70 us), so whole transactions run as one function on
aiosqlite's connection thread. aiosqlite has no public call for that; its
private `_execute` is used here and nowhere else, and
tests/unit/test_thread_adapter.py pins the versions it was checked against.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar, cast

import aiosqlite

T = TypeVar("T")

TESTED_AIOSQLITE = ("0.20", "0.21", "0.22")


class ConnectionThread:
    """Runs functions of a `sqlite3.Connection` on aiosqlite's connection thread."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db: Any = self._db
        return cast(T, await db._execute(_with_connection, db, fn))


def _with_connection(db: Any, fn: Callable[[sqlite3.Connection], T]) -> T:
    # Runs on the connection thread: `_conn` is the live sqlite3 connection.
    return fn(db._conn)
