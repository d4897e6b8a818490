"""Cancelling a job that runs in another process: the request travels through the
journal, the worker process cancels its handler, and the job ends cancelled, also
when the handler ignores the cancellation or the worker is killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from asyncq import JobState, Queue

from . import app
from .conftest import RunLogs, Worker, WorkerSet, journal_states, wait_until

pytestmark = pytest.mark.process

DEADLINE = 30.0  # seconds: what fails a stuck test, far above what each step takes


def cancel_requested(journal: Path, job_id: int) -> bool:
    with contextlib.closing(sqlite3.connect(journal, timeout=10)) as conn:
        row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return bool(row and row[0])


async def start_running(
    workers: WorkerSet, producer: Queue, task: str, **kwargs: object
) -> tuple[Worker, int]:
    """A worker process, and a job whose handler it has started."""
    worker = await workers.start()
    job = await producer.submit(task, **kwargs)

    async def started() -> bool:
        return (await producer.get(job.id)).started_at is not None

    await wait_until(
        started,
        deadline=asyncio.get_running_loop().time() + DEADLINE,
        what="the job's start in the journal",
        check=lambda: workers.check_alive([worker]),
        explain=workers.describe,
    )
    return worker, job.id


async def test_a_job_running_in_another_process_is_cancelled_there(workers: WorkerSet) -> None:
    runs = RunLogs(workers.log_dir)
    async with app.producer(workers.journal) as producer:
        # An hour-long run: only the cancel can end it in time.
        worker, job_id = await start_running(workers, producer, app.TASK_NAME, i=1, seconds=3600)
        async with asyncio.timeout(DEADLINE):
            assert await producer.cancel(job_id) is True
        info = await producer.get(job_id)
        assert (info.state, info.attempts) == (JobState.CANCELLED, 1)
        # The worker goes on with the next job.
        after = await producer.submit(app.TASK_NAME, i=2)
        await after.result(timeout=DEADLINE)
    workers.check_alive([worker])
    assert await workers.stop(worker) == 0, worker.output()
    runs.refresh()
    assert runs.per_job() == {2: 1}  # the cancelled run never reached its end
    assert journal_states(workers.journal) == {"cancelled": 1, "succeeded": 1}


async def test_a_handler_in_another_process_that_ignores_its_cancellation_is_cancelled(
    workers: WorkerSet,
) -> None:
    workers.settings.update(ASYNCQ_TEST_SHUTDOWN_TIMEOUT="0.5")
    async with app.producer(workers.journal) as producer:
        worker, job_id = await start_running(workers, producer, app.STUBBORN_NAME, i=1)
        async with asyncio.timeout(DEADLINE):
            assert await producer.cancel(job_id) is True
    # The handler still runs, ignoring every cancellation; its job stays cancelled
    # through the worker's stop, which cuts the handler off.
    assert await workers.stop(worker) == 0, worker.output()
    assert journal_states(workers.journal) == {"cancelled": 1}


async def test_a_cancel_asked_of_a_worker_killed_with_sigkill_ends_cancelled(
    workers: WorkerSet,
) -> None:
    workers.settings.update(ASYNCQ_TEST_LEASE="2")
    runs = RunLogs(workers.log_dir)
    async with app.producer(workers.journal) as producer:
        worker, job_id = await start_running(workers, producer, app.TASK_NAME, i=1, seconds=3600)
        # Frozen, it cannot act on the request before it dies.
        os.kill(worker.pid, signal.SIGSTOP)
        cancelling = asyncio.ensure_future(producer.cancel(job_id))
        await wait_until(
            lambda: cancel_requested(workers.journal, job_id),
            deadline=asyncio.get_running_loop().time() + DEADLINE,
            what="the cancel request in the journal",
            explain=workers.describe,
        )
        await workers.kill(worker)
        # Once its lease expires the job is cancelled, never run again.
        assert not cancelling.done()
        async with asyncio.timeout(DEADLINE):
            assert await cancelling is True
        replacement = await workers.start()
        after = await producer.submit(app.TASK_NAME, i=2)
        await after.result(timeout=DEADLINE)
        info = await producer.get(job_id)
        assert (info.state, info.attempts) == (JobState.CANCELLED, 1)
    assert await workers.stop(replacement) == 0, replacement.output()
    runs.refresh()
    assert runs.per_job() == {2: 1}
    assert journal_states(workers.journal) == {"cancelled": 1, "succeeded": 1}
