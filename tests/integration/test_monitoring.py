"""stats() against scripted runs on the controlled clock, and backlog alerts
(`on_backlog`) for the causes a backlog has: a failing receiver, a rate limit
below the arrivals, no worker at all. The alerts across real processes are in
tests/process/test_monitoring.py."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

import pytest

from asyncq import (
    BacklogCause,
    BacklogEvent,
    Circuit,
    PermanentFailure,
    Queue,
    Rate,
    Retry,
)
from asyncq.testing import ManualClock, run_until_idle

MakeQueue = Callable[..., Queue]

# Durations come from a histogram whose buckets span 9 %: within 4.5 % of the truth.
LATENCY = 0.045


class Receiver:
    """A receiver whose calls all answer together, when the test says."""

    def __init__(self) -> None:
        self.calls = 0
        self._answer = asyncio.Event()
        self._reached: tuple[int, asyncio.Event] | None = None

    async def call(self) -> None:
        self.calls += 1
        if self._reached is not None and self.calls >= self._reached[0]:
            self._reached[1].set()
        await self._answer.wait()

    async def wait_for_calls(self, total: int) -> None:
        if self.calls < total:
            reached = asyncio.Event()
            self._reached = (total, reached)
            await asyncio.wait_for(reached.wait(), 10)

    def answer(self) -> None:
        self._answer.set()
        self._answer = asyncio.Event()


async def test_stats_follow_a_scripted_minute(make_queue: MakeQueue, clock: ManualClock) -> None:
    # Each second of the clock: 10 jobs to "crm", whose calls take 0.25 s. Of each
    # ten, one is refused (400: dead) and one fails once, to succeed 0.75 s later.
    queue = make_queue(concurrency=16)
    queue.destination("crm", rate=Rate(100, burst=20), retry=Retry(schedule=[0.75]))
    receiver = Receiver()
    attempts: Counter[int] = Counter()

    @queue.task(name="post", destination="crm")
    async def post(i: int) -> None:
        attempts[i] += 1
        await receiver.call()
        if i % 10 == 0:
            raise PermanentFailure("400 Bad Request")
        if i % 10 == 1 and attempts[i] == 1:
            raise ConnectionError("connection reset")

    calls = 0
    async with queue:
        for second in range(60):
            await post.submit_many([{"i": 10 * second + k} for k in range(10)])
            calls += 11 if second else 10  # and the last second's flaky job, due now
            await receiver.wait_for_calls(calls)
            clock.advance(0.25)
            receiver.answer()
            await run_until_idle(queue)
            if second < 59:
                clock.advance(0.75)
        stats = await queue.stats()  # at 59.25 s: the journal's whole life

        crm = stats.destinations["crm"]
        # Counts are exact: 8 of each ten succeed at once, the flaky one a second
        # later (the last second's waits to retry), the refused one is dead.
        assert (crm.succeeded, crm.dead, crm.scheduled, crm.ready, crm.running) == (
            8 * 60 + 59,
            60,
            1,
            0,
            0,
        )
        assert stats.at == clock.now()
        # Rates over the last minute, within 2 %: 10 arrive and 10 finish a second,
        # with 11 calls (one a retry); 60 retries and 60 dead a minute.
        assert crm.arrival_rate == pytest.approx(10.0, rel=0.02)
        assert crm.completion_rate == pytest.approx(10.0, rel=0.02)
        assert crm.call_rate == pytest.approx(11.0, rel=0.02)
        assert crm.retries_per_minute == pytest.approx(60.0, rel=0.02)
        assert crm.dead_per_minute == pytest.approx(60.0, rel=0.02)
        for latency in (crm.latency_p50, crm.latency_p95, crm.latency_p99, stats.latency_p99):
            assert latency == pytest.approx(0.25, rel=LATENCY)
        assert crm.limit == 100.0
        assert crm.limit_used == pytest.approx(0.11, rel=0.02)
        assert crm.oldest_ready_age is None  # nothing is ready
        assert stats.workers == 1  # this queue

        # A second queue on the file, running no jobs, sees the same minute.
        async with Queue(queue.path, concurrency=0, clock=clock) as other:
            seen = await other.stats()
            assert seen.workers == 1
            assert seen.destinations["crm"].completion_rate == pytest.approx(10.0, rel=0.02)
            assert seen.destinations["crm"].limit == 100.0
    async with Queue(queue.path, concurrency=0, clock=clock) as other:
        after = await other.stats()
    # Once the first has stopped, its last counts are written and it signed off.
    assert after.destinations == stats.destinations
    assert after.workers == 0


class Alerts:
    """What a backlog callback was told, with a wait for the next event."""

    def __init__(self) -> None:
        self.events: list[BacklogEvent] = []
        self._new = asyncio.Event()

    def __call__(self, event: BacklogEvent) -> None:
        self.events.append(event)
        self._new.set()


async def tick(
    queue: Queue, clock: ManualClock, seconds: float = 1.0, *, look: bool = True
) -> None:
    """Advance the clock by `seconds` and run what came due; with `look`, the
    backlog watch's next look is due by then (it looks every whole second from the
    queue's start) and is waited for."""
    looked = queue._backlog.next_check() if look else None
    clock.advance(seconds)
    if looked is not None:
        await asyncio.wait_for(looked, 10)
    await run_until_idle(queue)


