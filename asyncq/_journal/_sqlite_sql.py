"""The SQL of the SQLite journal: every statement, with the reason for its shape.

Bulk statements take their rows as one JSON array (`json_each`), so a turn is a
handful of statements whatever its size. Every state-changing statement returns
the destinations it moved (RETURNING), for the counts that stats() reads.
"""

from __future__ import annotations

from ._messages import LEASE_EXPIRED as LEASE_EXPIRED
from ._rows import PUBLIC_STATE as PUBLIC_STATE

# Stored states. `scheduled` is a pending job whose time has not come; it is
# promoted to `pending` when due, so the claim's index holds only ready jobs
# and a claim never walks past delayed ones. Callers see both as PENDING.

# Every unkeyed job of a turn, whoever submitted it, in one statement:
# [[task, payload, destination, priority, run_at or null, created_us, trace], ...]:
# the submit time as whole microseconds, and a run_at only for a job held back
# (null: due at once). A float's repr costs ten times an int's, and this runs per
# job. `trace` is null unless tracing is on (see `_schema._add_trace_column`).
INSERT_ROWS = """
INSERT INTO jobs (task, payload, destination, priority, run_at, state, created_at, trace)
SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3,
       coalesce(j.value ->> 4, (j.value ->> 5) / 1e6),
       CASE WHEN j.value ->> 4 IS NULL OR j.value ->> 4 <= (j.value ->> 5) / 1e6
            THEN 'pending' ELSE 'scheduled' END,
       (j.value ->> 5) / 1e6, j.value ->> 6
FROM json_each(:rows) AS j
"""
# The same for a turn of a few jobs (one producer awaiting each submit, say), one
# statement per job with plain parameters: for one job, a third of the cost of
# parsing a JSON array of one. [task, payload, destination, priority, run_at,
# state, created_at, trace]
INSERT_ROW = """
INSERT INTO jobs (task, payload, destination, priority, run_at, state, created_at, trace)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
# A `submit_many` batch: the payloads arrive as one JSON array of objects, and each
# element's text is stored as it is (no per-job encoding in Python).
INSERT_PAYLOADS = """
INSERT INTO jobs (task, payload, destination, priority, run_at, state, created_at, trace)
SELECT :task, j.value, :destination, :priority, :run_at, :state, :now, :trace
FROM json_each(:payloads) AS j
WHERE j.type = 'object' AND length(CAST(j.value AS BLOB)) <= :limit
"""
REFUSED_PAYLOAD = """
SELECT j.key, j.type, length(CAST(j.value AS BLOB)) FROM json_each(:payloads) AS j
WHERE j.type != 'object' OR length(CAST(j.value AS BLOB)) > :limit LIMIT 1
"""
INSERT_ONE = """
INSERT INTO jobs (task, payload, destination, priority, run_at, key, state, created_at, trace)
VALUES (?, ?, ?, ?, ?, ?, CASE WHEN ? <= ? THEN 'pending' ELSE 'scheduled' END, ?, ?)
"""
FIND_LIVE_KEY = (
    "SELECT id FROM jobs WHERE key = ? AND state IN ('pending', 'scheduled', 'running', 'blocked')"
)
PROMOTE_DUE = """
UPDATE jobs SET state = 'pending' WHERE state = 'scheduled' AND run_at <= ? RETURNING destination
"""
# A claim starts no attempt: `started_at` stays empty until the handler's start is
# written (with the owner's outcomes), and `attempts` counts handler starts only.
CLAIM_FROM = """
UPDATE jobs SET state = 'running', owner = :owner, claim_token = :token,
       lease_until = :lease_until, started_at = NULL
