"""Dead letters and retention in the PostgreSQL journal: redrive, purge and the
bounded pruning of finished jobs, each inside a writer turn's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _postgres_deps as deps
from . import _postgres_sql as sql
from ._messages import Pruned
from ._postgres_deps import Deltas
from ._rows import redrivable

Conn = Any  # an asyncpg connection inside a transaction

#: Finished jobs one prune call deletes at most.
PRUNE_WINDOW = 2_000


async def select_dead(
    conn: Conn, ids: Sequence[int] | None, destination: str | None, before: float | None
) -> list[int]:
    rows = await conn.fetch(
        sql.SELECT_DEAD, destination, before, None if ids is None else list(ids)
    )
    return [row[0] for row in rows]


async def redrive(
    conn: Conn,
    ids: Sequence[int] | None,
    destination: str | None,
    now: float,
    spacing: float,
    deltas: Deltas,
) -> int:
    """Dead jobs back to pending, `spacing` seconds apart, with what their death
    cancelled; the number redriven. A job whose key a live job holds stays dead."""
    chosen = await select_dead(conn, ids, destination, None)
    free = redrivable(await conn.fetch(sql.KEYS, chosen), len(chosen))
    times = [now + i * spacing for i in range(len(free))]
    rows = await conn.fetch(sql.REDRIVE, now, free, times)
    for destination, state in rows:
        deltas[destination, "dead"] -= 1
        deltas[destination, state] += 1
    await deps.bring_back(conn, free, deltas)
    return len(rows)


async def purge(
    conn: Conn,
    ids: Sequence[int] | None,
    destination: str | None,
    before: float | None,
    deltas: Deltas,
) -> int:
    chosen = await select_dead(conn, ids, destination, before)
    rows = await conn.fetch(sql.PURGE, chosen)
    for (name,) in rows:
        deltas[name, "dead"] -= 1
    await conn.execute(sql.FORGET, chosen)
    return len(rows)


async def prune(conn: Conn, before: float | None, keep: int | None, deltas: Deltas) -> Pruned:
    """One bounded share of pruning (see `Journal.prune_finished`)."""
    excess = 0
    # Counting walks every finished job: only when there may be more than `keep`.
    if keep is not None and await conn.fetchval(sql.FINISHED_SPAN) > keep:
        excess = await conn.fetchval(sql.FINISHED_COUNT) - keep
    if before is None and excess <= 0:
        return Pruned(0, more=False)
    deleted: list[int] = []
    if before is not None:
        deleted += _deleted(await conn.fetch(sql.PRUNE_OLD, before, PRUNE_WINDOW), deltas)
    more = len(deleted) >= PRUNE_WINDOW
    excess -= len(deleted)
    if excess > 0:
        oldest = _deleted(await conn.fetch(sql.PRUNE_OLDEST, min(excess, PRUNE_WINDOW)), deltas)
        deleted += oldest
        # What is still over the count cannot go if nothing could (parents waiting
        # for their children): the next round tries again.
        more = more or (excess > len(oldest) and bool(oldest))
    if deleted:
        await conn.execute(sql.FORGET, deleted)
    return Pruned(len(deleted), more)


def _deleted(rows: Sequence[Any], deltas: Deltas) -> list[int]:
    """The ids of deleted jobs (rows of id, destination, state), counted out."""
    for _, destination, state in rows:
        deltas[destination, state] -= 1
    return [row[0] for row in rows]
