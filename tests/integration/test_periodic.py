"""Periodic jobs on the controlled clock: one job per tick, whatever the number of
queues sharing the journal, across restarts and downtime (real SQLite files)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from asyncq import PayloadError, Queue, QueueFailed, UnknownTask, current_job
from asyncq._journal import SqliteJournal
from asyncq.testing import ManualClock, run_until_idle
from tests.faults import SmallDisk
from tests.integration.test_lifecycle import LogEvents

MakeQueue = Callable[..., Queue]

START = 1_800_000_000.0  # the ManualClock's start: 2027-01-15 08:00 UTC, a multiple of 300
HOUR = 3600.0


def digest_queue(make_queue: MakeQueue, runs: list[int] | None = None, **options: Any) -> Queue:
    """A queue with task "digest", run every 5 minutes (the DESIGN's example)."""
    queue = make_queue(**options)

    @queue.task(name="digest")
    async def digest(team: str) -> str:
        if runs is not None:
            runs.append(current_job().id)
        return team

    queue.periodic(digest, cron="*/5 * * * *", kwargs={"team": "ops"})
    return queue


def made(db_path: str, task: str = "digest") -> list[tuple[int, float, str]]:
    """The jobs the ticks made: (id, run_at, state), by due time, read from the file."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(
            "SELECT id, run_at, state FROM jobs WHERE task = ? ORDER BY run_at, id", (task,)
        ).fetchall()
    return [(int(i), float(at), str(state)) for i, at, state in rows]


def ticks(db_path: str, task: str = "digest") -> list[float]:
    return [at for _, at, _ in made(db_path, task)]


def last_ticks(db_path: str) -> dict[str, tuple[float, int | None]]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT name, last_tick, job_id FROM periodic").fetchall()
    return {name: (float(tick), job_id) for name, tick, job_id in rows}


async def test_an_hour_of_five_minute_ticks_on_three_queues_makes_twelve_jobs(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    clock.advance(1)  # just past a tick: the hour to come holds 12 ticks
    runs: list[int] = []
    queues = [digest_queue(make_queue, runs) for _ in range(3)]
    async with AsyncExitStack() as stack:
        for queue in queues:
            await stack.enter_async_context(queue)
        for _ in range(60):
            clock.advance(60)
            for queue in queues:
                await run_until_idle(queue)
        assert ticks(db_path) == [START + 300 * k for k in range(1, 13)]
        jobs = made(db_path)
        assert {state for _, _, state in jobs} == {"succeeded"}
        assert sorted(runs) == [job_id for job_id, _, _ in jobs]  # each ran once
        assert last_ticks(db_path) == {"digest": (START + HOUR, jobs[-1][0])}
        result = await queues[0].get(jobs[0][0])
        assert (result.payload, result.result) == ({"team": "ops"}, "ops")


async def test_a_three_hour_outage_makes_one_catch_up_job_not_thirty_six(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    queue = digest_queue(make_queue)
    clock.advance(1)
    async with queue:
        clock.advance(299)
        await run_until_idle(queue)
        assert ticks(db_path) == [START + 300]
    clock.advance(3 * HOUR)  # every process down
    async with queue:
        await run_until_idle(queue)
        # Only the latest tick due, made at once; the 35 before it are skipped.
        assert ticks(db_path) == [START + 300, START + 300 + 3 * HOUR]
        clock.advance(300)
        await run_until_idle(queue)
        assert ticks(db_path)[-1] == START + 600 + 3 * HOUR
        assert len(ticks(db_path)) == 3


async def test_a_process_that_stalled_for_hours_makes_one_catch_up_job(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    queue = digest_queue(make_queue)
    clock.advance(1)
    async with queue:
        clock.advance(3 * HOUR + 10)  # a suspended machine: the clock jumps while it runs
        await run_until_idle(queue)
        assert ticks(db_path) == [START + 3 * HOUR]


async def test_a_restart_never_remakes_a_tick_whose_job_finished_and_was_pruned(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    queue = digest_queue(make_queue)
    async with queue:  # the clock is on a tick: the first tick at or after the start
        await run_until_idle(queue)
    assert [state for _, _, state in made(db_path)] == ["succeeded"]
    journal = SqliteJournal(db_path)
    await journal.open()
    try:
        assert (await journal.prune_finished(clock.now() + 1)).deleted == 1
    finally:
        await journal.close()
    assert made(db_path) == []
    for _ in range(3):
        async with queue:
            clock.advance(99)
            await run_until_idle(queue)
        assert made(db_path) == []  # the tick at START is not made again
    async with queue:
        clock.advance(3)
        await run_until_idle(queue)
        assert ticks(db_path) == [START + 300]


async def test_a_new_schedule_starts_at_its_first_tick_after_the_start(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    clock.advance(299)  # the tick at START went by before the schedule existed
    queue = digest_queue(make_queue)
    async with queue:
        await run_until_idle(queue)
        assert made(db_path) == []
        assert last_ticks(db_path) == {}
        clock.advance(1)
        await run_until_idle(queue)
        assert ticks(db_path) == [START + 300]


async def test_every_ticks_are_multiples_of_every_since_the_epoch(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    # START is not a multiple of 7 s: the first tick is the next multiple, whenever
    # each queue started.
    first = math.ceil(START / 7) * 7
    assert first != START
    early, late = make_queue(), make_queue()
    for queue in (early, late):

        @queue.task(name="refresh")
        async def refresh() -> None:
            pass

        queue.periodic(refresh, every=7)
        queue.periodic(refresh, every=60, name="refresh-minutely")
    async with early:
        clock.advance(3)
        async with late:
            while clock.now() < first + 7 * 9:
                clock.advance(1)
                for queue in (early, late):
                    await run_until_idle(queue)
    assert ticks(db_path, "refresh") == sorted(
        [first + 7 * k for k in range(10)] + [START + 60 * k for k in range(2)]
    )
    assert set(last_ticks(db_path)) == {"refresh", "refresh-minutely"}


async def test_tz_shifts_cron_ticks(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    queue = make_queue()

    @queue.task(name="report")
    async def report(where: str) -> None:
        pass

    # 09:00 in Berlin is 08:00 UTC in winter: START (2027-01-15 08:00 UTC) itself.
    queue.periodic(report, cron="0 9 * * *", tz="Europe/Berlin", kwargs={"where": "berlin"})
    queue.periodic(report, cron="0 9 * * *", kwargs={"where": "utc"}, name="report-utc")
    async with queue:
        await run_until_idle(queue)
        clock.advance(HOUR)
        await run_until_idle(queue)
        jobs = [await queue.get(job_id) for job_id, _, _ in made(db_path, "report")]
    assert [(job.run_at, job.payload) for job in jobs] == [
        (START, {"where": "berlin"}),
        (START + HOUR, {"where": "utc"}),
    ]


async def test_a_tick_wakes_the_dispatcher(make_queue: MakeQueue, clock: ManualClock) -> None:
    # The dispatcher polls once an hour of the clock that does not move by itself:
    # only the scheduler's wake-up can start the job.
    queue = make_queue(poll_interval=HOUR)
    ran = asyncio.Event()

    @queue.task(name="ping")
    async def ping() -> None:
        ran.set()

    queue.periodic(ping, every=300)
    clock.advance(1)
    async with queue:
        await queue._periodic_settled()
        clock.advance(299)
        await asyncio.wait_for(ran.wait(), timeout=10)


async def test_a_producer_runs_no_schedules(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    producer = digest_queue(make_queue, concurrency=0)
    async with producer:
        clock.advance(HOUR)
        await producer._periodic_settled()
        assert made(db_path) == []
        worker = digest_queue(make_queue)
        async with worker:
            await run_until_idle(worker)
            assert ticks(db_path) == [START + HOUR]  # the latest due; none before its start


async def test_the_scheduler_is_supervised(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    queue = digest_queue(make_queue)
    clock.advance(1)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(queue)
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            conn.execute("DROP TABLE periodic")  # every tick from now on fails
        clock.advance(299)
        with pytest.raises(QueueFailed) as failed:
            await run_until_idle(queue)
        stack.pop_all()
    with pytest.raises(QueueFailed):
        await queue.stop()  # stop() says so too, once everything is closed
    assert failed.value.part == "periodic scheduler"
    assert "periodic" in str(failed.value.cause)


@pytest.fixture
def scheduler_log() -> Iterator[LogEvents]:
    handler = LogEvents()
    logger = logging.getLogger("asyncq")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_a_full_disk_delays_a_tick_and_it_is_made_once_the_disk_has_room(
    small_disk: SmallDisk, clock: ManualClock, scheduler_log: LogEvents
) -> None:
    path = str(small_disk.root / "jobs.db")
    queue = Queue(path, clock=clock, concurrency=2)

    @queue.task(name="digest")
    async def digest(team: str) -> None:
        pass

    queue.periodic(digest, every=300, kwargs={"team": "ops"})
    failing = scheduler_log.when("periodic scheduler: ")
    back = scheduler_log.when("periodic scheduler: the journal works again")
    clock.advance(1)
    async with asyncio.timeout(30), queue:
        await queue._periodic_settled()
        small_disk.fill()
        clock.advance(299)
        await failing.wait()
        assert made(path) == []
        small_disk.free()
        await back.wait()  # by itself: the scheduler waited the fault out
        await run_until_idle(queue)
        assert [(at, state) for _, at, state in made(path)] == [(START + 300, "succeeded")]


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({}, ValueError, "exactly one of cron= or every="),
    ({"cron": "* * * * *", "every": 60}, ValueError, "exactly one"),
    ({"cron": "*/5 * * *"}, ValueError, "'*/5 * * *'"),
    ({"cron": "61 * * * *"}, ValueError, "'61 * * * *'"),
    ({"cron": 5}, TypeError, "cron must be a str"),
    ({"every": 0}, ValueError, "every must be"),
    ({"every": -5}, ValueError, "every must be"),
    ({"every": math.nan}, ValueError, "every must be"),
    ({"every": math.inf}, ValueError, "every must be"),
    ({"every": 10**400}, ValueError, "every must be"),
    ({"every": "60"}, TypeError, "every must be a number"),
    ({"every": True}, TypeError, "every must be a number"),
    ({"every": 60, "tz": "Europe/Berlin"}, ValueError, "tz="),
    ({"cron": "0 9 * * *", "tz": "Mars/Olympus_Mons"}, ValueError, "'Mars/Olympus_Mons'"),
    ({"cron": "0 9 * * *", "tz": "../etc/passwd"}, ValueError, "tz="),
    ({"every": 60, "kwargs": {"nope": 1}}, PayloadError, "unknown: ['nope']"),
    ({"every": 60, "kwargs": {"team": {1, 2}}}, PayloadError, "JSON"),
    ({"every": 60, "kwargs": {"team": (1, 2)}}, PayloadError, "tuple"),
    ({"every": 60, "kwargs": "team=ops"}, TypeError, "kwargs must be a mapping"),
    ({"every": 60, "kwargs": {"team": "x" * 300_000}}, PayloadError, "over the"),
    ({"every": 60, "priority": 2**40}, ValueError, "priority"),
    ({"every": 60, "priority": "high"}, TypeError, "priority"),
    ({"every": 60, "destination": ""}, ValueError, "destination"),
    ({"every": 60, "name": ""}, ValueError, "periodic name"),
    ({"every": 60, "name": "a\nb"}, ValueError, "periodic name"),
    ({"every": 60, "name": 5}, TypeError, "periodic name"),
]


@pytest.mark.parametrize(("options", "error", "says"), BAD)
async def test_bad_input_is_refused_and_nothing_is_made(
    make_queue: MakeQueue,
    db_path: str,
    clock: ManualClock,
    options: dict[str, Any],
    error: type[Exception],
    says: str,
) -> None:
    queue = make_queue()

    @queue.task(name="digest")
    async def digest(team: str = "ops") -> None:
        pass

    with pytest.raises(error) as refused:
        queue.periodic(digest, **options)
    assert says in str(refused.value)
    async with queue:
        clock.advance(HOUR)
        await run_until_idle(queue)
    assert made(db_path) == []
    assert last_ticks(db_path) == {}


async def test_the_task_must_be_this_queues_and_a_name_is_one_schedule(
    make_queue: MakeQueue,
) -> None:
    queue, other = make_queue(), make_queue()

    @queue.task(name="digest")
    async def digest() -> None:
        pass

    @other.task(name="elsewhere")
    async def elsewhere() -> None:
        pass

    with pytest.raises(UnknownTask):
        queue.periodic("nope", every=60)
    with pytest.raises(ValueError, match="not registered with this queue"):
        queue.periodic(elsewhere, every=60)
    with pytest.raises(TypeError, match="task must be a Task"):
        queue.periodic(digest.fn, every=60)  # type: ignore[arg-type]
    queue.periodic("digest", every=60)
    with pytest.raises(ValueError, match="'digest' exists already"):
        queue.periodic(digest, cron="* * * * *")
    queue.periodic(digest, cron="* * * * *", name="digest-cron")
    async with queue:
        with pytest.raises(RuntimeError, match="before the queue starts"):
            queue.periodic(digest, every=60, name="late")


def test_the_readmes_periodic_example_is_examples_periodic_and_runs(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    example = root / "examples" / "periodic.py"
    assert f"```python\n{example.read_text()}```" in (root / "README.md").read_text()
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    sre = [line for line in done.stdout.splitlines() if line.endswith("the digest for sre")]
    assert len(sre) >= 2, done.stdout  # a tick a second for 2.5 s
    assert len(set(sre)) == len(sre)  # each job once
    assert list(tmp_path.iterdir()) == []
