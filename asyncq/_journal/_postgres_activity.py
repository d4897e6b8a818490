"""Monitoring in the PostgreSQL journal: the counts of jobs per destination and
state, the activity slots (see `_activity.py`), and stats() read from them
without a scan of the jobs.

Several processes on several hosts write here at once, so each adds to rows of
its own (`writer`: its journal's instance), in its own turns, which its group
commit already runs one at a time: no process waits for another's on a hot row.
Readers sum the rows. `counts` is written in every turn that moves jobs, in that
turn's transaction, so it is exact; a process folds its rows into the shared ones
(writer '') when it closes, and every other process's when it starts (see
`FOLD_COUNTS`). `activity` is written once a second at most, as on SQLite, and its
old slots are deleted whoever wrote them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from . import _postgres_sql as sql
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
    journal_stats,
    latency_bucket,
    slot_of,
    window_start,
)
from ._messages import Cancelled, Failed, JournalStats, Succeeded, WorkerRecord, micros
from ._postgres_connections import CONFLICT
from ._postgres_deps import Deltas

log = logging.getLogger("asyncq.journal")

Conn = Any  # an asyncpg connection

# -- counts of jobs per destination and state ----------------------------------

# The end of a turn, in one round trip: its changes of counts added to this
# process's rows (running jobs are not counted); a NOTIFY on channel $6 if $5
# (delivered at commit, to every process listening); and the transaction's id, to
# ask on another connection whether it committed if the connection is lost at
# COMMIT (null for a transaction that wrote nothing: `pg_current_xact_id()` would
# assign one, and make its commit wait for a WAL flush it does not need). A turn
# pays one statement for all three.
END_TURN = """
WITH added AS (
    INSERT INTO counts (destination, state, writer, n)
    SELECT c.destination, c.state, $1, c.n
    FROM unnest($2::text[], $3::text[], $4::bigint[]) AS c (destination, state, n)
    ORDER BY c.destination, c.state  -- the order FOLD_COUNTS locks rows in
    ON CONFLICT (destination, state, writer) DO UPDATE SET n = counts.n + excluded.n
)
SELECT (SELECT count(*) FROM (SELECT pg_notify($6, $7)) AS told WHERE $5),
       pg_current_xact_id_if_assigned()::text
