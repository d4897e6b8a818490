"""Cancellation in the SQLite journal: the statements, and what a transaction runs.

A job that is not running is cancelled in place. A running job belongs to the
process that claimed it: the cancel marks it (`cancel_requested`, in the partial
index `jobs_cancel_requested` on owner, so finding one owner's requests is a
seek), and that process cancels the handler and records `Cancelled`. Every path
that would take a marked job out of `running` without finishing it (a failure to
retry, a release at shutdown, an expired lease) cancels it instead, so a request
is never lost to a retry. A job that succeeds or dies first keeps that outcome.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .._records import JobState
from . import _sqlite_sql as sql
from ._messages import Cancellation
from ._sqlite_deps import settle_children

if TYPE_CHECKING:
    from ._sqlite_writes import Deltas

# Stored states a cancel takes, for each public state it may be asked for.
_STORED = {
    JobState.PENDING: ("pending", "scheduled"),
    JobState.BLOCKED: ("blocked",),
}
_FINAL = "state = 'cancelled', finished_at = :now, owner = NULL, lease_until = NULL"

# `Cancelled` outcomes: [id, token, started_us]. An attempt whose start was not
# written yet is counted here, as COMPLETE does.
RECORD = f"""
UPDATE jobs SET {_FINAL}, cancel_requested = 0,
       attempts = attempts + (started_at IS NULL AND o.value ->> 2 IS NOT NULL),
       first_started_at = coalesce(first_started_at, started_at, (o.value ->> 2) / 1e6),
       started_at = coalesce(started_at, (o.value ->> 2) / 1e6)
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND +jobs.claim_token = o.value ->> 1
  AND +jobs.owner = :owner AND +jobs.state = 'running'
RETURNING jobs.id, jobs.destination
"""
REQUESTS = """
SELECT id FROM jobs WHERE cancel_requested = 1 AND owner = ? AND state = 'running' ORDER BY id
"""
# Marked jobs that left `running` without a final outcome of their own, and marks
# left on finished jobs (a handler that finished first): one seek on the index.
_UNOWNED_REQUESTS = """
SELECT id, destination, state FROM jobs WHERE cancel_requested = 1 AND owner IS NULL
"""
_CANCEL_IDS = f"""
UPDATE jobs SET {_FINAL}, cancel_requested = 0
WHERE id IN (SELECT value FROM json_each(:ids))
"""
_CLEAR_IDS = """
UPDATE jobs SET cancel_requested = 0 WHERE id IN (SELECT value FROM json_each(:ids))
"""
# A marked job whose owner stopped renewing its lease: cancelled, not retried.
_EXPIRED = f"""
UPDATE jobs SET {_FINAL}, cancel_requested = 0
WHERE state = 'running' AND cancel_requested = 1 AND lease_until < :now
RETURNING id, destination
"""


def _count(deltas: Deltas, destinations: Iterable[str], old: str) -> None:
    for destination, n in Counter(destinations).items():
        deltas[destination, old] -= n
        deltas[destination, "cancelled"] += n


def cancel_one(
    conn: sqlite3.Connection, job_id: int, now: float, deltas: Deltas
) -> Cancellation | None:
    row = conn.execute(
        "SELECT state, destination, owner, lease_until FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None:
        return None
    state, destination, owner, lease_until = row
    if state in ("pending", "scheduled", "blocked") or (state == "running" and lease_until < now):
        conn.execute(
            f"UPDATE jobs SET {_FINAL}, cancel_requested = 0 WHERE id = :id",
            {"now": now, "id": job_id},
        )
        _count(deltas, [destination], state)
        settled = settle_children(conn, [], [job_id], now, deltas)
        return Cancellation([job_id], [], settled, JobState.CANCELLED)
    if state == "running":
        # Marked once: a repeated request writes nothing (no news for other processes).
        conn.execute(
            "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND cancel_requested = 0",
            (job_id,),
        )
        return Cancellation([], [(job_id, owner)], [], JobState.RUNNING)
    return Cancellation([], [], [], sql.PUBLIC_STATE[state])


def cancel_where(
    conn: sqlite3.Connection,
    *,
    destination: str | None,
    task: str | None,
    states: Sequence[JobState],
    now: float,
    deltas: Deltas,
) -> Cancellation:
    """Every selected job, with one statement per stored state: each runs on that
    state's partial index (a 50,000-job campaign is one UPDATE, not 50,000)."""
    # Fixed fragments only: the values are bound parameters.
    where = "".join(
        f" AND {column} = :{column}"
        for column, value in (("destination", destination), ("task", task))
        if value is not None
    )
    params = {"destination": destination, "task": task, "now": now}
    cancelled: list[int] = []
    steps = [(stored, "") for state in states for stored in _STORED.get(state, ())]
    if JobState.RUNNING in states:
        steps.append(("running", " AND lease_until < :now"))  # its owner is gone: at once
    for stored, condition in steps:
        rows = conn.execute(
            f"UPDATE jobs SET {_FINAL}, cancel_requested = 0 "
            f"WHERE state = '{stored}'{condition}{where} RETURNING id, destination",
            params,
        ).fetchall()
        _count(deltas, (d for _, d in rows), stored)
        cancelled += (job_id for job_id, _ in rows)
    requested: list[tuple[int, str]] = []
    if JobState.RUNNING in states:
        requested = conn.execute(
            f"UPDATE jobs SET cancel_requested = 1 WHERE state = 'running'{where} "
            "RETURNING id, owner",
            params,
        ).fetchall()
    settled = settle_children(conn, [], cancelled, now, deltas) if cancelled else []
    return Cancellation(cancelled, requested, settled)


def record_cancelled(
    conn: sqlite3.Connection, owner: str, now: float, batch: str, deltas: Deltas
) -> list[int]:
    """Write `Cancelled` outcomes (JSON); the jobs cancelled, then their children."""
    rows = conn.execute(RECORD, {"batch": batch, "owner": owner, "now": now}).fetchall()
    _count(deltas, (d for _, d in rows), "running")
    if not rows:
        return []
    ids = [job_id for job_id, _ in rows]
    return ids + settle_children(conn, [], ids, now, deltas)


def settle_requests(conn: sqlite3.Connection, now: float, deltas: Deltas) -> list[int]:
    """After failures or releases: a marked job sent back to wait is cancelled
    instead; marks on finished jobs are cleared. The jobs cancelled, then their
    children."""
    rows = conn.execute(_UNOWNED_REQUESTS).fetchall()
    if not rows:
        return []
    waiting = [(job_id, d, s) for job_id, d, s in rows if s in ("pending", "scheduled")]
    conn.execute(_CLEAR_IDS, {"ids": json.dumps([job_id for job_id, _, _ in rows])})
    if not waiting:
        return []
    ids = [job_id for job_id, _, _ in waiting]
    conn.execute(_CANCEL_IDS, {"ids": json.dumps(ids), "now": now})
    for state in ("pending", "scheduled"):
        _count(deltas, (d for _, d, s in waiting if s == state), state)
    return ids + settle_children(conn, [], ids, now, deltas)


def cancel_expired(conn: sqlite3.Connection, now: float, deltas: Deltas) -> list[int]:
    """Before a reclaim: marked jobs whose lease expired are cancelled, not retried.
    The jobs cancelled, then their children."""
    rows = conn.execute(_EXPIRED, {"now": now}).fetchall()
    if not rows:
        return []
    _count(deltas, (d for _, d in rows), "running")
    ids = [job_id for job_id, _ in rows]
    return ids + settle_children(conn, [], ids, now, deltas)
