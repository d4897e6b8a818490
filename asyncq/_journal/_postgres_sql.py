"""The SQL of the PostgreSQL journal: every statement, with the reason for its shape.

The connections' `search_path` is the journal's schema, so no statement names it.
Bulk statements take their rows as arrays (`unnest`), so a turn is a handful of
statements whatever its size. Outcomes name the claim they answer (owner and
token), as on SQLite: a stale outcome matches nothing. Times arrive from the
queue's clock; microsecond integers become seconds as float8 (`::float8 / 1e6`),
the same arithmetic as Python's, so a time comes back exactly as it went in.
"""

from __future__ import annotations

from ._postgres_schema import LIVE

# Unkeyed jobs without parents, every caller's of a turn in one statement. The ids
# are drawn in ORDINALITY order, so sorted ids match the rows' order. `trace` (the
# submitter's trace context, asyncq[otel]) is null unless tracing is on: $7 is then
# null as a whole, not an array of nulls.
INSERT_ROWS = """
INSERT INTO jobs (task, payload, destination, priority, run_at, state, created_at, trace)
SELECT r.task, r.payload, r.destination, r.priority, r.run_at,
       CASE WHEN r.run_at <= r.now THEN 'pending' ELSE 'scheduled' END, r.now,
       ($7::text[])[r.n]
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::float8[])
     WITH ORDINALITY AS r (task, payload, destination, priority, run_at, now, n)
ORDER BY r.n
RETURNING id
"""
# A `submit_many` batch (payloads checked and split by the caller), with the
# dependency columns (zero and null for a batch without parents).
INSERT_PAYLOADS = """
INSERT INTO jobs (task, payload, destination, priority, run_at, state, created_at,
                  parents, waiting, on_parent_failure, cancelled_by, finished_at, trace)
SELECT $2, p.payload, $3, $4, $5, $6, $12, $7, $8, $9, $10, $11, $13
FROM unnest($1::text[]) WITH ORDINALITY AS p (payload, n)
ORDER BY p.n
RETURNING id
"""
# A keyed job, or a child: one row. A concurrent insert of the same key by another
# process makes ON CONFLICT wait for it and return nothing; the caller then reads
# the holder (`FIND_LIVE_KEY`).
INSERT_ONE = f"""
INSERT INTO jobs (task, payload, destination, priority, run_at, key, state, created_at,
                  parents, waiting, on_parent_failure, cancelled_by, finished_at, trace)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (key) WHERE key IS NOT NULL AND state IN {LIVE} DO NOTHING
RETURNING id
"""
FIND_LIVE_KEY = f"SELECT id FROM jobs WHERE key = $1 AND state IN {LIVE}"
# A new child's parents, locked against a concurrent outcome (FOR SHARE): a parent
# that another process is finishing is read once that commits, and its outcome's
# count-down, which waits for this lock, then sees the child's `deps` rows.
PARENTS = "SELECT id, state FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR SHARE"
LINK = """
INSERT INTO deps (parent, child)
SELECT p, c FROM unnest($1::bigint[]) AS p, unnest($2::bigint[]) AS c
"""