async def test_an_alert_when_the_receiver_goes_down_and_its_end_when_it_is_back(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=8)
    queue.destination("crm", retry=Retry(schedule=[2] * 60), circuit=Circuit(5, cooldown=5))
    queue.destination("mail")
    down = True

    @queue.task(name="post", destination="crm")
    async def post(i: int) -> None:
        if down:
            raise ConnectionError("connection refused")

    @queue.task(name="send", destination="mail")
    async def send(i: int) -> None:
        pass

    alerts = Alerts()
    queue.on_backlog(alerts, depth=30)
    async with queue:
        for second in range(30):
            await post.submit_many([{"i": 5 * second + k} for k in range(5)])
            await send.submit_many([{"i": 5 * second + k} for k in range(5)])
            await tick(queue, clock)
            if alerts.events:
                break
        (alert,) = alerts.events
        assert (alert.destination, alert.cleared, alert.cause) == ("crm", False, "failing")
        assert alert.depth >= 30
        assert alert.arrival_rate > 0
        assert alert.drain_rate == 0.0  # nothing to crm has finished
        assert alert.drain_time is None
        assert "failing" in alert.detail
        assert "30" in alert.reason
        # The receiver comes back: the retries drain the backlog, and the alert ends.
        down = False
        for _ in range(30):
            await tick(queue, clock)
            if len(alerts.events) == 2:
                break
        cleared = alerts.events[1]
        assert (cleared.destination, cleared.cleared, cleared.cause) == ("crm", True, "failing")
        assert cleared.depth <= 15
        stats = await queue.stats()
        assert stats.destinations["crm"].circuit == "closed"
        assert "mail" not in {e.destination for e in alerts.events}


