"""The write side of the SQLite journal: the functions a transaction runs on the
connection's thread (inserts, outcomes, bookings, the counts they change)."""

from __future__ import annotations

import itertools
import json
import operator
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .._codec import encode_json, is_utf8
from .._errors import PayloadError
from .._limiter import schedule_calls
from .._policy import Rate
from . import _sqlite_cancel as cancelling
from . import _sqlite_sql as sql
from ._activity import LATENCY_SAMPLES, Sample, latency_bucket
from ._messages import (
    Booked,
    Cancelled,
    Failed,
    Inserted,
    NewBatch,
    NewJob,
    Released,
    Started,
    Succeeded,
    micros,
)
from ._rows import redrivable

_destination = operator.attrgetter("destination")

# Up to this many rows, a statement per row with plain parameters costs less than
# one statement that parses them all as JSON (which wins for larger turns).
_FEW_ROWS = 4


def book(
    conn: sqlite3.Connection,
    wants: Mapping[str, int],
    rates: Mapping[str, Rate],
    clock: Callable[[], float],
    horizon: float,
) -> dict[str, Booked]:
    """Book calls in destinations' buckets: read each bucket, book, write it back."""
    wanted = [name for name in wants if name in rates]
    (known,) = conn.execute(
        "SELECT json_group_object(name, full_at) FROM destinations "
        "WHERE name IN (SELECT value FROM json_each(?))",
        (json.dumps(wanted),),
    ).fetchone()
    full = json.loads(known)
    now = clock()
    booked = {
        name: schedule_calls(rates[name], wants[name], full.get(name, 0.0), now, horizon)
        for name in wanted
    }
    conn.executemany(
        sql.SAVE_BUCKET, [(name, b[1], rates[name].per_second) for name, b in booked.items()]
    )
    return booked


def ready_destinations(conn: sqlite3.Connection, start: str, chunk: int) -> Iterator[str]:
    """Destinations with ready jobs, in name order from just after `start`,
    wrapping around once."""
    after, wrapped = start, False
    while True:
        (names,) = conn.execute(sql.READY_DESTINATIONS, (after, chunk)).fetchone()
        batch: list[str] = json.loads(names)
        for name in batch:
            if wrapped and name > start:
                return
            yield name
        if len(batch) == chunk:
            after = batch[-1]
        elif wrapped or not start:
            return
        else:
            after, wrapped = "", True


def insert_all(
    conn: sqlite3.Connection,
    inserts: Sequence[tuple[Sequence[NewJob] | NewBatch, float, object]],
    deltas: Deltas,
) -> list[Any]:
    """Every insert of a turn; one result per insert, in order."""
    if len(inserts) == 1:
        jobs, at, _ = inserts[0]
        if type(jobs) is list and len(jobs) == 1 and jobs[0].key is None:
            # One plain submit alone in its turn (one producer awaiting each).
            created = micros(at) / 1_000_000
            return [[Inserted(insert_row(conn, jobs[0], at, created, deltas), True)]]
    results: list[Any] = [None] * len(inserts)
    merged: list[int] = []  # the inserts whose jobs go into one shared statement
    for index, (jobs, now, _) in enumerate(inserts):
        if isinstance(jobs, NewBatch):
            results[index] = insert_batch(conn, jobs, now)
            state = "pending" if jobs.run_at <= now else "scheduled"
            deltas[jobs.destination, state] += jobs.job_count
        elif any(job.key is not None for job in jobs):
            # The rare path: keyed jobs go one at a time, so a key repeated within
            # one call also finds the job inserted a moment before.
            results[index] = [insert_keyed(conn, job, now, deltas) for job in jobs]
        else:
            merged.append(index)
    if not merged:
        return results
    if sum(len(inserts[index][0]) for index in merged) <= _FEW_ROWS:
        for index in merged:
            jobs, at, _ = inserts[index]
            created = micros(at) / 1_000_000
            results[index] = [
                Inserted(insert_row(conn, job, at, created, deltas), True)
                for job in cast(Sequence[NewJob], jobs)
            ]
        return results
    for index in merged:
        at = inserts[index][1]
        deltas.update(
            (j.destination, "pending" if j.run_at <= at else "scheduled")
            for j in cast(Sequence[NewJob], inserts[index][0])
        )
    # One encoding for the whole turn (a json.dumps per call would cost more than
    # the rows): the submit time as whole microseconds, run_at only if held back.
    rows: list[list[object]] = []
    for index in merged:
        at = inserts[index][1]
        us = micros(at)
        rows += [
            [
                j.task,
                j.payload,
                j.destination,
                j.priority,
                None if j.run_at == at else j.run_at,
                us,
                j.trace,
            ]
            for j in cast(Sequence[NewJob], inserts[index][0])
        ]
    ids = iter(inserted_ids(conn.execute(sql.INSERT_ROWS, {"rows": json.dumps(rows)}), len(rows)))
    for index in merged:
        jobs = cast(Sequence[NewJob], inserts[index][0])
        results[index] = [Inserted(next(ids), True) for _ in jobs]
    return results