# Due jobs become ready. Rows another process is promoting are skipped, not waited for.
PROMOTE_DUE = """
UPDATE jobs SET state = 'pending'
WHERE id IN (SELECT id FROM jobs WHERE state = 'scheduled' AND run_at <= $1
             FOR UPDATE SKIP LOCKED)
RETURNING destination
"""
# The destinations with ready jobs, in name order after `$1`: a skip scan of the
# ready index (one seek per destination, not a walk of the backlog).
READY_DESTINATIONS = """
WITH RECURSIVE d (name) AS (
    (SELECT destination FROM jobs WHERE state = 'pending' AND destination > $1
     ORDER BY destination LIMIT 1)
    UNION ALL
    SELECT (SELECT destination FROM jobs WHERE state = 'pending' AND destination > d.name
            ORDER BY destination LIMIT 1)
    FROM d WHERE d.name IS NOT NULL
)
SELECT name FROM d WHERE name IS NOT NULL LIMIT $2
"""
# Destinations whose shared state forbids a call now: paused, held by a RetryAfter,
# or an open circuit before its probe time. Read in the claim's transaction, so a
# pause made by another host holds here at once.
CLOSED_DESTINATIONS = """
SELECT name FROM destinations
WHERE name = ANY($1::text[])
  AND (paused OR hold_until > $2 OR (circuit = 'open' AND circuit_until > $2))
"""
# The claim: for each destination its room, highest priority first then FIFO,
# skipping rows another process holds (FOR UPDATE SKIP LOCKED), all destinations
# in one statement. A claim starts no attempt: `started_at` stays empty until the
# handler's start is written.
_CLAIM = """
WITH {rooms}picked AS (
    SELECT j.id FROM {destinations}
    CROSS JOIN LATERAL (
        SELECT id FROM jobs WHERE state = 'pending' AND destination = d.name
        ORDER BY priority DESC, run_at, id LIMIT d.room
        FOR UPDATE SKIP LOCKED
    ) AS j
    LIMIT $6
)
UPDATE jobs SET state = 'running', owner = $1, claim_token = $2, lease_until = $3,
       started_at = NULL
FROM picked WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.task, jobs.payload, jobs.destination, jobs.priority,
          jobs.attempts + 1, jobs.created_at, jobs.first_started_at, jobs.snoozes,
          jobs.parents, jobs.run_at, jobs.trace
"""
CLAIM = _CLAIM.format(
    rooms="", destinations="unnest($4::text[], $5::int[]) WITH ORDINALITY AS d (name, room, n)"
)
# Concurrency caps are shared: the rows of the capped destinations among a claim's
# are locked first (`LOCK_CAPPED`), so that of the claims of every process one at a
# time counts a destination's slots and takes what is free. A row another claim
# holds is skipped, not waited for (a claim never waits for another host's): that
# destination gets nothing this time, and is claimed for again on the next poll.
LOCK_CAPPED = """
SELECT name FROM destinations WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE SKIP LOCKED
"""
# The claim of capped destinations (`$7`: each one's cap, null for none) takes at
# most the cap less its jobs claimed and not finished, in any process: a job waiting
# in a prefetch holds its slot, or three processes could start one each. A lease
# that expired (its process is gone) holds none. The count is a statement after the
# lock, so its snapshot sees the claims of whoever held the lock before.
CLAIM_CAPPED = _CLAIM.format(
    rooms="""rooms AS (
    SELECT d.name, d.n, CASE WHEN d.cap IS NULL THEN d.room ELSE greatest(0, least(d.room,
        d.cap - (SELECT count(*) FROM jobs WHERE state = 'running' AND destination = d.name
                 AND lease_until >= $8)))::int END AS room
    FROM unnest($4::text[], $5::int[], $7::int[]) WITH ORDINALITY AS d (name, room, cap, n)
), """,
    destinations="rooms AS d",
)
# What a claim hands a child: each parent's result (null for a parent that did not
# succeed, or was pruned).
PARENT_RESULTS = """
SELECT d.child, d.parent, p.result FROM deps AS d LEFT JOIN jobs AS p ON p.id = d.parent
WHERE d.child = ANY($1::bigint[])
"""

BUCKETS_MADE = """
INSERT INTO destinations (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING
"""
# Each bucket row is locked until the transaction ends: processes on every host
# book calls in turn, in name order (no deadlock between two claims).
BUCKETS = """
SELECT name, full_at FROM destinations WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE
"""
SAVE_BUCKETS = """
UPDATE destinations SET full_at = b.full_at, rate = b.rate
FROM unnest($1::text[], $2::float8[], $3::float8[]) AS b (name, full_at, rate)
WHERE destinations.name = b.name
"""
SAVE_DESTINATIONS = """
INSERT INTO destinations (name, paused, hold_until, circuit, circuit_until)
SELECT * FROM unnest($1::text[], $2::boolean[], $3::float8[], $4::text[], $5::float8[])
ORDER BY 1
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused,
    hold_until = greatest(destinations.hold_until, excluded.hold_until),
    circuit = excluded.circuit, circuit_until = excluded.circuit_until
"""
LOAD_DESTINATIONS = """
SELECT name, paused, hold_until, circuit, circuit_until, full_at FROM destinations ORDER BY name
"""

# Statements that update the rows an array names (`unnest`) find each row by its
# primary key. Their state test is written `jobs.state || '' = ...` on purpose: it
# cannot use the partial indexes of that state. With the plain test, the planner
# (its statistics taken while, say, every job was pending) would estimate a single
# running row, scan `jobs_running` and join the array in a nested loop: quadratic,
# 33 ms for an ack of 350 jobs instead of 6 ms (see CHANGELOG).
_OUTCOME_MATCH = """
jobs.id = o.id AND jobs.claim_token = o.token AND jobs.owner = $1
AND jobs.state || '' = 'running'
"""
_SECONDS = "o.at::float8 / 1e6::float8"
# A handler's start: the attempt counts from here.
START = f"""
UPDATE jobs SET started_at = {_SECONDS}, attempts = attempts + 1,
       first_started_at = coalesce(first_started_at, {_SECONDS})
FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS o (id, token, at)
WHERE {_OUTCOME_MATCH} AND jobs.started_at IS NULL
"""
# An attempt whose start was not written yet is counted with its outcome.
COMPLETE = f"""
UPDATE jobs SET state = 'succeeded', result = o.result, finished_at = $5,
       owner = NULL, lease_until = NULL,
       attempts = attempts + (started_at IS NULL)::int,
       started_at = coalesce(started_at, {_SECONDS}),
       first_started_at = coalesce(first_started_at, started_at, {_SECONDS})
FROM unnest($2::bigint[], $3::bigint[], $4::text[], $6::bigint[]) AS o (id, token, result, at)
WHERE {_OUTCOME_MATCH}
RETURNING jobs.id, jobs.destination
"""