WHERE id IN (
    SELECT id FROM jobs WHERE state = 'pending' AND destination = :destination
    ORDER BY priority DESC, run_at, id LIMIT :limit
)
"""
# A capped destination's slots in use: its jobs claimed and not finished, by any
# process on the file. A lease that ran out (its process is gone) holds none.
CAP_HELD = """
SELECT count(*) FROM jobs WHERE state = 'running' AND destination = ? AND lease_until >= ?
"""
READY_DESTINATIONS = """
SELECT json_group_array(destination) FROM (
    SELECT destination FROM ready_destinations WHERE destination > ?
    ORDER BY destination LIMIT ?
)
"""
MARK_READY = "INSERT OR IGNORE INTO ready_destinations (destination) VALUES (?)"
FORGET_IF_EMPTY = """
DELETE FROM ready_destinations WHERE destination = ?1
AND NOT EXISTS (SELECT 1 FROM jobs WHERE state = 'pending' AND destination = ?1)
"""
# A payload that is not valid JSON (a journal edited by hand, say) comes back as
# null, for the worker to mark that one job dead, rather than failing the claim.
# The second column lists the claimed jobs that have parents, whose results to fetch
# (`_sqlite_deps.PARENT_RESULTS`): "[]" for a claim of plain jobs. Trace contexts come
# apart, only for the jobs that have one: a job's row stays as it was when tracing is off.
# Only the ids are sorted, and each row is read once, in their order (CROSS JOIN keeps
# the sorted ids the outer loop): sorting whole rows cost 18k instructions a job, this
# 11k.
_CLAIMED = """
SELECT json_group_array(json_array(j.id, j.task, {payload}, j.destination, j.priority,
                                   j.attempts + 1, j.first_started_at, j.snoozes)),
       json_group_array(j.id) FILTER (WHERE j.parents > 0),
       json_group_object(j.id, j.trace) FILTER (WHERE j.trace IS NOT NULL)
FROM (SELECT id FROM jobs WHERE state = 'running' AND owner = ? AND claim_token = ?
      ORDER BY priority DESC, run_at, id) AS claimed
CROSS JOIN jobs AS j ON j.id = claimed.id
"""
# Payloads are valid JSON unless a row was damaged or written by another tool:
# CLAIMED fails then ("malformed JSON"), and CLAIMED_SAFE, which checks each one
# first (a third more per job), gives such a payload as null.
CLAIMED = _CLAIMED.format(payload="json(j.payload)")
CLAIMED_SAFE = _CLAIMED.format(payload="iif(json_valid(j.payload), json(j.payload), NULL)")
# Outcomes name the claim they answer (owner and token): if a lease expired and
# the job was claimed again, a stale outcome matches nothing. The unary `+` keeps
# the planner from driving the update from the owner index (a scan of every
# running job per row); it must look each row up by id. An attempt whose start was
# not written yet (the job ran between two turns) is counted with its outcome.
#
# Starts and successes come as one JSON object by claim: {token: {id: value}}, the
# value a start in whole microseconds (for a success with a result other than null,
# [started_us, result]). SQLite reads an object's member names and scalar values for
# next to nothing, where each `o.value ->> n` on a row array renders the row and
# parses it again (some 2.5k instructions a job each: rows [id, token, result,
# started_us] cost 32k a job to complete, this form 23k).
_BY_CLAIM = """
FROM json_each(:batch) AS t, json_each(t.value) AS o
WHERE jobs.id = CAST(o.key AS INTEGER) AND +jobs.claim_token = CAST(t.key AS INTEGER)
  AND +jobs.owner = :owner AND +jobs.state = 'running'"""
START = f"""
UPDATE jobs SET started_at = o.value / 1e6, attempts = attempts + 1,
       first_started_at = coalesce(first_started_at, o.value / 1e6)
{_BY_CLAIM} AND jobs.started_at IS NULL
"""
_SUCCESS_START = "(iif(o.type = 'array', o.value ->> 0, o.value) / 1e6)"
COMPLETE = f"""
UPDATE jobs SET state = 'succeeded',
       result = iif(o.type = 'array', o.value ->> 1, 'null'),
       finished_at = :now, owner = NULL, lease_until = NULL,
       attempts = attempts + (started_at IS NULL),
       started_at = coalesce(started_at, {_SUCCESS_START}),
       first_started_at = coalesce(first_started_at, started_at, {_SUCCESS_START})
{_BY_CLAIM}
"""
# Which of a COMPLETE batch moved, when not all did (an outcome is stale if its
# lease expired and the job was claimed again): read back, rarely. Without a
# RETURNING row per job, an ack costs 4 % less.
COMPLETED = """
SELECT jobs.destination FROM json_each(:batch) AS t, json_each(t.value) AS o
JOIN jobs ON jobs.id = CAST(o.key AS INTEGER)
WHERE jobs.state = 'succeeded' AND jobs.finished_at = :now
  AND jobs.claim_token = CAST(t.key AS INTEGER) AND jobs.owner IS NULL
