"""Reads of the PostgreSQL journal: a job, the next time a job is due, and a row
of `jobs` as the `JobInfo` the queue hands out (also for the read-only journal)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .._records import JobInfo
from . import _postgres_deps as deps
from . import _postgres_sql as sql
from . import _postgres_writes as writes
from ._postgres_connections import Conn


async def get(conn: Conn, job_id: int) -> JobInfo | None:
    row = await conn.fetchrow(f"SELECT {sql.COLUMNS} FROM jobs WHERE id = $1", job_id)
    return None if row is None else job_info(row)


async def next_run_at(conn: Conn) -> float | None:
    """-inf if a job is ready now, else the earliest time a scheduled job is due."""
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'pending')"):
        return float("-inf")
    due = await conn.fetchval("SELECT min(run_at) FROM jobs WHERE state = 'scheduled'")
    return None if due is None else float(due)


def job_info(row: Sequence[Any]) -> JobInfo:
    """A row of `sql.COLUMNS` as a `JobInfo`."""
    (id_, task, state, dest, prio, payload, key, attempts, created, run_at, started,
     finished, result, error, snoozes, history) = row  # fmt: skip
    return JobInfo(
        id=id_,
        task=task,
        state=deps.PUBLIC_STATE[state],
        destination=dest,
        priority=prio,
        payload=writes.decoded(payload),
        key=key,
        attempts=attempts,
        created_at=created,
        run_at=run_at,
        started_at=started,
        finished_at=finished,
        result=None if result is None else writes.decoded(result),
        last_error=error,
        snoozes=snoozes,
        history=[(float(a), float(b), e) for a, b, e in json.loads(history)] if history else [],
    )
