"""Monitoring across processes: a producer that runs no jobs (a web process) is
told of a backlog while the workers run in a real `asyncq worker` process, sees
their completions in its rates, and is told when no worker runs at all."""

from __future__ import annotations

import asyncio

import pytest

from asyncq import BacklogCause, BacklogEvent

from . import app
from .conftest import WorkerSet, wait_until

pytestmark = pytest.mark.process

CONCURRENCY = 8
CALL_SECONDS = 0.5  # each job: a call that takes this long
JOBS = 40  # 2.5 s of work for the worker's 8 coroutines


async def test_a_producer_is_alerted_while_the_workers_run_elsewhere(workers: WorkerSet) -> None:
    workers.settings["ASYNCQ_TEST_CONCURRENCY"] = str(CONCURRENCY)
    worker = await workers.start()
    loop = asyncio.get_running_loop()
    await wait_until(worker.is_ready, deadline=loop.time() + 30, what="the worker's start")
    alerts: asyncio.Queue[BacklogEvent] = asyncio.Queue()
    producer = app.producer(workers.journal)
    producer.on_backlog(alerts.put_nowait, depth=10)
    async with producer:
        calls = [{"i": i, "seconds": CALL_SECONDS} for i in range(JOBS)]
        await producer.submit_many(app.TASK_NAME, calls)
        fired = await asyncio.wait_for(alerts.get(), 20)
        # The worker's heartbeat is seen here: the workers are slow, not absent.
        assert (fired.destination, fired.cause, fired.cleared) == (
            "default",
            BacklogCause.SLOW_WORKERS,
            False,
        )
        assert fired.depth >= 10
        assert "1 worker process(es)" in fired.detail
        cleared = await asyncio.wait_for(alerts.get(), 30)
        assert (cleared.destination, cleared.cleared) == ("default", True)
        assert cleared.depth <= 5

        async def every_completion_counted() -> bool:
            stats = await producer.stats()
            done = stats.destinations["default"]
            return done.succeeded == JOBS and done.completion_rate > 0

        # What the other process finished is in this one's rates (its last counts
        # are written once it has been idle for a second).
        await wait_until(
            every_completion_counted, deadline=loop.time() + 20, what="the worker's counts"
        )
        stats = await producer.stats()
        default = stats.destinations["default"]
        assert stats.workers == 1
        assert default.call_rate == default.completion_rate  # every call succeeded
        assert default.latency_p50 == pytest.approx(CALL_SECONDS, rel=0.2)

        # The worker stops (and signs off): the next backlog has nobody to drain it.
        assert await workers.stop(worker) == 0
        assert (await producer.stats()).workers == 0
        await producer.submit_many(app.TASK_NAME, calls[:20])
        nobody = await asyncio.wait_for(alerts.get(), 20)
        assert (nobody.destination, nobody.cause) == ("default", BacklogCause.NO_WORKERS)
        assert nobody.depth == 20
