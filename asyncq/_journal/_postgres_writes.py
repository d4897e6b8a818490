"""The write side of the PostgreSQL journal: what one writer turn runs inside its
transaction (inserts, claims, bookings, outcomes, reclaims; dead letters and
pruning are in `_postgres_dead.py`).

Each function takes an asyncpg connection that is inside the turn's transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from .._codec import is_utf8, storable_text
from .._errors import JobNotFound, PayloadError
from .._limiter import schedule_calls
from .._policy import Rate
from . import _postgres_deps as deps
from . import _postgres_sql as sql
from ._messages import (
    LEASE_EXPIRED,
    Booked,
    Cancelled,
    ClaimedJob,
    ClaimLimits,
    ExpiredJob,
    Failed,
    Inserted,
    NewBatch,
    NewJob,
    Released,
    RetryDecision,
    Started,
    Succeeded,
)
from ._postgres_deps import Deltas, Settled
from ._rows import decoded

log = logging.getLogger("asyncq.journal")

Conn = Any  # an asyncpg connection inside a transaction
Insert = tuple[Sequence[NewJob] | NewBatch, float, object]

_MIN_SHARE = 16  # jobs a claim takes at least from each destination that has them

_JSON_KIND = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "real",
    str: "text",
    list: "array",
}


def text(value: str) -> str:
    """Text PostgreSQL can store: no NUL character, no lone surrogate."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    return value if value.isascii() else storable_text(value)


def rowcount(status: str) -> int:
    """The number of rows an asyncpg `execute` status ("UPDATE 3") names."""
    return int(status.rsplit(" ", 1)[-1])


# -- inserts ------------------------------------------------------------------


async def insert_all(conn: Conn, inserts: Sequence[Insert], deltas: Deltas) -> list[Any]:
    """Every insert of a turn; one result per insert, in order. Plain jobs of every
    caller go into one statement; batches, keyed jobs and children one by one."""
    results: list[Any] = [None] * len(inserts)
    merged: list[int] = []
    for index, (jobs, now, _) in enumerate(inserts):
        if isinstance(jobs, NewBatch):
            results[index] = await insert_batch(conn, jobs, now, deltas)
        elif any(job.key is not None or job.after for job in jobs):
            # One at a time, so a key repeated within one call finds the job
            # inserted a moment before.
            results[index] = [await insert_one(conn, job, now, deltas) for job in jobs]
        else:
            merged.append(index)
    if merged:
        columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
        traces: list[str | None] = []
        for index in merged:
            jobs, now, _ = inserts[index]
            assert not isinstance(jobs, NewBatch)
            deltas.update(
                (job.destination, "pending" if job.run_at <= now else "scheduled") for job in jobs
            )
            for job in jobs:
                for column, value in zip(
                    columns,
                    (job.task, job.payload, job.destination, job.priority, job.run_at, now),
                    strict=True,
                ):
                    column.append(value)
                traces.append(job.trace)
        traced = traces if any(trace is not None for trace in traces) else None
        rows = await conn.fetch(sql.INSERT_ROWS, *columns, traced)
        ids = iter(sorted(row[0] for row in rows))
        for index in merged:
            results[index] = [Inserted(next(ids), True) for _ in inserts[index][0]]
    return results


def split_payloads(batch: NewBatch) -> list[str]:
    """A batch's payloads, one JSON text each; `PayloadError` names the first that
    is not an object or is over `max_payload_bytes` (measured as compact UTF-8)."""
    try:
        values = json.loads(batch.payloads)
    except ValueError as exc:
        raise PayloadError(batch.task, f"the batch is not JSON ({exc})") from None
    if not isinstance(values, list) or len(values) != batch.job_count:
        raise PayloadError(batch.task, "the batch does not hold the number of payloads given")
    texts: list[str] = []
    for index, value in enumerate(values):
        if not isinstance(value, dict):
            kind = _JSON_KIND.get(type(value), type(value).__name__)
            raise PayloadError(batch.task, f"payload {index} is a JSON {kind}, not an object")
        payload = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if not is_utf8(payload):
            payload = json.dumps(value, separators=(",", ":"))
        size = len(payload.encode())
        if size > batch.max_payload_bytes:
            raise PayloadError(
                batch.task,
                f"payload {index} is {size} bytes, over the {batch.max_payload_bytes}-byte limit",
            )
        texts.append(payload)
    return texts


