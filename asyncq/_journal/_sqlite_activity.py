"""Monitoring in the SQLite journal: the activity slots (see `_activity.py`), the
workers' heartbeats and the destinations' rates, written by the writer and read
by stats() on the read connection."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Mapping

from ._activity import (
    KEEP_SLOTS,
    MAX_ROWS_PER_TURN,
    WINDOW_SLOTS,
    Activity,
    ActivityLog,
    Row,
    Window,
    slot_of,
    window_start,
)
from ._messages import WorkerRecord

log = logging.getLogger("asyncq.journal")

# A process's counts since its last write, added to the slots' rows: one row per
# slot and destination, the histograms merged bucket by bucket.
# [[slot, destination, arrived, calls, finished, retried, dead, {bucket: n} or null,
#   first_at]], a `Row` as JSON.
SAVE = """
INSERT INTO activity
    (slot, destination, arrived, calls, finished, retried, dead, latency, first_at)
SELECT a.value ->> 0, a.value ->> 1, a.value ->> 2, a.value ->> 3, a.value ->> 4,
       a.value ->> 5, a.value ->> 6, a.value ->> 7, a.value ->> 8
FROM json_each(?) AS a WHERE true
ON CONFLICT (slot, destination) DO UPDATE SET
    first_at = min(first_at, excluded.first_at),
    arrived = arrived + excluded.arrived, calls = calls + excluded.calls,
    finished = finished + excluded.finished, retried = retried + excluded.retried,
    dead = dead + excluded.dead,
    latency = CASE
        WHEN excluded.latency IS NULL THEN latency
        WHEN latency IS NULL THEN excluded.latency
        ELSE (SELECT json_group_object(bucket, n) FROM (
                SELECT key AS bucket, sum(value) AS n FROM (
                    SELECT key, value FROM json_each(activity.latency)
                    UNION ALL SELECT key, value FROM json_each(excluded.latency))
                GROUP BY key))
    END
"""
PRUNE = "DELETE FROM activity WHERE slot < ?"
READ = """
SELECT destination, sum(arrived), sum(calls), sum(finished), sum(retried), sum(dead)
FROM activity WHERE slot >= ? GROUP BY destination
"""
READ_LATENCY = "SELECT destination, latency FROM activity WHERE slot >= ? AND latency IS NOT NULL"
# The journal's first event still kept: a journal younger than a minute has rates
# over its life so far, not over a minute most of which it did not exist.
FIRST_AT = """
SELECT min(first_at) FROM activity WHERE slot = (SELECT min(slot) FROM activity)
"""

HEARTBEAT = """
INSERT INTO workers (owner, host, pid, concurrency, started_at, last_seen, alive_until)
VALUES (:owner, :host, :pid, :concurrency, :started_at, :now, :alive_until)
ON CONFLICT (owner) DO UPDATE SET last_seen = excluded.last_seen,
    alive_until = excluded.alive_until, concurrency = excluded.concurrency
"""
# Rows of processes long gone (killed, so never signed off) are kept a day, then go.
FORGET_GONE = "DELETE FROM workers WHERE alive_until < ?"
GONE_AFTER = 86_400.0
SIGN_OFF = "DELETE FROM workers WHERE owner = ?"
ALIVE = "SELECT count(*) FROM workers WHERE alive_until >= ?"

SAVE_RATE = """
INSERT INTO destinations (name, rate) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET rate = excluded.rate
"""
RATES = "SELECT name, rate FROM destinations WHERE rate IS NOT NULL"


class SqliteActivityLog(ActivityLog):
    """The activity log (see `ActivityLog`), written on the writer's thread."""

    def __init__(self) -> None:
        super().__init__()
        self._pruned_slot = 0
        self._failing = False  # the last write failed (logged once)

    def save(self, conn: sqlite3.Connection, turn: Activity) -> bool:
        """Inside a turn's transaction: write what `take` gives. Whether it wrote."""
        planned = self.take(turn)
        if planned is None:
            return False
        rows, at = planned
        return self.written(rows, self._write(conn, rows[:MAX_ROWS_PER_TURN], at))

    def _write(self, conn: sqlite3.Connection, rows: list[Row], at: float) -> bool:
        # In a savepoint of its own: counting must never fail the turn's jobs. What
        # could not be written stays pending.
        conn.execute("SAVEPOINT activity")
        try:
            conn.execute(SAVE, (json.dumps(rows),))
            current = slot_of(at)
            if current != self._pruned_slot:
                conn.execute(PRUNE, (current - KEEP_SLOTS,))
                self._pruned_slot = current
        except Exception as exc:  # noqa: BLE001 - logged; the jobs' own writes go on
            conn.execute("ROLLBACK TO activity")
            conn.execute("RELEASE activity")
            if not self._failing:  # once until a write succeeds again
                log.warning("journal: the counts for stats() were not written (%s)", exc)
            self._failing = True
            return False
        conn.execute("RELEASE activity")
        self._failing = False
        return True


def read_window(conn: sqlite3.Connection, now: float, unwritten: list[Row]) -> Window:
    """The last minute's counts per destination: the store's, and this process's
    not written yet."""
    first = slot_of(now) - WINDOW_SLOTS + 1
    (kept,) = conn.execute(FIRST_AT).fetchone()
    window = Window(seconds=max(1.0, now - window_start(now, kept, unwritten)))
    for destination, *counts in conn.execute(READ, (first,)):
        window.tallies[destination] = [int(n or 0) for n in counts]
    for destination, text in conn.execute(READ_LATENCY, (first,)):
        histogram = window.latency.setdefault(destination, Counter())
        for bucket, n in json.loads(text).items():
            histogram[int(bucket)] += int(n)
    window.add_unwritten(unwritten, first)
    return window


# A cancel that settles children reports their ids; counting them needs their
# destinations (a rare path: jobs that wait for parents whose run failed).
DESTINATIONS_OF = """
SELECT destination, count(*) FROM jobs WHERE id IN (SELECT value FROM json_each(?))
GROUP BY destination
"""


def destinations_of(conn: sqlite3.Connection, ids: list[int]) -> list[tuple[str, int]]:
    return [(d, int(n)) for d, n in conn.execute(DESTINATIONS_OF, (json.dumps(ids),))]


def heartbeat(
    conn: sqlite3.Connection, worker: WorkerRecord, now: float, alive_until: float
) -> None:
    conn.execute(
        HEARTBEAT,
        {
            "owner": worker.owner,
            "host": worker.host,
            "pid": worker.pid,
            "concurrency": worker.concurrency,
            "started_at": worker.started_at,
            "now": now,
            "alive_until": alive_until,
        },
    )
    conn.execute(FORGET_GONE, (now - GONE_AFTER,))


def workers_alive(conn: sqlite3.Connection, now: float) -> int:
    (count,) = conn.execute(ALIVE, (now,)).fetchone()
    return int(count)


def rates(conn: sqlite3.Connection) -> dict[str, float]:
    return {name: float(rate) for name, rate in conn.execute(RATES)}


def save_rates(conn: sqlite3.Connection, declared: Mapping[str, float | None]) -> None:
    conn.executemany(SAVE_RATE, list(declared.items()))
