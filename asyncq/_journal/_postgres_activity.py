"""Monitoring in the PostgreSQL journal: the counts of jobs per destination and
state, the activity slots (see `_activity.py`), and stats() read from them
without a scan of the jobs.

Several processes on several hosts write here at once, so every row is one
process's own (`writer`: its journal's instance): a process adds to its rows in
its own turns, which its group commit already runs one at a time, and never
waits for another's. Readers sum the rows. `counts` is written in every turn
that moves jobs, in that turn's transaction, so it is exact; `activity` once a
second at most, as on SQLite.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ._activity import (
    KEEP_SLOTS,
    LATENCY_SAMPLES,
    MAX_ROWS_PER_TURN,
    WINDOW_SLOTS,
    Activity,
    ActivityLog,
    Row,
    Sample,
    Window,
    figures,
    latency_bucket,
    percentiles,
    slot_of,
    window_start,
)
from ._messages import Cancelled, DestinationCounts, Failed, JournalStats, Succeeded, micros

log = logging.getLogger("asyncq.journal")

Conn = Any  # an asyncpg connection
#: Jobs moved in one transaction: (destination, state) -> change in count.
Deltas = Counter[tuple[str, str]]

# -- counts of jobs per destination and state ----------------------------------

# A turn's changes, added to this process's rows (running jobs are not counted).
ADD_COUNTS = """
INSERT INTO counts (destination, state, writer, n)
SELECT c.destination, c.state, $1, c.n
FROM unnest($2::text[], $3::text[], $4::bigint[]) AS c (destination, state, n)
ON CONFLICT (destination, state, writer) DO UPDATE SET n = counts.n + excluded.n
"""
# At close: this process's rows into the shared ones, in one statement.
FOLD_COUNTS = """
WITH gone AS (DELETE FROM counts WHERE writer = $1 RETURNING destination, state, n)
INSERT INTO counts (destination, state, writer, n)
SELECT destination, state, '', sum(n) FROM gone GROUP BY destination, state
ORDER BY destination, state
ON CONFLICT (destination, state, writer) DO UPDATE SET n = counts.n + excluded.n
"""
COUNTS = "SELECT destination, state, sum(n) FROM counts GROUP BY destination, state"
# The few jobs that counts cannot tell apart: scheduled jobs already due (every
# claim promotes them), and running ones (claimed, or with a live handler); both
# read from their partial indexes.
DUE_SCHEDULED = """
SELECT destination, count(*), min(run_at) FROM jobs
WHERE state = 'scheduled' AND run_at <= $1 GROUP BY destination
"""
RUNNING = """
SELECT destination, started_at IS NOT NULL AND lease_until >= $1, count(*) FROM jobs
WHERE state = 'running' GROUP BY 1, 2
"""
# The earliest `run_at` of each named destination's ready jobs: a skip scan of
# the ready index over the priorities in use, one seek per priority level (not a
# walk of the backlog).
OLDEST_READY = """
WITH RECURSIVE levels (destination, priority) AS (
    SELECT d.name, (SELECT max(priority) FROM jobs
                    WHERE state = 'pending' AND destination = d.name)
    FROM unnest($1::text[]) AS d (name)
    UNION ALL
    SELECT l.destination, (SELECT max(priority) FROM jobs WHERE state = 'pending'
                           AND destination = l.destination AND priority < l.priority)
    FROM levels AS l WHERE l.priority IS NOT NULL
)
SELECT l.destination, min((SELECT min(run_at) FROM jobs WHERE state = 'pending'
                           AND destination = l.destination AND priority = l.priority))
FROM levels AS l WHERE l.priority IS NOT NULL GROUP BY l.destination
"""
HELD_DESTINATIONS = """
SELECT name, paused, hold_until, circuit, circuit_until FROM destinations
WHERE paused OR hold_until > $1 OR circuit != 'closed'
"""
RATES = "SELECT name, rate FROM destinations WHERE rate IS NOT NULL"
WORKERS_ALIVE = "SELECT count(*) FROM workers WHERE alive_until >= $1"


async def add_counts(conn: Conn, writer: str, deltas: Deltas) -> None:
    """Add a turn's changes to `writer`'s counts, in one statement."""
    changes = [(d, state, n) for (d, state), n in deltas.items() if n and state != "running"]
    if changes:
        destinations, states, numbers = zip(*changes, strict=True)
        await conn.execute(ADD_COUNTS, writer, list(destinations), list(states), list(numbers))


# -- activity ---------------------------------------------------------------------

# A process's counts since its last write, added to its rows: one row per slot and
# destination, the histograms merged bucket by bucket. $2: [[slot, destination,
# arrived, calls, finished, retried, dead, {bucket: n} or null, first_at]], `Row`s
# as JSON.
SAVE_ACTIVITY = """
INSERT INTO activity
    (slot, destination, writer, arrived, calls, finished, retried, dead, latency, first_at)
