"""Dependencies and cancellation in the PostgreSQL journal: the same rules as
SQLite's (`_sqlite_deps.py`, `_sqlite_cancel.py`), in PostgreSQL's SQL.

Every transaction that makes jobs final settles their children in the same
transaction: a success counts down `waiting`, and the child that reaches 0 becomes
ready; a parent that ends dead or cancelled cancels each child whose
`on_parent_failure` is "cancel" (and its subtree), and counts as done for a child
whose mode is "run". Two parents of one child finishing on two hosts at once update
the child's row in turn: the second sees the first's count (row lock, then a
re-check of the new row version).

A running job belongs to the process that claimed it: a cancel marks it
(`cancel_requested`), and that process cancels the handler and records `Cancelled`.
Every path that would take a marked job out of `running` without finishing it
cancels it instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._records import JobState
from ._messages import Cancellation
from ._postgres_schema import LIVE
from ._rows import PUBLIC_STATE

ANY_BLOCKED = "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'blocked')"
_COUNT_DOWN = """
UPDATE jobs SET waiting = jobs.waiting - d.n,
    state = CASE WHEN jobs.waiting - d.n > 0 THEN 'blocked'
                 WHEN jobs.run_at <= $2 THEN 'pending' ELSE 'scheduled' END
FROM (SELECT child, count(*)::int AS n FROM deps WHERE parent = ANY($1::bigint[])
      GROUP BY child) AS d
WHERE jobs.id = d.child AND jobs.state = 'blocked' {mode}
RETURNING jobs.state, jobs.destination
"""
COUNT_DOWN_ALL = _COUNT_DOWN.format(mode="")
COUNT_DOWN_RUN = _COUNT_DOWN.format(mode="AND jobs.on_parent_failure = 'run'")
CASCADE = """
UPDATE jobs SET state = 'cancelled', finished_at = $2, cancelled_by = d.parent
FROM (SELECT child, min(parent) AS parent FROM deps WHERE parent = ANY($1::bigint[])
      GROUP BY child) AS d
WHERE jobs.id = d.child AND jobs.state = 'blocked' AND jobs.on_parent_failure = 'cancel'
RETURNING jobs.id, jobs.destination
"""
# Redrive: a parent that is live again is not done for its blocked "run" children,
# and the children its end cancelled come back blocked, `waiting` recomputed,
# unless another parent ended dead or cancelled too, or a live job took their key.
COUNT_UP_RUN = """
UPDATE jobs SET waiting = jobs.waiting + d.n
FROM (SELECT child, count(*)::int AS n FROM deps WHERE parent = ANY($1::bigint[])
      GROUP BY child) AS d
WHERE jobs.id = d.child AND jobs.state = 'blocked' AND jobs.on_parent_failure = 'run'
"""
_CANCELLED_BY_THESE = """
jobs.id IN (SELECT child FROM deps WHERE parent = ANY($1::bigint[]))
AND jobs.state = 'cancelled' AND jobs.cancelled_by = ANY($1::bigint[])
"""
REVIVE = f"""
UPDATE jobs SET state = 'blocked', finished_at = NULL, cancelled_by = NULL,
    waiting = (SELECT count(*) FROM deps AS d JOIN jobs AS p ON p.id = d.parent
               WHERE d.child = jobs.id AND p.state != 'succeeded')
WHERE {_CANCELLED_BY_THESE}
AND NOT EXISTS (SELECT 1 FROM deps AS d JOIN jobs AS p ON p.id = d.parent
                WHERE d.child = jobs.id AND p.state IN ('dead', 'cancelled'))
AND (jobs.key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS live WHERE live.key = jobs.key
                                     AND live.state IN {LIVE}))
RETURNING jobs.id, jobs.destination
"""
REPOINT = f"""
UPDATE jobs SET cancelled_by = coalesce(
    (SELECT min(p.id) FROM deps AS d JOIN jobs AS p ON p.id = d.parent
     WHERE d.child = jobs.id AND p.state IN ('dead', 'cancelled')), jobs.cancelled_by)
WHERE {_CANCELLED_BY_THESE}
"""

_FINAL = "state = 'cancelled', finished_at = $2, owner = NULL, lease_until = NULL"
# `Cancelled` outcomes: an attempt whose start was not written yet is counted here.
RECORD_CANCELLED = """
UPDATE jobs SET state = 'cancelled', finished_at = $2, owner = NULL, lease_until = NULL,
       cancel_requested = false,
       attempts = attempts + (started_at IS NULL AND o.at IS NOT NULL)::int,
       first_started_at = coalesce(first_started_at, started_at, o.at::float8 / 1e6::float8),
       started_at = coalesce(started_at, o.at::float8 / 1e6::float8)
