"""Dependencies in the SQLite journal: jobs that wait for parent jobs.

A job submitted `after=` parents has a row per parent in `deps (parent, child)`,
`parents` (how many) and `waiting` (how many are not final yet). While `waiting`
is above 0 it is `blocked`. Every transaction that makes jobs final settles their
children here, in the same transaction: a success counts down `waiting`, and the
child that reaches 0 becomes ready; a parent that ends dead or cancelled cancels
each child whose `on_parent_failure` is "cancel" (and, through the same rule, its
subtree), recording the parent as `cancelled_by`, and counts as done for a child
whose mode is "run".

Plain jobs pay one index seek per outcome batch: "is any job blocked at all?",
answered by the partial index `jobs_blocked`. Only then are children looked up.
Parents must exist before their child (ids only grow), so no cycle can be built.
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._errors import JobNotFound
from . import _sqlite_writes as writes
from ._messages import ClaimedJob, Inserted, NewBatch, NewJob, Succeeded
from ._sqlite_writes import Deltas, EncodedOutcomes

#: States in which a parent has not ended yet (a child waits for it).
_LIVE = "('pending', 'scheduled', 'running', 'blocked')"  # as in the index jobs_live_key

# One seek on the partial index `jobs_blocked`: the gate that plain jobs pay.
ANY_BLOCKED = "SELECT 1 FROM jobs WHERE state = 'blocked' LIMIT 1"

# For a new child: the first parent id that is not in the journal, how many
# parents are still live, and the first that ended dead or cancelled.
PARENTS = f"""
SELECT
    (SELECT p.value FROM json_each(:parents) AS p
     WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = p.value) LIMIT 1),
    count(*) FILTER (WHERE state IN {_LIVE}),
    min(id) FILTER (WHERE state IN ('dead', 'cancelled'))
FROM jobs WHERE id IN (SELECT value FROM json_each(:parents))
"""
INSERT_CHILD = """
INSERT INTO jobs (task, payload, destination, priority, run_at, key, state, created_at,
                  parents, waiting, on_parent_failure, cancelled_by, finished_at, trace)
VALUES (:task, :payload, :destination, :priority, :run_at, :key, :state, :now,
        :parent_count, :waiting, :mode, :cancelled_by, :finished_at, :trace)
"""
# A `submit_many` batch of children: `INSERT_PAYLOADS` with the dependency columns.
INSERT_CHILDREN = """
INSERT INTO jobs (task, payload, destination, priority, run_at, state, created_at,
                  parents, waiting, on_parent_failure, cancelled_by, finished_at, trace)
SELECT :task, j.value, :destination, :priority, :run_at, :state, :now,
       :parent_count, :waiting, :mode, :cancelled_by, :finished_at, :trace
FROM json_each(:payloads) AS j
WHERE j.type = 'object' AND length(CAST(j.value AS BLOB)) <= :limit
"""
LINK = "INSERT INTO deps (parent, child) SELECT value, :child FROM json_each(:parents)"
# The children of a batch have consecutive ids (see `writes.inserted_ids`).
LINK_RANGE = """
WITH RECURSIVE child (id) AS (SELECT :first UNION ALL SELECT id + 1 FROM child WHERE id < :last)
INSERT INTO deps (parent, child) SELECT p.value, child.id FROM json_each(:parents) AS p, child
"""
# The children of `:parents` (a JSON array of ids) that count them as done: every
# blocked child for successes; for failures, the children whose mode is "run". A
# child whose count reaches 0 becomes ready (or scheduled, if its delay is not up).
# A child with one parent counts 1 without a look at its links; one with more
# counts its links to `:parents` (SET reads the old `waiting`, so `_DONE` is said
# twice). No UPDATE ... FROM (GROUP BY): sorting every child first cost a child 15 %
# more. The ids come as plain integers, not read out of the outcome batch
# (`o.value ->> 0` reparses each element: 5,500 instructions a job, children or not).
_CHILDREN = "SELECT d.child FROM json_each(:parents) AS p JOIN deps AS d ON d.parent = p.value"
_DONE = """iif(parents = 1, 1, (SELECT count(*) FROM deps
    WHERE deps.child = jobs.id AND deps.parent IN (SELECT value FROM json_each(:parents))))"""
_COUNT_DOWN = f"""
UPDATE jobs SET waiting = waiting - {_DONE},
    state = CASE WHEN waiting > {_DONE} THEN 'blocked'
                 WHEN run_at <= :now THEN 'pending' ELSE 'scheduled' END
