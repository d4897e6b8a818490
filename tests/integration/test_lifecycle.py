"""The queue's lifecycle: supervised background parts, transient journal faults,
bounded shutdown, event loops and threads, crashed attempts, storable errors."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tenacity

import asyncq
import asyncq._queue
from asyncq import JobState, JournalCorrupt, LeaseExpired, Queue, QueueFailed, Retry
from asyncq.testing import ManualClock, run_until_idle
from tests.crashes import claim_start_and_die
from tests.faults import SmallDisk

MakeQueue = Callable[..., Queue]


class LogEvents(logging.Handler):
    """Events set when the asyncq logger writes a line containing a text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.watched: list[tuple[str, asyncio.Event]] = []
        self.lines: list[str] = []

    def when(self, text: str) -> asyncio.Event:
        event = asyncio.Event()
        self.watched.append((text, event))
        if any(text in line for line in self.lines):
            event.set()
        return event

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        for text, event in self.watched:
            if text in line:
                event.set()


@pytest.fixture
def log_events() -> Iterator[LogEvents]:
    handler = LogEvents()
    logger = logging.getLogger("asyncq")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def row_count(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def states(path: str) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


# -- a part that dies fails every caller at once -------------------------------


@pytest.mark.parametrize(
    ("method", "part"),
    [
        ("record_outcomes", "outcome writer"),
        ("renew", "lease keeper"),
        ("save_destinations", "destination writer"),
    ],
)
async def test_a_part_that_dies_fails_every_waiting_caller_at_once(
    make_queue: MakeQueue,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
    part: str,
) -> None:
    # A waiter that is not told would look at the journal again only in an hour.
    queue = make_queue(poll_interval=3600)
    queue.destination("*", retry=Retry(schedule=[3600]), circuit=asyncq.Circuit(failures=1))
    started = asyncio.Event()
    go = asyncio.Event()

    @queue.task
    async def step(fail: bool) -> str:
        started.set()
        await go.wait()
        if fail:
            raise ConnectionError("refused")  # opens the circuit: its state is written
        return "done"

    async def damaged(*args: object, **kwargs: object) -> Any:
        raise JournalCorrupt(queue.path, "database disk image is malformed")

    async with asyncio.timeout(10):
        await queue.start()
        job = await step.submit(fail=method == "save_destinations")
        await started.wait()
        result = asyncio.ensure_future(job.result())
        idle = asyncio.ensure_future(run_until_idle(queue))
        monkeypatch.setattr(queue._journal, method, damaged)
        if method == "renew":
            clock.advance(queue.lease / 3)
        else:
            go.set()
        with pytest.raises(QueueFailed, match="malformed") as failed:
            await result
        assert failed.value.part == part
        assert isinstance(failed.value.__cause__, JournalCorrupt)
        with pytest.raises(QueueFailed):
            await idle
        with pytest.raises(QueueFailed):  # and every later call
            await step.submit(fail=False)
        go.set()
        with pytest.raises(QueueFailed):
            await queue.stop()
    assert queue._journal._db is None  # type: ignore[attr-defined]  # closed all the same
    assert caplog.text.count("the queue has stopped working") == 1


# -- transient journal faults ---------------------------------------------------


async def test_a_full_disk_is_waited_out_and_no_outcome_is_lost(
    small_disk: SmallDisk, clock: ManualClock, log_events: LogEvents
) -> None:
    jobs = 20
    path = str(small_disk.root / "jobs.db")
    queue = Queue(path, concurrency=jobs, clock=clock, keep_finished=5.0)  # pruning runs too
    started = 0
    all_started = asyncio.Event()
    go = asyncio.Event()

    @queue.task
    async def step(i: int) -> int:
        nonlocal started
        started += 1
        if started == jobs:
            all_started.set()
        await go.wait()
        return i

    writer_failed = log_events.when("outcome writer: ")
    keeper_failed = log_events.when("lease keeper: ")
    writer_back = log_events.when("outcome writer: the journal works again")
    keeper_back = log_events.when("lease keeper: the journal works again")
    async with asyncio.timeout(30), queue:
        handles = await step.submit_many([{"i": i} for i in range(jobs)])
        await all_started.wait()
        small_disk.fill()
        go.set()  # the handlers finish while no outcome can be written
        await writer_failed.wait()
        clock.advance(queue.lease / 3)  # the lease keeper's renew fails too
        await keeper_failed.wait()
        assert states(path) == {"running": jobs}
        small_disk.free()
        await writer_back.wait()  # by itself: nobody called the queue meanwhile
        await keeper_back.wait()
        await run_until_idle(queue)
        assert states(path) == {"succeeded": jobs}
        assert [await job.result(timeout=10) for job in handles] == list(range(jobs))
        # ...and the queue goes on.
        assert await (await step.submit(i=99)).result(timeout=10) == 99


# -- bounded shutdown -------------------------------------------------------------


class Stubborn:
    """A handler that catches its cancellation and carries on until let go."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.let_go = asyncio.Event()
        self.cancelled = 0

    async def __call__(self) -> None:
        self.started.set()
        while not self.let_go.is_set():
            try:
                await self.let_go.wait()
            except asyncio.CancelledError:
                self.cancelled += 1


async def test_a_handler_that_ignores_cancellation_does_not_hold_stop(
    make_queue: MakeQueue, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asyncq._queue, "SHUTDOWN_GRACE", 0.05)
    queue = make_queue(concurrency=2, shutdown_timeout=0.05)
    stubborn = Stubborn()
    queue.task(name="stubborn")(stubborn.__call__)
    try:
        await queue.start()
        job = await queue.submit("stubborn")
        await stubborn.started.wait()
        async with asyncio.timeout(10):  # a guard: stop() itself must end much sooner
            await queue.stop()
        assert stubborn.cancelled >= 1
        assert queue._journal._db is None  # type: ignore[attr-defined]
        async with Queue(db_path, concurrency=0) as reader:
            info = await reader.get(job.id)
        # Handed back before the journal closed: it runs again later, nothing stays running.
        assert (info.state, info.attempts) == (JobState.PENDING, 0)
    finally:
        stubborn.let_go.set()


async def test_stop_inside_the_callers_own_timeout_returns_and_hands_jobs_back(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue(concurrency=2, shutdown_timeout=3600)
    stubborn = Stubborn()
    queue.task(name="stubborn")(stubborn.__call__)
    try:
        await queue.start()
        job = await queue.submit("stubborn")
        await stubborn.started.wait()
        async with asyncio.timeout(10):  # the guard
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):  # the caller's own
                    await queue.stop()
        assert queue._journal._db is None  # type: ignore[attr-defined]
        async with Queue(db_path, concurrency=0) as reader:
            info = await reader.get(job.id)
        assert (info.state, info.attempts) == (JobState.PENDING, 0)
    finally:
        stubborn.let_go.set()


# -- event loops and threads ----------------------------------------------------


def run_twice(queue: Queue, guard: float = 10) -> list[int]:
    @queue.task(name="double")
    async def double(i: int) -> int:
        return 2 * i

    async def use(i: int) -> int:
        async with asyncio.timeout(guard), queue:
            job = await double.submit(i)
            await run_until_idle(queue)
            return int(await job.result())

    return [asyncio.run(use(1)), asyncio.run(use(2))]


def test_a_queue_runs_again_in_a_new_event_loop(db_path: str) -> None:
    queue = Queue(db_path, concurrency=2, poll_interval=0.01)
    try:
        # (It hangs today, hence the short guard: a run takes milliseconds.)
        assert run_twice(queue, guard=3) == [2, 4]
    finally:
        # Today the second run leaves the journal's thread running, which would
        # keep pytest from exiting.
        db: Any = queue._journal._db  # type: ignore[attr-defined]
        if db is not None:
            asyncio.run(db.close())


def test_the_queue_itself_holds_nothing_of_its_first_event_loop(db_path: str) -> None:
    # As above, with the journal's own loop-bound Event replaced before each run
    # (what the journal will do itself): the rest of the queue must be loop-free.
    queue = Queue(db_path, concurrency=2, poll_interval=0.01)
    journal: Any = queue._journal
    opened = journal.open

    async def open_in_this_loop() -> None:
        journal._wake = asyncio.Event()
        await opened()

    journal.open = open_in_this_loop
    assert run_twice(queue) == [2, 4]


async def test_a_call_from_another_thread_fails_at_once(
    make_queue: MakeQueue, db_path: str
) -> None:
    queue = make_queue()

    @queue.task
    async def step() -> None:
        pass

    async with queue:
        job = await step.submit()

        def from_another_thread() -> list[str]:
            errors = []
            for call in (step.submit, lambda: queue.get(job.id), job.result):
                with pytest.raises(RuntimeError, match="another event loop") as refused:
                    asyncio.run(call())
                errors.append(str(refused.value))
            return errors

        async with asyncio.timeout(10):
            errors = await asyncio.to_thread(from_another_thread)
        assert all("run_coroutine_threadsafe" in error for error in errors)
    assert row_count(db_path) == 1  # the other thread wrote nothing


# -- crashes and errors ---------------------------------------------------------------


async def test_a_crashed_attempt_is_retried_whatever_the_retry_predicate(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(lease=30)
    judged: list[type[BaseException]] = []

    def wait(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None
        judged.append(type(state.outcome.exception()))
        return 5.0

    queue.destination(
        "*",
        retry=Retry(
            wait=wait,
            stop=tenacity.stop_after_attempt(3),
            retry=tenacity.retry_if_exception_type(ConnectionError),
        ),
    )
    ran: list[int] = []

    @queue.task
    async def step(i: int) -> None:
        ran.append(i)

    async with queue:
        job = await queue.submit(step, 7, delay=1)
        # Another process claims the job, starts it and dies without renewing its lease.
        taken = await claim_start_and_die(queue._journal, "dead-host:1:x", clock.now() + 1)
        assert taken == [job.id]
        clock.advance(40)
        await run_until_idle(queue)
        info = await queue.get(job.id)
        assert info.state is JobState.PENDING  # not dead: a crash is no ConnectionError
        assert judged == [LeaseExpired]
        clock.advance(5)
        await run_until_idle(queue)
        info = await queue.get(job.id)
    assert ran == [7]
    assert (info.state, info.attempts) == (JobState.SUCCEEDED, 2)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


@pytest.mark.parametrize(
    ("error", "stored"),
    [
        (ValueError("bad byte \udcff in a name"), "ValueError: bad byte \\udcff in a name"),
        (Unprintable(), "Unprintable: <str() failed: RuntimeError>"),
    ],
)
async def test_any_exception_is_stored_readably_and_the_queue_goes_on(
    make_queue: MakeQueue, error: Exception, stored: str
) -> None:
    queue = make_queue()
    queue.destination("*", retry=Retry.never())

    @queue.task
    async def fails() -> None:
        raise error

    @queue.task
    async def works() -> str:
        return "fine"

    async with queue:
        job = await fails.submit()
        await run_until_idle(queue)
        info = await queue.get(job.id)
        assert info.state is JobState.DEAD
        assert info.last_error is not None
        assert info.last_error.startswith(stored)
        assert info.history[0][2].startswith(stored)
        assert await (await works.submit()).result(timeout=10) == "fine"


async def test_a_journal_writer_that_dies_fails_every_waiting_caller_at_once(
    make_queue: MakeQueue,
) -> None:
    # A waiter that is not told would look at the journal again only in an hour.
    queue = make_queue(poll_interval=3600)
    started = asyncio.Event()
    go = asyncio.Event()

    @queue.task
    async def step() -> str:
        started.set()
        await go.wait()
        return "done"

    async with asyncio.timeout(10):
        await queue.start()
        job = await step.submit()
        await started.wait()
        result = asyncio.ensure_future(job.result())
        writer = queue._journal._writer._task  # type: ignore[attr-defined]
        writer.cancel()  # what any bug that ends the writer's task would do
        with pytest.raises(QueueFailed) as failed:
            await result
        assert failed.value.part == "journal writer"
        go.set()
        with pytest.raises(QueueFailed):
            await queue.stop()
