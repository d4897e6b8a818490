"""The asyncq command against a PostgreSQL connection string (a fresh schema)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from asyncq import JobState, Queue, Retry
from asyncq.cli import main
from asyncq.testing import run_until_idle
from tests.postgres import fresh_schema, postgres_dsn_or_skip


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with fresh_schema(postgres_dsn_or_skip()) as schema_dsn:
        yield schema_dsn


async def test_stats_dead_redrive_pause_resume_and_cancel_on_a_connection_string(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = Queue(dsn, concurrency=2)
    queue.destination("hook", retry=Retry.never())

    @queue.task(name="deliver", destination="hook")
    async def deliver(i: int) -> None:
        raise ConnectionError(f"receiver down ({i})")

    async with queue:
        jobs = await deliver.submit_many([{"i": 1}, {"i": 2}])
        await run_until_idle(queue)

    # Each command runs its own event loop: in a thread, as a shell would run it.
    await asyncio.to_thread(main, ["stats", dsn, "--json"])
    assert json.loads(capsys.readouterr().out)["destinations"]["hook"]["dead"] == 2
    await asyncio.to_thread(main, ["dead", dsn, "--destination", "hook", "--json"])
    listed = json.loads(capsys.readouterr().out)["dead"]
    assert sorted(job["id"] for job in listed) == sorted(job.id for job in jobs)
    assert all(job["last_error"].startswith("ConnectionError: receiver down") for job in listed)
    await asyncio.to_thread(main, ["pause", dsn, "hook"])
    assert "hook: paused" in capsys.readouterr().out
    await asyncio.to_thread(main, ["redrive", dsn, str(jobs[0].id)])
    assert "redrove 1 job(s)" in capsys.readouterr().out

    async with Queue(dsn, concurrency=0) as reader:
        assert (await reader.get(jobs[0].id)).state is JobState.PENDING
        assert (await reader.get(jobs[1].id)).state is JobState.DEAD
        assert (await reader.stats()).destinations["hook"].paused
    await asyncio.to_thread(main, ["resume", dsn, "hook"])
    assert "hook: resumed" in capsys.readouterr().out
    async with Queue(dsn, concurrency=0) as reader:
        assert not (await reader.stats()).destinations["hook"].paused
    # The redriven job waits (its worker is gone): cancel it by id.
    await asyncio.to_thread(main, ["cancel", dsn, str(jobs[0].id)])
    capsys.readouterr()
    async with Queue(dsn, concurrency=0) as reader:
        assert (await reader.get(jobs[0].id)).state is JobState.CANCELLED
