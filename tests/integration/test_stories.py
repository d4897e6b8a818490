"""The three acceptance stories of DESIGN.md, on the controlled clock, each on a
SQLite file and on a PostgreSQL schema."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from asyncq import Circuit, Http, JobInfo, Queue, Rate, Retry, RetryAfter
from asyncq.testing import ManualClock, run_until_idle
from tests.pacing import drive, most_in_any_window
from tests.postgres import fresh_schema, postgres_dsn_or_skip

MakeQueue = Callable[..., Queue]


@pytest.fixture(params=["sqlite", "postgresql"])
async def make_queue(
    request: pytest.FixtureRequest, db_path: str, clock: ManualClock
) -> AsyncIterator[MakeQueue]:
    """Queues on the controlled clock and one journal: a SQLite file, or a fresh
    PostgreSQL schema (dropped afterwards)."""

    def on(path: str) -> MakeQueue:
        def make(**options: Any) -> Queue:
            options.setdefault("clock", clock)
            return Queue(path, **options)

        return make

    if request.param == "sqlite":
        yield on(db_path)
        return
    async with fresh_schema(postgres_dsn_or_skip()) as dsn:
        # The stories are about the queue's behaviour in clock time, not about
        # surviving a crash: commits need not wait for the WAL flush (story 1
        # commits some 20,000 times; at ~2 ms a flush here that doubles its run).
        yield on(f"{dsn}&synchronous_commit=off")


async def test_story_1_a_burst_of_50000_sends_goes_out_at_1000_a_minute(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    rate = Rate(1000, per=60, burst=20)
    sent: list[float] = []

    def esp_queue() -> Queue:
        queue = make_queue(concurrency=32)
        queue.destination("esp", rate=rate)

        @queue.task(name="send_email", destination="esp")
        async def send_email(to: str) -> None:
            sent.append(clock.now())

        return queue

    queue = esp_queue()
    async with queue:
        await queue.submit_many(
            "send_email", [{"to": f"user{i}@example.com"} for i in range(50_000)]
        )
        await drive(queue, clock, step=1.0, until=lambda: len(sent) >= 20_000, limit=3600)
    # A restart half-way does not reset the pace: no free burst after it.
    queue = esp_queue()
    async with queue:
        await drive(queue, clock, step=1.0, until=lambda: len(sent) == 50_000, limit=3600)
    assert len(sent) == 50_000
    for window in (1.0, 10.0, 60.0, 600.0):
        assert most_in_any_window(sent, window) <= rate.burst + rate.per_second * window
    minutes = (sent[-1] - sent[0]) / 60
    assert 49 <= minutes <= 51  # at the pace allowed, not slower


@pytest.fixture
async def receiver() -> AsyncIterator[dict[str, Any]]:
    """A real HTTP server on 127.0.0.1: one receiver that can be down, one healthy."""
    state: dict[str, Any] = {"dead_up": False, "dead_got": [], "healthy_got": [], "dead_calls": 0}

    async def dead(request: web.Request) -> web.Response:
        state["dead_calls"] += 1
        if not state["dead_up"]:
            return web.Response(status=503, text="receiver down")
        state["dead_got"].append(await request.json())
        return web.Response(status=204)

    async def healthy(request: web.Request) -> web.Response:
        state["healthy_got"].append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/dead", dead)
    app.router.add_post("/healthy", healthy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["base"] = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_story_2_a_webhook_survives_a_dead_receiver(
    make_queue: MakeQueue, clock: ManualClock, receiver: dict[str, Any]
) -> None:
    died: list[JobInfo] = []
    all_died = asyncio.Event()

    def on_dead(info: JobInfo) -> None:
        died.append(info)
        if len(died) == 20:
            all_died.set()

    queue = make_queue(concurrency=8, on_dead=on_dead)
    ladder = [60, 300, 1800, 7200]
    circuit = Circuit()  # the default: open after 10 failures in a row, for 60 s
    t0 = clock.now()
    # The built-in delivery classifies the answers: a 503 is retried on the ladder.
    local = Http(allow=["127.0.0.1"])
    queue.destination("receiver:*", retry=Retry(schedule=ladder), circuit=circuit, http=local)
    async with queue:
        base = receiver["base"]
        # 20 deals close: 20 webhooks to a receiver that is down, enough to trip
        # its circuit, and 20 to a healthy one.
        webhooks = [
            await queue.submit_http(
                "receiver:dead", f"{base}/dead", json={"deal": n, "stage": "won"}
            )
            for n in range(20)
        ]
        others = [
            await queue.submit_http("receiver:ok", f"{base}/healthy", json={"n": n})
            for n in range(20)
        ]
        await run_until_idle(queue)
        # The healthy receiver is not slowed by the dead one: all done at t0.
        assert len(receiver["healthy_got"]) == 20
        assert [(await job.result(timeout=5))["status"] for job in others] == [204] * 20
        # Every webhook keeps to its own ladder, circuit or not, and is dead by its
        # last retry plus one cooldown.
        last_retry = t0 + sum(ladder)
        deadline = last_retry + circuit.cooldown
        await drive(queue, clock, step=30, until=lambda: clock.now() >= deadline, limit=deadline)
        await asyncio.wait_for(all_died.wait(), timeout=5)
        dead = await queue.dead_letters("receiver:dead")
        assert sorted(d.id for d in dead) == sorted(w.id for w in webhooks)
        assert sorted(d.id for d in died) == sorted(w.id for w in webhooks)  # on_dead, once
        for letter in dead:
            assert letter.attempts == 5
            assert letter.finished_at is not None
            assert letter.finished_at <= deadline
            # Its own ladder from its first attempt: at t0, or, where claims
            # skip a destination whose circuit is open (PostgreSQL, so that every
            # host sees it), at the circuit's probe time.
            first = letter.history[0][0]
            assert round(first - t0) in (0, circuit.cooldown), letter.history
            assert [round(h[0] - first) for h in letter.history] == [0, 60, 360, 2160, 9360]
            # The last error says why: the receiver's answer, or the open circuit.
            assert letter.last_error is not None
            assert letter.last_error.startswith(
                (
                    f"HttpStatusError: HTTP 503 Service Unavailable from POST {base}/dead: "
                    "receiver down",
                    "CircuitOpen: not called: the circuit of destination 'receiver:dead' "
                    "is open after repeated failures",
                )
            ), letter.last_error
        # The circuit spared the dead receiver: the calls that tripped it (and
        # those already in flight), then one probe per retry round.
        assert receiver["dead_calls"] <= circuit.failures + 8 + len(ladder)

        receiver["dead_up"] = True  # the receiver recovers; someone redrives
        assert await queue.redrive(destination="receiver:dead") == 20
        await run_until_idle(queue)  # the circuit is open: refused, retried in 60 s
        clock.advance(60)
        await run_until_idle(queue)  # the probe succeeds, the circuit closes
        assert [(await w.result(timeout=5))["status"] for w in webhooks] == [204] * 20
    assert sorted(e["deal"] for e in receiver["dead_got"]) == list(range(20))


class Provider:
    """An enrichment API that allows `limit` calls in any `window` seconds and
    answers 429 with Retry-After when pushed past it (or when told to)."""

    def __init__(self, clock: ManualClock, limit: int, window: float) -> None:
        self.clock, self.limit, self.window = clock, limit, window
        self.calls: list[float] = []
        self.rejected: list[float] = []
        self.push_back_at: int | None = None  # answer 429 once, on this call

    def call(self) -> None:
        now = self.clock.now()
        recent = len(self.calls) - bisect.bisect_right(self.calls, now - self.window)
        if recent >= self.limit or len(self.calls) == self.push_back_at:
            self.push_back_at = None
            self.rejected.append(now)
            raise RetryAfter(300)
        self.calls.append(now)


async def test_story_3_enrichment_under_a_hard_limit(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    provider = Provider(clock, limit=100, window=60)
    provider.push_back_at = 5_000  # half-way, the provider pushes back for 5 minutes
    queue = make_queue(concurrency=16)
    # 95 a minute with bursts of 5: at most 5 + 95 = 100 calls in any minute.
    queue.destination("enrichment", rate=Rate(95, per=60, burst=5), retry=Retry(schedule=[60]))
    enriched: list[int] = []

    @queue.task(destination="enrichment")
    async def enrich(contact: int) -> None:
        provider.call()
        enriched.append(contact)

    async with queue:
        await enrich.submit_many([{"contact": c} for c in range(10_000)])
        await drive(queue, clock, step=3.0, until=lambda: len(enriched) == 10_000, limit=8 * 3600)
    assert sorted(enriched) == list(range(10_000))
    assert len(provider.rejected) == 1  # only the deliberate push-back
    every_call = sorted(provider.calls + provider.rejected)
    assert most_in_any_window(every_call, 60) <= 100
    # Retry-After held the whole destination: nothing went out for 300 s after the 429.
    pushed = provider.rejected[0]
    assert not [t for t in provider.calls if pushed < t < pushed + 300]
