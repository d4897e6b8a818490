"""The SQLite schema, versioned with `PRAGMA user_version`, and its migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

# Every index that the claim, renew or ack paths use is partial on the state it
# serves, so a million finished jobs cost the hot path nothing. The ready index
# covers the claim's whole sort order: the claim never sorts the backlog.
_V1 = """
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused
    task        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,                   -- JSON object of keyword arguments
    destination TEXT    NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    key         TEXT,
    state       TEXT    NOT NULL,                   -- scheduled (not due yet), pending, running,
                                                    -- succeeded, dead, cancelled
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  REAL    NOT NULL,
    run_at      REAL    NOT NULL,
    started_at  REAL,
    finished_at REAL,
    owner       TEXT,
    lease_until REAL,
    claim_token INTEGER,
    result      TEXT,                               -- JSON
    last_error  TEXT
);
CREATE INDEX jobs_ready ON jobs (priority DESC, run_at, id) WHERE state = 'pending';
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE UNIQUE INDEX jobs_live_key ON jobs (key)
    WHERE key IS NOT NULL AND state IN ('pending', 'running');
CREATE INDEX jobs_running ON jobs (owner, claim_token) WHERE state = 'running';
CREATE INDEX jobs_dead ON jobs (destination, finished_at) WHERE state = 'dead';
"""


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    # Not executescript: it would commit the migration's transaction half-way.
    for statement in _statements(_V1):
        conn.execute(statement)


# Version 2: destinations. Claims go destination by destination, so a paced
# destination's backlog never sits in front of another's: the ready index leads
# with the destination, and `ready_destinations` lists the destinations that have
# ready jobs (kept by triggers, so no path that makes a job ready can forget it).
# `destinations` persists what must survive a restart: pause, RetryAfter holds,
# the circuit, and how full the rate bucket may be.
_V2 = """
ALTER TABLE jobs ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN first_started_at REAL;
ALTER TABLE jobs ADD COLUMN history TEXT;            -- JSON: [[started, ended, error], ...]
DROP INDEX jobs_ready;
CREATE INDEX jobs_ready ON jobs (destination, priority DESC, run_at, id) WHERE state = 'pending';
CREATE TABLE ready_destinations (destination TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO ready_destinations SELECT DISTINCT destination FROM jobs
    WHERE state = 'pending';
CREATE TRIGGER jobs_ready_on_insert AFTER INSERT ON jobs WHEN NEW.state = 'pending'
BEGIN
    INSERT OR IGNORE INTO ready_destinations (destination) VALUES (NEW.destination);
END;
CREATE TRIGGER jobs_ready_on_update AFTER UPDATE OF state ON jobs WHEN NEW.state = 'pending'
BEGIN
    INSERT OR IGNORE INTO ready_destinations (destination) VALUES (NEW.destination);
END;
CREATE TABLE destinations (
    name          TEXT PRIMARY KEY,
    paused        INTEGER NOT NULL DEFAULT 0,
    hold_until    REAL    NOT NULL DEFAULT 0,   -- RetryAfter: no call before this time
    circuit       TEXT    NOT NULL DEFAULT 'closed',
    circuit_until REAL    NOT NULL DEFAULT 0,
    full_at       REAL    NOT NULL DEFAULT 0    -- the rate bucket may be full until this time
) WITHOUT ROWID;
"""


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    for statement in _statements(_V2):
        conn.execute(statement)


def _statements(script: str) -> list[str]:
    # Triggers hold `;` inside BEGIN ... END: keep those together.
    lines = [line.split("--")[0] for line in script.splitlines()]
    statements: list[str] = []
    current: list[str] = []
    in_trigger = False
    for line in lines:
        current.append(line)
        upper = line.strip().upper()
        if upper.startswith("CREATE TRIGGER"):
            in_trigger = True
        if (in_trigger and upper == "END;") or (not in_trigger and upper.endswith(";")):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
            in_trigger = False
    if "".join(current).strip():
        statements.append("\n".join(current).strip().rstrip(";"))
    return statements


# Version 3: attempts are handler starts (a claim leaves `attempts` alone and
# `started_at` empty until the handler's start is written); one definition of a
# live key (pending, scheduled or running), served by the unique index the key
# lookup uses; and counts of jobs per destination and
# state, kept by the writer in the transactions that move jobs, so that stats()
# reads a few rows instead of scanning the table.
_V3 = """
ALTER TABLE jobs ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;  -- claims lost to a crash before
                                                              -- the handler's start was written
DROP INDEX jobs_live_key;
CREATE UNIQUE INDEX jobs_live_key ON jobs (key)
    WHERE key IS NOT NULL AND state IN ('pending', 'scheduled', 'running');
CREATE TABLE counts (
    destination TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (destination, state)
) WITHOUT ROWID;
INSERT INTO counts SELECT destination, state, count(*) FROM jobs WHERE state != 'running'
    GROUP BY destination, state;
"""

# Before version 3, scheduled jobs were outside the unique index: a key may be held
# by more than one live job. The oldest keeps it; the others keep running, keyless.
_SHARED_KEYS = """
UPDATE jobs SET key = NULL
WHERE key IS NOT NULL AND state IN ('pending', 'scheduled', 'running')
AND id NOT IN (
    SELECT min(id) FROM jobs
    WHERE key IS NOT NULL AND state IN ('pending', 'scheduled', 'running') GROUP BY key
)
"""


def _migrate_to_3(conn: sqlite3.Connection) -> None:
    conn.execute(_SHARED_KEYS)
    for statement in _statements(_V3):
        conn.execute(statement)


# Version 4: workflow. A job may wait for parent jobs (`deps`): it is `blocked`
# while `waiting` (its parents not yet succeeded) is above 0, and becomes ready in
# the transaction that records its last parent's success. A blocked job's key is
# live. A running job can be asked to stop (`cancel_requested`), which its owner
# sees at its next poll. `cancelled_by` names the parent whose failure cancelled
# a job, so that redriving the parent can bring it back. `periodic` holds the
# last tick each periodic schedule made a job for: a tick is made once, whatever
# the number of processes, and never again after its job finished.
_V4 = """
ALTER TABLE jobs ADD COLUMN parents INTEGER NOT NULL DEFAULT 0;   -- how many parents it has
ALTER TABLE jobs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;   -- of those, not yet succeeded
ALTER TABLE jobs ADD COLUMN on_parent_failure TEXT NOT NULL DEFAULT 'cancel';  -- or 'run'
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancelled_by INTEGER;                 -- the parent that failed
DROP INDEX jobs_live_key;
CREATE UNIQUE INDEX jobs_live_key ON jobs (key)
    WHERE key IS NOT NULL AND state IN ('pending', 'scheduled', 'running', 'blocked');
CREATE INDEX jobs_blocked ON jobs (id) WHERE state = 'blocked';
CREATE INDEX jobs_cancel_requested ON jobs (owner) WHERE cancel_requested = 1;
CREATE TABLE deps (
    parent INTEGER NOT NULL,
    child  INTEGER NOT NULL,
    PRIMARY KEY (parent, child)
) WITHOUT ROWID;
CREATE INDEX deps_child ON deps (child);
CREATE TABLE periodic (
    name      TEXT PRIMARY KEY,
    last_tick REAL NOT NULL,     -- seconds since the epoch of the last tick made
    job_id    INTEGER            -- the job made for it
) WITHOUT ROWID;
"""


def _migrate_to_4(conn: sqlite3.Connection) -> None:
    for statement in _statements(_V4):
        conn.execute(statement)


# Version 5: monitoring. `activity` holds what happened lately per destination, in
# time slots a few seconds wide (see `_activity.py`): jobs that arrived, calls made,
# jobs finished, retried and dead, and a histogram of attempt durations. Each
# process adds its own counts now and then, so the rates that stats() reads are
# those of every process on the journal. `workers` holds a heartbeat per process
# that runs jobs, so that a process that runs none can tell whether any does. A
# destination's `rate` (calls per second) is written by the processes that declare
# it, so that one that does not (the CLI) can show the limit.
_V5 = """
CREATE TABLE activity (
    slot        INTEGER NOT NULL,             -- seconds since the epoch // SLOT_SECONDS
    destination TEXT    NOT NULL,
    arrived     INTEGER NOT NULL DEFAULT 0,   -- jobs submitted
    calls       INTEGER NOT NULL DEFAULT 0,   -- attempts that called the handler (as they ended)
    finished    INTEGER NOT NULL DEFAULT 0,   -- jobs that succeeded, died or were cancelled
    retried     INTEGER NOT NULL DEFAULT 0,   -- failed attempts scheduled to run again
    dead        INTEGER NOT NULL DEFAULT 0,   -- jobs dead-lettered
    latency     TEXT,                         -- JSON {bucket: attempts}: see _activity.py
    first_at    REAL    NOT NULL,             -- the earliest of these events
    PRIMARY KEY (slot, destination)
) WITHOUT ROWID;
CREATE TABLE workers (
    owner       TEXT    PRIMARY KEY,          -- the claim owner: host:pid:token
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at  REAL    NOT NULL,
    last_seen   REAL    NOT NULL,
    alive_until REAL    NOT NULL              -- no heartbeat by then: presumed gone
) WITHOUT ROWID;
ALTER TABLE destinations ADD COLUMN rate REAL;  -- calls per second allowed; NULL: none known
"""


def _migrate_to_5(conn: sqlite3.Connection) -> None:
    for statement in _statements(_V5):
        conn.execute(statement)


# Trace contexts (asyncq[otel]): the W3C `traceparent` of the span that submitted
# a job, as text, or a JSON object of the propagator's fields (a `tracestate`,
# baggage, ...), so that its attempts join that trace in whichever process runs
# them. NULL when tracing is off: nothing else reads or writes it.
def _add_trace_column(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE jobs ADD COLUMN trace TEXT")


# Version 7: a destination is listed as ready by the turn's upsert of its counts
# (once per destination and turn) instead of a trigger on every inserted row: in a
# `submit_many` of 50,000 jobs that trigger's lookups were a quarter of the insert.
# The writer writes a turn's inserts and, if other calls (a claim) follow in the
# turn, their counts at once, so that a claim sees the destinations they made
# ready. Moves into `pending` by an update keep their trigger on jobs.
# (Not `INSERT OR IGNORE`: the upsert that fires the trigger overrides its policy.)
# An older asyncq relies on the dropped trigger: upgrade every process together.
_V7 = """
DROP TRIGGER IF EXISTS jobs_ready_on_insert;
CREATE TRIGGER counts_ready_on_insert AFTER INSERT ON counts
WHEN NEW.state = 'pending' AND NEW.n > 0
BEGIN
    INSERT INTO ready_destinations (destination) SELECT NEW.destination
    WHERE NOT EXISTS (SELECT 1 FROM ready_destinations WHERE destination = NEW.destination);
END;
CREATE TRIGGER counts_ready_on_update AFTER UPDATE OF n ON counts
WHEN NEW.state = 'pending' AND NEW.n > OLD.n
BEGIN
    INSERT INTO ready_destinations (destination) SELECT NEW.destination
    WHERE NOT EXISTS (SELECT 1 FROM ready_destinations WHERE destination = NEW.destination);
END;
"""


def _migrate_to_7(conn: sqlite3.Connection) -> None:
    for statement in _statements(_V7):
        conn.execute(statement)


#: MIGRATIONS[n] brings a journal from version n to n + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migrate_to_1,
    _migrate_to_2,
    _migrate_to_3,
    _migrate_to_4,
    _migrate_to_5,
    _add_trace_column,
    _migrate_to_7,
]
SCHEMA_VERSION = len(MIGRATIONS)
