"""Cancelling jobs in every state, in this process, on a real journal file.

Running in another process, and an owner killed with SIGKILL while a cancel is
asked: tests/process/test_cancel.py. The journal's side: tests/journal/test_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncq import Job, JobCancelled, JobNotFound, JobState, Queue, Rate
from asyncq._journal import SqliteJournal
from asyncq._journal import _sqlite_cancel as sqlite_cancel
from asyncq.cli import main
from asyncq.testing import ManualClock, run_until_idle
from tests.crashes import claim_start_and_die

MakeQueue = Callable[..., Queue]


def stored_states(path: str) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


@pytest.fixture(autouse=True)
def nothing_left_running(db_path: str) -> Iterator[None]:
    """After every test here, no job is left `running` in the journal."""
    yield
    if Path(db_path).exists():
        assert stored_states(db_path).get("running", 0) == 0


def insert_blocked(path: str, task: str, destination: str = "default") -> int:
    """A job waiting for parents, as the dependencies code stores one (with its count)."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        cursor = conn.execute(
            "INSERT INTO jobs (task, payload, destination, run_at, state, created_at, parents, "
            "waiting) VALUES (?, '{}', ?, 0, 'blocked', 0, 1, 1)",
            (task, destination),
        )
        conn.execute(
            "INSERT INTO counts VALUES (?, 'blocked', 1) "
            "ON CONFLICT (destination, state) DO UPDATE SET n = n + 1",
            (destination,),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid


class Gate:
    """A handler that waits until let go, telling when it started and how it ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.let_go = asyncio.Event()
        self.got_cancelled = asyncio.Event()
        self.ended = asyncio.Event()

    async def run(self, *, swallow: bool = False) -> str:
        self.started.set()
        try:
            await self.let_go.wait()
            return "finished"
        except asyncio.CancelledError:
            self.got_cancelled.set()
            if not swallow:
                raise
            await self.let_go.wait()  # carries on as if nothing happened
            return "finished anyway"
        finally:
            self.ended.set()


async def test_pending_scheduled_and_blocked_jobs_are_cancelled_at_once(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue()
    ran: list[str] = []

    @queue.task(name="step", destination="held")
    async def step(name: str) -> None:
        ran.append(name)

    async with queue:
        await queue.pause("held")  # its jobs stay pending
        pending = await step.submit("pending")
        scheduled = await step.options(delay=60).submit("scheduled")
        blocked: Job[None] = Job(queue, insert_blocked(db_path, "step", "held"))
        assert (await queue.get(blocked.id)).state is JobState.BLOCKED
        for job in (pending, scheduled, blocked):
            assert await queue.cancel(job.id) is True
            with pytest.raises(JobCancelled):
                await job.result(timeout=5)
            assert await queue.cancel(job.id) is False  # finished: nothing changes
        with pytest.raises(JobNotFound):
            await queue.cancel(99_999)
        stats = (await queue.stats()).destinations["held"]
        assert (stats.pending, stats.blocked, stats.cancelled) == (0, 0, 3)
    assert ran == []


async def test_a_running_handler_in_this_process_is_cancelled_at_once(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(concurrency=1)
    gate = Gate()

    @queue.task
    async def wait() -> str:
        return await gate.run()

    @queue.task
    async def after() -> str:
        return "the worker goes on"

    async with queue:
        job = await wait.submit()
        await gate.started.wait()
        assert await queue.cancel(job.id) is True
        assert gate.got_cancelled.is_set()
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)
        info = await queue.get(job.id)
        assert (info.state, info.attempts) == (JobState.CANCELLED, 1)
        # The one worker's own cancellation was withdrawn: it runs the next job.
        assert await (await after.submit()).result(timeout=5) == "the worker goes on"
        assert (await queue.stats()).destinations["default"].cancelled == 1


async def test_a_handler_that_swallows_its_cancellation_is_still_cancelled(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(concurrency=1)
    gate = Gate()

    @queue.task
    async def wait() -> str:
        return await gate.run(swallow=True)

    async with queue:
        job = await wait.submit()
        await gate.started.wait()
        assert await queue.cancel(job.id) is True
        # Recorded when the error was delivered, while the handler still runs.
        assert gate.got_cancelled.is_set()
        assert not gate.ended.is_set()
        gate.let_go.set()
        await run_until_idle(queue)
        assert gate.ended.is_set()
        info = await queue.get(job.id)
        assert (info.state, info.result) == (JobState.CANCELLED, None)


async def test_a_handler_that_finishes_first_wins(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=1)
    returned = asyncio.Event()

    @queue.task
    async def quick() -> int:
        returned.set()
        return 7  # returns before the cancel below is even asked

    async with queue:
        job = await quick.submit()
        await returned.wait()
        assert await queue.cancel(job.id) is False
        assert await job.result(timeout=5) == 7


async def test_a_claimed_job_that_has_not_started_leaves_the_prefetch(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(concurrency=2)
    # One call a minute, on a clock that does not move: the second job is claimed
    # (a paced lane holds what it can start soon) and waits for the bucket. (A
    # concurrency cap would not claim it: a claimed job holds a slot of the cap.)
    queue.destination("one-a-minute", rate=Rate(1, per=60, burst=1))
    gate = Gate()
    ran: list[int] = []

    @queue.task(destination="one-a-minute")
    async def call(i: int) -> None:
        ran.append(i)
        await gate.run()

    async with queue:
        first, second = await call.submit_many([{"i": 1}, {"i": 2}])
        await gate.started.wait()
        assert (await queue.get(second.id)).state is JobState.RUNNING  # claimed, waiting
        assert await queue.cancel(second.id) is True
        info = await queue.get(second.id)
        assert (info.state, info.attempts, info.started_at) == (JobState.CANCELLED, 0, None)
        assert await queue.cancel(first.id) is True
        await run_until_idle(queue)
    assert ran == [1]


async def test_a_cancel_asked_of_a_dead_owner_ends_when_its_lease_expires(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(lease=30)

    @queue.task(name="slow", destination="held")
    async def slow() -> None:
        raise AssertionError("never runs here: another process claimed it")

    async with queue:
        await queue.pause("held")  # so that this queue leaves them to the other process
        asked, late = (await slow.submit()), (await slow.submit())
        taken = await claim_start_and_die(queue._journal, "elsewhere:1:dead", clock.now())
        assert taken == [asked.id, late.id]
        # Asked while the owner was alive (from another process: straight to the journal).
        outcome = await queue._journal.cancel(asked.id, clock.now())
        assert outcome is not None
        assert outcome.requested == [(asked.id, "elsewhere:1:dead")]
        clock.advance(31)  # the owner never renewed: its lease expires
        await run_until_idle(queue)  # takes expired leases back: cancelled, not retried
        info = await queue.get(asked.id)
        assert (info.state, info.attempts) == (JobState.CANCELLED, 1)
        # Asked after the lease expired: cancelled at once, without a worker's reclaim.
        assert await queue.cancel(late.id) is True


async def test_bulk_cancel_of_50_000_pending_jobs_is_one_transaction(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(concurrency=0)  # a producer: the jobs stay pending

    @queue.task(name="email", destination="mail")
    async def email(to: str) -> None: ...

    @queue.task(name="other", destination="mail")
    async def other(to: str) -> None: ...

    async with queue:
        await email.submit_many([{"to": f"user{i}@example.com"} for i in range(50_000)])
        await email.options(delay=3600).submit("later@example.com")
        kept = await other.submit("kept@example.com")
        journal = queue._journal
        assert isinstance(journal, SqliteJournal)
        commits = journal.commits
        started = time.perf_counter()
        count = await queue.cancel(task=email, destination="mail", state="pending")
        elapsed = time.perf_counter() - started
        assert count == 50_001
        assert journal.commits == commits + 1
        assert elapsed < 5.0, f"a bulk cancel of 50,000 jobs took {elapsed:.2f} s"
        print(f"bulk cancel of 50,001 pending jobs: {elapsed * 1000:.0f} ms")
        stats = (await queue.stats()).destinations["mail"]
        assert (stats.pending, stats.cancelled) == (1, 50_001)
        assert (await queue.get(kept.id)).state is JobState.PENDING
        assert await queue.cancel(task="email") == 0  # nothing left to cancel


async def test_bulk_cancel_stops_running_jobs_and_counts_them(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=2)
    gates = [Gate(), Gate()]

    @queue.task(name="campaign", destination="mail")
    async def campaign(i: int) -> str:
        return await gates[i].run()

    async with queue:
        jobs = await campaign.submit_many([{"i": 0}, {"i": 1}])
        await asyncio.gather(*(gate.started.wait() for gate in gates))
        assert await queue.cancel(destination="mail", state=JobState.RUNNING) == 2
        # In this process the handlers are cancelled at once, without a poll's wait.
        await asyncio.wait_for(asyncio.gather(*(g.got_cancelled.wait() for g in gates)), 5)
        await run_until_idle(queue)
        for job in jobs:
            with pytest.raises(JobCancelled):
                await job.result(timeout=5)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((), {}, ValueError, "needs a job id, or a selection"),
        ((), {"state": "succeeded"}, ValueError, "a succeeded job is finished"),
        ((), {"state": "paused"}, ValueError, "state must be one of"),
        ((), {"state": 3}, TypeError, "state must be a JobState"),
        ((), {"task": 3}, TypeError, "task must be a Task"),
        ((), {"destination": ""}, ValueError, "destination"),
        ((1,), {"task": "t"}, TypeError, "not both"),
        ((True,), {}, TypeError, "job_id must be an int"),
        (("1",), {}, TypeError, "job_id must be an int"),
    ],
)
async def test_bad_cancel_arguments_are_refused_and_write_nothing(
    make_queue: MakeQueue,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    queue = make_queue(concurrency=0)

    @queue.task(name="t")
    async def t() -> None: ...

    async with queue:
        job = await t.submit()
        journal = queue._journal
        assert isinstance(journal, SqliteJournal)
        commits = journal.commits
        with pytest.raises(error, match=message):
            await queue.cancel(*args, **kwargs)
        assert journal.commits == commits
        assert (await queue.get(job.id)).state is JobState.PENDING


async def test_jobs_cancelled_in_turn_wake_their_waiters(
    make_queue: MakeQueue, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids that `settle_children` returns (the dependencies code cancels a
    cancelled job's children) wake those children's `result()` at once."""
    # The stand-in cancels the one child in the same transaction, as the real one does.
    child_id = 0

    def settle_children(conn: sqlite3.Connection, succeeded: Any, failed: Any, now: float,
                        deltas: Any) -> list[int]:  # fmt: skip
        conn.execute("UPDATE jobs SET state = 'cancelled' WHERE id = ?", (child_id,))
        deltas["held", "blocked"] -= 1
        deltas["held", "cancelled"] += 1
        return [child_id]

    monkeypatch.setattr(sqlite_cancel, "settle_children", settle_children)
    queue = make_queue(poll_interval=60)  # a waiter's poll cannot explain the wake

    @queue.task(name="parent", destination="held")
    async def parent() -> None: ...

    async with queue:
        await queue.pause("held")
        job = await parent.submit()
        child_id = insert_blocked(db_path, "parent", "held")
        waiting = asyncio.ensure_future(Job(queue, child_id).result())
        waiters = queue._waiters
        assert waiters is not None
        # Until it waits for the wake: a few turns of the loop, no wall-clock wait.
        while child_id not in waiters._finished:  # noqa: ASYNC110 - yields, never sleeps
            await asyncio.sleep(0)
        assert await queue.cancel(job.id) is True
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(waiting, 5)
        stats = (await queue.stats()).destinations["held"]
        assert (stats.blocked, stats.cancelled) == (0, 2)


async def test_the_command_line_cancels_by_id_and_by_selection(
    make_queue: MakeQueue, db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = make_queue(concurrency=0)

    @queue.task(name="email", destination="mail")
    async def email(i: int) -> None: ...

    async with queue:
        one, *campaign = await email.submit_many([{"i": i} for i in range(4)])
        kept = await email.options(destination="other").submit(9)

    # The command runs its own event loop: run it in a thread, as a shell would.
    assert await asyncio.to_thread(main, ["cancel", db_path, str(one.id)]) == 0
    assert f"cancelled job {one.id}" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["cancel", db_path, str(one.id)]) == 1
    assert "not cancelled: it is cancelled" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["cancel", db_path, "99999"]) == 1
    assert "no job with id 99999" in capsys.readouterr().err
    argv = ["cancel", db_path, "--destination", "mail", "--task", "email", "--state", "pending"]
    assert await asyncio.to_thread(main, argv) == 0
    assert "cancelled 3 job(s)" in capsys.readouterr().out

    async with queue:
        states = [(await queue.get(job.id)).state for job in [one, *campaign, kept]]
    assert states == [JobState.CANCELLED] * 4 + [JobState.PENDING]


@pytest.mark.parametrize("argv", [[], ["1", "--state", "pending"], ["--state", "succeeded"]])
def test_the_command_line_refuses_a_cancel_without_one_target(
    db_path: str, argv: list[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["cancel", db_path, *argv])


def test_the_readmes_cancelling_example_runs_as_written(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    (example,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
        if "queue.cancel(task=send_email" in block
    ]
    script = tmp_path / "cancelling.py"
    script.write_text(example)
    env = {**os.environ, "PYTHONPATH": str(root)}  # this checkout's asyncq
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == [script]  # no journal left behind
    assert done.stdout.splitlines() == [
        "running job cancelled: True",
        "its result: JobCancelled",
        "campaign stopped: 50000 jobs cancelled",
    ]
