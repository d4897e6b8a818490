"""Real worker processes on one journal file: kill -9 in the middle of a run, and
two workers sharing the work.

Each worker is `python -m asyncq.cli worker tests.process.app:queue`; the jobs
record every run in per-process files (see app.py), which is how these tests
count runs per job across processes and crashes.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import app
from .conftest import RunLogs, Worker, WorkerSet, held_by, wait_until

pytestmark = pytest.mark.process


@pytest.fixture
def workers(any_workers: WorkerSet) -> WorkerSet:
    """Every test here runs on a SQLite file, then on a PostgreSQL schema."""
    return any_workers


CONCURRENCY = 8
PREFETCH = 64
JOB_SECONDS = 0.002


def assert_clean_output(worker: Worker) -> None:
    output = worker.output()
    assert "Traceback" not in output, f"{worker.name}:\n{output}"
    # "database is locked" must never reach anyone; the journal's own
    # "journal ... is locked; retrying" warning would mean a write lock held for
    # longer than busy_timeout (5 s), which nothing here should cause.
    # (As a word: a lease-expired warning under load says "blocked".)
    assert not re.search(r"\blocked\b", output, re.IGNORECASE), f"{worker.name}:\n{output}"


async def assert_all_succeeded(journal: Path | str, jobs: int) -> None:
    async with app.producer(journal) as producer:
        stats = await producer.stats()
    assert stats.succeeded == jobs
    for destination, counts in stats.destinations.items():
        assert (counts.pending, counts.running, counts.dead) == (0, 0, 0), destination


async def wait_for_acks(workers: WorkerSet, live: list[Worker], jobs: int, deadline: float) -> None:
    """Wait until the journal has every job succeeded."""
    async with app.producer(workers.journal) as producer:

        async def all_acked() -> bool:
            return (await producer.stats()).succeeded >= jobs

        await wait_until(
            all_acked,
            deadline=deadline,
            what="every job's ack",
            check=lambda: workers.check_alive(live),
            explain=workers.describe,
        )


@dataclass
class Crash:
    pid: int
    at_runs: int  # runs logged by all processes when it was killed
    ran: set[int]  # jobs it ran (logged) before it died
    held: set[int]  # jobs it had claimed whose ack the journal had not committed

    @property
    def lost_acks(self) -> set[int]:
        """Jobs it ran whose outcome died with it: each must run again."""
        return self.ran & self.held


async def test_kill_9_loses_no_job_and_repeats_only_unacked_runs(workers: WorkerSet) -> None:
    jobs, kills = 3000, 4
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    print(f"seed {seed}")
    lease = 1.0
    workers.settings.update(
        ASYNCQ_TEST_CONCURRENCY=str(CONCURRENCY),
        ASYNCQ_TEST_PREFETCH=str(PREFETCH),
        ASYNCQ_TEST_LEASE=str(lease),
        ASYNCQ_TEST_JOB_SECONDS=str(JOB_SECONDS),
    )
    # A few runs outlast the lease: a live worker keeps them by renewing its
    # leases, so they must not run twice either (unless a kill cuts them off).
    slow = range(0, jobs, jobs // 5)
    payloads = [{"i": i, "seconds": 1.5 * lease} if i in slow else {"i": i} for i in range(jobs)]
    started = time.monotonic()
    async with app.producer(workers.journal) as producer:
        await producer.submit_many(app.TASK_NAME, payloads)
    runs = RunLogs(workers.log_dir)
    live = [await workers.start(), await workers.start()]
    deadline = asyncio.get_running_loop().time() + 45

    # Kill at random moments: once the runs logged so far pass a random mark.
    marks = sorted(rng.sample(range(jobs // 10, jobs * 85 // 100), kills))
    crashes: list[Crash] = []
    for mark in marks:

        def reached(mark: int = mark) -> bool:
            runs.refresh()
            return runs.total >= mark and any(runs.of(w.pid) for w in live)

        await wait_until(
            reached,
            deadline=deadline,
            what=f"{mark} runs",
            check=lambda: workers.check_alive(live),
            explain=workers.describe,
        )
        victim = rng.choice([w for w in live if runs.of(w.pid)])
        await workers.kill(victim)
        held = await asyncio.to_thread(held_by, workers.journal, victim.pid)
        runs.refresh()  # it is dead: its log is complete
        crashes.append(Crash(victim.pid, runs.total, set(runs.of(victim.pid)), held))
        live.remove(victim)
        live.append(await workers.start())

    # The last workers finish everything, the killed ones' jobs once their leases expire.
    def all_ran() -> bool:
        return runs.refresh() >= jobs and len(runs.per_job()) == jobs

    await wait_until(
        all_ran,
        deadline=deadline,
        what="every job to run",
        check=lambda: workers.check_alive(live),
        explain=workers.describe,
    )
    await wait_for_acks(workers, live, jobs, deadline)
    for worker in live:
        assert await workers.stop(worker) == 0, worker.output()
    elapsed = time.monotonic() - started

    runs.refresh()
    per_job = runs.per_job()
    duplicates = sum(per_job.values()) - jobs
    print(
        f"{jobs} jobs, {sum(per_job.values())} runs, {duplicates} repeated, "
        f"{len(workers.started)} workers, {kills} kills, {elapsed:.1f}s"
    )
    for crash in crashes:
        print(
            f"  killed pid {crash.pid} at {crash.at_runs} runs: it had run {len(crash.ran)}, "
            f"held {len(crash.held)} claims, {len(crash.lost_acks)} of them run and not acked"
        )

    await assert_all_succeeded(workers.journal, jobs)
    assert sorted(per_job) == list(range(jobs)), "a job never ran"
    for worker in workers.started:
        assert_clean_output(worker)
    # The kills found claims to take back (else this tested no recovery at all).
    assert any(crash.held for crash in crashes)

    # The bound per crash. A process holds at most `prefetch` claimed jobs not
    # yet started and runs `concurrency` at once, and its outcomes are written in
    # batches a moment after each run: what a killed process had run without a
    # committed ack is at most about concurrency + prefetch (here 8 + 64 = 72).
    # A crash repeats at most that many runs, never some larger part of the backlog.
    bound = CONCURRENCY + PREFETCH
    for crash in crashes:
        assert len(crash.lost_acks) <= bound, crash

    # Exactly: a run is repeated when, and only when, a killed process had run
    # the job and died before its ack was committed. Every such run is repeated
    # (the claim comes back when its lease expires); an acked run never is.
    expected = dict.fromkeys(range(jobs), 1)
    for crash in crashes:
        for i in crash.lost_acks:
            expected[i] += 1
    wrong = {i: (per_job[i], expected[i]) for i in range(jobs) if per_job[i] != expected[i]}
    assert not wrong, f"job: (runs, expected runs): {wrong}"


async def test_two_workers_share_the_work_and_run_each_job_once(workers: WorkerSet) -> None:
    jobs, batches = 4000, 8
    workers.settings.update(
        ASYNCQ_TEST_CONCURRENCY=str(CONCURRENCY),
        ASYNCQ_TEST_JOB_SECONDS=str(JOB_SECONDS),
    )
    started = time.monotonic()
    deadline = asyncio.get_running_loop().time() + 40
    runs = RunLogs(workers.log_dir)
    size = jobs // batches
    # The producer creates the journal before the workers start: this test is about
    # sharing work. Opening one new file from several processes at once is covered
    # by tests/journal/test_sqlite_file.py.
    async with app.producer(workers.journal) as producer:
        pair = [await workers.start(), await workers.start()]

        def check() -> None:
            workers.check_alive(pair)

        def ready() -> bool:
            return all(w.is_ready() for w in pair)

        await wait_until(
            ready,
            deadline=deadline,
            what="both workers to start",
            check=check,
            explain=workers.describe,
        )
        # Submit while they run: each batch once the workers are well into the last.
        for b in range(batches):
            await producer.submit_many(
                app.TASK_NAME, [{"i": i} for i in range(b * size, (b + 1) * size)]
            )
            mark = b * size + size // 2

            def reached(mark: int = mark) -> bool:
                return runs.refresh() >= mark

            await wait_until(
                reached,
                deadline=deadline,
                what=f"{mark} runs",
                check=check,
                explain=workers.describe,
            )

        def all_ran() -> bool:
            return runs.refresh() >= jobs

        await wait_until(
            all_ran,
            deadline=deadline,
            what="every job to run",
            check=check,
            explain=workers.describe,
        )
    await wait_for_acks(workers, pair, jobs, deadline)
    for worker in pair:
        assert await workers.stop(worker) == 0, worker.output()
    elapsed = time.monotonic() - started

    runs.refresh()
    per_job = runs.per_job()
    shares = [len(runs.of(w.pid)) for w in pair]
    print(f"{jobs} jobs, {sum(per_job.values())} runs, shares {shares}, {elapsed:.1f}s")
    await assert_all_succeeded(workers.journal, jobs)
    assert sorted(per_job) == list(range(jobs)), "a job never ran"
    repeated = {i: n for i, n in per_job.items() if n > 1}
    assert not repeated, f"jobs ran more than once: {repeated}"
    for worker, share in zip(pair, shares, strict=True):
        assert share >= jobs // 10, f"{worker.name} ran only {share} of {jobs} jobs"
        assert_clean_output(worker)