def insert_row(
    conn: sqlite3.Connection, job: NewJob, at: float, created: float, deltas: Deltas
) -> int:
    """Insert one unkeyed job submitted at `at` (`created`: `at` in whole
    microseconds), as INSERT_ROWS would, and count it; its id."""
    run_at = created if job.run_at == at else job.run_at
    state = "pending" if run_at <= created else "scheduled"
    row = (job.task, job.payload, job.destination, job.priority, run_at, state, created, job.trace)
    job_id = conn.execute(sql.INSERT_ROW, row).lastrowid
    assert job_id is not None
    deltas[job.destination, state] += 1
    return job_id


def insert_batch(
    conn: sqlite3.Connection,
    batch: NewBatch,
    now: float,
    *,
    statement: str = sql.INSERT_PAYLOADS,
    columns: Mapping[str, object] | None = None,
) -> range:
    """Insert a batch with `statement` (its parameters: INSERT_PAYLOADS's, and
    `columns`, which take precedence); the new ids."""
    params: dict[str, object] = {
        "task": batch.task,
        "payloads": batch.payloads,
        "destination": batch.destination,
        "priority": batch.priority,
        "run_at": batch.run_at,
        "state": "pending" if batch.run_at <= now else "scheduled",
        "now": now,
        "limit": batch.max_payload_bytes,
        "trace": batch.trace,
    }
    if columns:
        params.update(columns)
    cursor = conn.execute(statement, params)
    if cursor.rowcount != batch.job_count:
        refused = conn.execute(
            sql.REFUSED_PAYLOAD, {"payloads": batch.payloads, "limit": batch.max_payload_bytes}
        ).fetchone()
        if refused is None:
            raise PayloadError(batch.task, "the batch does not hold the number of payloads given")
        index, kind, size = refused
        if kind != "object":
            raise PayloadError(batch.task, f"payload {index} is a JSON {kind}, not an object")
        raise PayloadError(
            batch.task,
            f"payload {index} is {size} bytes, over the {batch.max_payload_bytes}-byte limit",
        )
    return inserted_ids(cursor, batch.job_count)


def inserted_ids(cursor: sqlite3.Cursor, count: int) -> range:
    # Under the write lock, AUTOINCREMENT hands out consecutive ids in row order.
    last = cursor.lastrowid
    if cursor.rowcount != count or last is None:
        raise RuntimeError(f"an insert wrote {cursor.rowcount} rows, not {count}")
    return range(last - count + 1, last + 1)


def live_holder(conn: sqlite3.Connection, key: str | None) -> Inserted | None:
    """The live job that holds `key`, as a submit of that key returns it (None: none)."""
    if key is None:
        return None
    row = conn.execute(sql.FIND_LIVE_KEY, (key,)).fetchone()
    return None if row is None else Inserted(row[0], False)


def insert_keyed(conn: sqlite3.Connection, job: NewJob, now: float, deltas: Deltas) -> Inserted:
    if (holder := live_holder(conn, job.key)) is not None:
        return holder
    cursor = conn.execute(
        sql.INSERT_ONE,
        (
            job.task,
            job.payload,
            job.destination,
            job.priority,
            job.run_at,
            job.key,
            job.run_at,
            now,
            now,
            job.trace,
        ),
    )
    assert cursor.lastrowid is not None
    deltas[job.destination, "pending" if job.run_at <= now else "scheduled"] += 1
    return Inserted(cursor.lastrowid, True)