"""
# Writers' rows folded into the shared ones (writer ''), in one statement: at close,
# this process's ($1); at open, every other process's ($1 null), so that the rows of
# processes killed (never closed) do not pile up. The sums stay exact even for a
# writer that is alive: its turn waits for the fold's row locks (taken in one order,
# the order its turns take them in), then adds to new rows of its own.
FOLD_COUNTS = """
WITH gone AS (
    DELETE FROM counts WHERE (destination, state, writer) IN (
        SELECT destination, state, writer FROM counts
        WHERE writer != '' AND ($1::text IS NULL OR writer = $1)
        ORDER BY destination, state, writer FOR UPDATE)
    RETURNING destination, state, n
)
INSERT INTO counts (destination, state, writer, n)
SELECT destination, state, '', sum(n) FROM gone GROUP BY destination, state
ORDER BY destination, state
ON CONFLICT (destination, state, writer) DO UPDATE SET n = counts.n + excluded.n
"""
# Everything stats() reads, in one statement: one round trip, and one snapshot (a
# job moving meanwhile is counted once). Each part is a JSON array of rows:
# - the kept counts, every writer's rows summed;
# - the few jobs that counts cannot tell apart, from their partial indexes:
#   scheduled jobs already due (every claim promotes them), and running ones
#   (claimed, or with a live handler);
# - the earliest `run_at` of each destination's ready jobs: a skip scan of the
#   ready index over the priorities in use, one seek per priority level (not a walk
#   of the backlog);
# - held destinations, the last minute's activity ($2: its first slot) and the
#   journal's first event still kept, the known rates, the live workers.
STATS = """
WITH RECURSIVE counted AS (
    SELECT destination, state, sum(n) AS n FROM counts GROUP BY destination, state
    HAVING sum(n) != 0
), levels (destination, priority) AS (
    SELECT c.destination, (SELECT max(priority) FROM jobs
                           WHERE state = 'pending' AND destination = c.destination)
    FROM counted AS c WHERE c.state = 'pending' AND c.n > 0
    UNION ALL
    SELECT l.destination, (SELECT max(priority) FROM jobs WHERE state = 'pending'
                           AND destination = l.destination AND priority < l.priority)
    FROM levels AS l WHERE l.priority IS NOT NULL
)
SELECT
    (SELECT json_agg(json_build_array(destination, state, n)) FROM counted),
    (SELECT json_agg(json_build_array(destination, n, oldest)) FROM (
        SELECT destination, count(*) AS n, min(run_at) AS oldest FROM jobs
        WHERE state = 'scheduled' AND run_at <= $1 GROUP BY destination) AS due),
    (SELECT json_agg(json_build_array(destination, live, n)) FROM (
        SELECT destination, started_at IS NOT NULL AND lease_until >= $1 AS live,
               count(*) AS n
        FROM jobs WHERE state = 'running' GROUP BY 1, 2) AS running),
    (SELECT json_agg(json_build_array(destination, oldest)) FROM (
        SELECT l.destination,
               min((SELECT min(run_at) FROM jobs WHERE state = 'pending'
                    AND destination = l.destination AND priority = l.priority)) AS oldest
        FROM levels AS l WHERE l.priority IS NOT NULL GROUP BY l.destination) AS ready),
    (SELECT json_agg(json_build_array(name, paused, hold_until, circuit, circuit_until))
     FROM destinations WHERE paused OR hold_until > $1 OR circuit != 'closed'),
    (SELECT json_agg(json_build_array(destination, arrived, calls, finished, retried, dead))
     FROM (SELECT destination, sum(arrived) AS arrived, sum(calls) AS calls,
                  sum(finished) AS finished, sum(retried) AS retried, sum(dead) AS dead
           FROM activity WHERE slot >= $2 GROUP BY destination) AS tallies),
    (SELECT json_agg(json_build_array(destination, latency)) FROM activity
     WHERE slot >= $2 AND latency IS NOT NULL),
    (SELECT min(first_at) FROM activity WHERE slot = (SELECT min(slot) FROM activity)),
    (SELECT json_agg(json_build_array(name, rate)) FROM destinations WHERE rate IS NOT NULL),
    (SELECT count(*) FROM workers WHERE alive_until >= $1)
"""


async def end_turn(
    conn: Conn, writer: str, deltas: Deltas, notify: tuple[str, str] | None, *, xid: bool
) -> str | None:
    """At the end of a turn's transaction, in one statement if any: add its changes
    to `writer`'s counts, NOTIFY (channel, payload) if `notify`, and read the
    transaction's id if `xid` (None if not asked, or if it wrote nothing)."""
    changes = [(d, state, n) for (d, state), n in deltas.items() if n and state != "running"]
    if not (changes or notify or xid):
        return None
    destinations, states, numbers = zip(*changes, strict=True) if changes else ((), (), ())
    channel, payload = notify or ("", "")
    row = await conn.fetchrow(
        END_TURN,
        writer,
        list(destinations),
        list(states),
        list(numbers),
        notify is not None,
        channel,
        payload,
    )
    return row[1] if xid else None


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
                await conn.execute(SAVE_ACTIVITY, self._writer, json.dumps(_merged(rows)))
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