WHERE id IN ({_CHILDREN}) AND state = 'blocked' {{mode}}
"""
# Whether `:parents` have children at all: most outcome batches have none (their acks
# only wait while some job elsewhere is blocked), and are done in one look for each.
ANY_CHILD = f"SELECT EXISTS ({_CHILDREN})"
# The children a count-down will make ready, read before it: when they share one
# destination (a fan-out; most pipelines), the count-down needs no RETURNING, which
# cost each child a third more (a row kept, fetched and counted in Python).
_READY = f"""
SELECT min(destination), max(destination), count(*), count(*) FILTER (WHERE run_at <= :now)
FROM jobs WHERE id IN ({_CHILDREN}) AND state = 'blocked' {{mode}} AND waiting <= {_DONE}
"""
_RUN = "AND on_parent_failure = 'run'"
READY_ALL, READY_RUN = _READY.format(mode=""), _READY.format(mode=_RUN)
COUNT_DOWN_ALL, COUNT_DOWN_RUN = _COUNT_DOWN.format(mode=""), _COUNT_DOWN.format(mode=_RUN)
CASCADE = """
UPDATE jobs SET state = 'cancelled', finished_at = :now, cancelled_by = d.parent
FROM (SELECT child, min(parent) AS parent FROM deps
      WHERE parent IN (SELECT value FROM json_each(:parents)) GROUP BY child) AS d
WHERE jobs.id = d.child AND jobs.state = 'blocked' AND jobs.on_parent_failure = 'cancel'
RETURNING jobs.id, jobs.destination
"""
# The jobs of an outcome batch that this transaction made succeeded, or dead (the
# claim token tells a stale outcome apart, as in `sql.COMPLETED`).
SUCCEEDED_IDS = """
SELECT json_group_array(jobs.id) FROM json_each(:batch) AS t, json_each(t.value) AS o
JOIN jobs ON jobs.id = CAST(o.key AS INTEGER)
WHERE jobs.state = 'succeeded' AND jobs.finished_at = :now
  AND jobs.claim_token = CAST(t.key AS INTEGER) AND jobs.owner IS NULL
"""
DEAD_IDS = """
SELECT json_group_array(jobs.id) FROM json_each(:batch) AS o JOIN jobs ON jobs.id = o.value ->> 0
WHERE o.value ->> 3 IS NULL AND jobs.state = 'dead' AND jobs.finished_at = :now
  AND jobs.claim_token = o.value ->> 1 AND jobs.owner IS NULL
"""
# Redrive: a parent that is live again is not done for its blocked "run" children,
# and the children its end cancelled come back blocked, `waiting` recomputed,
# unless another parent ended dead or cancelled too, or a live job took their key.
COUNT_UP_RUN = """
UPDATE jobs SET waiting = jobs.waiting + d.n
FROM (SELECT child, count(*) AS n FROM deps
      WHERE parent IN (SELECT value FROM json_each(:parents)) GROUP BY child) AS d
WHERE jobs.id = d.child AND jobs.state = 'blocked' AND jobs.on_parent_failure = 'run'
"""
_CANCELLED_BY_THESE = """
jobs.id IN (SELECT child FROM deps WHERE parent IN (SELECT value FROM json_each(:parents)))
AND jobs.state = 'cancelled' AND jobs.cancelled_by IN (SELECT value FROM json_each(:parents))
"""
REVIVE = f"""
UPDATE jobs SET state = 'blocked', finished_at = NULL, cancelled_by = NULL,
    waiting = (SELECT count(*) FROM deps AS d JOIN jobs AS p ON p.id = d.parent
               WHERE d.child = jobs.id AND p.state != 'succeeded')
