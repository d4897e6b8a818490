"""`asyncq worker` and signals: the first SIGTERM or SIGINT stops gracefully, in
bounded time even when a handler ignores its cancellation; a second one exits at once."""

from __future__ import annotations

import asyncio
import signal

import pytest

from . import app
from .conftest import RunLogs, Worker, WorkerSet, journal_states, wait_until

pytestmark = pytest.mark.process

SHUTDOWN_TIMEOUT = 0.5


async def start_with_a_stubborn_job(workers: WorkerSet, shutdown_timeout: float) -> Worker:
    """A worker running one job whose handler ignores every cancellation."""
    workers.settings.update(ASYNCQ_TEST_SHUTDOWN_TIMEOUT=str(shutdown_timeout))
    deadline = asyncio.get_running_loop().time() + 30
    runs = RunLogs(workers.log_dir)
    async with app.producer(workers.journal) as producer:
        await producer.submit(app.STUBBORN_NAME, 1)
    worker = await workers.start()
    await wait_until(
        lambda: worker.is_ready() and runs.refresh() == 1,
        deadline=deadline,
        what="the stubborn job to start",
        check=lambda: workers.check_alive([worker]),
        explain=workers.describe,
    )
    return worker


async def test_sigterm_stops_in_bounded_time_despite_a_stubborn_handler(
    workers: WorkerSet,
) -> None:
    worker = await start_with_a_stubborn_job(workers, SHUTDOWN_TIMEOUT)
    # It takes shutdown_timeout + the grace (1 s): the guard is far above.
    assert await workers.stop(worker, timeout=20) == 0, worker.output()
    assert "ignored their cancellation" in worker.output()
    # The job went back to the journal before it closed: nothing stays running.
    assert journal_states(workers.journal) == {"pending": 1}


async def test_a_second_signal_exits_at_once(workers: WorkerSet) -> None:
    # An hour to finish: only the second signal can end this worker soon.
    worker = await start_with_a_stubborn_job(workers, 3600)
    worker.proc.send_signal(signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + 30
    await wait_until(
        lambda: "stopping gracefully" in worker.output(),
        deadline=deadline,
        what="the worker to start stopping",
        check=lambda: workers.check_alive([worker]),
        explain=workers.describe,
    )
    worker.proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(20):
        status = await worker.proc.wait()
    assert status == 128 + signal.SIGINT, worker.output()
    assert "SIGINT again: exiting now" in worker.output()
    # Like a crash: the job stays claimed until its lease expires, then runs again.
    assert journal_states(workers.journal) == {"running": 1}
