"""Several worker processes share one destination's concurrency cap."""

from __future__ import annotations

import asyncio

import pytest

from . import capped_app
from .conftest import WorkerSet, wait_until

pytestmark = pytest.mark.process

CAP = 2
CALLS = 40


async def test_three_workers_never_exceed_the_cap_together(any_workers: WorkerSet) -> None:
    workers = any_workers
    workers.settings["ASYNCQ_CAPPED_CAP"] = str(CAP)
    live = [await workers.start("tests.process.capped_app:queue") for _ in range(3)]
    deadline = asyncio.get_running_loop().time() + 30

    def ready() -> bool:
        return all(worker.is_ready() for worker in live)

    def check() -> None:
        workers.check_alive(live)

    # All three wait for work before any is submitted: each could take its own
    # cap's worth at once, were the cap counted per process (up to 3 x 2 calls).
    await wait_until(
        ready, deadline=deadline, what="three workers", check=check, explain=workers.describe
    )
    async with capped_app.producer(str(workers.journal)) as producer:
        await producer.submit_many(capped_app.TASK_NAME, [{"i": i} for i in range(CALLS)])

    def all_ended() -> bool:
        return capped_app.calls_in_flight(workers.log_dir)[1] >= CALLS

    await wait_until(
        all_ended, deadline=deadline, what="every call", check=check, explain=workers.describe
    )
    most, ended, pids = capped_app.calls_in_flight(workers.log_dir)
    print(f"{ended} calls by {len(pids)} processes, at most {most} at once")
    assert ended == CALLS
    assert most == CAP  # never more, and the cap is used
    for worker in live:
        assert await workers.stop(worker) == 0, worker.output()
        assert "Traceback" not in worker.output()