def _history(started: str, ended: str, error: str) -> str:
    """One attempt appended to a job's history. float8 -> text -> numeric keeps
    every digit (a float8 cast to numeric straight would keep 15)."""
    return (
        f"coalesce(jobs.history, '[]'::jsonb) || jsonb_build_array(jsonb_build_array("
        f"({started})::text::numeric, ({ended})::text::numeric, left({error}, 300)))"
    )


_FAIL_STARTED = "coalesce(jobs.started_at, o.at::float8 / 1e6::float8, $2::float8)"
# A failure: dead when retry_at is null, else scheduled again. A snooze (RetryAfter)
# gives the attempt back and counts a snooze instead.
FAIL = f"""
UPDATE jobs SET
    state = CASE WHEN o.retry_at IS NULL THEN 'dead' ELSE 'scheduled' END,
    run_at = coalesce(o.retry_at, jobs.run_at),
    finished_at = CASE WHEN o.retry_at IS NULL THEN $2::float8 END,
    attempts = jobs.attempts + (jobs.started_at IS NULL)::int - o.snoozed,
    snoozes = jobs.snoozes + o.snoozed,
    last_error = o.error,
    history = {_history(_FAIL_STARTED, "$2::float8", "o.error")},
    first_started_at = coalesce(jobs.first_started_at, jobs.started_at,
                                o.at::float8 / 1e6::float8, $2::float8),
    started_at = coalesce(jobs.started_at, o.at::float8 / 1e6::float8, $2::float8),
    owner = NULL, lease_until = NULL
FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::float8[], $7::int[], $8::bigint[])
     AS o (id, token, error, retry_at, snoozed, at)
WHERE {_OUTCOME_MATCH}
RETURNING jobs.id, jobs.state, jobs.destination
"""
# Handed back: no attempt is charged, even for a handler cut off at shutdown.
RELEASE = f"""
UPDATE jobs SET state = 'pending', owner = NULL, lease_until = NULL, started_at = NULL,
       attempts = attempts - (started_at IS NOT NULL)::int,
       first_started_at = CASE WHEN attempts - (started_at IS NOT NULL)::int = 0 THEN NULL
                               ELSE first_started_at END
FROM unnest($2::bigint[], $3::bigint[]) AS o (id, token)
WHERE {_OUTCOME_MATCH}
RETURNING jobs.destination
"""
RENEW = "UPDATE jobs SET lease_until = $1 WHERE state = 'running' AND owner = $2"
# Expired leases, locked: of two processes reclaiming at once, each takes its own.
EXPIRED = """
SELECT id, task, destination, attempts, first_started_at, started_at IS NOT NULL, lost
FROM jobs WHERE state = 'running' AND lease_until < $1 ORDER BY id FOR UPDATE SKIP LOCKED
"""
# A crash: a started job's attempt was counted with its start; an unstarted one is
# charged only when `charge` says so (its third loss).
CRASHED = f"""
UPDATE jobs SET
    state = CASE WHEN o.retry_at IS NULL THEN 'dead' ELSE 'scheduled' END,
    run_at = coalesce(o.retry_at, jobs.run_at),
    finished_at = CASE WHEN o.retry_at IS NULL THEN $1::float8 END,
    attempts = jobs.attempts + o.charge,
    last_error = $2::text,
    history = {_history("coalesce(jobs.started_at, $1::float8)", "$1::float8", "$2::text")},
    first_started_at = coalesce(jobs.first_started_at, jobs.started_at, $1::float8),
    owner = NULL, lease_until = NULL
FROM unnest($3::bigint[], $4::float8[], $5::int[]) AS o (id, retry_at, charge)
WHERE jobs.id = o.id AND jobs.state || '' = 'running'
RETURNING jobs.id, jobs.state, jobs.destination
"""
# An unstarted claim lost to a crash: back to ready, uncharged, the loss counted.
LOST = """
UPDATE jobs SET state = 'pending', owner = NULL, lease_until = NULL, lost = lost + 1
WHERE id = ANY($1::bigint[]) AND state = 'running'
RETURNING destination
"""
CHARGE_AFTER_LOSSES = 2  # the third loss of an unstarted claim is charged