SELECT (a ->> 0)::bigint, a ->> 1, $1, (a ->> 2)::bigint, (a ->> 3)::bigint,
       (a ->> 4)::bigint, (a ->> 5)::bigint, (a ->> 6)::bigint,
       nullif(a -> 7, 'null'::jsonb), (a ->> 8)::float8
FROM jsonb_array_elements($2::text::jsonb) AS a
ORDER BY 1, 2
ON CONFLICT (slot, destination, writer) DO UPDATE SET
    first_at = least(activity.first_at, excluded.first_at),
    arrived = activity.arrived + excluded.arrived, calls = activity.calls + excluded.calls,
    finished = activity.finished + excluded.finished,
    retried = activity.retried + excluded.retried, dead = activity.dead + excluded.dead,
    latency = CASE
        WHEN excluded.latency IS NULL THEN activity.latency
        WHEN activity.latency IS NULL THEN excluded.latency
        ELSE (SELECT jsonb_object_agg(bucket, n) FROM (
                SELECT key AS bucket, sum(value::bigint) AS n FROM (
                    SELECT * FROM jsonb_each_text(activity.latency)
                    UNION ALL SELECT * FROM jsonb_each_text(excluded.latency)) AS b
                GROUP BY key) AS merged)
    END
"""
# Old slots, every process's: rows another process is deleting are skipped, not
# waited for.
PRUNE_ACTIVITY = """
DELETE FROM activity WHERE (slot, destination, writer) IN (
    SELECT slot, destination, writer FROM activity WHERE slot < $1 FOR UPDATE SKIP LOCKED)
"""
READ_ACTIVITY = """
SELECT destination, sum(arrived), sum(calls), sum(finished), sum(retried), sum(dead)
FROM activity WHERE slot >= $1 GROUP BY destination
"""
READ_LATENCY = """
SELECT destination, latency::text FROM activity WHERE slot >= $1 AND latency IS NOT NULL
"""
# The journal's first event still kept: a journal younger than a minute has rates
# over its life so far, not over a minute most of which it did not exist.
FIRST_AT = """
SELECT min(first_at) FROM activity WHERE slot = (SELECT min(slot) FROM activity)
"""


class PostgresActivityLog(ActivityLog):
    """The activity log (see `ActivityLog`) of one process, written to its rows."""

    def __init__(self, writer: str) -> None:
        super().__init__()
        self._writer = writer
        self._pruned_slot = 0
        self._failing = False  # the last write failed (logged once)

    async def save(self, conn: Conn, turn: Activity) -> bool:
        """Inside a turn's transaction: write what `take` gives. Whether it wrote."""
        planned = self.take(turn)
        if planned is None:
            return False
        rows, at = planned
        return self.written(rows, await self._write(conn, rows[:MAX_ROWS_PER_TURN], at))

    async def _write(self, conn: Conn, rows: list[Row], at: float) -> bool:
        # In a savepoint of its own: counting must never fail the turn's jobs. What
        # could not be written stays pending.
        try:
            async with conn.transaction():
                await conn.execute(SAVE_ACTIVITY, self._writer, json.dumps(rows))
                current = slot_of(at)
                if current != self._pruned_slot:
                    await conn.execute(PRUNE_ACTIVITY, current - KEEP_SLOTS)
                    self._pruned_slot = current
        except Exception as exc:
            if getattr(exc, "sqlstate", None) is None:
                raise  # not the statement's fault (the connection): the turn's
            if not self._failing:  # once until a write succeeds again
                log.warning("journal: the counts for stats() were not written (%s)", exc)
            self._failing = True
            return False
        self._failing = False
        return True