"""
# A failure: dead when retry_at is null, else scheduled again. A snooze
# (RetryAfter) gives the attempt back and counts a snooze instead.
# [id, token, error, retry_at, snoozed, started_us]
FAIL = """
UPDATE jobs SET
    state = CASE WHEN o.value ->> 3 IS NULL THEN 'dead' ELSE 'scheduled' END,
    run_at = coalesce(o.value ->> 3, jobs.run_at),
    finished_at = CASE WHEN o.value ->> 3 IS NULL THEN :now END,
    attempts = jobs.attempts + (jobs.started_at IS NULL) - (o.value ->> 4),
    snoozes = jobs.snoozes + (o.value ->> 4),
    last_error = o.value ->> 2,
    history = json_insert(coalesce(jobs.history, '[]'), '$[#]',
                          json_array(coalesce(jobs.started_at, (o.value ->> 5) / 1e6, :now),
                                     :now, substr(o.value ->> 2, 1, 300))),
    first_started_at = coalesce(jobs.first_started_at, jobs.started_at, (o.value ->> 5) / 1e6,
                                :now),
    started_at = coalesce(jobs.started_at, (o.value ->> 5) / 1e6, :now),
    owner = NULL, lease_until = NULL
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND +jobs.claim_token = o.value ->> 1
  AND +jobs.owner = :owner AND +jobs.state = 'running'
RETURNING jobs.destination, jobs.state
"""
# Handed back: no attempt is charged, even for a handler cut off at shutdown.
RELEASE = """
UPDATE jobs SET state = 'pending', owner = NULL, lease_until = NULL, started_at = NULL,
       attempts = attempts - (started_at IS NOT NULL),
       first_started_at = CASE WHEN attempts - (started_at IS NOT NULL) = 0 THEN NULL
                               ELSE first_started_at END
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND +jobs.claim_token = o.value ->> 1
  AND +jobs.owner = :owner AND +jobs.state = 'running'
RETURNING jobs.destination
"""
RENEW = "UPDATE jobs SET lease_until = ? WHERE state = 'running' AND owner = ?"
EXPIRED = """
SELECT json_group_array(json_array(id, task, destination, attempts, first_started_at,
                                   started_at IS NOT NULL, lost))
FROM jobs WHERE state = 'running' AND lease_until < ?
"""
# A crash: [id, error, retry_at, charge]. A started job's attempt was counted with
# its start; an unstarted one is charged only when `charge` says so (its third loss).
CRASHED = """
UPDATE jobs SET
    state = CASE WHEN o.value ->> 2 IS NULL THEN 'dead' ELSE 'scheduled' END,
    run_at = coalesce(o.value ->> 2, jobs.run_at),
    finished_at = CASE WHEN o.value ->> 2 IS NULL THEN :now END,
    attempts = jobs.attempts + (o.value ->> 3),
    last_error = o.value ->> 1,
    history = json_insert(coalesce(jobs.history, '[]'), '$[#]',
                          json_array(coalesce(jobs.started_at, :now), :now,
                                     substr(o.value ->> 1, 1, 300))),
    first_started_at = coalesce(jobs.first_started_at, jobs.started_at, :now),
    owner = NULL, lease_until = NULL
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND +jobs.state = 'running'
RETURNING jobs.destination, jobs.state
"""
# An unstarted claim lost to a crash: back to ready, uncharged, the loss counted.
LOST = """
UPDATE jobs SET state = 'pending', owner = NULL, lease_until = NULL, lost = lost + 1
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'running'
RETURNING destination
"""
CHARGE_AFTER_LOSSES = 2  # the third loss of an unstarted claim is charged
# Finished jobs are pruned a window of ids at a time, the windows walking the whole
# table and wrapping around: without an index on finish times, which every ack would
# pay to maintain, each scan stays bounded, and rows that stay (dead letters,
# far-delayed jobs) never stop the walk. Finished rows are in no index, so deleting
# them is cheap. (The walk is in `_sqlite_retention.py`.)
PRUNE_WINDOW_END = """
SELECT max(id), count(*) FROM (SELECT id FROM jobs WHERE id > ? ORDER BY id LIMIT ?)
"""
# A finished parent stays while a child of it has not finished: the child reads
# the parent's result when it runs. (A dead or cancelled child has finished.)
_NO_LIVE_CHILD = """
NOT EXISTS (SELECT 1 FROM deps JOIN jobs AS child ON child.id = deps.child
            WHERE deps.parent = jobs.id
            AND child.state NOT IN ('succeeded', 'dead', 'cancelled'))
