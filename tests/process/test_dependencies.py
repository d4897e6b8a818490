"""Dependencies across two real worker processes on one journal: a child runs once
its parents succeeded, whichever process ran them, and reads their results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from . import app
from .conftest import RunLogs, WorkerSet, wait_until

pytestmark = pytest.mark.process


def finished_jobs(journal: Path) -> dict[int, tuple[float, float, Any]]:
    """id -> (started_at, finished_at, result) of every succeeded job."""
    with contextlib.closing(sqlite3.connect(journal, timeout=10)) as conn:
        rows = conn.execute(
            "SELECT id, started_at, finished_at, result FROM jobs WHERE state = 'succeeded'"
        ).fetchall()
    return {id_: (started, finished, result) for id_, started, finished, result in rows}


async def test_a_workflow_runs_across_two_worker_processes(workers: WorkerSet) -> None:
    # Small prefetch and few workers each, so that both processes take part.
    workers.settings.update(
        ASYNCQ_TEST_CONCURRENCY="2", ASYNCQ_TEST_PREFETCH="2", ASYNCQ_TEST_JOB_SECONDS="0.01"
    )
    deadline = asyncio.get_running_loop().time() + 60
    runs = RunLogs(workers.log_dir)
    parents_of: dict[int, list[int]] = {}
    async with app.producer(workers.journal) as producer:
        await producer.pause("default")  # the whole graph is written before anything runs
        roots = await producer.submit_many(app.ECHO_NAME, [{"i": i} for i in range(10)])
        for root in roots:
            children = await producer.submit_many(
                app.ECHO_NAME, [{"i": 100 + root.id}] * 5, after=[root]
            )
            parents_of.update({child.id: [root.id] for child in children})
        fan_in = await producer.submit(app.ECHO_NAME, i=-1, after=roots)
        parents_of[fan_in.id] = [r.id for r in roots]
        link = fan_in
        for i in range(20):
            previous, link = link, await producer.submit(app.ECHO_NAME, i=1000 + i, after=[link])
            parents_of[link.id] = [previous.id]
        total = len(roots) + len(parents_of)
        assert (await producer.stats()).blocked == len(parents_of)
        pair = [await workers.start(), await workers.start()]
        await wait_until(
            lambda: all(w.is_ready() for w in pair),
            deadline=deadline,
            what="both workers to start",
            check=lambda: workers.check_alive(pair),
            explain=workers.describe,
        )
        await producer.resume("default")

        async def all_done() -> bool:
            return (await producer.stats()).succeeded == total

        await wait_until(
            all_done,
            deadline=deadline,
            what="every job of the workflow to succeed",
            check=lambda: workers.check_alive(pair),
            explain=workers.describe,
        )
    for worker in pair:
        assert await workers.stop(worker) == 0, worker.output()
    runs.refresh()
    assert all(runs.of(worker.pid) for worker in pair), "both processes ran jobs"
    jobs = finished_jobs(workers.journal)
    assert len(jobs) == total
    for child, parents in parents_of.items():
        started, _, result = jobs[child]
        assert all(started >= jobs[p][1] for p in parents), (child, parents)
        expected = {str(p): json.loads(jobs[p][2]) for p in parents}
        assert json.loads(result)["parents"] == expected, child
