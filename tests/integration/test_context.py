"""`current_job()` inside handlers, and the queue's lifespan for shared resources."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from asyncq import AsyncqError, JobContext, Queue, Retry, current_job
from asyncq.testing import ManualClock, run_until_idle

MakeQueue = Callable[..., Queue]


async def test_a_handler_knows_its_job_and_attempt(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue()
    queue.destination("*", retry=Retry(schedule=[1]))
    seen: list[JobContext] = []

    @queue.task(name="greet", destination="mail")
    async def greet(fail: bool) -> None:
        seen.append(current_job())
        if fail and len(seen) == 1:
            raise ConnectionError("once")

    async with queue:
        job = await greet.submit(fail=True)
        await run_until_idle(queue)
        clock.advance(1)
        await run_until_idle(queue)
        other = await queue.submit(greet, fail=False, destination="sms")
        await run_until_idle(queue)
    assert [(c.id, c.task, c.destination, c.attempt) for c in seen] == [
        (job.id, "greet", "mail", 1),
        (job.id, "greet", "mail", 2),
        (other.id, "greet", "sms", 1),
    ]
    assert seen[0].parents == {}
    assert dict(seen[0].state) == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].attempt = 5  # type: ignore[misc]


async def test_tasks_a_handler_starts_see_its_job(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=2)

    @queue.task
    async def parent(i: int) -> list[int]:
        async def child() -> int:
            await asyncio.sleep(0)
            return current_job().id

        return list(await asyncio.gather(child(), asyncio.create_task(child())))

    async with queue:
        jobs = [await parent.submit(i) for i in range(4)]
        await run_until_idle(queue)
        results = [await job.result(timeout=10) for job in jobs]
    assert results == [[job.id, job.id] for job in jobs]


async def test_current_job_outside_a_handler_says_so() -> None:
    with pytest.raises(LookupError, match="outside a job") as refused:
        current_job()
    assert isinstance(refused.value, AsyncqError)


async def test_the_lifespan_opens_one_session_for_every_job_and_closes_it_on_stop(
    make_queue: MakeQueue,
) -> None:
    sessions: list[aiohttp.ClientSession] = []
    events: list[str] = []
    release = asyncio.Event()
    started = asyncio.Event()

    @asynccontextmanager
    async def resources(queue: Queue) -> AsyncIterator[dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            sessions.append(http)
            events.append("open")
            yield {"http": http}
            events.append("closing")

    queue = make_queue(concurrency=4, lifespan=resources)

    @queue.task
    async def use(wait: bool) -> int:
        http = current_job().state["http"]
        if wait:
            started.set()
            await release.wait()
            events.append(f"handler done, session closed: {http.closed}")
        return id(http)

    async with queue:
        first, second = await use.submit(False), await use.submit(False)
        assert await first.result(timeout=10) == await second.result(timeout=10)
        await use.submit(True)
        await started.wait()
        asyncio.get_running_loop().call_soon(release.set)
    assert len(sessions) == 1
    assert sessions[0].closed
    assert events == ["open", "handler done, session closed: False", "closing"]
    gc.collect()  # an unclosed session would warn here (warnings are errors)


async def test_a_producer_does_not_enter_the_lifespan(make_queue: MakeQueue) -> None:
    entered: list[Queue] = []

    @asynccontextmanager
    async def resources(queue: Queue) -> AsyncIterator[None]:
        entered.append(queue)
        yield

    async with make_queue(concurrency=0, lifespan=resources):
        pass
    queue = make_queue(lifespan=resources)
    async with queue:
        pass
    assert entered == [queue]


async def test_a_lifespan_that_fails_on_enter_fails_start_cleanly(make_queue: MakeQueue) -> None:
    fail = True

    @asynccontextmanager
    async def resources(queue: Queue) -> AsyncIterator[dict[str, int]]:
        if fail:
            raise OSError("no network")
        yield {"ready": 1}

    queue = make_queue(lifespan=resources)

    @queue.task
    async def ready() -> int:
        return int(current_job().state["ready"])

    with pytest.raises(OSError, match="no network"):
        await queue.start()
    assert queue._journal._db is None  # type: ignore[attr-defined]  # its thread has ended
    fail = False
    async with queue:  # and it can start again
        assert await (await ready.submit()).result(timeout=10) == 1


async def test_a_lifespan_that_yields_no_mapping_is_refused(make_queue: MakeQueue) -> None:
    @asynccontextmanager
    async def resources(queue: Queue) -> AsyncIterator[Any]:
        yield ["not", "a", "mapping"]

    queue = make_queue(lifespan=resources)
    with pytest.raises(TypeError, match="mapping or None"):
        await queue.start()
    assert queue._journal._db is None  # type: ignore[attr-defined]


async def test_a_lifespan_that_fails_on_exit_is_raised_after_all_is_closed(
    make_queue: MakeQueue, db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    @asynccontextmanager
    async def resources(queue: Queue) -> AsyncIterator[None]:
        yield
        raise RuntimeError("could not close the pool")

    queue = make_queue(lifespan=resources)

    @queue.task
    async def step() -> int:
        return 1

    await queue.start()
    job = await step.submit()
    await run_until_idle(queue)
    with pytest.raises(RuntimeError, match="could not close the pool"):
        await queue.stop()
    assert queue._journal._db is None  # type: ignore[attr-defined]
    assert "the lifespan failed on exit" in caplog.text
    async with Queue(db_path, concurrency=0) as reader:
        assert (await reader.get(job.id)).result == 1