def _merged(rows: list[Row]) -> list[Row]:
    """Rows with one row per slot and destination: an upsert may not meet one row
    twice (the pending counts and a turn's own can share a slot)."""
    by_key: dict[tuple[int, str], Row] = {}
    for row in rows:
        key = (row.slot, row.destination)
        seen = by_key.get(key)
        if seen is None:
            by_key[key] = row
            continue
        latency: dict[int, int] | None = None
        if seen.latency or row.latency:
            latency = dict(Counter(seen.latency or {}) + Counter(row.latency or {}))
        by_key[key] = Row(
            row.slot,
            row.destination,
            seen.arrived + row.arrived,
            seen.calls + row.calls,
            seen.finished + row.finished,
            seen.retried + row.retried,
            seen.dead + row.dead,
            latency,
            min(seen.first_at, row.first_at),
        )
    return list(by_key.values())


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


# -- stats ------------------------------------------------------------------------


async def stats(conn: Conn, now: float, unwritten: list[Row]) -> JournalStats:
    """Jobs per destination and state, from the kept counts, and the few rows that
    counts cannot tell apart (running jobs, due scheduled ones, the age of each
    destination's oldest ready job); the last minute's activity (with this
    process's `unwritten` counts), the known rate limits and the live workers.
    Nothing here scans the backlog."""
    first_slot = slot_of(now) - WINDOW_SLOTS + 1
    row = await conn.fetchrow(STATS, now, first_slot)
    parts = [[] if part is None else json.loads(part) for part in (*row[:7], row[8])]
    counted, due, running, ready, held, tallies, latencies, known_rates = parts
    kept_first_at, workers = row[7], row[9]
    per: dict[str, dict[str, Any]] = {}

    def of(destination: str) -> dict[str, Any]:
        return per.setdefault(destination, {})

    for destination, state, n in counted:
        if state != "running":
            of(destination)["ready" if state == "pending" else state] = n
    for destination, n, oldest in due:
        counts = of(destination)
        counts["ready"] = counts.get("ready", 0) + n
        counts["scheduled"] = counts.get("scheduled", 0) - n
        counts["oldest_ready_at"] = oldest
    for destination, live, n in running:
        of(destination)["running" if live else "claimed"] = n
    for destination, oldest in ready:
        if oldest is not None:
            counts = of(destination)
            earlier = counts.get("oldest_ready_at")
            counts["oldest_ready_at"] = oldest if earlier is None else min(earlier, oldest)
    for name, paused, hold, circuit, circuit_until in held:
        counts = of(name)
        counts["paused"] = paused
        counts["held_until"] = hold if hold > now else None
        counts["circuit"] = circuit
        counts["circuit_until"] = circuit_until if circuit != "closed" else None
    window = Window(seconds=max(1.0, now - window_start(now, kept_first_at, unwritten)))
    for destination, *numbers in tallies:
        window.tallies[destination] = [int(n) for n in numbers]
    for destination, histogram in latencies:
        merged = window.latency.setdefault(destination, Counter())
        for bucket, n in histogram.items():
            merged[int(bucket)] += int(n)
    window.add_unwritten(unwritten, first_slot)
    limits = {name: float(rate) for name, rate in known_rates}
    return journal_stats(per, window, limits, now, int(workers))


# A worker that stopped beating a day ago is forgotten (killed, it never signed off).
_GONE_AFTER = 86_400.0


async def heartbeat(conn: Any, worker: WorkerRecord, now: float, alive_until: float) -> None:
    await conn.execute(
        sql.HEARTBEAT,
        worker.owner,
        worker.host,
        worker.pid,
        worker.concurrency,
        worker.started_at,
        now,
        alive_until,
    )
    await conn.execute(sql.FORGET_GONE, now - _GONE_AFTER)


async def fold_counts(conn: Any, description: str) -> None:
    """Fold every other process's counts into the shared rows (see `FOLD_COUNTS`):
    housekeeping at open, tried a few times while other transactions hold them."""
    for _ in range(3):
        try:
            async with conn.transaction():
                await conn.execute(FOLD_COUNTS, None)
            return
        except Exception as exc:
            if getattr(exc, "sqlstate", None) not in CONFLICT:
                raise
    log.info("journal %s: counts not folded at open (busy)", description)
