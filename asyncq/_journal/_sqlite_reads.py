"""Reading the SQLite journal: rows as records, and stats from the kept counts."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from .._codec import is_utf8
from . import _sqlite_activity as monitoring
from . import _sqlite_sql as sql
from ._activity import Row, journal_stats
from ._messages import ClaimedJob, DestinationRecord, JournalStats


def text_factory(raw: bytes) -> str:
    """A TEXT value as a str. Invalid UTF-8 (stored by an older asyncq, or written by
    hand) must not fail the whole query it is part of, a claim above all: such bytes
    come back with surrogate escapes, and the job that holds them is buried alone."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def isolate_broken_text(jobs: list[ClaimedJob]) -> None:
    """Jobs whose stored text is not valid UTF-8 get no payload: the worker buries
    them with a reason, and the rest of the claim runs as usual."""
    for job in jobs:
        if not is_utf8(json.dumps([job.task, job.destination, job.payload], ensure_ascii=False)):
            job.payload = None


def stats(conn: sqlite3.Connection, now: float, unwritten: list[Row]) -> JournalStats:
    """Jobs per destination and state, from the counts the writer keeps, and the few
    rows that counts cannot tell apart: running jobs, due scheduled ones, the age of
    each destination's oldest ready job; the last minute's activity (with this
    process's `unwritten` counts), the known rate limits and the live workers.
    Nothing here scans the backlog."""
    per: dict[str, dict[str, Any]] = {}

    def of(destination: str) -> dict[str, Any]:
        return per.setdefault(destination, {})

    for destination, state, n in conn.execute("SELECT destination, state, n FROM counts"):
        if n and state != "running":
            of(destination)["ready" if state == "pending" else state] = n
    # Scheduled jobs whose time has come are ready, if not promoted yet (bounded:
    # every claim promotes them).
    for destination, n, oldest in conn.execute(sql.DUE_SCHEDULED, (now,)):
        counts = of(destination)
        counts["ready"] = counts.get("ready", 0) + n
        counts["scheduled"] = counts.get("scheduled", 0) - n
        counts["oldest_ready_at"] = oldest
    for destination, started, n in conn.execute(sql.RUNNING, (now,)):
        of(destination)["running" if started else "claimed"] = n
    for (destination,) in conn.execute("SELECT destination FROM ready_destinations"):
        oldest = oldest_ready(conn, destination)
        if oldest is not None:
            counts = of(destination)
            earlier = counts.get("oldest_ready_at")
            counts["oldest_ready_at"] = oldest if earlier is None else min(earlier, oldest)
    for name, paused, hold, circuit, circuit_until in conn.execute(
        "SELECT name, paused, hold_until, circuit, circuit_until FROM destinations "
        "WHERE paused OR hold_until > ?1 OR circuit != 'closed'",
        (now,),
    ):
        counts = of(name)
        counts["paused"] = bool(paused)
        counts["held_until"] = hold if hold > now else None
        counts["circuit"] = circuit
        counts["circuit_until"] = circuit_until if circuit != "closed" else None
    window = monitoring.read_window(conn, now, unwritten)
    limits = monitoring.rates(conn)
    return journal_stats(per, window, limits, now, monitoring.workers_alive(conn, now))


def next_run_at(conn: sqlite3.Connection) -> float | None:
    """-inf if a job is ready, else when the next scheduled job is due (None: none)."""
    if conn.execute("SELECT 1 FROM jobs WHERE state = 'pending' LIMIT 1").fetchone():
        return float("-inf")
    (due,) = conn.execute("SELECT min(run_at) FROM jobs WHERE state = 'scheduled'").fetchone()
    return None if due is None else float(due)


def oldest_ready(conn: sqlite3.Connection, destination: str) -> float | None:
    """The earliest `run_at` among a destination's ready jobs: one index seek per
    priority level in use, not a scan of the destination's backlog."""
    oldest: float | None = None
    (priority,) = conn.execute(sql.TOP_PRIORITY, (destination,)).fetchone()
    while priority is not None:
        (first,) = conn.execute(sql.FIRST_AT_PRIORITY, (destination, priority)).fetchone()
        oldest = first if oldest is None else min(oldest, first)
        (priority,) = conn.execute(sql.NEXT_PRIORITY, (destination, priority)).fetchone()
    return oldest


def select_dead(
    conn: sqlite3.Connection,
    ids: Sequence[int] | None,
    destination: str | None,
    before: float | None,
) -> list[int]:
    """Ids of dead jobs among `ids` (all if None), of `destination`, dead before `before`."""
    rows = conn.execute(
        "SELECT id FROM jobs WHERE state = 'dead' AND (?1 IS NULL OR destination = ?1) "
        "AND (?2 IS NULL OR finished_at < ?2) "
        "AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3))) ORDER BY id",
        (destination, before, None if ids is None else json.dumps(list(ids))),
    ).fetchall()
    return [row[0] for row in rows]


def destinations(conn: sqlite3.Connection) -> list[DestinationRecord]:
    rows = conn.execute(
        "SELECT name, paused, hold_until, circuit, circuit_until, full_at FROM destinations"
    ).fetchall()
    return [
        DestinationRecord(name, bool(paused), hold, circuit, until, full)
        for name, paused, hold, circuit, until, full in rows
    ]


def last_ticks(conn: sqlite3.Connection) -> dict[str, float]:
    rows = conn.execute("SELECT name, last_tick FROM periodic").fetchall()
    return {name: float(tick) for name, tick in rows}
