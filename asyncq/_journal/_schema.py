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


def _statements(script: str) -> list[str]:
    lines = [line.split("--")[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


#: MIGRATIONS[n] brings a journal from version n to n + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migrate_to_1]
SCHEMA_VERSION = len(MIGRATIONS)
