"""Destinations on the controlled clock: pacing, fairness, caps, pause, holds, circuits."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from asyncq import (
    Circuit,
    JobInfo,
    JobState,
    JournalError,
    PermanentFailure,
    Queue,
    QueueFailed,
    Rate,
    Retry,
    RetryAfter,
)
from asyncq._journal import Booked, Claim, SqliteJournal
from asyncq.testing import ManualClock, run_until_idle
from tests.crashes import claim_start_and_die
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
        jobs = await call.submit_many([{"i": i} for i in range(5)])
        await run_until_idle(queue)
        assert len(attempts) == 3  # three failures in a row: the circuit opens
        # The other two are refused at once, without a call: a failed attempt each.
        refused = await queue.get(jobs[4].id)
        assert refused.attempts == 1
        assert refused.last_error is not None
        assert refused.last_error.startswith("CircuitOpen: not called: the circuit of ")
        clock.advance(30)
        await run_until_idle(queue)
        assert len(attempts) == 3  # open: nothing goes out
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


async def test_jobs_refused_by_an_open_circuit_take_no_worker(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    died: list[int] = []
    all_dead = asyncio.Event()

    def on_dead(info: JobInfo) -> None:
        died.append(info.id)
        if len(died) == 51:
            all_dead.set()

    queue = make_queue(concurrency=2, on_dead=on_dead)
    queue.destination("dead", retry=Retry.never(), circuit=Circuit(failures=1, cooldown=60))
    release, both_busy = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    @queue.task
    async def call(kind: str) -> None:
        calls.append(kind)
        if kind == "dead":
            raise ConnectionError("refused")
        if calls.count("slow") == 2:
            both_busy.set()
        await release.wait()

    async with queue:
        await queue.submit(call, "dead", destination="dead")
        await run_until_idle(queue)  # one failure: the circuit is open for 60 s
        busy = [await queue.submit(call, "slow", destination="slow") for _ in range(2)]
        await asyncio.wait_for(both_busy.wait(), timeout=5)
        # Both workers are taken, yet the dead destination's jobs are refused (and,
        # with no retries, dead) without the clock moving.
        await queue.submit_many(call, [{"kind": "dead"}] * 50, destination="dead")
        await asyncio.wait_for(all_dead.wait(), timeout=5)
        assert calls == ["dead", "slow", "slow"]
        dead = await queue.dead_letters("dead", limit=100)
        errors = [(d.last_error or "").split(":")[0] for d in dead]
        assert sorted(errors) == ["CircuitOpen"] * 50 + ["ConnectionError"]
        release.set()
        for job in busy:
            await job.result(timeout=5)


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
            taken = await claim_start_and_die(queue._journal, f"dead:{attempt}", clock.now() + 1)
            assert taken == [job.id]
            clock.advance(32)
            await run_until_idle(queue)
        info = await queue.get(job.id)
    assert info.state is JobState.DEAD
    assert info.attempts == 2
    assert info.last_error is not None
    assert info.last_error.startswith("LeaseExpired")
    assert died == [job.id]


async def test_a_redeploy_without_a_circuit_drops_the_old_circuit(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    def deploy(circuit: Circuit | None) -> Queue:
        queue = make_queue(concurrency=4)
        queue.destination("hooks", retry=Retry(schedule=[1] * 5), circuit=circuit)
        return queue

    queue = deploy(Circuit(failures=2, cooldown=60))

    @queue.task(name="call", destination="hooks")
    async def failing() -> None:
        raise ConnectionError("refused")

    async with queue:
        await queue.submit(failing)
        await run_until_idle(queue)
        clock.advance(1)
        await run_until_idle(queue)  # two failures in a row: open
        assert [r.circuit for r in await queue._journal.load_destinations()] == ["open"]
    clock.advance(60)  # its cooldown is over: the record alone would let one probe through

    queue = deploy(None)
    all_in = asyncio.Event()
    started: list[int] = []

    @queue.task(name="call", destination="hooks")
    async def waits_for_the_others(i: int = 0) -> None:
        started.append(i)
        if len(started) == 4:
            all_in.set()
        await all_in.wait()

    async with queue:
        await queue.purge(destination="hooks")
        jobs = await waits_for_the_others.submit_many([{"i": i} for i in range(4)])
        # No circuit, so no probe to wait for: all four calls are in flight at once.
        await asyncio.wait_for(all_in.wait(), timeout=5)
        for job in jobs:
            await job.result(timeout=5)
        # ...and the journal's record no longer says otherwise.
        assert [r.circuit for r in await queue._journal.load_destinations()] == ["closed"]


async def test_a_shorter_cooldown_takes_effect_after_a_redeploy(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    attempts: list[float] = []
    t0 = clock.now()

    def deploy(cooldown: float) -> Queue:
        queue = make_queue(concurrency=1)
        queue.destination(
            "api", retry=Retry(schedule=[30] * 5), circuit=Circuit(failures=1, cooldown=cooldown)
        )

        @queue.task(name="call", destination="api")
        async def call() -> None:
            attempts.append(clock.now() - t0)
            raise ConnectionError("refused")

        return queue

    async with deploy(cooldown=3600) as queue:
        await queue.submit("call")
        await run_until_idle(queue)  # open for an hour
    async with deploy(cooldown=60) as queue:
        for _ in range(3):
            clock.advance(30)
            await run_until_idle(queue)
    # Refused at 30 s; the probe at 60 s (the new cooldown), not after the old hour.
    assert attempts == [0, 60]


async def test_a_fast_destination_reaches_its_rate_though_timers_fire_late(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    # Rate(1000) with the default burst; every wake-up comes up to 4 ms late, as
    # timers and a busy event loop make them. Late calls are caught up, so the
    # destination gets its rate, and never more than the bound.
    queue = make_queue(concurrency=16)
    rate = Rate(1000)
    queue.destination("api", rate=rate)
    calls: list[float] = []

    @queue.task(destination="api")
    async def call(i: int) -> None:
        calls.append(clock.now())

    rng = random.Random(7)
    async with queue:
        await call.submit_many([{"i": i} for i in range(2000)])
        await run_until_idle(queue)
        while len(calls) < 2000:
            clock.advance(rng.uniform(0.0002, 0.004))
            await run_until_idle(queue)
    achieved = (len(calls) - 1) / (calls[-1] - calls[0])
    assert achieved >= 0.98 * rate.per_second
    for window in (0.0, 0.001, 0.01, 0.1, 1.0):
        assert most_in_any_window(calls, window) <= rate.burst + rate.per_second * window + 1e-9


class CountingJournal(SqliteJournal):
    """The real journal, counting the dispatcher's calls and failing some of them:
    `faults[name]` transient (or, with `lasting=True`, lasting) errors first."""

    def __init__(self, path: str, faults: dict[str, int], *, lasting: bool = False) -> None:
        super().__init__(path)
        self.faults = faults
        self.lasting = lasting
        self.calls: Counter[str] = Counter()

    def _maybe_fail(self, name: str) -> None:
        self.calls[name] += 1
        if self.faults.get(name, 0) > 0:
            self.faults[name] -= 1
            raise JournalError(self.path, "disk I/O error", transient=not self.lasting)

    async def claim(self, *args: Any, **kwargs: Any) -> Claim:
        self._maybe_fail("claim")
        return await super().claim(*args, **kwargs)

    async def take_tokens(self, *args: Any, **kwargs: Any) -> dict[str, Booked]:
        self._maybe_fail("take_tokens")
        return await super().take_tokens(*args, **kwargs)

    async def next_run_at(self) -> float | None:
        self._maybe_fail("next_run_at")
        return await super().next_run_at()

    async def changed_elsewhere(self) -> bool:
        self._maybe_fail("changed_elsewhere")
        return await super().changed_elsewhere()


async def test_a_capped_backlog_does_not_make_the_dispatcher_spin(db_path: str) -> None:
    # Real time: a destination paced at 100/s, with a backlog in the journal behind
    # its full lane. The dispatcher claims again when the lane has room (or at a
    # poll), not in a loop while it has none: that made about 1,500 claims and as
    # many next_run_at reads a second here, a journal round trip each.
    journal = CountingJournal(db_path, {})
    queue = Queue(db_path, journal=journal, concurrency=4)
    queue.destination("slow", rate=Rate(100))
    fifty = asyncio.Event()
    ran: list[int] = []

    @queue.task(destination="slow")
    async def call(i: int) -> None:
        ran.append(i)
        if len(ran) == 50:
            fifty.set()

    async with queue:
        await call.submit_many([{"i": i} for i in range(1000)])
        await asyncio.wait_for(fifty.wait(), timeout=10)  # about half a second
        calls = journal.calls["claim"] + journal.calls["next_run_at"]
    assert calls < 100, journal.calls


@pytest.mark.parametrize("method", ["claim", "take_tokens", "next_run_at", "changed_elsewhere"])
async def test_the_dispatcher_survives_transient_journal_faults(
    db_path: str, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    journal = CountingJournal(db_path, {method: 3})
    queue = Queue(db_path, journal=journal, concurrency=4, poll_interval=0.01)
    queue.destination("api", rate=Rate(500))  # paced: calls are booked, also by take_tokens
    done: list[int] = []

    @queue.task(destination="api")
    async def call(i: int) -> None:
        done.append(i)

    with caplog.at_level(logging.WARNING, logger="asyncq.dispatcher"):
        async with queue:
            jobs = await call.submit_many([{"i": i} for i in range(40)])
            for job in jobs:
                await job.result(timeout=10)
    assert sorted(done) == list(range(40))  # nothing lost, nothing twice
    assert journal.faults[method] == 0  # the faults happened, and were retried
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncq.dispatcher"]
    # Once per fault episode, not once per retry: the fault, then its end.
    assert len(messages) == 2, messages
    assert "disk I/O error" in messages[0]
    assert "works again" in messages[1]


async def test_a_lasting_journal_fault_stops_the_dispatcher(db_path: str) -> None:
    journal = CountingJournal(db_path, {"claim": 1}, lasting=True)
    queue = Queue(db_path, journal=journal, concurrency=4)

    @queue.task
    async def call() -> None:
        pass

    async def submit_and_wait() -> None:
        async with queue:
            job = await call.submit()
            await job.result(timeout=5)

    with pytest.raises((JournalError, QueueFailed)) as raised:
        await submit_and_wait()
    assert "disk I/O error" in str(raised.value)
    assert journal.calls["claim"] == 1  # not retried


async def test_a_capped_destination_goes_on_without_polls_and_never_over_its_cap(
    make_queue: MakeQueue,
) -> None:
    # A claimed job holds a slot of the cap until its outcome is written: each next
    # claim must follow the outcomes that free slots, not a poll (never, here: the
    # clock does not move).
    queue = make_queue(concurrency=8, poll_interval=60)
    queue.destination("two", concurrency=2)
    running = 0
    most = 0

    @queue.task(name="call", destination="two")
    async def call(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(random.randrange(3)):  # calls that end in different turns
            await asyncio.sleep(0)
        running -= 1
        return i

    async with queue:
        jobs = await call.submit_many([{"i": i} for i in range(40)])
        results = [await job.result(timeout=10) for job in jobs]
    assert results == list(range(40))
    assert most == 2
