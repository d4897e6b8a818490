"""Destinations on the controlled clock: pacing, fairness, caps, pause, holds, circuits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from asyncq import Circuit, JobState, PermanentFailure, Queue, Rate, Retry, RetryAfter
from asyncq._journal import Started
from asyncq.testing import ManualClock, run_until_idle
from tests.pacing import drive, most_in_any_window

MakeQueue = Callable[..., Queue]


async def test_calls_never_exceed_burst_plus_rate_in_any_window(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=8)
    rate = Rate(10, per=1, burst=3)
    queue.destination("api", rate=rate)
    calls: list[float] = []

    @queue.task(destination="api")
    async def call(i: int) -> None:
        calls.append(clock.now())

    async with queue:
        await call.submit_many([{"i": i} for i in range(120)])
        await drive(queue, clock, step=0.05, until=lambda: len(calls) == 120, limit=60)
    assert len(calls) == 120
    for window in (0.0, 0.1, 0.5, 1.0, 3.0, 10.0):
        assert most_in_any_window(calls, window) <= rate.burst + rate.per_second * window
    # ...and it is not slower than the limit allows either.
    assert calls[-1] - calls[0] <= (120 - rate.burst) / rate.per_second + 0.1


async def test_a_slow_destination_does_not_delay_another(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=4)
    queue.destination("slow", rate=Rate(1, per=1))
    done: dict[str, int] = {"slow": 0, "fast": 0}

    @queue.task
    async def call(kind: str) -> None:
        done[kind] += 1

    async with queue:
        # The slow destination's backlog is submitted first: it is at the head.
        await queue.submit_many(call, [{"kind": "slow"}] * 2000, destination="slow")
        await queue.submit_many(call, [{"kind": "fast"}] * 2000, destination="fast")
        await run_until_idle(queue)  # no clock time passes at all
        assert done == {"slow": 1, "fast": 2000}
        stats = await queue.stats()
    # The slow backlog waits in the journal, not in memory.
    assert stats.destinations["slow"].pending >= 2000 - 1 - 4


async def test_dynamic_names_get_their_own_bucket_from_a_pattern(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=4)
    queue.destination("endpoint:*", rate=Rate(1, per=10))
    calls: list[str] = []

    @queue.task
    async def deliver(endpoint: str) -> None:
        calls.append(endpoint)

    async with queue:
        for n in range(3):
            for _ in range(2):
                await queue.submit(deliver, f"endpoint:{n}", destination=f"endpoint:{n}")
        await run_until_idle(queue)
        assert sorted(calls) == ["endpoint:0", "endpoint:1", "endpoint:2"]
        clock.advance(10)
        await run_until_idle(queue)
    assert len(calls) == 6


async def test_a_concurrency_cap_holds_without_blocking_workers(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=8)
    queue.destination("crm", concurrency=2)
    in_flight = {"crm": 0, "most": 0}
    release = asyncio.Event()
    other_done = asyncio.Event()

    @queue.task(destination="crm")
    async def crm_call() -> None:
        in_flight["crm"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["crm"])
        await release.wait()
        in_flight["crm"] -= 1

    @queue.task(destination="other")
    async def other_call() -> None:
        other_done.set()

    async with queue:
        crm_jobs = await crm_call.submit_many([{}] * 10)
        other = await other_call.submit()
        # Two crm calls are stuck, yet six workers are free for other destinations.
        await asyncio.wait_for(other_done.wait(), timeout=5)
        assert in_flight["crm"] == 2
        release.set()
        for job in crm_jobs:
            await job.result(timeout=5)
        await other.result(timeout=5)
    assert in_flight["most"] == 2


async def test_pause_and_resume(make_queue: MakeQueue, db_path: str) -> None:
    queue = make_queue()
    ran: list[int] = []

    @queue.task(destination="esp")
    async def send(i: int) -> None:
        ran.append(i)

    async with queue:
        await queue.pause("esp")
        await send.submit_many([{"i": i} for i in range(5)])
        await run_until_idle(queue)
        assert ran == []
    # A pause outlives the process.
    async with queue:
        await run_until_idle(queue)
        assert ran == []
        await queue.resume("esp")
        await run_until_idle(queue)
    assert sorted(ran) == [0, 1, 2, 3, 4]


async def test_retry_after_holds_the_whole_destination_without_using_attempts(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=4)
    queue.destination("provider", retry=Retry(schedule=[1]))
    calls: list[tuple[int, float]] = []
    t0 = clock.now()

    @queue.task(destination="provider")
    async def enrich(i: int) -> None:
        calls.append((i, clock.now() - t0))
        if i == 0 and len(calls) == 1:
            raise RetryAfter(120)

    async with queue:
        first = await enrich.submit(0)
        await run_until_idle(queue)
        later = await enrich.submit_many([{"i": i} for i in range(1, 4)])
        await run_until_idle(queue)
        assert calls == [(0, 0.0)]  # the destination is held
        clock.advance(119)
        await run_until_idle(queue)
        assert len(calls) == 1
        clock.advance(1)
        await run_until_idle(queue)
        for job in [first, *later]:
            await job.result(timeout=5)
        info = await queue.get(first.id)
    assert sorted(i for i, _ in calls) == [0, 0, 1, 2, 3]
    assert all(at >= 120 for _, at in calls[1:])
    assert (info.attempts, info.snoozes) == (1, 1)


async def test_snoozes_are_bounded(make_queue: MakeQueue, clock: ManualClock) -> None:
    queue = make_queue()
    queue.destination("*", retry=Retry(schedule=[], max_snoozes=3))

    @queue.task
    async def stubborn() -> None:
        raise RetryAfter(10)

    async with queue:
        job = await stubborn.submit()
        for _ in range(5):
            await run_until_idle(queue)
            clock.advance(10)
        await run_until_idle(queue)
        info = await queue.get(job.id)
    assert info.state is JobState.DEAD
    assert info.snoozes == 3


async def test_permanent_failure_goes_straight_to_the_dead_letters(make_queue: MakeQueue) -> None:
    dead: list[int] = []
    queue = make_queue(on_dead=lambda info: dead.append(info.id))
    queue.destination("crm", retry=Retry(schedule=[60, 300]))

    @queue.task(destination="crm")
    async def post() -> None:
        raise PermanentFailure("404: no such deal")

    async with queue:
        job = await post.submit()
        await run_until_idle(queue)
        letters = await queue.dead_letters("crm")
    assert [d.id for d in letters] == [job.id]
    assert letters[0].attempts == 1
    assert letters[0].last_error is not None
    assert "404: no such deal" in letters[0].last_error
    assert dead == [job.id]


async def test_the_circuit_opens_probes_and_closes(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=1)
    queue.destination(
        "flaky", retry=Retry(schedule=[1] * 20), circuit=Circuit(failures=3, cooldown=60)
    )
    healthy = {"up": False}
    attempts: list[float] = []
    t0 = clock.now()

    @queue.task(destination="flaky")
    async def call(i: int) -> None:
        attempts.append(clock.now() - t0)
        if not healthy["up"]:
            raise ConnectionError("refused")

    async with queue:
        await call.submit_many([{"i": i} for i in range(5)])
        await run_until_idle(queue)
        assert len(attempts) == 3  # three failures in a row: the circuit opens
        clock.advance(30)
        await run_until_idle(queue)
        assert len(attempts) == 3  # open: nothing goes out, no attempts are used
        clock.advance(30)
        await run_until_idle(queue)
        assert len(attempts) == 4  # half-open: one probe, which fails: open again
        healthy["up"] = True
        clock.advance(60)
        await run_until_idle(queue)  # the probe succeeds and the circuit closes
        clock.advance(1)
        await run_until_idle(queue)
        stats = await queue.stats()
    assert stats.destinations.get("flaky") is None or stats.destinations["flaky"].pending == 0
    assert stats.succeeded == 5


async def test_redrive_and_purge(make_queue: MakeQueue, clock: ManualClock) -> None:
    queue = make_queue()
    queue.destination("hook", retry=Retry.never())
    up = {"ok": False}

    @queue.task(destination="hook")
    async def deliver(i: int) -> int:
        if not up["ok"]:
            raise ConnectionError("receiver down")
        return i

    async with queue:
        jobs = await deliver.submit_many([{"i": i} for i in range(4)])
        await run_until_idle(queue)
        assert len(await queue.dead_letters("hook")) == 4
        up["ok"] = True
        assert await queue.redrive([jobs[0].id, jobs[1].id]) == 2
        await run_until_idle(queue)
        assert await jobs[0].result(timeout=5) == 0
        info = await queue.get(jobs[0].id)
        assert info.attempts == 1  # reset by the redrive
        assert len(info.history) == 1  # the failed attempt is remembered
        assert await queue.redrive(destination="hook", spacing=10) == 2
        await run_until_idle(queue)
        assert (await queue.get(jobs[3].id)).state is JobState.PENDING  # 10 s later
        clock.advance(10)
        await run_until_idle(queue)
        assert await jobs[3].result(timeout=5) == 3
        up["ok"] = False
        extra = await deliver.submit(9)
        await run_until_idle(queue)
        assert await queue.purge(destination="hook") == 1
        assert await queue.dead_letters() == []
        with pytest.raises(Exception, match="no job"):
            await queue.get(extra.id)


async def test_an_open_circuit_outlives_a_restart(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    attempts: list[float] = []

    def flaky_queue() -> Queue:
        queue = make_queue(concurrency=1)
        queue.destination(
            "flaky", retry=Retry(schedule=[1] * 10), circuit=Circuit(failures=2, cooldown=60)
        )

        @queue.task(name="call", destination="flaky")
        async def call(i: int) -> None:
            attempts.append(clock.now())
            raise ConnectionError("refused")

        return queue

    queue = flaky_queue()
    async with queue:
        await queue.submit_many("call", [{"i": i} for i in range(3)])
        await run_until_idle(queue)
    assert len(attempts) == 2  # the circuit opened
    queue = flaky_queue()
    async with queue:
        clock.advance(30)
        await run_until_idle(queue)
        assert len(attempts) == 2  # still open after the restart
        clock.advance(30)
        await run_until_idle(queue)
    assert len(attempts) == 3  # the half-open probe


async def test_a_job_that_keeps_killing_its_worker_ends_in_the_dead_letters(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(lease=30)
    queue.destination("*", retry=Retry(schedule=[1]))  # two attempts in all
    died: list[int] = []
    queue.on_dead = lambda info: died.append(info.id)

    @queue.task
    async def poison() -> None:
        raise AssertionError("never reached: each attempt's process dies first")

    async with queue:
        job = await queue.submit(poison, delay=1)
        for attempt in range(2):
            # A process claims it, starts it and dies without a word (simulated:
            # the start is written, no outcome ever is).
            now = clock.now() + 1
            claimed = (await queue._journal.claim(f"dead:{attempt}", 10, now + 30, now)).jobs
            assert [c.id for c in claimed] == [job.id]
            started = [Started(job.id, claimed[0].token, now)]
            await queue._journal.record_outcomes(f"dead:{attempt}", now, started=started)
            clock.advance(32)
            await run_until_idle(queue)
        info = await queue.get(job.id)
    assert info.state is JobState.DEAD
    assert info.attempts == 2
    assert info.last_error is not None
    assert info.last_error.startswith("LeaseExpired")
    assert died == [job.id]
