"""Monitoring in the SQLite journal: the activity slots (see `_activity.py`), the
workers' heartbeats and the destinations' rates, written by the writer and read
by stats() on the read connection."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ._activity import (
    KEEP_SLOTS,
    SLOT_SECONDS,
    WINDOW_SLOTS,
    WRITE_EVERY,
    Activity,
    Counts,
    slot_of,
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


@dataclass(slots=True)
class Window:
    """What the store holds for the last minute, per destination, and the seconds
    that covers."""

    seconds: float
    tallies: dict[str, list[int]] = field(default_factory=dict)  # arrived ... dead
    latency: dict[str, Counter[int]] = field(default_factory=dict)


#: Rows a turn writes at most: a second in which 10,000 destinations were busy is
#: written over many turns (a row costs 10-15 us), not in one that stalls.
MAX_ROWS_PER_TURN = 256


class Row(NamedTuple):
    """One slot's counts for one destination, as the store keeps them."""

    slot: int
    destination: str
    arrived: int
    calls: int
    finished: int
    retried: int
    dead: int
    latency: dict[int, int] | None  # bucket -> attempts
    first_at: float  # the earliest of these events


class ActivityLog:
    """A journal's counts not yet written, and when to write them.

    The writer's thread writes (`save`, inside a turn's transaction); the event
    loop's thread counts each committed turn's `Activity` (`committed`, before the
    next turn starts) and reads a copy for stats() (`unwritten`): the two never
    run at once, so no lock is needed.

    Every `WRITE_EVERY` seconds the pending counts become rows (the work grows with
    the destinations busy since the last time, once); the rows are written
    `MAX_ROWS_PER_TURN` a turn, so that no turn pays for more, while new counts
    pend beside them."""

    def __init__(self) -> None:
        self._pending: dict[int, Counts] = {}  # by slot
        self._queued: list[Row] = []  # rows made, to be written by the next turns
        self._at = -math.inf  # the latest time counted in `_pending`
        self._written_at = -math.inf  # the queue's time the pending counts last became rows
        self._pruned_slot = 0
        self._failing = False  # the last write failed (logged once)
        # What the running turn's write did, for `committed`: the rows it leaves
        # queued, and whether it took the pending counts (and the turn's own).
        self._leftover: list[Row] = []
        self._took_pending = False
        #: Set (from the event loop) to have the next turn write whatever is pending.
        self.write_wanted = False

    @property
    def pending(self) -> bool:
        return bool(self._pending or self._queued)

    def save(self, conn: sqlite3.Connection, turn: Activity) -> bool:
        """Inside a turn's transaction: write the next queued rows, or, when it is
        time (`WRITE_EVERY`, or asked for), the pending counts and this turn's, at
        most `MAX_ROWS_PER_TURN` rows. Whether it wrote."""
        self._took_pending = False
        if self._queued:
            rows = self._queued
            at = self._written_at
        else:
            recorded = turn.at > -math.inf
            if not (recorded or self._pending):
                return False
            at = max(turn.at, self._at)
            if not self.write_wanted and at - self._written_at < WRITE_EVERY:
                return False
            rows = _rows(self._pending)  # pending stays as it is until the commit
            if recorded:
                counted = Counts()
                turn.count_into(counted)
                rows += _rows({slot_of(turn.at): counted})
            self._took_pending = True
        if not self._write(conn, rows[:MAX_ROWS_PER_TURN], at):
            self._took_pending = False
            return False
        self._leftover = rows[MAX_ROWS_PER_TURN:]
        return True

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

    def committed(self, turn: Activity, written: bool) -> None:
        """After the turn's commit: what it wrote is no longer pending; what it did
        not write waits for a later turn."""
        if not written and turn.at == -math.inf:
            return
        if written:
            self._queued, self._leftover = self._leftover, []
        if self._took_pending:  # the pending counts and the turn's became rows
            self._written_at = max(turn.at, self._at, self._written_at)
            self._pending = {}
            self._at = -math.inf
            self.write_wanted = False
            self._took_pending = False
        elif turn.at > -math.inf:
            slot = slot_of(turn.at)
            counts = self._pending.get(slot)
            if counts is None:
                counts = self._pending[slot] = Counts()
            turn.count_into(counts)
            self._at = max(self._at, turn.at)

    def unwritten(self) -> list[Row]:
        return self._queued + _rows(self._pending)


def _rows(counted: dict[int, Counts]) -> list[Row]:
    rows = []
    for slot, counts in counted.items():
        histograms = counts.histograms()
        for destination, (
            arrived,
            calls,
            finished,
            retried,
            dead,
        ) in counts.by_destination().items():
            latency = histograms.get(destination)
            rows.append(
                Row(
                    slot,
                    destination,
                    arrived,
                    calls,
                    finished,
                    retried,
                    dead,
                    latency,
                    counts.first_at,
                )
            )
    return rows


def read_window(conn: sqlite3.Connection, now: float, unwritten: list[Row]) -> Window:
    """The last minute's counts per destination: the store's, and this process's
    not written yet."""
    first = slot_of(now) - WINDOW_SLOTS + 1
    (kept,) = conn.execute(FIRST_AT).fetchone()
    known = [at for at in (kept, *(row.first_at for row in unwritten)) if at is not None]
    start = max(first * SLOT_SECONDS, min(known, default=-math.inf))
    window = Window(seconds=max(1.0, now - start))
    for destination, *counts in conn.execute(READ, (first,)):
        window.tallies[destination] = [int(n or 0) for n in counts]
    for destination, text in conn.execute(READ_LATENCY, (first,)):
        histogram = window.latency.setdefault(destination, Counter())
        for bucket, n in json.loads(text).items():
            histogram[int(bucket)] += int(n)
    for row in unwritten:
        if row.slot < first:
            continue
        tally = window.tallies.setdefault(row.destination, [0, 0, 0, 0, 0])
        for index, value in enumerate(
            (row.arrived, row.calls, row.finished, row.retried, row.dead)
        ):
            tally[index] += value
        if row.latency:
            window.latency.setdefault(row.destination, Counter()).update(row.latency)
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