"""
# Finished before the cutoff (`keep_finished`), within a window.
PRUNE_OLD = f"""
DELETE FROM jobs WHERE id > :start AND id <= :end
AND state IN ('succeeded', 'cancelled') AND finished_at < :before AND {_NO_LIVE_CHILD}
RETURNING id, destination, state
"""
# Over the count (`keep_finished_jobs`): the lowest ids of a window go first.
PRUNE_OLDEST = f"""
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE id > :start AND id <= :end
    AND state IN ('succeeded', 'cancelled') AND {_NO_LIVE_CHILD}
    ORDER BY id LIMIT :excess
)
RETURNING id, destination, state
"""
# The finished jobs the counts hold (the running turn's changes are added to it).
FINISHED_COUNT = """
SELECT coalesce(sum(n), 0) FROM counts WHERE state IN ('succeeded', 'cancelled')
"""
# A pruned job's links to its parents go with it (a dead job keeps its own).
DUE_SCHEDULED = """
SELECT destination, count(*), min(run_at) FROM jobs
WHERE state = 'scheduled' AND run_at <= ? GROUP BY destination
"""
RUNNING = """
SELECT destination, started_at IS NOT NULL AND lease_until >= ?, count(*) FROM jobs
WHERE state = 'running' GROUP BY 1, 2
"""
TOP_PRIORITY = "SELECT max(priority) FROM jobs WHERE state = 'pending' AND destination = ?"
NEXT_PRIORITY = """
SELECT max(priority) FROM jobs WHERE state = 'pending' AND destination = ? AND priority < ?
"""
FIRST_AT_PRIORITY = """
SELECT min(run_at) FROM jobs WHERE state = 'pending' AND destination = ? AND priority = ?
"""
ADD_TO_COUNT = """
INSERT INTO counts (destination, state, n)
SELECT c.value ->> 0, c.value ->> 1, c.value ->> 2 FROM json_each(?) AS c WHERE true
ON CONFLICT (destination, state) DO UPDATE SET n = n + excluded.n
"""
# The same, one row per call (executemany): for the few rows most turns change,
# less than half the cost of parsing them as JSON.
ADD_TO_ONE_COUNT = """
INSERT INTO counts (destination, state, n) VALUES (?, ?, ?)
ON CONFLICT (destination, state) DO UPDATE SET n = n + excluded.n
"""
SAVE_DESTINATION = """
INSERT INTO destinations (name, paused, hold_until, circuit, circuit_until)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused,
    hold_until = max(hold_until, excluded.hold_until),
    circuit = excluded.circuit, circuit_until = excluded.circuit_until
"""
# The bucket's rate (calls per second) goes with it, so that stats() in any process
# can show the limit of a destination that only a pattern or "*" declares.
SAVE_BUCKET = """
INSERT INTO destinations (name, full_at, rate) VALUES (?, ?, ?)
ON CONFLICT (name) DO UPDATE SET full_at = excluded.full_at, rate = excluded.rate
"""
# A redriven job starts over: attempts, snoozes and the first-attempt time are
# reset (its history of attempts is kept).
REDRIVE = """
UPDATE jobs SET state = CASE WHEN o.value ->> 1 <= :now THEN 'pending' ELSE 'scheduled' END,
       run_at = o.value ->> 1, attempts = 0, snoozes = 0, first_started_at = NULL,
       finished_at = NULL
FROM json_each(:batch) AS o
WHERE jobs.id = o.value ->> 0 AND jobs.state = 'dead'
RETURNING jobs.destination, jobs.state
"""
COLUMNS = (
    "id, task, state, destination, priority, payload, key, attempts, created_at, run_at, "
    "started_at, finished_at, result, last_error, snoozes, history"
)
# A periodic schedule's tick: the row moves forward only, so of two processes
# racing for one tick, only the first returns a row (and inserts the job).
ADVANCE_TICK = """
INSERT INTO periodic (name, last_tick) VALUES (?1, ?2)
ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick, job_id = NULL
WHERE excluded.last_tick > periodic.last_tick
RETURNING name
"""
TICK_JOB = "UPDATE periodic SET job_id = ? WHERE name = ?"