WHERE {_CANCELLED_BY_THESE}
AND NOT EXISTS (SELECT 1 FROM deps AS d JOIN jobs AS p ON p.id = d.parent
                WHERE d.child = jobs.id AND p.state IN ('dead', 'cancelled'))
AND (jobs.key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS live WHERE live.key = jobs.key
                                     AND live.state IN {_LIVE}))
RETURNING jobs.id, jobs.destination
"""
# Those that stay cancelled now owe it to another parent (if one ended): a redrive
# of that one brings them back.
REPOINT = f"""
UPDATE jobs SET cancelled_by = coalesce(
    (SELECT min(p.id) FROM deps AS d JOIN jobs AS p ON p.id = d.parent
     WHERE d.child = jobs.id AND p.state IN ('dead', 'cancelled')), jobs.cancelled_by)
WHERE {_CANCELLED_BY_THESE}
"""
# What a claim hands a child: each parent's result (null for a parent that did not
# succeed, or was pruned), for the claimed jobs that have parents (`:children`, from
# the claim's own read, `sql.CLAIMED`). The result goes in as JSON, not as a string
# to parse again: parsing it on the event loop cost more than the writer saved.
# Three flat arrays (children, parents, results), not an array per link: that cost
# the claim 15 % more per child. Results are stored as JSON: PARENT_RESULTS fails on
# one that is not (edited by hand, say), and PARENT_RESULTS_SAFE, which checks each
# (6 % more), gives it as null.
_PARENT_RESULTS = """
SELECT json_group_array(c.value), json_group_array(d.parent), json_group_array({result})
FROM json_each(?) AS c JOIN deps AS d ON d.child = c.value LEFT JOIN jobs AS p ON p.id = d.parent
"""
PARENT_RESULTS = _PARENT_RESULTS.format(result="json(p.result)")
PARENT_RESULTS_SAFE = _PARENT_RESULTS.format(
    result="iif(json_valid(p.result), json(p.result), NULL)"
)
# The rows of children deleted (pruned or purged), unless no job has parents at all.
HAS_DEPS = "SELECT EXISTS (SELECT 1 FROM deps)"
FORGET = "DELETE FROM deps WHERE child IN (SELECT value FROM json_each(?))"

_has_parents: Callable[[NewJob], tuple[int, ...]] = operator.attrgetter("after")
_job_id: Callable[[Succeeded], int] = operator.itemgetter(0)

Insert = tuple[Sequence[NewJob] | NewBatch, float, object]


# -- inserts ------------------------------------------------------------------


def insert_all(conn: sqlite3.Connection, inserts: Sequence[Insert], deltas: Deltas) -> list[Any]:
    """`writes.insert_all`, for turns in which some jobs have parents (those go
    one insert at a time); one result per insert, in order."""
    if len(inserts) == 1 and not _linked(inserts[0][0]):  # one submit: no list to build
        return writes.insert_all(conn, inserts, deltas)
    linked = [i for i, (jobs, _, _) in enumerate(inserts) if _linked(jobs)]
    if not linked:
        return writes.insert_all(conn, inserts, deltas)
    linked_set = set(linked)
    plain = [i for i in range(len(inserts)) if i not in linked_set]
    results: list[Any] = [None] * len(inserts)
    for index, result in zip(
        plain, writes.insert_all(conn, [inserts[i] for i in plain], deltas), strict=True
    ):
        results[index] = result
    for index in linked:
        jobs, now, _ = inserts[index]
        if isinstance(jobs, NewBatch):
            results[index] = insert_children(conn, jobs, now, deltas)
        else:
            results[index] = [
                insert_child(conn, job, now, deltas)
                if job.after
                else writes.insert_keyed(conn, job, now, deltas)
                for job in jobs
            ]
    return results


def _linked(jobs: Sequence[NewJob] | NewBatch) -> bool:
    if isinstance(jobs, NewBatch):
        return bool(jobs.after)
    return any(map(_has_parents, jobs))


def insert_child(conn: sqlite3.Connection, job: NewJob, now: float, deltas: Deltas) -> Inserted:
    if (holder := writes.live_holder(conn, job.key)) is not None:
        return holder
    parents = json.dumps(list(dict.fromkeys(job.after)))
    params = _child_columns(conn, parents, job.on_parent_failure, job.run_at, now)
    params.update(
        task=job.task,
        payload=job.payload,
        destination=job.destination,
        priority=job.priority,
        run_at=job.run_at,
        key=job.key,
        now=now,
        trace=job.trace,
    )
    cursor = conn.execute(INSERT_CHILD, params)
    child = cursor.lastrowid
    assert child is not None
    conn.execute(LINK, {"parents": parents, "child": child})
    deltas[job.destination, str(params["state"])] += 1
    return Inserted(child, True)


def insert_children(conn: sqlite3.Connection, batch: NewBatch, now: float, deltas: Deltas) -> range:
    parents = json.dumps(list(dict.fromkeys(batch.after)))
    columns = _child_columns(conn, parents, batch.on_parent_failure, batch.run_at, now)
    ids = writes.insert_batch(conn, batch, now, statement=INSERT_CHILDREN, columns=columns)
    if ids:
        conn.execute(LINK_RANGE, {"parents": parents, "first": ids[0], "last": ids[-1]})
    deltas[batch.destination, str(columns["state"])] += len(ids)
    return ids


def _child_columns(
    conn: sqlite3.Connection, parents: str, mode: str, run_at: float, now: float
) -> dict[str, object]:
    """A new child's state and dependency columns, from its parents' states now.
    Raises `JobNotFound` for a parent that is not in the journal."""
    if mode not in ("cancel", "run"):
        raise ValueError(f"on_parent_failure must be 'cancel' or 'run', not {mode!r}")
    missing, waiting, failed = conn.execute(PARENTS, {"parents": parents}).fetchone()
    if missing is not None:
        raise JobNotFound(missing)
    columns: dict[str, object] = {
        "parent_count": len(json.loads(parents)),
        "waiting": waiting,
        "mode": mode,
        "cancelled_by": None,
        "finished_at": None,
    }
    if failed is not None and mode == "cancel":
        columns.update(state="cancelled", cancelled_by=failed, finished_at=now)
    elif waiting:
        columns["state"] = "blocked"
    else:
        columns["state"] = "pending" if run_at <= now else "scheduled"
    return columns


# -- settling children ----------------------------------------------------------


def settle_children(
    conn: sqlite3.Connection,
    succeeded: Sequence[int],
    failed: Sequence[int],
    now: float,
    deltas: Deltas,
) -> list[int]:
    """Jobs `succeeded` succeeded and jobs `failed` ended dead or cancelled in this
    transaction: unblock their children, or cancel them (and their subtrees) as each
    child's on_parent_failure says. Returns the ids of the jobs it cancelled."""
    if not (succeeded or failed) or conn.execute(ANY_BLOCKED).fetchone() is None:
        return []
    return _settle(conn, succeeded, failed, now, deltas)