def outcome_samples(
    succeeded: Sequence[Succeeded],
    failed: Sequence[Failed],
    cancelled: Sequence[Cancelled],
    now: float,
) -> tuple[list[Sample], int, list[str], list[Sample]]:
    """What a batch of outcomes counts for monitoring, as on SQLite: a bounded
    sample of the successes' durations (up to `now`) and the weight of each, and
    the calls that did not succeed, with their durations."""
    now_us = micros(now)
    weight = -(-len(succeeded) // LATENCY_SAMPLES) or 1
    samples = [(s.destination, latency_bucket(now_us - s.started_us)) for s in succeeded[::weight]]
    other_calls = [f.destination for f in failed if f.started_us is not None and f.destination]
    other_calls += [c.destination for c in cancelled if c.started_us is not None and c.destination]
    other_samples = [
        (f.destination, latency_bucket(now_us - f.started_us))
        for f in failed
        if f.started_us is not None and f.destination
    ]
    return samples, weight, other_calls, other_samples


async def read_window(conn: Conn, now: float, unwritten: list[Row]) -> Window:
    """The last minute's counts per destination: every process's, and this
    process's not written yet."""
    first = slot_of(now) - WINDOW_SLOTS + 1
    kept = await conn.fetchval(FIRST_AT)
    window = Window(seconds=max(1.0, now - window_start(now, kept, unwritten)))
    for destination, *counts in await conn.fetch(READ_ACTIVITY, first):
        window.tallies[destination] = [int(n or 0) for n in counts]
    for destination, text in await conn.fetch(READ_LATENCY, first):
        histogram = window.latency.setdefault(destination, Counter())
        for bucket, n in json.loads(text).items():
            histogram[int(bucket)] += int(n)
    window.add_unwritten(unwritten, first)
    return window


# -- stats ------------------------------------------------------------------------


async def stats(conn: Conn, now: float, unwritten: list[Row]) -> JournalStats:
    """Jobs per destination and state, from the kept counts, and the few rows that
    counts cannot tell apart (running jobs, due scheduled ones, the age of each
    destination's oldest ready job); the last minute's activity (with this
    process's `unwritten` counts), the known rate limits and the live workers.
    Nothing here scans the backlog."""
    per: dict[str, dict[str, Any]] = {}

    def of(destination: str) -> dict[str, Any]:
        return per.setdefault(destination, {})

    ready: list[str] = []
    for destination, state, n in await conn.fetch(COUNTS):
        if n:
            of(destination)["ready" if state == "pending" else state] = int(n)
            if state == "pending":
                ready.append(destination)
    for destination, n, oldest in await conn.fetch(DUE_SCHEDULED, now):
        counts = of(destination)
        counts["ready"] = counts.get("ready", 0) + n
        counts["scheduled"] = counts.get("scheduled", 0) - n
        counts["oldest_ready_at"] = oldest
    for destination, started, n in await conn.fetch(RUNNING, now):
        of(destination)["running" if started else "claimed"] = n
    if ready:
        for destination, oldest in await conn.fetch(OLDEST_READY, ready):
            if oldest is not None:
                counts = of(destination)
                earlier = counts.get("oldest_ready_at")
                counts["oldest_ready_at"] = oldest if earlier is None else min(earlier, oldest)
    for name, paused, hold, circuit, circuit_until in await conn.fetch(HELD_DESTINATIONS, now):
        counts = of(name)
        counts["paused"] = paused
        counts["held_until"] = hold if hold > now else None
        counts["circuit"] = circuit
        counts["circuit_until"] = circuit_until if circuit != "closed" else None
    window = await read_window(conn, now, unwritten)
    for destination in window.tallies:
        of(destination)
    limits = {name: float(rate) for name, rate in await conn.fetch(RATES)}
    for destination, counts in per.items():
        oldest = counts.get("oldest_ready_at")
        if oldest is not None:
            counts["oldest_ready_age"] = max(0.0, now - oldest)
        counts.update(
            figures(
                window.tallies.get(destination),
                window.latency.get(destination),
                window.seconds,
                limits.get(destination),
            )
        )
    every_call: Counter[int] = Counter()
    for histogram in window.latency.values():
        every_call.update(histogram)
    p50, p95, p99 = percentiles(every_call, (0.50, 0.95, 0.99))
    return JournalStats(
        {d: DestinationCounts(**c) for d, c in sorted(per.items())},
        at=now,
        workers=int(await conn.fetchval(WORKERS_ALIVE, now)),
        latency_p50=p50,
        latency_p95=p95,
        latency_p99=p99,
    )
