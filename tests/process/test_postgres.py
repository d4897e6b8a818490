"""Worker processes on PostgreSQL: what only a shared server can do to them.

Their connections cut by the server (`pg_terminate_backend`) while they run, and
three workers whose host clocks are seconds apart sharing one `Rate`. kill -9 of
workers on PostgreSQL is in test_workers.py, which runs on both backends.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from asyncq import Rate
from tests.postgres import fresh_schema, kept_and_counted, postgres_dsn, postgres_dsn_or_skip

from . import app
from .conftest import RunLogs, WorkerSet, journal_states, wait_until
from .test_pacing import Workers, assert_paced, submit

pytestmark = pytest.mark.process

CONCURRENCY = 8
PREFETCH = 64


@pytest.fixture
async def pg_workers(tmp_path: Path) -> AsyncIterator[WorkerSet]:
    """Workers on a fresh schema; their connections carry an application name of
    their own, by which the test finds them on the server and no one else's."""
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    async with fresh_schema(postgres_dsn_or_skip()) as dsn:
        name = f"asyncq_test_{uuid.uuid4().hex[:12]}"
        worker_set = WorkerSet(journal=f"{dsn}&application_name={name}", log_dir=log_dir)
        try:
            yield worker_set
        finally:
            await worker_set.close()


async def terminate_backends(application_name: str) -> int:
    """Cut every server connection of that name, as a server restart would; the
    number cut."""
    conn = await asyncpg.connect(postgres_dsn())
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                "FROM pg_stat_activity WHERE application_name = $1",
                application_name,
            )
        )
    finally:
        await conn.close()


async def test_workers_whose_connections_are_cut_reconnect_and_lose_nothing(
    pg_workers: WorkerSet,
) -> None:
    workers = pg_workers
    assert isinstance(workers.journal, str)
    name = workers.journal.rsplit("application_name=", 1)[1]
    jobs, cuts = 3000, 3
    workers.settings.update(
        ASYNCQ_TEST_CONCURRENCY=str(CONCURRENCY),
        ASYNCQ_TEST_PREFETCH=str(PREFETCH),
        ASYNCQ_TEST_LEASE="2",
        ASYNCQ_TEST_JOB_SECONDS="0.004",
    )
    async with app.producer(workers.journal) as producer:
        await producer.submit_many(app.TASK_NAME, [{"i": i} for i in range(jobs)])
    runs = RunLogs(workers.log_dir)
    live = [await workers.start(), await workers.start()]
    deadline = asyncio.get_running_loop().time() + 60

    def check() -> None:
        workers.check_alive(live)  # a cut connection must not end a worker

    cut: list[int] = []
    for mark in (jobs // 5, jobs // 2, jobs * 3 // 4):

        def reached(mark: int = mark) -> bool:
            return runs.refresh() >= mark

        await wait_until(
            reached, deadline=deadline, what=f"{mark} runs", check=check, explain=workers.describe
        )
        cut.append(await terminate_backends(name))

    def all_ran() -> bool:
        return runs.refresh() >= jobs and len(runs.per_job()) == jobs

    await wait_until(
        all_ran, deadline=deadline, what="every job to run", check=check, explain=workers.describe
    )

    def all_acked() -> bool:
        return journal_states(workers.journal) == {"succeeded": jobs}

    await wait_until(
        all_acked,
        deadline=deadline,
        what="every job's ack, none left running",
        check=check,
        explain=workers.describe,
    )
    for worker in live:
        assert await workers.stop(worker) == 0, worker.output()
    # The counts that stats() reads were kept through the cuts, in the transactions
    # that moved the jobs (the server's own answer for a COMMIT cut off included).
    kept, counted = await kept_and_counted(workers.journal)
    assert kept == counted == {("default", "succeeded"): jobs}

    per_job = runs.per_job()
    repeated = sum(per_job.values()) - jobs
    print(f"{jobs} jobs, connections cut {cut}, {repeated} runs repeated")
    # Each cut found both workers' connections (writer and listener each).
    assert all(n >= 2 * len(live) for n in cut), cut
    assert sorted(per_job) == list(range(jobs)), "a job never ran"
    # A cut can cost a worker the outcomes it had not committed and the claims it
    # had not started: their jobs run again, at most what it held per cut.
    assert repeated <= cuts * len(live) * (CONCURRENCY + PREFETCH), repeated
    for worker in live:
        output = worker.output()
        assert "Traceback" not in output, output
        assert "lost the connection" in output  # it did see the cut, and went on


@pytest.fixture
async def paced(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    async with fresh_schema(postgres_dsn_or_skip()) as dsn:
        yield dsn, log_dir


@pytest.fixture
def skewed_workers(paced: tuple[str, Path]) -> Iterator[Workers]:
    dsn, log_dir = paced
    pool = Workers(dsn, log_dir, 20.0, 5.0)  # type: ignore[arg-type]  # a DSN, not a file
    try:
        yield pool
    finally:
        pool.stop_all()


async def test_three_hosts_with_skewed_clocks_share_one_rate(
    paced: tuple[str, Path], skewed_workers: Workers
) -> None:
    dsn, _ = paced
    rate = Rate(20, burst=5)
    await submit(dsn, 200)  # type: ignore[arg-type]
    # Three hosts: one 2 s ahead, one right, one 2 s behind. Each reads the
    # database server's time through its measured offset, so they share one bucket.
    for offset in ("2.0", "0", "-2.0"):
        skewed_workers.env["ASYNCQ_PACED_CLOCK_OFFSET"] = offset
        skewed_workers.start()
    await skewed_workers.wait_for_calls(200, deadline=60)
    calls = skewed_workers.calls()
    assert sorted(job for job, _ in calls) == list(range(200))  # no job twice
    times = [at for _, at in calls]  # the true time of each call (this machine's one clock)
    assert_paced(times, rate)
    assert max(times) - min(times) >= (200 - 5) / 20 - 0.5  # shared, not tripled
    busy = [p for p in skewed_workers.log_dir.glob("calls-*.log") if p.read_text()]
    assert len(busy) >= 2  # more than one host made calls
    assert "Traceback" not in skewed_workers.outputs()
