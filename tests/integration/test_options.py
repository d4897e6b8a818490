"""`task.options(...)`: submit options that never collide with handler arguments."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable

import pytest

from asyncq import JobState, PayloadError, Queue
from asyncq.testing import ManualClock, run_until_idle

MakeQueue = Callable[..., Queue]


def row_count(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


async def test_option_names_can_also_be_handler_arguments(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task
    async def echo(key: str, delay: int = 0, priority: str = "", destination: str = "") -> str:
        return f"{key}/{delay}/{priority}/{destination}"

    async with queue:
        job = await echo.options(key="k").submit(key="handler-arg")
        again = await echo.options(key="k").submit(key="another")
        info = await queue.get(job.id)
        assert (info.key, info.payload) == ("k", {"key": "handler-arg"})
        assert (again, again.created) == (job, False)
        assert await job.result(timeout=5) == "handler-arg/0//"

        both = await echo.options(priority=3, destination="elsewhere").submit(
            "a", delay=7, priority="p", destination="d"
        )
        info = await queue.get(both.id)
        assert (info.priority, info.destination, info.key) == (3, "elsewhere", None)
        assert info.payload == {"key": "a", "delay": 7, "priority": "p", "destination": "d"}
        assert await both.result(timeout=5) == "a/7/p/d"


async def test_delay_at_and_priority_hold_back_and_order_jobs(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=1)
    order: list[str] = []

    @queue.task
    async def step(name: str) -> None:
        order.append(name)

    async with queue:
        await queue.pause("default")
        await step.options(delay=60).submit("delayed")
        await step.options(at=clock.now() + 30).submit("at")
        await step.submit("plain")
        await step.options(priority=9).submit("urgent")
        await queue.resume("default")
        await run_until_idle(queue)
        assert order == ["urgent", "plain"]
        clock.advance(30)
        await run_until_idle(queue)
        assert order == ["urgent", "plain", "at"]
        clock.advance(30)
        await run_until_idle(queue)
    assert order == ["urgent", "plain", "at", "delayed"]


async def test_options_apply_to_submit_many_but_a_key_cannot(
    make_queue: MakeQueue, clock: ManualClock, db_path: str
) -> None:
    queue = make_queue(concurrency=0)

    @queue.task
    async def send(to: str) -> None:
        pass

    async with queue:
        jobs = await send.options(delay=5, priority=2, destination="esp").submit_many(
            [{"to": "a"}, {"to": "b"}]
        )
        infos = [await queue.get(job.id) for job in jobs]
        with pytest.raises(TypeError, match="key= names one job"):
            await send.options(key="k").submit_many([{"to": "c"}])
        with pytest.raises(PayloadError, match="do not match"):
            await send.options(priority=1).submit("a", "extra")  # type: ignore[call-arg]
    assert [(i.payload, i.priority, i.destination, i.run_at) for i in infos] == [
        ({"to": "a"}, 2, "esp", clock.now() + 5),
        ({"to": "b"}, 2, "esp", clock.now() + 5),
    ]
    assert all(i.state is JobState.PENDING for i in infos)
    assert row_count(db_path) == 2


def test_options_are_immutable_and_reusable() -> None:
    queue = Queue(":memory:")

    @queue.task
    async def ping() -> None:
        pass

    urgent = ping.options(priority=10, key="p")
    with pytest.raises(dataclasses.FrozenInstanceError):
        urgent.priority = 0  # type: ignore[misc]
    assert urgent == ping.options(key="p", priority=10)
    assert (urgent.task, urgent.delay, urgent.at, urgent.destination) == (ping, None, None, None)
    with pytest.raises(TypeError):
        ping.options("positional")  # type: ignore[misc]
