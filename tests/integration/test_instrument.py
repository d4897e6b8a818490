"""The engine's instrumentation hook (`asyncq._instrument`): what an attached
instrument hears of submits and attempts, and the trace context carried from a
submit to the attempts of its job, in this process or another."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from asyncq import Circuit, CircuitOpen, PermanentFailure, Queue, Retry, RetryAfter
from asyncq._instrument import AttemptEnd, Instrument, Outcome, attach
from asyncq._journal import ClaimedJob
from asyncq.testing import ManualClock, run_until_idle

MakeQueue = Callable[..., Queue]


@dataclass
class Attempt:
    job_id: int
    task: str
    destination: str
    attempt: int
    trace: str | None
    outcome: Outcome | None = None
    error: BaseException | None = None
    seconds: float | None = None


@dataclass
class Recorder(Instrument):
    """Records what the hook tells it; gives each submit the trace context `context`."""

    context: str | None = None
    submits: list[tuple[str, str, int]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.wants_traces = self.context is not None

    def trace_context(self) -> str | None:
        return self.context

    def submitted(self, task: str, destination: str, count: int) -> None:
        self.submits.append((task, destination, count))

    def attempt(self, job: ClaimedJob, trace: str | None) -> AttemptEnd:
        record = Attempt(job.id, job.task, job.destination, job.attempts, trace)
        self.attempts.append(record)

        def ended(outcome: Outcome, error: BaseException | None, seconds: float) -> None:
            assert record.outcome is None, "an attempt ends once"
            record.outcome, record.error, record.seconds = outcome, error, seconds

        return ended

    def outcomes(self) -> list[tuple[int, int, Outcome | None]]:
        return [(a.job_id, a.attempt, a.outcome) for a in self.attempts]


async def test_every_attempt_is_told_with_its_outcome_and_duration(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=1)
    queue.destination("crm", retry=Retry(schedule=[60]), circuit=None)
    recorder = Recorder()
    attach(queue, recorder)

    @queue.task(name="post", destination="crm")
    async def post(kind: str) -> str:
        clock.advance(2.5)  # the call takes 2.5 s of the queue's clock
        if kind == "fail":
            raise ConnectionError("refused")
        if kind == "permanent":
            raise PermanentFailure("400")
        if kind == "snooze":
            raise RetryAfter(1)
        return kind

    async with queue:
        ok = await post.submit("ok")
        fail = await post.submit("fail")
        permanent = await post.submit("permanent")
        batch = await post.submit_many([{"kind": "ok"}, {"kind": "ok"}])
        await run_until_idle(queue)
        assert await ok.result(timeout=5) == "ok"
        clock.advance(60)
        await run_until_idle(queue)
    assert recorder.submits == [("post", "crm", 1)] * 3 + [("post", "crm", 2)]
    outcomes = recorder.outcomes()
    assert sorted(outcomes) == sorted(
        [
            (ok.id, 1, "succeeded"),
            (fail.id, 1, "retry"),
            (fail.id, 2, "dead"),
            (permanent.id, 1, "dead"),
            (batch[0].id, 1, "succeeded"),
            (batch[1].id, 1, "succeeded"),
        ]
    )
    assert {a.seconds for a in recorder.attempts} == {2.5}
    errors = {(a.job_id, a.attempt): a.error for a in recorder.attempts}
    assert errors[ok.id, 1] is None
    assert isinstance(errors[fail.id, 2], ConnectionError)
    assert isinstance(errors[permanent.id, 1], PermanentFailure)
    assert {a.trace for a in recorder.attempts} == {None}


async def test_a_snooze_a_cancel_and_a_refusal_by_the_circuit_are_told(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=2)
    queue.destination("api", retry=Retry(schedule=[5, 5]), circuit=Circuit(failures=1, cooldown=60))
    recorder = Recorder()
    attach(queue, recorder)
    started = asyncio.Event()

    @queue.task(name="snooze", destination="enrich")
    async def snooze() -> None:
        raise RetryAfter(30)

    @queue.task(name="hang", destination="slow")
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    @queue.task(name="down", destination="api")
    async def down() -> None:
        raise ConnectionError("down")

    async with queue:
        snoozed = await snooze.submit()
        hung = await hang.submit()
        await started.wait()
        assert await queue.cancel(hung.id)
        first = await down.submit()  # fails: the circuit opens
        await run_until_idle(queue)
        second = await down.submit()  # refused by the open circuit, no call
        await run_until_idle(queue)
    by_job = {a.job_id: a for a in recorder.attempts}
    assert (by_job[snoozed.id].outcome, type(by_job[snoozed.id].error)) == ("snoozed", RetryAfter)
    assert (by_job[hung.id].outcome, by_job[hung.id].error) == ("cancelled", None)
    assert by_job[first.id].outcome == "retry"
    refused = by_job[second.id]
    assert (refused.outcome, type(refused.error), refused.seconds) == ("retry", CircuitOpen, 0.0)


async def test_a_job_cut_off_at_shutdown_is_told_released(make_queue: MakeQueue) -> None:
    queue = make_queue(concurrency=1, shutdown_timeout=0)
    recorder = Recorder()
    attach(queue, recorder)
    started = asyncio.Event()

    @queue.task(name="hang")
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    async with queue:
        job = await hang.submit()
        await started.wait()
    assert recorder.outcomes() == [(job.id, 1, "released")]


async def test_the_trace_context_goes_from_the_submit_to_the_attempts_in_another_queue(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    producer = make_queue(concurrency=0)
    producer_recorder = Recorder(context='{"traceparent": "from-the-request"}')
    attach(producer, producer_recorder)
    worker = make_queue()
    worker_recorder = Recorder(context='{"traceparent": "unused"}')
    attach(worker, worker_recorder)
    worker.destination("crm", retry=Retry(schedule=[1]))
    for queue in (producer, worker):

        @queue.task(name="post", destination="crm")
        async def post(fail: bool = False) -> None:
            if fail:
                raise ConnectionError("refused")

    async with producer:
        one = await producer.submit("post", fail=True)
        many = await producer.submit_many("post", [{}, {}])
        keyed = await producer.submit("post", key="k")
    async with worker:
        await run_until_idle(worker)
        clock.advance(1)
        await run_until_idle(worker)
    traces = {(a.job_id, a.attempt): a.trace for a in worker_recorder.attempts}
    context = '{"traceparent": "from-the-request"}'
    assert traces == {
        (one.id, 1): context,
        (one.id, 2): context,  # a retry keeps the job's context
        (many[0].id, 1): context,
        (many[1].id, 1): context,
        (keyed.id, 1): context,
    }


async def test_a_child_job_carries_the_trace_context_too(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    recorder = Recorder(context='{"traceparent": "parent-request"}')
    attach(queue, recorder)

    @queue.task(name="step")
    async def step() -> None:
        pass

    async with queue:
        parent = await step.submit()
        child = await step.options(after=[parent]).submit()
        children = await queue.submit_many(step, [{}, {}], after=[parent])
        await run_until_idle(queue)
    traces = {a.job_id: a.trace for a in recorder.attempts}
    assert traces == dict.fromkeys(
        [parent.id, child.id, children[0].id, children[1].id], '{"traceparent": "parent-request"}'
    )


async def test_without_an_instrument_nothing_is_stored_and_contexts_are_not_kept(
    make_queue: MakeQueue, db_path: str
) -> None:
    producer = make_queue(concurrency=0)
    attach(producer, Recorder(context='{"traceparent": "x"}'))
    worker = make_queue()  # no instrument: claims hand no context over
    plain = make_queue(concurrency=0)
    for queue in (producer, worker, plain):

        @queue.task(name="step")
        async def step() -> None:
            pass

    async with plain:
        untraced = await plain.submit("step")
    async with producer:
        traced = await producer.submit("step")
    async with worker:
        await run_until_idle(worker)
        assert worker._engine is not None
        assert worker._engine.dispatcher.traces == {}
    with sqlite3.connect(db_path) as conn:
        rows = dict(conn.execute("SELECT id, trace FROM jobs").fetchall())
    assert rows == {untraced.id: None, traced.id: '{"traceparent": "x"}'}


async def test_an_instrument_is_attached_before_the_queue_starts(make_queue: MakeQueue) -> None:
    queue = make_queue()
    async with queue:
        with pytest.raises(RuntimeError, match="before the queue starts"):
            attach(queue, Recorder())


async def test_two_instruments_both_hear_every_attempt(make_queue: MakeQueue) -> None:
    queue = make_queue()
    first, second = Recorder(), Recorder(context='{"traceparent": "t"}')
    attach(queue, first)
    attach(queue, second)

    @queue.task(name="step")
    async def step() -> None:
        pass

    async with queue:
        job = await step.submit()
        await run_until_idle(queue)
    assert first.outcomes() == second.outcomes() == [(job.id, 1, "succeeded")]
    assert second.attempts[0].trace == '{"traceparent": "t"}'


@dataclass
class Tally(Instrument):
    """Counts attempts by destination, with one end per destination."""

    asked: list[str] = field(default_factory=list)
    ends: list[tuple[str, Outcome, float]] = field(default_factory=list)
    ends_by_destination = True

    def attempt(self, job: ClaimedJob, trace: str | None) -> AttemptEnd:
        destination = job.destination
        self.asked.append(destination)

        def ended(outcome: Outcome, error: BaseException | None, seconds: float) -> None:
            self.ends.append((destination, outcome, seconds))

        return ended


async def test_an_instrument_with_one_end_per_destination_is_asked_once_for_each(
    make_queue: MakeQueue, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=2)
    tally = Tally()
    attach(queue, tally)

    @queue.task(name="post")
    async def post(fail: bool = False) -> None:
        clock.advance(0.25)
        if fail:
            raise PermanentFailure("400")

    async with queue:
        await post.submit_many([{}, {}, {}], destination="crm")
        await post.options(destination="crm").submit(fail=True)
        await post.submit_many([{}, {}], destination="mail")
        await run_until_idle(queue)
    assert sorted(tally.asked) == ["crm", "mail"]
    assert sorted(tally.ends) == sorted(
        [("crm", "succeeded", 0.25)] * 3
        + [("crm", "dead", 0.25)]
        + [("mail", "succeeded", 0.25)] * 2
    )


async def test_with_another_instrument_each_is_asked_at_every_attempt(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    tally, recorder = Tally(), Recorder()
    attach(queue, tally)
    attach(queue, recorder)

    @queue.task(name="step")
    async def step() -> None:
        pass

    async with queue:
        jobs = await step.submit_many([{}, {}])
        await run_until_idle(queue)
    assert tally.asked == ["default", "default"]
    assert sorted(recorder.outcomes()) == [(job.id, 1, "succeeded") for job in jobs]


async def test_durations_on_the_system_clock_are_those_of_the_handlers(db_path: str) -> None:
    queue = Queue(db_path, concurrency=1)
    recorder = Recorder()
    attach(queue, recorder)

    @queue.task(name="nap")
    async def nap() -> None:
        await asyncio.sleep(0.05)

    async with queue:
        await nap.submit()
        await run_until_idle(queue)
    [attempt] = recorder.attempts
    assert attempt.seconds is not None
    assert 0.045 <= attempt.seconds < 5  # asyncio may wake a hair early
