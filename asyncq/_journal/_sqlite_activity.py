"""Monitoring in the SQLite journal: the activity slots (see `_activity.py`), the
workers' heartbeats and the destinations' rates, written by the writer and read
by stats() on the read connection."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._activity import KEEP_SLOTS, SLOT_SECONDS, WINDOW_SLOTS, WRITE_EVERY, Activity, slot_of
from ._messages import WorkerRecord

# A process's counts since its last write, added to the slots' rows: one row per
# slot and destination, the histograms merged bucket by bucket.
# [[slot, destination, arrived, calls, finished, retried, dead, {bucket: n} or null]]
SAVE = """
INSERT INTO activity (slot, destination, arrived, calls, finished, retried, dead, latency)
SELECT a.value ->> 0, a.value ->> 1, a.value ->> 2, a.value ->> 3, a.value ->> 4,
       a.value ->> 5, a.value ->> 6, a.value ->> 7
FROM json_each(?) AS a WHERE true
ON CONFLICT (slot, destination) DO UPDATE SET
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
# The journal's first slot still kept: a journal younger than a minute has rates
# over its life so far, not over a minute most of which it did not exist.
FIRST_SLOT = "SELECT min(slot) FROM activity"

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


@dataclass(slots=True)
class Window:
    """What the store holds for the last minute, per destination, and the seconds
    that covers."""

    seconds: float
    tallies: dict[str, list[int]] = field(default_factory=dict)  # arrived ... dead
    latency: dict[str, Counter[int]] = field(default_factory=dict)


class ActivityLog:
    """A journal's counts not yet written, and when to write them.

    The writer's thread records each turn's `Activity` (`save` inside the
    transaction, `committed` after it); stats() reads a copy (`unwritten`) from the
    read connection's thread, hence the lock."""

    def __init__(self) -> None:
        self._pending = Activity()
        self._lock = threading.Lock()
        self._written_at = -math.inf  # the queue's time of the last write
        self._pruned_slot = 0
        #: Set (from the event loop) to have the next turn write whatever is pending.
        self.write_wanted = False

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def save(self, conn: sqlite3.Connection, turn: Activity) -> bool:
        """Inside a turn's transaction: write the pending counts and this turn's, if
        it is time (`WRITE_EVERY`, or asked for). Whether it wrote."""
        if not (turn or self._pending):
            return False
        at = max(turn.at, self._pending.at)
        if not self.write_wanted and at - self._written_at < WRITE_EVERY:
            return False
        rows = _rows(self._pending, turn)
        conn.execute(SAVE, (json.dumps(rows),))
        current = slot_of(at)
        if current != self._pruned_slot:
            conn.execute(PRUNE, (current - KEEP_SLOTS,))
            self._pruned_slot = current
        return True

    def committed(self, turn: Activity, written: bool) -> None:
        """After the turn's commit: what it wrote is no longer pending; what it did
        not write waits for a later turn."""
        with self._lock:
            if written:
                self._written_at = max(turn.at, self._pending.at)
                self._pending = Activity()
                self.write_wanted = False
            elif turn:
                self._pending.add(turn)

    def unwritten(self) -> Activity:
        with self._lock:
            return self._pending.copy()


def _rows(pending: Activity, turn: Activity) -> list[list[object]]:
    merged = pending.copy()
    merged.add(turn)
    return [
        [
            slot,
            destination,
            t.arrived,
            t.calls,
            t.finished,
            t.retried,
            t.dead,
            json.dumps({str(b): n for b, n in t.latency.items()}) if t.latency else None,
        ]
        for (slot, destination), t in merged.tallies.items()
    ]


def read_window(conn: sqlite3.Connection, now: float, unwritten: Activity) -> Window:
    """The last minute's counts per destination: the store's, and this process's
    not written yet."""
    first = slot_of(now) - WINDOW_SLOTS + 1
    (kept,) = conn.execute(FIRST_SLOT).fetchone()
    known = [slot for slot in (kept, *(s for s, _ in unwritten.tallies)) if slot is not None]
    start = max(first, min(known, default=first))
    window = Window(seconds=max(1.0, now - start * SLOT_SECONDS))
    for destination, *counts in conn.execute(READ, (first,)):
        window.tallies[destination] = [int(n or 0) for n in counts]
    for destination, text in conn.execute(READ_LATENCY, (first,)):
        histogram = window.latency.setdefault(destination, Counter())
        for bucket, n in json.loads(text).items():
            histogram[int(bucket)] += int(n)
    for (slot, destination), t in unwritten.tallies.items():
        if slot < first:
            continue
        counts = window.tallies.setdefault(destination, [0, 0, 0, 0, 0])
        for index, value in enumerate((t.arrived, t.calls, t.finished, t.retried, t.dead)):
            counts[index] += value
        if t.latency:
            window.latency.setdefault(destination, Counter()).update(t.latency)
    return window


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