def _settle(
    conn: sqlite3.Connection,
    succeeded: Sequence[int],
    failed: Sequence[int],
    now: float,
    deltas: Deltas,
) -> list[int]:
    if succeeded:
        _count_down(conn, {"parents": json.dumps(list(succeeded)), "now": now}, deltas)
    cancelled: list[int] = []
    ended = list(failed)
    # Each round cancels the next generation: a cancelled child ends in turn.
    while ended:
        params = {"parents": json.dumps(ended), "now": now}
        _count_down(conn, params, deltas, run_only=True)
        rows = conn.execute(CASCADE, params).fetchall()
        writes.moved(deltas, [(destination,) for _, destination in rows], "blocked", "cancelled")
        ended = [job_id for job_id, _ in rows]
        cancelled += ended
    return cancelled


def _count_down(
    conn: sqlite3.Connection, params: dict[str, object], deltas: Deltas, *, run_only: bool = False
) -> None:
    """Count `params["parents"]` as done for their children (only the "run" ones if
    `run_only`); those that reach 0 become ready."""
    if not conn.execute(ANY_CHILD, params).fetchone()[0]:
        return
    ready, count_down = (READY_RUN, COUNT_DOWN_RUN) if run_only else (READY_ALL, COUNT_DOWN_ALL)
    lowest, highest, moving, due = conn.execute(ready, params).fetchone()
    if lowest == highest:  # one destination, or none (no child becomes ready)
        conn.execute(count_down, params)
        if moving:
            deltas[lowest, "blocked"] -= moving
            deltas[lowest, "pending"] += due
            deltas[lowest, "scheduled"] += moving - due
    else:
        rows = conn.execute(count_down + "RETURNING destination, state", params).fetchall()
        writes.moved(deltas, rows, "blocked")


