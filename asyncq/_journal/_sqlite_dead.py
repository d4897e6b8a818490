"""Dead letters in the SQLite journal: listed, sent again, deleted."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from .._records import JobInfo
from . import _sqlite_deps as deps
from . import _sqlite_reads as reads
from . import _sqlite_sql as sql
from . import _sqlite_writes as writes
from ._rows import job_info
from ._sqlite_writes import Deltas


def listed(
    conn: sqlite3.Connection, destination: str | None, since: float | None, limit: int
) -> list[JobInfo]:
    """Dead jobs, the most recent death first."""
    rows = conn.execute(
        f"SELECT {sql.COLUMNS} FROM jobs WHERE state = 'dead' "
        "AND (?1 IS NULL OR destination = ?1) AND (?2 IS NULL OR finished_at >= ?2) "
        "ORDER BY finished_at DESC, id DESC LIMIT ?3",
        (destination, since, limit),
    ).fetchall()
    return [job_info(row) for row in rows]


def redrive(
    conn: sqlite3.Connection,
    ids: Sequence[int] | None,
    destination: str | None,
    now: float,
    spacing: float,
    deltas: Deltas,
) -> int:
    """Dead jobs back to pending, `spacing` seconds apart, with what their death
    cancelled; the number redriven."""
    chosen = writes.keys_free(conn, reads.select_dead(conn, ids, destination, None))
    batch = json.dumps([[job_id, now + i * spacing] for i, job_id in enumerate(chosen)])
    rows = conn.execute(sql.REDRIVE, {"batch": batch, "now": now}).fetchall()
    count = writes.moved(deltas, rows, "dead")
    deps.bring_back(conn, chosen, deltas)
    return count


def purge(
    conn: sqlite3.Connection,
    ids: Sequence[int] | None,
    destination: str | None,
    before: float | None,
    deltas: Deltas,
) -> int:
    """Delete dead jobs (and their dependency rows); the number deleted."""
    chosen = reads.select_dead(conn, ids, destination, before)
    rows = conn.execute(
        "DELETE FROM jobs WHERE state = 'dead' AND id IN (SELECT value FROM json_each(?)) "
        "RETURNING destination, state",
        (json.dumps(chosen),),
    ).fetchall()
    deps.forget(conn, chosen)
    return writes.moved(deltas, rows, None)
