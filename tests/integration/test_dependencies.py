"""Jobs that wait for other jobs (`after=`), end to end on a real SQLite file and
the controlled clock: no test here waits on wall-clock time."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from asyncq import (
    JobCancelled,
    JobNotFound,
    JobState,
    PermanentFailure,
    Queue,
    Retry,
    current_job,
)
from asyncq.cli import main
from asyncq.testing import ManualClock, run_until_idle

MakeQueue = Callable[..., Queue]


def rows(path: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query, args).fetchall()


async def test_a_diamond_runs_in_order_and_the_last_job_reads_its_parents_results(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    order: list[str] = []
    seen: dict[int, Any] = {}

    @queue.task
    async def step(name: str) -> str:
        order.append(name)
        if name == "d":
            seen.update(current_job().parents)
        return name.upper()

    async with queue:
        await queue.pause("default")
        a = await step.submit("a")
        b = await queue.submit(step, "b", after=[a])
        c = await step.options(after=[a.id]).submit("c")
        d = await queue.submit(step, "d", after=[b, c])
        assert (await d.info()).state is JobState.BLOCKED
        await queue.resume("default")
        assert await d.result(timeout=10) == "D"
        stats = await queue.stats()
    assert order[0] == "a"
    assert set(order[1:3]) == {"b", "c"}
    assert order[3] == "d"
    assert seen == {b.id: "B", c.id: "C"}
    assert stats.blocked == 0
    assert stats.succeeded == 4


async def test_a_child_of_a_succeeded_parent_is_ready_at_once_and_a_plain_job_has_no_parents(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue()
    parents_seen: list[dict[int, Any]] = []

    @queue.task
    async def job(i: int) -> int:
        parents_seen.append(dict(current_job().parents))
        return i * 10

    async with queue:
        parent = await job.submit(1)
        await run_until_idle(queue)
        await queue.pause("default")
        child = await job.options(after=[parent]).submit(2)
        assert (await child.info()).state is JobState.PENDING
        await queue.resume("default")
        await run_until_idle(queue)
    assert parents_seen == [{}, {parent.id: 10}]
    assert rows(db_path, "SELECT parents, waiting FROM jobs WHERE id = ?", child.id) == [(1, 0)]


async def test_a_fan_in_of_100_parents_unblocks_its_child_with_the_last_success(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue(concurrency=8)
    waiting_when_child_ran: list[int] = []

    @queue.task
    async def part(i: int) -> int:
        return i

    @queue.task
    async def total() -> int:
        waiting_when_child_ran.append(len(current_job().parents))
        return sum(current_job().parents.values())

    async with queue:
        await queue.pause("default")  # nothing runs until all are submitted
        parts = await part.submit_many([{"i": i} for i in range(100)])
        child = await total.options(after=parts).submit()
        info = await child.info()
        assert info.state is JobState.BLOCKED
        assert rows(db_path, "SELECT waiting FROM jobs WHERE id = ?", child.id) == [(100,)]
        assert (await queue.stats()).blocked == 1
        await queue.resume("default")
        assert await child.result(timeout=10) == sum(range(100))
    assert waiting_when_child_ran == [100]


async def test_a_fan_out_of_children_in_one_submit_many(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=8)
    ran: list[int] = []

    @queue.task
    async def root() -> str:
        return "seed"

    @queue.task
    async def leaf(i: int) -> None:
        assert current_job().parents == {parent.id: "seed"}
        ran.append(i)

    async with queue:
        await queue.pause("default")
        parent = await root.submit()
        children = await leaf.submit_many([{"i": i} for i in range(500)], after=[parent])
        stats = await queue.stats()
        assert stats.blocked == 500
        await queue.resume("default")
        await run_until_idle(queue)
        states = {(await c.info()).state for c in children}
    assert sorted(ran) == list(range(500))
    assert states == {JobState.SUCCEEDED}


async def test_a_chain_of_1000_runs_in_order(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=4)
    ran: list[int] = []

    @queue.task
    async def link(i: int) -> int:
        ran.append(i)
        return i

    async with queue:
        await queue.pause("default")
        previous = await link.submit(0)
        for i in range(1, 1000):
            previous = await link.options(after=[previous]).submit(i)
        assert (await queue.stats()).blocked == 999
        await queue.resume("default")
        assert await previous.result(timeout=60) == 999
    assert ran == list(range(1000))


async def test_a_dead_parent_cancels_its_whole_subtree_and_wakes_waiters(
    make_queue: MakeQueue, db_path: str
) -> None:
    # A waiter looks at the journal again only after poll_interval (real seconds):
    # at 60 s, only the cascade's own wake-up can end the wait below in time.
    queue = make_queue(poll_interval=60)
    ran: list[str] = []

    @queue.task
    async def step(name: str) -> None:
        ran.append(name)
        if name == "a":
            raise PermanentFailure("no")

    async with queue:
        await queue.pause("default")
        a = await step.submit("a")
        other = await step.submit("other")
        b = await step.options(after=[a]).submit("b")
        c = await step.options(after=[b, other]).submit("c")
        d = await step.options(after=[c]).submit("d")
        waiting = asyncio.ensure_future(d.result())
        await queue.resume("default")
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(waiting, timeout=10)
        await run_until_idle(queue)
        stats = await queue.stats()
    assert sorted(ran) == ["a", "other"]
    assert rows(
        db_path, "SELECT id, state, cancelled_by FROM jobs WHERE id >= ? ORDER BY id", b.id
    ) == [(b.id, "cancelled", a.id), (c.id, "cancelled", b.id), (d.id, "cancelled", c.id)]
    assert (stats.dead, stats.cancelled, stats.blocked, stats.succeeded) == (1, 3, 0, 1)


async def test_on_parent_failure_run_runs_the_child_once_every_parent_is_final(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    seen: list[dict[int, Any]] = []

    @queue.task
    async def step(name: str) -> str:
        if name == "bad":
            raise PermanentFailure("no")
        if name == "report":
            seen.append(dict(current_job().parents))
        return name

    async with queue:
        await queue.pause("default")
        bad = await step.submit("bad")
        good = await step.submit("good")
        report = await step.options(after=[bad, good], on_parent_failure="run").submit("report")
        await queue.resume("default")
        assert await report.result(timeout=10) == "report"
    assert seen == [{bad.id: None, good.id: "good"}]


async def test_a_child_of_a_parent_already_dead_is_cancelled_at_once_or_runs(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()

    @queue.task
    async def step(name: str) -> str:
        if name == "bad":
            raise PermanentFailure("no")
        return name

    async with queue:
        bad = await step.submit("bad")
        await run_until_idle(queue)
        cancelled = await step.options(after=[bad]).submit("x")
        runs = await step.options(after=[bad], on_parent_failure="run").submit("y")
        with pytest.raises(JobCancelled):
            await cancelled.result(timeout=10)
        assert await runs.result(timeout=10) == "y"


async def test_a_missing_parent_is_refused_and_nothing_is_written(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue(concurrency=0)

    @queue.task
    async def step(i: int) -> None: ...

    async with queue:
        parent = await step.submit(1)
        with pytest.raises(JobNotFound) as refused:
            await step.options(after=[parent, 4242]).submit(2)
        assert refused.value.job_id == 4242
        assert "4242" in str(refused.value)
        with pytest.raises(JobNotFound):
            await step.submit_many([{"i": 3}, {"i": 4}], after=[9999])
        # A refused submit in the same turn as good ones fails alone.
        good, bad = await asyncio.gather(
            step.options(after=[parent]).submit(5),
            step.options(after=[777]).submit(6),
            return_exceptions=True,
        )
        assert isinstance(bad, JobNotFound)
        assert not isinstance(good, BaseException)
    assert rows(db_path, "SELECT json_extract(payload, '$.i') FROM jobs ORDER BY id") == [
        (1,),
        (5,),
    ]
    assert rows(db_path, "SELECT parent, child FROM deps") == [(parent.id, good.id)]


@pytest.mark.parametrize(
    ("after", "mode", "error"),
    [
        (5, "cancel", TypeError),
        ("12", "cancel", TypeError),
        ([1.5], "cancel", TypeError),
        ([True], "cancel", TypeError),
        ([0], "cancel", ValueError),
        ([1], "skip", ValueError),
    ],
)
async def test_bad_dependency_options_are_refused_naming_them(
    make_queue: MakeQueue, db_path: str, after: Any, mode: Any, error: type[Exception]
) -> None:
    queue = make_queue(concurrency=0)

    @queue.task
    async def step() -> None: ...

    async with queue:
        await step.submit()
        with pytest.raises(error, match=r"after|on_parent_failure"):
            await queue.submit(step, after=after, on_parent_failure=mode)
        with pytest.raises(error, match=r"after|on_parent_failure"):
            await step.submit_many([{}], after=after, on_parent_failure=mode)
    assert rows(db_path, "SELECT count(*) FROM jobs") == [(1,)]


async def test_redriving_a_dead_parent_brings_back_the_subtree_its_death_cancelled(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue()
    healthy = False
    ran: list[str] = []

    @queue.task
    async def step(name: str) -> str:
        if name == "a" and not healthy:
            raise PermanentFailure("down")
        ran.append(name)
        return name

    async with queue:
        a = await step.submit("a")
        b = await step.options(after=[a]).submit("b")
        c = await step.options(after=[b]).submit("c")
        await run_until_idle(queue)
        assert [(await j.info()).state for j in (a, b, c)] == [
            JobState.DEAD,
            JobState.CANCELLED,
            JobState.CANCELLED,
        ]
        healthy = True
        await queue.pause("default")
        assert await queue.redrive([a.id]) == 1
        assert [(await j.info()).state for j in (a, b, c)] == [
            JobState.PENDING,
            JobState.BLOCKED,
            JobState.BLOCKED,
        ]
        assert (await queue.stats()).blocked == 2
        await queue.resume("default")
        assert await c.result(timeout=10) == "c"
    assert ran == ["a", "b", "c"]
    assert rows(db_path, "SELECT cancelled_by FROM jobs WHERE id IN (?, ?)", b.id, c.id) == [
        (None,),
        (None,),
    ]


async def test_redrive_leaves_cancelled_a_child_whose_other_parent_is_dead_too(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue()

    @queue.task
    async def step(name: str) -> None:
        raise PermanentFailure(name)

    async with queue:
        await queue.pause("default")
        a = await step.submit("a")
        b = await step.submit("b")
        child = await step.options(after=[a, b]).submit("child")
        await queue.resume("default")
        await run_until_idle(queue)
        assert rows(db_path, "SELECT cancelled_by FROM jobs WHERE id = ?", child.id) == [(a.id,)]
        await queue.pause("default")
        assert await queue.redrive([a.id]) == 1
        # b is dead still: the child stays cancelled, now on b's account.
        assert (await child.info()).state is JobState.CANCELLED
        assert rows(db_path, "SELECT cancelled_by FROM jobs WHERE id = ?", child.id) == [(b.id,)]


async def test_a_run_child_waits_again_for_a_redriven_parent(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue()
    healthy = False

    @queue.task
    async def step(name: str) -> str:
        if name == "flaky" and not healthy:
            raise PermanentFailure("down")
        return name

    async with queue:
        await queue.pause("default")
        flaky = await step.submit("flaky")
        slow = await step.options(delay=60).submit("slow")
        child = await step.options(after=[flaky, slow], on_parent_failure="run").submit("child")
        await queue.resume("default")
        await run_until_idle(queue)  # flaky is dead; slow not due yet
        assert rows(db_path, "SELECT waiting FROM jobs WHERE id = ?", child.id) == [(1,)]
        healthy = True
        await queue.redrive([flaky.id])
        assert rows(db_path, "SELECT waiting FROM jobs WHERE id = ?", child.id) == [(2,)]
        await run_until_idle(queue)
        assert (await flaky.info()).state is JobState.SUCCEEDED
        assert (await child.info()).state is JobState.BLOCKED


async def test_cancelling_a_blocked_job_cancels_its_children(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue()

    @queue.task
    async def step(name: str) -> None: ...

    async with queue:
        await queue.pause("default")
        a = await step.submit("a")
        b = await step.options(after=[a]).submit("b")
        c = await step.options(after=[b]).submit("c")
        assert await queue.cancel(b.id) is True
        with pytest.raises(JobCancelled):
            await c.result(timeout=10)
    assert rows(db_path, "SELECT cancelled_by FROM jobs WHERE id = ?", c.id) == [(b.id,)]


async def test_a_blocked_child_holds_its_key(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=0)

    @queue.task
    async def step(name: str) -> None: ...

    async with queue:
        a = await step.submit("a")
        first = await step.options(after=[a], key="enrich-7").submit("b")
        again = await step.options(after=[a], key="enrich-7").submit("b")
        plain = await step.options(key="enrich-7").submit("c")
        assert (await first.info()).state is JobState.BLOCKED
    assert first.created
    assert (again.id, again.created) == (first.id, False)
    assert (plain.id, plain.created) == (first.id, False)


async def test_a_delayed_child_is_scheduled_when_its_parent_succeeds_before_its_time(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue()
    ran: list[str] = []

    @queue.task
    async def step(name: str) -> None:
        ran.append(name)

    async with queue:
        await queue.pause("default")
        a = await step.submit("a")
        b = await step.options(after=[a], delay=30).submit("b")
        await queue.resume("default")
        await run_until_idle(queue)
        assert ran == ["a"]
        assert (await b.info()).state is JobState.PENDING
        assert (await queue.stats()).scheduled == 1
        clock.advance(30)
        await run_until_idle(queue)
    assert ran == ["a", "b"]


async def test_dependencies_survive_a_restart(make_queue: MakeQueue) -> None:
    results: list[dict[int, Any]] = []

    def build(concurrency: int) -> Queue:
        queue = make_queue(concurrency=concurrency)

        @queue.task(name="fetch")
        async def fetch(contact: int) -> dict[str, int]:
            return {"contact": contact}

        @queue.task(name="notify")
        async def notify() -> None:
            results.append(dict(current_job().parents))

        return queue

    producer = build(0)
    async with producer:
        parent = await producer.submit("fetch", contact=7)
        child = await producer.submit("notify", after=[parent.id])
        assert (await producer.get(child.id)).state is JobState.BLOCKED
    worker = build(2)
    async with worker:
        await run_until_idle(worker)
        assert (await worker.get(child.id)).state is JobState.SUCCEEDED
    assert results == [{parent.id: {"contact": 7}}]


async def test_a_retried_parent_unblocks_its_child_only_when_it_succeeds(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue()
    queue.destination("*", retry=Retry(schedule=[10]))
    attempts: list[int] = []

    @queue.task
    async def flaky() -> str:
        attempts.append(current_job().attempt)
        if len(attempts) == 1:
            raise ConnectionError("once")
        return "ok"

    @queue.task
    async def after_it() -> Any:
        return dict(current_job().parents)

    async with queue:
        parent = await flaky.submit()
        child = await after_it.options(after=[parent]).submit()
        await run_until_idle(queue)
        assert (await child.info()).state is JobState.BLOCKED
        clock.advance(10)
        await run_until_idle(queue)
        assert await child.result(timeout=5) == {str(parent.id): "ok"}
    assert attempts == [1, 2]


async def test_the_stats_command_shows_blocked_jobs(
    make_queue: MakeQueue, db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = make_queue(concurrency=0)

    @queue.task(name="post", destination="crm")
    async def post() -> None: ...

    async with queue:
        parent = await post.submit()
        await post.submit_many([{}, {}], after=[parent])

    await asyncio.to_thread(main, ["stats", db_path, "--json"])
    shown = json.loads(capsys.readouterr().out)["destinations"]
    assert (shown["crm"]["ready"], shown["crm"]["blocked"]) == (1, 2)
