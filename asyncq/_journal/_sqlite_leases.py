"""Claims and the leases they take, in the SQLite journal: what a claim does inside
its transaction (due jobs promoted, destinations served in turn, calls booked for
paced ones, the claimed rows read back as one JSON text), what becomes of those rows
on the event loop's thread, and what becomes of jobs whose lease ran out."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import NamedTuple, cast

from .._codec import is_utf8
from . import _sqlite_cancel as cancelling
from . import _sqlite_deps as deps
from . import _sqlite_reads as reads
from . import _sqlite_sql as sql
from . import _sqlite_writes as writes
from ._messages import Booked, ClaimedJob, ClaimLimits, ExpiredJob, RetryDecision
from ._sqlite_writes import Deltas

_MIN_SHARE = 16  # jobs a claim takes at least from each destination that has them

# A row of CLAIMED is the job's fields up to `snoozes`, in order, and the token
# comes next (positional: a keyword costs more per job); mypy cannot see the row's
# length.
_claimed_job = cast(Callable[..., ClaimedJob], ClaimedJob)


class ClaimedRows(NamedTuple):
    """What a claim's transaction hands back: the jobs as JSON text (parsed outside
    it), the calls booked, jobs per destination, parents' results if any, and the
    trace contexts of the jobs that have one (a JSON object by id)."""

    rows: str
    booked: dict[str, Booked]
    taken: dict[str, int]
    parents: deps.ParentResults | None
    traces: str = "{}"
    at_cap: frozenset[str] = frozenset()


NOTHING = ClaimedRows("[]", {}, {}, None)


def claim(
    conn: sqlite3.Connection,
    owner: str,
    token: int,
    limit: int,
    lease_until: float,
    now: float,
    limits: ClaimLimits | None,
    cursor: str,
    deltas: Deltas,
) -> tuple[ClaimedRows, str]:
    """Take up to `limit` ready jobs for `owner` (see `Journal.claim`); also the
    destination to start after next time (`cursor`)."""
    writes.moved(deltas, conn.execute(sql.PROMOTE_DUE, (now,)).fetchall(), "scheduled", "pending")
    remaining = limit
    params = {"owner": owner, "token": token, "lease_until": lease_until, "now": now}
    # Destinations take turns: start after the one served last, wrap around
    # once, and give each a fair share of the claim.
    (ready,) = conn.execute("SELECT count(*) FROM ready_destinations").fetchone()
    # A share is never tiny: claiming a job or two per destination would
    # spend a statement per job. The cursor gives the rest their turn next.
    share = max(_MIN_SHARE, -(-limit // max(1, ready)))
    taken_from: dict[str, int] = {}
    at_cap: set[str] = set()
    for destination in writes.ready_destinations(conn, cursor, chunk=max(2 * limit, 256)):
        room = min(share, remaining)
        if limits is not None:
            room = min(room, limits.room(destination))
            cap = limits.cap(destination) if room > 0 else None
            if cap is not None:
                # Several processes may share the file: a cap counts every one's
                # jobs claimed and not finished (the write lock makes this exact).
                (held,) = conn.execute(sql.CAP_HELD, (destination, now)).fetchone()
                if cap - held < room:
                    room = cap - held
                    at_cap.add(destination)
        if room <= 0:
            continue
        params["destination"] = destination
        params["limit"] = room
        taken = conn.execute(sql.CLAIM_FROM, params).rowcount
        if taken < room:
            conn.execute(sql.FORGET_IF_EMPTY, (destination,))
        if taken:
            taken_from[destination] = taken
        remaining -= taken
        cursor = destination
        if remaining <= 0:
            break
    else:
        cursor = ""
    for destination, taken in taken_from.items():
        deltas[destination, "pending"] -= taken
        deltas[destination, "running"] += taken
    if remaining == limit:
        return (NOTHING._replace(at_cap=frozenset(at_cap)) if at_cap else NOTHING), cursor
    booked: dict[str, Booked] = {}
    if limits is not None:
        # Book the calls of paced jobs in the claim's own transaction.
        rates = {d: r for d in taken_from if (r := limits.rate(d)) is not None}
        if rates:
            booked = writes.book(conn, taken_from, rates, limits.clock, limits.horizon)
    try:
        rows, children, traces = conn.execute(sql.CLAIMED, (owner, token)).fetchone()
    except sqlite3.OperationalError:  # a payload is not JSON (see CLAIMED_SAFE)
        rows, children, traces = conn.execute(sql.CLAIMED_SAFE, (owner, token)).fetchone()
    parents = None if children == "[]" else deps.parent_results(conn, children)
    return ClaimedRows(rows, booked, taken_from, parents, traces, frozenset(at_cap)), cursor


def claimed_jobs(found: ClaimedRows, token: int) -> list[ClaimedJob]:
    """The claimed rows as jobs (on the event loop's thread)."""
    # The token is the claim's, the same for every job: not sent per row.
    jobs = [_claimed_job(*row, token) for row in json.loads(found.rows)]
    if found.parents is not None:
        deps.attach_parents(jobs, found.parents)
    if not is_utf8(found.rows):
        reads.isolate_broken_text(jobs)
    return jobs


def claimed_traces(found: ClaimedRows) -> dict[int, str]:
    """The trace contexts of the claimed jobs that have one, by job id."""
    if found.traces == "{}":
        return {}
    return {int(job_id): trace for job_id, trace in json.loads(found.traces).items()}


def reclaim(
    conn: sqlite3.Connection, now: float, decide: RetryDecision | None, deltas: Deltas
) -> tuple[list[tuple[ExpiredJob, float | None]], list[int]]:
    """Take back jobs whose lease expired (see `Journal.reclaim_expired`); also the
    ids of those that are now dead, whose children are to be settled."""
    # A job asked to stop is cancelled, not run again (its waiters poll).
    cancelling.cancel_expired(conn, now, deltas)
    (rows,) = conn.execute(sql.EXPIRED, (now,)).fetchone()
    found = json.loads(rows)
    if not found:
        return [], []
    lost: list[ExpiredJob] = []
    charged: list[ExpiredJob] = []
    for id_, task, destination, attempts, first, started, losses in found:
        if started or losses >= sql.CHARGE_AFTER_LOSSES:
            # The crashed attempt's number: counted already if it started.
            number = attempts if started else attempts + 1
            charged.append(ExpiredJob(id_, task, destination, number, first, bool(started)))
        else:
            lost.append(ExpiredJob(id_, task, destination, attempts + 1, first, False))
    if lost:
        ids = json.dumps([job.id for job in lost])
        writes.moved(deltas, conn.execute(sql.LOST, (ids,)).fetchall(), "running", "pending")
    decisions = [now if decide is None else decide(job) for job in charged]
    dead: list[int] = []
    if charged:
        batch = [
            (job.id, sql.LEASE_EXPIRED, at, 0 if job.started else 1)
            for job, at in zip(charged, decisions, strict=True)
        ]
        params = {"batch": json.dumps(batch), "now": now}
        writes.moved(deltas, conn.execute(sql.CRASHED, params).fetchall(), "running")
        dead = [job.id for job, at in zip(charged, decisions, strict=True) if at is None]
    return [(job, now) for job in lost] + list(zip(charged, decisions, strict=True)), dead