async def insert_batch(conn: Conn, batch: NewBatch, now: float, deltas: Deltas) -> list[int]:
    payloads = split_payloads(batch)
    columns = await child_columns(conn, batch.after, batch.on_parent_failure, batch.run_at, now)
    rows = await conn.fetch(
        sql.INSERT_PAYLOADS,
        payloads,
        batch.task,
        batch.destination,
        batch.priority,
        batch.run_at,
        *columns,
        now,
        batch.trace,
    )
    ids = sorted(row[0] for row in rows)
    deltas[batch.destination, columns[0]] += len(ids)
    if batch.after and ids:
        await conn.execute(sql.LINK, list(dict.fromkeys(batch.after)), ids)
    return ids


async def insert_one(conn: Conn, job: NewJob, now: float, deltas: Deltas) -> Inserted:
    """A keyed job or a child: the live holder of its key if there is one."""
    if job.key is not None and (holder := await conn.fetchval(sql.FIND_LIVE_KEY, job.key)):
        return Inserted(holder, False)
    state, parents, waiting, mode, cancelled_by, finished_at = await child_columns(
        conn, job.after, job.on_parent_failure, job.run_at, now
    )
    job_id = await conn.fetchval(
        sql.INSERT_ONE,
        job.task,
        job.payload,
        job.destination,
        job.priority,
        job.run_at,
        job.key,
        state,
        now,
        parents,
        waiting,
        mode,
        cancelled_by,
        finished_at,
        job.trace,
    )
    if job_id is None:  # another process inserted the key a moment before
        return Inserted(await conn.fetchval(sql.FIND_LIVE_KEY, job.key), False)
    deltas[job.destination, state] += 1
    if job.after:
        await conn.execute(sql.LINK, list(dict.fromkeys(job.after)), [job_id])
    return Inserted(job_id, True)


async def child_columns(
    conn: Conn, after: Sequence[int], mode: str, run_at: float, now: float
) -> tuple[str, int, int, str, int | None, float | None]:
    """A new job's state and dependency columns (state, parents, waiting, mode,
    cancelled_by, finished_at), from its parents' states now. Raises `JobNotFound`
    for a parent that is not in the journal."""
    if mode not in ("cancel", "run"):
        raise ValueError(f"on_parent_failure must be 'cancel' or 'run', not {mode!r}")
    ready = "pending" if run_at <= now else "scheduled"
    if not after:
        return ready, 0, 0, mode, None, None
    parents = list(dict.fromkeys(after))
    states = {row[0]: row[1] for row in await conn.fetch(sql.PARENTS, parents)}
    for parent in parents:
        if parent not in states:
            raise JobNotFound(parent)
    waiting = sum(
        state in ("pending", "scheduled", "running", "blocked") for state in states.values()
    )
    failed = [job_id for job_id, state in states.items() if state in ("dead", "cancelled")]
    if failed and mode == "cancel":
        return "cancelled", len(parents), waiting, mode, min(failed), now
    return ("blocked" if waiting else ready), len(parents), waiting, mode, None, None


# -- claims -------------------------------------------------------------------


class ClaimResult(NamedTuple):
    jobs: list[ClaimedJob]
    booked: dict[str, Booked]
    taken: dict[str, int]
    cursor: str
    traces: dict[int, str]  # the trace contexts of the jobs that have one, by id
    at_cap: frozenset[str] = frozenset()


async def ready_destinations(conn: Conn, cursor: str, chunk: int) -> list[str]:
    """Destinations with ready jobs, in name order from just after `cursor`,
    wrapping around once."""
    names = [row[0] for row in await conn.fetch(sql.READY_DESTINATIONS, cursor, chunk)]
    if cursor and len(names) < chunk:
        before = await conn.fetch(sql.READY_DESTINATIONS, "", chunk - len(names))
        names += [row[0] for row in before if row[0] <= cursor]
    return names