def settle_outcomes(
    conn: sqlite3.Connection,
    now: float,
    batch: EncodedOutcomes,
    deltas: Deltas,
    *,
    every_success: bool,
) -> list[int] | None:
    """`settle_children` for an outcome batch just written (`writes.write_outcomes`,
    which says whether `every_success` in it was recorded): the children it
    cancelled, or None when no blocked job can have moved (nothing but the gate's
    seek when no job is blocked)."""
    if not (batch.complete or batch.fail) or conn.execute(ANY_BLOCKED).fetchone() is None:
        return None
    succeeded: list[int] = []
    dead: list[int] = []
    if batch.complete and every_success:
        succeeded = list(map(_job_id, batch.succeeded))
    elif batch.complete:
        (ids,) = conn.execute(SUCCEEDED_IDS, {"batch": batch.complete, "now": now}).fetchone()
        succeeded = json.loads(ids)
    if batch.fail:
        (ids,) = conn.execute(DEAD_IDS, {"batch": batch.fail, "now": now}).fetchone()
        dead = json.loads(ids)
    return _settle(conn, succeeded, dead, now, deltas) if succeeded or dead else []


def bring_back(conn: sqlite3.Connection, redriven: Sequence[int], deltas: Deltas) -> int:
    """Dead jobs `redriven` are live again: the children their death cancelled come
    back blocked (and theirs, recursively), and their "run" children wait for them
    again. Returns how many jobs came back."""
    back = 0
    parents = list(redriven)
    while parents:
        params = {"parents": json.dumps(parents)}
        conn.execute(COUNT_UP_RUN, params)
        rows = conn.execute(REVIVE, params).fetchall()
        conn.execute(REPOINT, params)
        writes.moved(deltas, [(destination,) for _, destination in rows], "cancelled", "blocked")
        parents = [job_id for job_id, _ in rows]
        back += len(parents)
    return back


def forget(conn: sqlite3.Connection, deleted: Sequence[int]) -> None:
    """Drop the dependency rows of children just deleted (`deleted`, their ids)."""
    if deleted and conn.execute(HAS_DEPS).fetchone()[0]:
        conn.execute(FORGET, (json.dumps(list(deleted)),))


# -- claims ---------------------------------------------------------------------


class ParentResults(NamedTuple):
    """The links of a claim's jobs to their parents, as JSON arrays of the same length."""

    children: str
    parents: str
    results: str  # each the parent's result, or null


def parent_results(conn: sqlite3.Connection, children: str) -> ParentResults:
    """The parents' results of the claimed jobs `children` (a JSON array of ids)."""
    try:
        found = conn.execute(PARENT_RESULTS, (children,)).fetchone()
    except sqlite3.OperationalError:  # a result is not JSON (see PARENT_RESULTS_SAFE)
        found = conn.execute(PARENT_RESULTS_SAFE, (children,)).fetchone()
    return ParentResults(*found)


def attach_parents(jobs: Sequence[ClaimedJob], found: ParentResults) -> None:
    """Give each claimed job with parents its `parents` mapping (on the event loop's
    thread, not in the transaction)."""
    by_id = {job.id: job for job in jobs}
    links = zip(*map(json.loads, found), strict=True)
    for child, parent, result in links:
        job = by_id[child]
        if job.parents is None:
            job.parents = {parent: result}
        else:
            job.parents[parent] = result