async def test_a_healthy_queue_near_its_limit_never_alerts(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue()
    queue.destination("mail", rate=Rate(5))

    @queue.task(name="send", destination="mail")
    async def send(i: int) -> None:
        pass

    alerts = Alerts()
    queue.on_backlog(alerts, depth=5, oldest_age=3, growing_for=5)
    async with queue:
        for step in range(4 * 60):  # a minute: a job every 0.25 s, 80 % of the limit
            await send.submit(i=step)
            await tick(queue, clock, 0.25, look=step % 4 == 3)
        stats = await queue.stats()
        assert queue._backlog.checks == 60  # it looked every second
    assert alerts.events == []
    mail = stats.destinations["mail"]
    assert mail.limit_used == pytest.approx(0.8, rel=0.05)
    assert mail.arrival_rate == pytest.approx(4.0, rel=0.05)


async def test_a_rate_limit_below_the_arrivals_is_named_with_the_drain_time(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue()
    queue.destination("mail", rate=Rate(2))

    @queue.task(name="send", destination="mail")
    async def send(i: int) -> None:
        pass

    alerts = Alerts()
    queue.on_backlog(alerts, depth=30, destination="mail")
    async with queue:
        for second in range(30):
            await send.submit_many([{"i": 5 * second + k} for k in range(5)])
            await tick(queue, clock, 0.5, look=False)
            await tick(queue, clock, 0.5)
            if alerts.events:
                break
    (alert,) = alerts.events
    assert alert.cause is BacklogCause.RATE_LIMITED
    assert alert.arrival_rate == pytest.approx(5.0, rel=0.05)
    assert alert.drain_rate == pytest.approx(2.0, rel=0.1)
    assert alert.drain_time == pytest.approx(alert.depth / 2.0)
    assert alert.detail == (
        f"rate limit 2.0/s is below arrival {alert.arrival_rate:.1f}/s: "
        f"{alert.depth} jobs drain in {alert.depth / 2:.0f} s"
    )


async def test_a_producer_with_no_worker_anywhere_is_told_so(
    make_queue: MakeQueue, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    producer = make_queue(concurrency=0)

    @producer.task(name="send", destination="mail")
    async def send(i: int) -> None:
        pass

    told: list[BacklogEvent] = []

    async def alert(event: BacklogEvent) -> None:  # a coroutine function works too
        told.append(event)

    producer.on_backlog(alert, oldest_age=5)
    caplog.set_level(logging.WARNING, logger="asyncq")
    async with producer:
        await send.submit_many([{"i": i} for i in range(10)])
        for _ in range(5):
            looked = producer._backlog.next_check()
            clock.advance(1)
            await asyncio.wait_for(looked, 10)
    (event,) = told
    assert (event.destination, event.cause, event.depth) == ("mail", "no_workers", 10)
    assert event.oldest_age == 5.0
    assert event.drain_time is None
    assert "asyncq worker" in event.detail
    (record,) = [r for r in caplog.records if "backlog" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert (record.destination, record.cause) == ("mail", "no_workers")  # type: ignore[attr-defined]


async def test_a_failing_callback_is_logged_and_the_watch_goes_on(
    make_queue: MakeQueue, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    producer = make_queue(concurrency=0)

    @producer.task(name="send", destination="mail")
    async def send(i: int) -> None:
        pass

    def broken(event: BacklogEvent) -> None:
        raise RuntimeError("the pager is down")

    alerts = Alerts()
    producer.on_backlog(broken, depth=1)
    caplog.set_level(logging.WARNING, logger="asyncq")
    async with producer:
        await send.submit(i=1)
        looked = producer._backlog.next_check()
        clock.advance(1)
        await asyncio.wait_for(looked, 10)
        producer.on_backlog(alerts, depth=1)  # added while running: it is watched too
        looked = producer._backlog.next_check()
        clock.advance(1)
        await asyncio.wait_for(looked, 10)
        assert [e.destination for e in alerts.events] == ["mail"]
        (failure,) = [r for r in caplog.records if "callback" in r.getMessage()]
        assert failure.exc_info is not None
        assert "the pager is down" in str(failure.exc_info[1])
        await producer.get(1)  # the queue works: the watch did not take it down


async def test_the_whole_queue_can_be_watched_as_one(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    producer = make_queue(concurrency=0)

    @producer.task(name="send")
    async def send(i: int) -> None:
        pass

    alerts = Alerts()
    producer.on_backlog(alerts, depth=6, total=True)
    async with producer:
        for destination in ("a", "b", "c"):
            await producer.submit(send, i=1, destination=destination)
            await producer.submit(send, i=2, destination=destination)
        looked = producer._backlog.next_check()
        clock.advance(1)
        await asyncio.wait_for(looked, 10)
    (event,) = alerts.events
    assert (event.destination, event.depth, event.cause) == (None, 6, "no_workers")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "needs a threshold"),
        ({"depth": 0}, "depth must be an int >= 1"),
        ({"depth": True}, "depth must be an int >= 1"),
        ({"oldest_age": float("nan")}, "oldest_age must be a finite number"),
        ({"growing_for": -1}, "growing_for must be a finite number"),
        ({"depth": 5, "destination": "crm", "total": True}, "not both"),
        ({"depth": 5, "destination": "bad\nname"}, "destination name"),
    ],
)
def test_on_backlog_refuses_what_it_cannot_watch(
    make_queue: MakeQueue, options: dict[str, object], error: str
) -> None:
    queue = make_queue()
    with pytest.raises((TypeError, ValueError), match=error):
        queue.on_backlog(lambda event: None, **options)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        queue.on_backlog("not a function", depth=5)  # type: ignore[arg-type]
    assert queue._backlog.rules == []


async def test_stats_read_without_a_turn_of_the_writer(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    # stats() reads on the second connection: no writer turn, so a submit never
    # waits behind it (benchmarks/stats.py measures the latencies).
    queue = make_queue(concurrency=0)

    @queue.task(name="send")
    async def send(i: int) -> None:
        pass

    async with queue:
        await send.submit(i=1)
        commits = queue._journal.commits  # type: ignore[attr-defined]
        reads = await asyncio.gather(*(queue.stats() for _ in range(20)))
        assert queue._journal.commits == commits  # type: ignore[attr-defined]
    assert {stats.ready for stats in reads} == {1}