COLUMNS = (
    "id, task, state, destination, priority, payload, key, attempts, created_at, run_at, "
    "started_at, finished_at, result, last_error, snoozes, history::text"
)
# A redriven job starts over: attempts, snoozes and the first-attempt time are
# reset (its history of attempts is kept).
REDRIVE = """
UPDATE jobs SET state = CASE WHEN o.run_at <= $1 THEN 'pending' ELSE 'scheduled' END,
       run_at = o.run_at, attempts = 0, snoozes = 0, first_started_at = NULL,
       finished_at = NULL
FROM unnest($2::bigint[], $3::float8[]) AS o (id, run_at)
WHERE jobs.id = o.id AND jobs.state || '' = 'dead'
RETURNING jobs.destination, jobs.state
"""
SELECT_DEAD = """
SELECT id FROM jobs WHERE state = 'dead' AND ($1::text IS NULL OR destination = $1)
AND ($2::float8 IS NULL OR finished_at < $2) AND ($3::bigint[] IS NULL OR id = ANY($3))
ORDER BY id
"""
# Of dead jobs about to be redriven, those whose key a live job holds.
KEYS = f"""
SELECT id, key, EXISTS (SELECT 1 FROM jobs AS live WHERE live.key = dead.key
                        AND live.state IN {LIVE})
FROM jobs AS dead WHERE id = ANY($1::bigint[]) ORDER BY id
"""
LIST_DEAD = f"""
SELECT {COLUMNS} FROM jobs WHERE state = 'dead'
AND ($1::text IS NULL OR destination = $1) AND ($2::float8 IS NULL OR finished_at >= $2)
ORDER BY finished_at DESC, id DESC LIMIT $3
"""
PURGE = "DELETE FROM jobs WHERE state = 'dead' AND id = ANY($1::bigint[]) RETURNING destination"

# A periodic schedule's tick: the row moves forward only. Of two processes racing
# for one tick, the second waits for the first's row lock, then finds the tick made.
ADVANCE_TICK = """
INSERT INTO periodic (name, last_tick) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick, job_id = NULL
WHERE excluded.last_tick > periodic.last_tick
RETURNING name
"""
TICK_JOB = "UPDATE periodic SET job_id = $1 WHERE name = $2"

# Finished jobs, pruned a bounded number at a time. A finished parent stays while
# a child of it has not finished: the child reads the parent's result when it runs.
_NO_LIVE_CHILD = """
NOT EXISTS (SELECT 1 FROM deps JOIN jobs AS child ON child.id = deps.child
            WHERE deps.parent = jobs.id
            AND child.state NOT IN ('succeeded', 'dead', 'cancelled'))
"""
PRUNE_OLD = f"""
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE state IN ('succeeded', 'cancelled') AND finished_at < $1
    AND {_NO_LIVE_CHILD} ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING id, destination, state
"""
PRUNE_OLDEST = f"""
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE state IN ('succeeded', 'cancelled') AND {_NO_LIVE_CHILD}
    ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id, destination, state
"""
FINISHED_COUNT = "SELECT count(*) FROM jobs WHERE state IN ('succeeded', 'cancelled')"
# At least the number of finished jobs (ids are never reused), from two index probes:
# when it is within the number kept, nothing need be counted.
FINISHED_SPAN = """
SELECT coalesce(max(id) - min(id) + 1, 0) FROM jobs WHERE state IN ('succeeded', 'cancelled')
"""
FORGET = "DELETE FROM deps WHERE child = ANY($1::bigint[])"

# -- monitoring: heartbeats and declared rates ----------------------------------

HEARTBEAT = """
INSERT INTO workers (owner, host, pid, concurrency, started_at, last_seen, alive_until)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (owner) DO UPDATE SET last_seen = excluded.last_seen,
    alive_until = excluded.alive_until, concurrency = excluded.concurrency
"""
# Rows of processes long gone (killed, so never signed off) are kept a day, then go.
FORGET_GONE = "DELETE FROM workers WHERE alive_until < $1"
SIGN_OFF = "DELETE FROM workers WHERE owner = $1"
SAVE_RATES = """
INSERT INTO destinations (name, rate) SELECT * FROM unnest($1::text[], $2::float8[])
ON CONFLICT (name) DO UPDATE SET rate = excluded.rate
"""
# Whether a transaction committed, asked on another connection (its id is read at
# the end of the turn: `_postgres_activity.END_TURN`).
TRANSACTION_STATUS = "SELECT pg_xact_status($1::text::xid8)"