FROM unnest($3::bigint[], $4::bigint[], $5::bigint[]) AS o (id, token, at)
WHERE jobs.id = o.id AND jobs.claim_token = o.token AND jobs.owner = $1
  AND jobs.state || '' = 'running'  -- by primary key: see _postgres_sql._OUTCOME_MATCH
RETURNING jobs.id, jobs.destination
"""
REQUESTS = """
SELECT id FROM jobs WHERE cancel_requested AND owner = $1 AND state = 'running' ORDER BY id
"""
_UNOWNED_REQUESTS = """
SELECT id, state, destination FROM jobs WHERE cancel_requested AND owner IS NULL
"""
_CLEAR_IDS = "UPDATE jobs SET cancel_requested = false WHERE id = ANY($1::bigint[])"
_CANCEL_IDS = f"""
UPDATE jobs SET {_FINAL}, cancel_requested = false WHERE id = ANY($1::bigint[])
"""
_EXPIRED = """
UPDATE jobs SET state = 'cancelled', finished_at = $1, owner = NULL, lease_until = NULL,
       cancel_requested = false
WHERE state = 'running' AND cancel_requested AND lease_until < $1
RETURNING id, destination
"""
_STORED = {
    JobState.PENDING: ("pending", "scheduled"),
    JobState.BLOCKED: ("blocked",),
}

Conn = Any  # an asyncpg connection inside a transaction
#: Jobs moved in one transaction: (destination, state) -> change in count.
Deltas = Counter[tuple[str, str]]


@dataclass(slots=True)
class Settled:
    """What one transaction did to blocked jobs, for `on_children_settled`."""

    #: Children cancelled because a parent ended (by an outcome or a lost lease).
    cancelled: list[int] = field(default_factory=list)
    #: Some blocked job left `blocked` (ready, scheduled or cancelled).
    moved: bool = False
    #: The changes of counts of the children settled (by destination and state),
    #: for the journal to count and clear.
    moves: Deltas = field(default_factory=Counter)


async def settle_children(
    conn: Conn,
    succeeded: Sequence[int],
    failed: Sequence[int],
    now: float,
    settled: Settled,
    *,
    collect: bool = True,
) -> list[int]:
    """Jobs `succeeded` succeeded and jobs `failed` ended dead or cancelled in this
    transaction: unblock their children, or cancel them (and their subtrees) as each
    child's on_parent_failure says. Returns the ids of the jobs it cancelled (also
    added to `settled.cancelled` if `collect`)."""
    if not (succeeded or failed) or not await conn.fetchval(ANY_BLOCKED):
        return []
    moves = settled.moves
    if succeeded:
        _counted_down(await conn.fetch(COUNT_DOWN_ALL, list(succeeded), now), settled)
    cancelled: list[int] = []
    ended = list(failed)
    # Each round cancels the next generation: a cancelled child ends in turn.
    while ended:
        _counted_down(await conn.fetch(COUNT_DOWN_RUN, ended, now), settled)
        rows = await conn.fetch(CASCADE, ended, now)
        ended = [row[0] for row in rows]
        for _, destination in rows:
            moves[destination, "blocked"] -= 1
            moves[destination, "cancelled"] += 1
        cancelled += ended
    if cancelled:
        settled.moved = True
        if collect:
            settled.cancelled += cancelled
    return cancelled


def _counted_down(rows: Sequence[Any], settled: Settled) -> None:
    """Children counted down (rows of their new state and destination)."""
    for state, destination in rows:
        if state != "blocked":
            settled.moved = True
            settled.moves[destination, "blocked"] -= 1
            settled.moves[destination, state] += 1


async def bring_back(conn: Conn, redriven: Sequence[int], deltas: Deltas) -> int:
    """Dead jobs `redriven` are live again: the children their death cancelled come
    back blocked (and theirs), and their "run" children wait for them again."""
    back = 0
    parents = list(redriven)
    while parents:
        await conn.execute(COUNT_UP_RUN, parents)
        rows = await conn.fetch(REVIVE, parents)
        revived = [row[0] for row in rows]
        for _, destination in rows:
            deltas[destination, "cancelled"] -= 1
            deltas[destination, "blocked"] += 1
        await conn.execute(REPOINT, parents)
        parents = revived
        back += len(revived)
    return back


async def cancel_one(
    conn: Conn, job_id: int, now: float, settled: Settled, moves: Deltas
) -> Cancellation | None:
    row = await conn.fetchrow(
        "SELECT state, owner, lease_until, destination FROM jobs WHERE id = $1 FOR UPDATE", job_id
    )
    if row is None:
        return None
    state, owner, lease_until, destination = row
    if state in ("pending", "scheduled", "blocked") or (state == "running" and lease_until < now):
        await conn.execute(
            f"UPDATE jobs SET {_FINAL}, cancel_requested = false WHERE id = $1", job_id, now
        )
        moves[destination, state] -= 1
        moves[destination, "cancelled"] += 1
        settled.moved |= state == "blocked"
        children = await settle_children(conn, [], [job_id], now, settled, collect=False)
        return Cancellation([job_id], [], children, JobState.CANCELLED)
    if state == "running":
        # Marked once: a repeated request writes nothing.
        await conn.execute(
            "UPDATE jobs SET cancel_requested = true WHERE id = $1 AND NOT cancel_requested",
            job_id,
        )
        return Cancellation([], [(job_id, owner)], [], JobState.RUNNING)
    return Cancellation([], [], [], PUBLIC_STATE[state])


async def cancel_where(
    conn: Conn,
    *,
    destination: str | None,
    task: str | None,
    states: Sequence[JobState],
    now: float,
    settled: Settled,
    moves: Deltas,
) -> Cancellation:
    """Every selected job, with one statement per stored state (each on that state's
    partial index)."""
    where = " AND ($3::text IS NULL OR destination = $3) AND ($4::text IS NULL OR task = $4)"
    cancelled: list[int] = []
    steps = [(stored, "") for state in states for stored in _STORED.get(state, ())]
    if JobState.RUNNING in states:
        steps.append(("running", " AND lease_until < $2"))  # its owner is gone: at once
    for stored, condition in steps:
        rows = await conn.fetch(
            f"UPDATE jobs SET {_FINAL}, cancel_requested = false "
            f"WHERE state = $1{condition}{where} RETURNING id, destination",
            stored,
            now,
            destination,
            task,
        )
        cancelled += [row[0] for row in rows]
        for _, name in rows:
            moves[name, stored] -= 1
            moves[name, "cancelled"] += 1
        settled.moved |= stored == "blocked" and bool(rows)
    requested: list[tuple[int, str]] = []
    if JobState.RUNNING in states:
        rows = await conn.fetch(
            "UPDATE jobs SET cancel_requested = true WHERE state = 'running' "
            "AND ($1::text IS NULL OR destination = $1) AND ($2::text IS NULL OR task = $2) "
            "RETURNING id, owner",
            destination,
            task,
        )
        requested = sorted((row[0], row[1]) for row in rows)
    children = await settle_children(conn, [], cancelled, now, settled, collect=False)
    return Cancellation(cancelled, requested, children)


async def record_cancelled(
    conn: Conn,
    owner: str,
    now: float,
    outcomes: tuple[list[int], list[int], list[int | None]],
    settled: Settled,
    moves: Deltas,
) -> list[int]:
    """Write `Cancelled` outcomes; the jobs cancelled, then their children."""
    rows = await conn.fetch(RECORD_CANCELLED, owner, now, *outcomes)
    if not rows:
        return []
    cancelled = [row[0] for row in rows]
    for _, destination in rows:
        moves[destination, "running"] -= 1
        moves[destination, "cancelled"] += 1
    return cancelled + await settle_children(conn, [], cancelled, now, settled, collect=False)


async def settle_requests(conn: Conn, now: float, settled: Settled, moves: Deltas) -> list[int]:
    """After failures or releases: a marked job sent back to wait is cancelled
    instead; marks on finished jobs are cleared. The jobs cancelled, then their
    children."""
    rows = await conn.fetch(_UNOWNED_REQUESTS)
    if not rows:
        return []
    await conn.execute(_CLEAR_IDS, [row[0] for row in rows])
    waiting = [row[0] for row in rows if row[1] in ("pending", "scheduled")]
    if not waiting:
        return []
    for _, state, destination in rows:
        if state in ("pending", "scheduled"):
            moves[destination, state] -= 1
            moves[destination, "cancelled"] += 1
    await conn.execute(_CANCEL_IDS, waiting, now)
    return waiting + await settle_children(conn, [], waiting, now, settled, collect=False)


async def cancel_expired(conn: Conn, now: float, settled: Settled, moves: Deltas) -> list[int]:
    """Before a reclaim: marked jobs whose lease expired are cancelled, not retried."""
    rows = await conn.fetch(_EXPIRED, now)
    if not rows:
        return []
    ids = [row[0] for row in rows]
    for _, destination in rows:
        moves[destination, "running"] -= 1
        moves[destination, "cancelled"] += 1
    return ids + await settle_children(conn, [], ids, now, settled, collect=False)
