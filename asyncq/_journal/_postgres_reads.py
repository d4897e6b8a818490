"""Reads of the PostgreSQL journal: a job, and the next time a job is due."""

from __future__ import annotations

from .._records import JobInfo
from . import _postgres_sql as sql
from ._postgres_connections import Conn
from ._rows import job_info


async def get(conn: Conn, job_id: int) -> JobInfo | None:
    row = await conn.fetchrow(f"SELECT {sql.COLUMNS} FROM jobs WHERE id = $1", job_id)
    return None if row is None else job_info(row)


async def next_run_at(conn: Conn) -> float | None:
    """-inf if a job is ready now, else the earliest time a scheduled job is due."""
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'pending')"):
        return float("-inf")
    due = await conn.fetchval("SELECT min(run_at) FROM jobs WHERE state = 'scheduled'")
    return None if due is None else float(due)