@dataclass(frozen=True, slots=True)
class EncodedOutcomes:
    """One `record_outcomes` call's outcomes as the JSON its statements take,
    encoded on the event loop's thread: Python work inside a transaction holds the
    GIL while the turn waits for it."""

    started: str | None
    complete: str | None
    complete_count: int
    #: The successes by destination: for the counts, and for those of activity.
    complete_by_destination: Counter[str]
    fail: str | None
    release: str | None
    cancel: str | None = None
    #: For the counts of activity (see `_activity.py`): a sample of the successes'
    #: durations (each standing for `sample_weight`), and the calls that did not
    #: succeed, with their durations.
    samples: list[Sample] = field(default_factory=list)
    sample_weight: int = 1
    other_calls: list[str] = field(default_factory=list)
    other_samples: list[Sample] = field(default_factory=list)
    #: The successes themselves: their ids settle the jobs' children, if any wait.
    succeeded: Sequence[Succeeded] = ()
    #: Filled by the transaction that writes the batch: the jobs it cancelled in turn.
    settled: list[int] = field(default_factory=list)


def encode_outcomes(
    started: Sequence[Started],
    succeeded: Sequence[Succeeded],
    failed: Sequence[Failed],
    released: Sequence[Released],
    cancelled: Sequence[Cancelled] = (),
    *,
    now: float,
) -> EncodedOutcomes:
    """Outcomes as the JSON their statements take, and what they count for
    monitoring (durations up to `now`, when they are written)."""
    now_us = micros(now)
    # A bounded sample of the successes' durations: the same cost for any batch.
    weight = -(-len(succeeded) // LATENCY_SAMPLES) or 1
    samples = [(s.destination, latency_bucket(now_us - s.started_us)) for s in succeeded[::weight]]
    # Failures and cancels are rarer: every call counts one by one.
    other_calls = [f.destination for f in failed if f.started_us is not None and f.destination]
    other_calls += [c.destination for c in cancelled if c.started_us is not None and c.destination]
    other_samples = [
        (f.destination, latency_bucket(now_us - f.started_us))
        for f in failed
        if f.started_us is not None and f.destination
    ]
    return EncodedOutcomes(
        encode_json(by_claim(started, _at_us)) if started else None,
        success_batch(succeeded) if succeeded else None,
        len(succeeded),
        Counter(map(_destination, succeeded)),
        json.dumps(failed) if failed else None,
        json.dumps(released) if released else None,
        json.dumps(cancelled) if cancelled else None,
        samples,
        weight,
        other_calls,
        other_samples,
        succeeded,
    )


_id = operator.itemgetter(0)
_token = operator.itemgetter(1)
_result = operator.itemgetter(2)
_started_us = operator.itemgetter(3)
_at_us = operator.itemgetter(2)
_NULL_RESULTS = frozenset({"null"})


def by_claim(
    outcomes: Sequence[Any], value: Callable[[Any], object]
) -> dict[int, dict[int, object]]:
    """Outcomes (`id`, `token`, ...) as `{token: {id: value(outcome)}}`: the form
    START and COMPLETE read (see `_sqlite_sql.COMPLETE`). Outcomes come mostly in
    runs of one claim (one token), which are taken whole, without a Python step
    per outcome."""
    groups: dict[int, dict[int, object]] = {}
    for token, run in itertools.groupby(outcomes, _token):
        group = groups.get(token)
        if group is None:
            group = groups[token] = {}
        items = list(run)
        group.update(zip(map(_id, items), map(value, items), strict=True))
    return groups


def _success_value(success: Succeeded) -> object:
    """What COMPLETE reads for one success: its start, and its result if not null."""
    if success[2] == "null":
        return success[3]
    return [success[3], success[2]]


def success_batch(succeeded: Sequence[Succeeded]) -> str:
    """Successes as COMPLETE's `{token: {id: started_us or [started_us, result]}}`.
    A result is valid UTF-8 (see `encode_result`), or escaped here."""
    if _NULL_RESULTS.issuperset(map(_result, succeeded)):  # handlers that return None
        groups = by_claim(succeeded, _started_us)
    else:
        groups = by_claim(succeeded, _success_value)
    text = encode_json(groups)
    return text if is_utf8(text) else json.dumps(groups)


def write_outcomes(
    conn: sqlite3.Connection, owner: str, now: float, batch: EncodedOutcomes, deltas: Deltas
) -> bool:
    """Write one batch of outcomes; True if every success in it was recorded (none
    was stale), so that the batch itself names the jobs that succeeded."""
    every_success = True
    if batch.started:
        conn.execute(sql.START, {"batch": batch.started, "owner": owner})
    if batch.complete:
        params = {"batch": batch.complete, "owner": owner, "now": now}
        if conn.execute(sql.COMPLETE, params).rowcount == batch.complete_count:
            for destination, count in batch.complete_by_destination.items():
                deltas[destination, "running"] -= count
                deltas[destination, "succeeded"] += count
        else:
            every_success = False
            rows = conn.execute(sql.COMPLETED, params).fetchall()
            moved(deltas, rows, "running", "succeeded")
    if batch.fail:
        params = {"batch": batch.fail, "owner": owner, "now": now}
        moved(deltas, conn.execute(sql.FAIL, params).fetchall(), "running")
    if batch.release:
        params = {"batch": batch.release, "owner": owner}
        moved(deltas, conn.execute(sql.RELEASE, params).fetchall(), "running", "pending")
    # Cancellation (see _sqlite_cancel.py): recorded cancels, and requests that a
    # failure or release above would otherwise send back to wait.
    batch.settled.clear()  # a turn may be run again (a lock timeout)
    if batch.cancel:
        batch.settled.extend(cancelling.record_cancelled(conn, owner, now, batch.cancel, deltas))
    if batch.fail or batch.release:
        batch.settled.extend(cancelling.settle_requests(conn, now, deltas))
    return every_success


#: Jobs moved in one transaction: (destination, state) -> change in count.
Deltas = Counter[tuple[str, str]]


def moved(deltas: Deltas, rows: list[Any], old: str | None, new: str | None = None) -> int:
    """Count the rows a statement moved: out of state `old` into `new` (None: the
    state in the row's second column), or, with `old` None, deleted from the state
    in the row's second column. Each row starts with the job's destination.
    Returns how many rows moved."""
    if not rows:
        return 0
    for row, count in Counter(rows).items():
        destination = row[0]
        if old is not None:
            deltas[destination, old] -= count
        else:
            deltas[destination, row[1]] -= count  # deleted from the state it had
            continue
        deltas[destination, new or row[1]] += count
    return len(rows)


def save_counts(conn: sqlite3.Connection, deltas: Deltas) -> None:
    """Add a turn's changes to the kept counts: a statement a row for a few rows,
    one statement parsing them as JSON for more. Running jobs are
    not counted here: stats() reads them from the running index (a bounded set),
    which halves what a claim and an ack cost this table. A destination whose
    ready count rises is listed as ready by the table's triggers (schema version 7)."""
    if len(deltas) <= _FEW_ROWS:  # a turn of a submit or two: a statement each
        for (destination, state), n in deltas.items():
            if n and state != "running":
                conn.execute(sql.ADD_TO_ONE_COUNT, (destination, state, n))
        return
    changes = [(d, state, n) for (d, state), n in deltas.items() if n and state != "running"]
    if changes:
        conn.execute(sql.ADD_TO_COUNT, (json.dumps(changes),))


def keys_free(conn: sqlite3.Connection, ids: list[int]) -> list[int]:
    """The jobs among `ids` (dead ones, about to be redriven) whose key no live job
    holds: a key names one live job at a time, so the others stay dead. Of two with
    the same key, the older goes."""
    rows = conn.execute(
        "SELECT id, key, EXISTS (SELECT 1 FROM jobs AS live WHERE live.key = dead.key "
        "AND live.state IN ('pending', 'scheduled', 'running', 'blocked')) "
        "FROM jobs AS dead WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
        (json.dumps(ids),),
    ).fetchall()
    return redrivable(rows, len(ids))