async def claim(
    conn: Conn,
    owner: str,
    token: int,
    limit: int,
    lease_until: float,
    now: float,
    limits: ClaimLimits | None,
    cursor: str,
    deltas: Deltas,
) -> ClaimResult:
    """Take up to `limit` ready jobs for `owner` (see `Journal.claim`)."""
    for (destination,) in await conn.fetch(sql.PROMOTE_DUE, now):
        deltas[destination, "scheduled"] -= 1
        deltas[destination, "pending"] += 1
    names = await ready_destinations(conn, cursor, chunk=max(2 * limit, 256))
    if limits is not None and names:
        closed = {row[0] for row in await conn.fetch(sql.CLOSED_DESTINATIONS, names, now)}
        names = [name for name in names if name not in closed]
    # A share is never tiny: the cursor gives the rest their turn next time.
    share = max(_MIN_SHARE, -(-limit // max(1, len(names))))
    rooms: list[int] = []
    chosen: list[str] = []
    for name in names:
        room = share if limits is None else min(share, limits.room(name))
        if room > 0:
            chosen.append(name)
            rooms.append(room)
    if not chosen or limit <= 0:
        return ClaimResult([], {}, {}, "", {})
    caps = [None if limits is None else limits.cap(name) for name in chosen]
    capped = sorted(name for name, cap in zip(chosen, caps, strict=True) if cap is not None)
    if capped:
        # Only capped destinations pay for the lock and the count (see LOCK_CAPPED).
        locked = await lock_capped(conn, capped)
        asked = dict(zip(chosen, rooms, strict=True))
        kept = [
            n
            for n, (name, cap) in enumerate(zip(chosen, caps, strict=True))
            if cap is None or name in locked
        ]
        chosen, rooms, caps = (
            [chosen[n] for n in kept],
            [rooms[n] for n in kept],
            [caps[n] for n in kept],
        )
        rows = await conn.fetch(
            sql.CLAIM_CAPPED, owner, token, lease_until, chosen, rooms, limit, caps, now
        )
    else:
        rows = await conn.fetch(sql.CLAIM, owner, token, lease_until, chosen, rooms, limit)
    taken: dict[str, int] = {}
    for row in rows:
        taken[row[3]] = taken.get(row[3], 0) + 1
    for destination, n in taken.items():
        deltas[destination, "pending"] -= n
    at_cap: frozenset[str] = frozenset()
    if capped:
        # Cut short by the cap (or skipped: another claim held the row). A claim
        # that filled `limit` may have cut them short itself: no matter, the next
        # claim comes soon then anyway.
        at_cap = frozenset(name for name in capped if taken.get(name, 0) < asked[name])
    # The next claim starts after the last destination served, if this one filled.
    order = {name: n for n, name in enumerate(chosen)}
    cursor = max(taken, key=order.__getitem__) if len(rows) >= limit and taken else ""
    booked: dict[str, Booked] = {}
    if limits is not None and taken:
        rates = {d: r for d in taken if (r := limits.rate(d)) is not None}
        if rates:
            booked = await book(conn, taken, rates, limits.clock, limits.horizon)
    jobs = [
        ClaimedJob(
            row[0],
            row[1],
            decoded(row[2]),
            row[3],
            row[4],
            row[5],
            row[7],
            row[8],
            token,
        )
        for row in sorted(rows, key=lambda r: (-r[4], r[10], r[0]))
    ]
    linked = [row[0] for row in rows if row[9] > 0]
    if linked:
        by_id = {job.id: job for job in jobs}
        for child, parent, result in await conn.fetch(sql.PARENT_RESULTS, linked):
            job = by_id[child]
            value = None if result is None else decoded(result)
            if job.parents is None:
                job.parents = {}
            job.parents[parent] = value
    traces = {row[0]: row[11] for row in rows if row[11] is not None}
    return ClaimResult(jobs, booked, taken, cursor, traces, at_cap)


async def lock_capped(conn: Conn, names: list[str]) -> set[str]:
    """Lock the rows of capped destinations `names` (sorted), making those that do
    not exist yet; the names locked (a row another claim holds is skipped)."""
    locked = {row[0] for row in await conn.fetch(sql.LOCK_CAPPED, names)}
    if len(locked) < len(names):
        # Missing, or held by another claim: make the missing ones, and try those.
        rest = [name for name in names if name not in locked]
        await conn.execute(sql.BUCKETS_MADE, rest)
        locked.update(row[0] for row in await conn.fetch(sql.LOCK_CAPPED, rest))
    return locked


async def book(
    conn: Conn,
    wants: Mapping[str, int],
    rates: Mapping[str, Rate],
    clock: Callable[[], float],
    horizon: float,
) -> dict[str, Booked]:
    """Book calls in destinations' shared buckets: lock each bucket's row, book,
    write it back; the locks hold until the turn commits."""
    names = sorted(name for name in wants if name in rates)
    if not names:
        return {}
    await conn.execute(sql.BUCKETS_MADE, names)
    full = {row[0]: row[1] for row in await conn.fetch(sql.BUCKETS, names)}
    now = clock()  # read once the buckets are ours: a claim that waited books from now
    booked = {
        name: schedule_calls(rates[name], wants[name], full.get(name, 0.0), now, horizon)
        for name in names
    }
    await conn.execute(
        sql.SAVE_BUCKETS,
        list(booked),
        [b[1] for b in booked.values()],
        [rates[name].per_second for name in booked],
    )
    return booked


# -- outcomes -------------------------------------------------------------------


class Outcomes(NamedTuple):
    """One `record_outcomes` call's outcomes, as they reach the writer."""

    started: Sequence[Started]
    succeeded: Sequence[Succeeded]
    failed: Sequence[Failed]
    released: Sequence[Released]
    cancelled: Sequence[Cancelled]
    #: Filled by the transaction that writes them: the jobs it cancelled in turn.
    settled: list[int]

    @property
    def news(self) -> bool:
        """Whether other processes may find work in them (a retry, a job handed back)."""
        return bool(self.failed or self.released)


async def write_outcomes(
    conn: Conn, owner: str, now: float, batch: Outcomes, settled: Settled, moves: Deltas
) -> None:
    """Write one batch of outcomes, and settle the children of the jobs it ended;
    the changes of counts of its own jobs go to `moves` (the children's to
    `settled.moves`)."""
    batch.settled.clear()  # a turn may be run again (a deadlock, retried)
    if batch.started:
        ids, tokens, at = zip(*((s.id, s.token, s.at_us) for s in batch.started), strict=True)
        await conn.execute(sql.START, owner, list(ids), list(tokens), list(at))
    succeeded: list[int] = []
    if batch.succeeded:
        rows = await conn.fetch(
            sql.COMPLETE,
            owner,
            [s.id for s in batch.succeeded],
            [s.token for s in batch.succeeded],
            [text(s.result) for s in batch.succeeded],
            now,
            [s.started_us for s in batch.succeeded],
        )
        succeeded = [row[0] for row in rows]
        moves.update((row[1], "succeeded") for row in rows)
    dead: list[int] = []
    if batch.failed:
        rows = await conn.fetch(
            sql.FAIL,
            owner,
            now,
            [f.id for f in batch.failed],
            [f.token for f in batch.failed],
            [text(f.error) for f in batch.failed],
            [f.retry_at for f in batch.failed],
            [f.snoozed for f in batch.failed],
            [f.started_us for f in batch.failed],
        )
        dead = [row[0] for row in rows if row[1] == "dead"]
        moves.update((row[2], row[1]) for row in rows)
    if batch.released:
        rows = await conn.fetch(
            sql.RELEASE,
            owner,
            [r.id for r in batch.released],
            [r.token for r in batch.released],
        )
        moves.update((row[0], "pending") for row in rows)
    if batch.cancelled:
        outcomes = (
            [c.id for c in batch.cancelled],
            [c.token for c in batch.cancelled],
            [c.started_us for c in batch.cancelled],
        )
        batch.settled.extend(
            await deps.record_cancelled(conn, owner, now, outcomes, settled, moves)
        )
    if batch.failed or batch.released:
        batch.settled.extend(await deps.settle_requests(conn, now, settled, moves))
    await deps.settle_children(conn, succeeded, dead, now, settled)


async def reclaim(
    conn: Conn, now: float, decide: RetryDecision | None, settled: Settled, moves: Deltas
) -> list[tuple[ExpiredJob, float | None]]:
    """Take back jobs whose lease expired (see `Journal.reclaim_expired`); the
    changes of counts of those jobs go to `moves`."""
    await deps.cancel_expired(conn, now, settled, moves)
    lost: list[ExpiredJob] = []
    charged: list[ExpiredJob] = []
    for id_, task, destination, attempts, first, started, losses in await conn.fetch(
        sql.EXPIRED, now
    ):
        if started or losses >= sql.CHARGE_AFTER_LOSSES:
            number = attempts if started else attempts + 1
            charged.append(ExpiredJob(id_, task, destination, number, first, started))
        else:
            lost.append(ExpiredJob(id_, task, destination, attempts + 1, first, False))
    if lost:
        rows = await conn.fetch(sql.LOST, [job.id for job in lost])
        moves.update((row[0], "pending") for row in rows)
    decisions = [now if decide is None else decide(job) for job in charged]
    if charged:
        rows = await conn.fetch(
            sql.CRASHED,
            now,
            LEASE_EXPIRED,
            [job.id for job in charged],
            decisions,
            [0 if job.started else 1 for job in charged],
        )
        dead = [row[0] for row in rows if row[1] == "dead"]
        moves.update((row[2], row[1]) for row in rows)
        await deps.settle_children(conn, [], dead, now, settled)
    return [(job, now) for job in lost] + list(zip(charged, decisions, strict=True))
