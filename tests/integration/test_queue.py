"""The Queue end to end, on a real SQLite file and the controlled clock."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from asyncq import (
    JobCancelled,
    JobDead,
    JobNotFound,
    JobState,
    JournalCorrupt,
    PayloadError,
    Queue,
    QueueFailed,
    QueueNotRunning,
    Retry,
    UnknownTask,
)
from asyncq.testing import ManualClock, run_until_idle
from tests.crashes import claim_start_and_die

MakeQueue = Callable[..., Queue]


def row_count(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


async def test_submit_runs_the_handler_and_keeps_its_result(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task
    async def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    async with queue:
        job = await add.submit(2, b=3)
        assert await job.result(timeout=5) == {"sum": 5}
        info = await queue.get(job.id)
    assert info.state is JobState.SUCCEEDED
    assert info.payload == {"a": 2, "b": 3}
    assert info.attempts == 1
    assert info.task == f"{__name__}.{add.fn.__qualname__}"


async def test_submit_many_writes_all_jobs_in_one_go(make_queue: MakeQueue) -> None:
    queue = make_queue()
    seen: list[int] = []

    @queue.task
    async def record(i: int) -> None:
        seen.append(i)

    async with queue:
        jobs = await record.submit_many([{"i": i} for i in range(500)])
        await run_until_idle(queue)
        stats = await queue.stats()
    assert sorted(seen) == list(range(500))
    assert len({job.id for job in jobs}) == 500
    assert stats.succeeded == 500


async def test_bad_payloads_are_refused_and_nothing_is_written(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue(concurrency=0, max_payload_bytes=1024)

    @queue.task(name="send")
    async def send(body: Any) -> None:
        pass

    async with queue:
        await send.submit(body="first")
        with pytest.raises(PayloadError, match=r"'send'.*not JSON-serialisable"):
            await send.submit(body=object())
        with pytest.raises(PayloadError, match=r"'send'.*over the 1024-byte limit"):
            await send.submit(body="x" * 2000)
        with pytest.raises(PayloadError, match=r"'send'.*NaN|'send'.*JSON"):
            await send.submit(body=float("nan"))
        with pytest.raises(PayloadError, match="unknown"):
            await queue.submit_many(send, [{"body": 1}, {"bodi": 2}])
        with pytest.raises(PayloadError, match=r"payload 1: .*not JSON-serialisable"):
            await send.submit_many([{"body": 1}, {"body": {1, 2}}])
        with pytest.raises(PayloadError, match=r"'send'.*payload 2 is \d+ bytes, over the 1024"):
            await send.submit_many([{"body": 1}, {"body": 2}, {"body": "x" * 2000}])
        with pytest.raises(UnknownTask, match="nope"):
            await queue.submit("nope")
    assert row_count(db_path) == 1  # only the first, good submit


async def test_delay_and_at_wait_for_the_clock(make_queue: MakeQueue, clock: ManualClock) -> None:
    queue = make_queue()
    ran: list[str] = []

    @queue.task
    async def remind(what: str) -> None:
        ran.append(what)

    async with queue:
        await queue.submit(remind, "later", delay=3600)
        await queue.submit(remind, "at", at=clock.now() + 60)
        await run_until_idle(queue)
        assert ran == []
        clock.advance(60)
        await run_until_idle(queue)
        assert ran == ["at"]
        clock.advance(3540)
        await run_until_idle(queue)
        assert ran == ["at", "later"]


async def test_higher_priority_runs_first_then_fifo(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=0)
    order: list[int] = []

    @queue.task
    async def step(i: int) -> None:
        order.append(i)

    async with queue:  # a producer writes them all before any runs
        for i, priority in enumerate([0, 0, 5, 1, 5]):
            await queue.submit(step, i, priority=priority)
    worker = make_queue(concurrency=1)
    worker.task(step.fn)
    async with worker:
        await run_until_idle(worker)
    assert order == [2, 4, 3, 0, 1]


async def test_a_key_returns_the_live_job(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=0)

    @queue.task
    async def post_deal(deal: int) -> None:
        pass

    async with queue:
        first = await queue.submit(post_deal, 1, key="deal-1")
        again = await queue.submit(post_deal, 1, key="deal-1")
        other = await queue.submit(post_deal, 2, key="deal-2")
    assert again == first
    assert (first.created, again.created) == (True, False)
    assert other != first


async def test_cancel_a_job_that_has_not_started(make_queue: MakeQueue) -> None:
    queue = make_queue()
    ran: list[int] = []

    @queue.task
    async def step(i: int) -> None:
        ran.append(i)

    async with queue:
        job = await queue.submit(step, 1, delay=60)
        assert await queue.cancel(job.id) is True
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)
        done = await queue.submit(step, 2)
        await done.result(timeout=5)
        assert await queue.cancel(done.id) is False
        with pytest.raises(JobNotFound):
            await queue.cancel(99_999)
    assert ran == [2]


async def test_a_raising_handler_is_recorded_and_the_worker_goes_on(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(concurrency=1)
    queue.destination("*", retry=Retry.never())

    class Odd(BaseException):
        pass

    @queue.task
    async def fails(kind: str) -> str:
        if kind == "value":
            raise ValueError("receiver said 400")
        if kind == "base":
            raise Odd("not even an Exception")
        if kind == "cancel":
            raise asyncio.CancelledError
        return "fine"

    async with queue:
        value = await fails.submit("value")
        base = await fails.submit("base")
        cancel = await fails.submit("cancel")
        fine = await fails.submit("ok")
        assert await fine.result(timeout=5) == "fine"
        with pytest.raises(JobDead, match="receiver said 400"):
            await value.result(timeout=5)
        infos = [await queue.get(job.id) for job in (value, base, cancel)]
    assert [i.state for i in infos] == [JobState.DEAD] * 3
    value_error, base_error, cancel_error = (i.last_error or "" for i in infos)
    assert value_error.startswith("ValueError: receiver said 400")
    assert 'in fails\n    raise ValueError("receiver said 400")' in value_error  # the traceback
    assert "Odd: not even an Exception" in base_error
    assert "CancelledError" in cancel_error


async def test_a_handler_that_hangs_is_cut_off_by_its_timeout(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=1)
    queue.destination("*", retry=Retry.never())
    never = asyncio.Event()

    @queue.task(timeout=0.01)
    async def hangs() -> None:
        await never.wait()

    @queue.task
    async def after() -> str:
        return "ran"

    async with queue:
        hung = await hangs.submit()
        next_job = await after.submit()
        assert await next_job.result(timeout=5) == "ran"
        info = await queue.get(hung.id)
    assert info.state is JobState.DEAD
    assert info.last_error is not None
    assert "longer than 0.01 s" in info.last_error


async def test_handlers_that_never_await_still_let_the_loop_turn(make_queue: MakeQueue) -> None:
    # Workers force a loop turn when handlers have not awaited for 0.5 ms; without
    # it one worker would run the whole prefetch and starve the writer and the app.
    # Once one worker yields, the others yield after their current job, so a turn
    # is not delayed by a 0.5 ms slice of every ready worker in turn.
    workers, jobs = 8, 200
    queue = make_queue(concurrency=workers)
    events: list[str] = []
    done = asyncio.Event()

    @queue.task
    async def busy(i: int) -> None:
        events.append("job")
        spin_until = time.perf_counter() + 0.0001  # CPU work: no await in here
        while time.perf_counter() < spin_until:
            pass
        if events.count("job") == jobs:
            done.set()

    async def ticker() -> None:
        while not done.is_set():
            events.append("tick")
            await asyncio.sleep(0)

    async with queue:
        await busy.submit_many([{"i": i} for i in range(jobs)])
        await asyncio.wait_for(asyncio.gather(ticker(), done.wait()), timeout=10)
        await run_until_idle(queue)
    runs = [len(run.split()) for run in " ".join(events).split("tick")]
    assert sum(runs) == jobs
    # Between two ticks: one worker's 0.5 ms slice (at most 6 jobs of 0.1 ms), then
    # one job from each other ready worker. A slice per worker would allow 8 x 6.
    assert max(runs) <= 6 + workers, runs


async def test_leaving_the_queue_hands_cut_off_and_unstarted_jobs_back(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue(concurrency=1, shutdown_timeout=0.01)
    started = asyncio.Event()
    never = asyncio.Event()

    @queue.task
    async def slow() -> None:
        started.set()
        await never.wait()

    async with queue:
        jobs = await slow.submit_many([{}] * 5)
        await started.wait()
    # The running job was cut off at the deadline; the others never started.
    async with Queue(db_path, concurrency=0) as reader:
        infos = [await reader.get(job.id) for job in jobs]
    assert [info.state for info in infos] == [JobState.PENDING] * 5
    assert [info.attempts for info in infos] == [0] * 5


async def test_leaving_the_queue_lets_running_jobs_finish(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=2)
    started = asyncio.Event()
    release = asyncio.Event()

    @queue.task
    async def slow() -> str:
        started.set()
        await release.wait()
        return "finished"

    async with queue:
        job = await slow.submit()
        await started.wait()
        asyncio.get_running_loop().call_soon(release.set)
    async with queue:
        assert await job.result(timeout=5) == "finished"


async def test_a_job_for_a_task_this_process_does_not_know_is_dead_with_a_reason(
    make_queue: MakeQueue,
) -> None:
    producer = make_queue(concurrency=0)

    @producer.task(name="billing.charge")
    async def charge(amount: int) -> None:
        pass

    async with producer:
        job = await charge.submit(amount=5)
    worker = make_queue()
    async with worker:
        await run_until_idle(worker)
        info = await worker.get(job.id)
    assert info.state is JobState.DEAD
    assert info.last_error is not None
    assert "billing.charge" in info.last_error


async def test_a_producer_runs_nothing(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=0)

    @queue.task
    async def step() -> None:
        raise AssertionError("a producer must not run jobs")

    async with queue:
        job = await step.submit()
        info = await queue.get(job.id)
    assert info.state is JobState.PENDING


async def test_an_expired_lease_is_taken_back_and_run(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(lease=30)
    queue.destination("*", retry=Retry(schedule=[5]))
    ran: list[int] = []

    @queue.task
    async def step(i: int) -> None:
        ran.append(i)

    async with queue:
        job = await queue.submit(step, 7, delay=1)
        # Another process claims the job, starts it and dies without renewing its lease.
        taken = await claim_start_and_die(queue._journal, "dead-host:1:x", clock.now() + 1)
        assert taken == [job.id]
        clock.advance(20)
        await run_until_idle(queue)
        assert ran == []
        clock.advance(20)  # past the lease: taken back, due again after the policy's 5 s
        await run_until_idle(queue)
        assert ran == []
        clock.advance(5)
        await run_until_idle(queue)
        assert ran == [7]
        info = await queue.get(job.id)
    assert info.attempts == 2  # the crashed attempt counts


async def test_a_claim_lost_before_its_handler_started_runs_again_uncharged(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(lease=30)
    queue.destination("*", retry=Retry(schedule=[5]))
    ran: list[int] = []

    @queue.task
    async def step(i: int) -> None:
        ran.append(i)

    async with queue:
        job = await queue.submit(step, 7, delay=1)
        # Another process claims the job into its prefetch and dies before starting it.
        now = clock.now() + 1
        assert len((await queue._journal.claim("dead-host:2:y", 10, now + 30, now)).jobs) == 1
        clock.advance(32)  # past the lease: back at once, no attempt charged
        await run_until_idle(queue)
        assert ran == [7]
        info = await queue.get(job.id)
    assert info.attempts == 1
    assert info.history == []


async def test_results_are_seen_from_another_queue_on_the_same_file(
    make_queue: MakeQueue,
) -> None:
    producer = make_queue(concurrency=0, poll_interval=0.01, clock=None)
    worker = make_queue(concurrency=2, poll_interval=0.01, clock=None)

    async def double(i: int) -> int:
        return 2 * i

    task = producer.task(name="double")(double)
    worker.task(name="double")(double)
    async with producer, worker:
        job = await task.submit(21)
        assert await job.result(timeout=10) == 42


async def test_a_closed_queue_says_so(make_queue: MakeQueue) -> None:
    queue = make_queue()

    @queue.task
    async def step() -> None:
        pass

    with pytest.raises(QueueNotRunning):
        await step.submit()
    async with queue:
        with pytest.raises(JobNotFound):
            await queue.get(12345)


async def test_a_start_that_fails_after_opening_closes_the_journal(
    make_queue: MakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue()

    async def broken(*args: object, **kwargs: object) -> list[object]:
        raise OSError("disk on fire")

    monkeypatch.setattr(queue._journal, "load_destinations", broken)
    with pytest.raises(OSError, match="disk on fire"):
        await queue.start()
    assert queue._journal._db is None  # type: ignore[attr-defined]  # its thread has ended
    monkeypatch.undo()
    async with queue:  # the journal was closed, so it opens again
        assert (await queue.stats()).succeeded == 0


async def test_a_handler_that_swallows_its_timeout_is_still_cut_off(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=1)
    queue.destination("*", retry=Retry.never())
    never = asyncio.Event()

    @queue.task(timeout=0.01)
    async def stubborn(how: str) -> str:
        try:
            await never.wait()
        except asyncio.CancelledError:
            if how == "swallow":
                return "pretends all is well"
            raise RuntimeError("turned the cancellation into an error") from None
        return "unreachable"

    @queue.task
    async def after() -> str:
        return "the worker is fine"

    async with queue:
        jobs = [await stubborn.submit("swallow"), await stubborn.submit("convert")]
        assert await (await after.submit()).result(timeout=5) == "the worker is fine"
        infos = [await queue.get(job.id) for job in jobs]
    assert [i.state for i in infos] == [JobState.DEAD, JobState.DEAD]
    assert all("longer than 0.01 s" in (i.last_error or "") for i in infos)


async def test_a_part_of_the_engine_that_dies_makes_the_queue_say_so(
    make_queue: MakeQueue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()

    @queue.task
    async def step() -> None:
        pass

    async def damaged(*args: object, **kwargs: object) -> list[object]:
        raise JournalCorrupt(queue.path, "database disk image is malformed")

    await queue.start()
    monkeypatch.setattr(queue._journal, "claim", damaged)
    await step.submit()  # wakes the dispatcher, whose claim fails
    with pytest.raises(QueueFailed, match="malformed") as failed:
        await run_until_idle(queue)
    assert failed.value.part == "dispatcher"
    assert isinstance(failed.value.__cause__, JournalCorrupt)
    with pytest.raises(QueueFailed):
        await step.submit()
    with pytest.raises(QueueFailed):  # and again when the queue stops
        await queue.stop()
    assert caplog.text.count("asyncq dispatcher failed") == 1


async def test_a_payload_broken_in_the_journal_kills_that_job_only(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue()
    ran: list[int] = []

    @queue.task(name="step")
    async def step(i: int) -> None:
        ran.append(i)

    producer = make_queue(concurrency=0)
    producer.task(name="step")(step.fn)
    async with producer:
        broken, fine = await producer.submit_many("step", [{"i": 1}, {"i": 2}])
    with sqlite3.connect(db_path) as conn:  # someone edits the journal by hand
        conn.execute("UPDATE jobs SET payload = ? WHERE id = ?", ('{"i": ', broken.id))
    async with queue:
        await run_until_idle(queue)
        info = await queue.get(broken.id)
        assert (await queue.get(fine.id)).state is JobState.SUCCEEDED
    assert ran == [2]
    assert info.state is JobState.DEAD
    assert info.payload is None
    assert info.last_error is not None
    assert "not a JSON object" in info.last_error


async def test_finished_jobs_are_pruned_after_keep_finished(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(keep_finished=3600, lease=30)
    queue.destination("*", retry=Retry.never())

    @queue.task
    async def step(fail: bool) -> None:
        if fail:
            raise ValueError("no")

    async with queue:
        done, dead = await step.submit(False), await step.submit(True)
        later = await queue.submit(step, False, delay=7200)
        await run_until_idle(queue)
        clock.advance(3600 + 10)  # past keep_finished, and a lease-keeper turn
        for _ in range(1000):  # the keeper runs its turn as soon as the loop lets it
            try:
                await queue.get(done.id)
            except JobNotFound:
                break
        else:
            raise AssertionError("the finished job was not pruned")
        assert (await queue.get(dead.id)).state is JobState.DEAD  # dead letters stay
        assert (await queue.get(later.id)).state is JobState.PENDING


async def test_submits_outcomes_and_claims_share_each_turn(make_queue: MakeQueue) -> None:
    # Producers awaiting one submit at a time while workers run: a commit wakes the
    # producers, the outcome writer and the dispatcher, and what they ask for next
    # must go into one transaction. Were each kind to take a transaction of its own
    # in alternation, it would take half as many commits again.
    producers, rounds = 20, 25
    queue = make_queue(concurrency=producers)
    ran = 0
    done = asyncio.Event()

    @queue.task
    async def noop(i: int) -> None:
        nonlocal ran
        ran += 1
        if ran == producers * rounds:
            done.set()

    async def producer(first: int) -> None:
        for i in range(first, first + rounds):
            await noop.submit(i=i)

    async with queue:
        journal: Any = queue._journal
        commits_before = journal.commits
        await asyncio.gather(*(producer(p * rounds) for p in range(producers)))
        await asyncio.wait_for(done.wait(), timeout=10)
        await run_until_idle(queue)
        commits = journal.commits - commits_before
    # 30 commits here when they share; 46 when each kind took its own transaction.
    assert commits <= 1.4 * rounds, commits
