"""The notable events, logged on `asyncq.events`: one record each, with the job
and its destination as `extra` fields; nothing above DEBUG for a job that succeeds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from asyncq import Circuit, PermanentFailure, Queue, Retry, RetryAfter
from asyncq.testing import ManualClock, run_until_idle
from tests.crashes import claim_start_and_die

MakeQueue = Callable[..., Queue]


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def fields(record: logging.LogRecord, *names: str) -> dict[str, Any]:
    return {name: getattr(record, name) for name in names}


@pytest.fixture(autouse=True)
def _capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncq")


async def test_a_succeeded_job_logs_nothing_above_debug(
    make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()

    @queue.task(name="ping", destination="crm")
    async def ping(i: int) -> int:
        return i

    async with queue:
        jobs = await ping.submit_many([{"i": i} for i in range(50)])
        await ping.submit(i=50)
        await run_until_idle(queue)
        assert [await job.result(timeout=5) for job in jobs] == list(range(50))
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG] == []


async def test_a_failed_attempt_logs_its_retry_and_the_last_its_death(
    make_queue: MakeQueue, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()
    queue.destination("crm", retry=Retry(schedule=[60]))

    @queue.task(name="post", destination="crm")
    async def post() -> None:
        raise ConnectionError("connection refused")

    async with queue:
        job = await post.submit()
        await run_until_idle(queue)
        (retry,) = events(caplog, "retry_scheduled")
        assert retry.levelno == logging.INFO
        assert retry.name == "asyncq.events"
        assert fields(retry, "job_id", "task", "destination", "attempt", "error", "retry_at") == {
            "job_id": job.id,
            "task": "post",
            "destination": "crm",
            "attempt": 1,
            "error": "ConnectionError: connection refused",
            "retry_at": clock.now() + 60,
        }
        assert retry.getMessage() == (
            f"job {job.id} (post to crm): attempt 1 failed "
            "(ConnectionError: connection refused); retry in 60 s"
        )
        assert events(caplog, "dead_lettered") == []
        clock.advance(60)
        await run_until_idle(queue)
    (dead,) = events(caplog, "dead_lettered")
    assert dead.levelno == logging.WARNING
    assert fields(dead, "job_id", "task", "destination", "attempt", "error") == {
        "job_id": job.id,
        "task": "post",
        "destination": "crm",
        "attempt": 2,
        "error": "ConnectionError: connection refused",
    }
    assert len(events(caplog, "retry_scheduled")) == 1


async def test_a_permanent_failure_and_an_unknown_task_are_logged_dead(
    make_queue: MakeQueue, caplog: pytest.LogCaptureFixture
) -> None:
    producer = make_queue(concurrency=0)

    @producer.task(name="billing.charge", destination="billing")
    async def charge() -> None:
        pass

    async with producer:
        unknown = await charge.submit()
    queue = make_queue()

    @queue.task(name="refuse", destination="crm")
    async def refuse() -> None:
        raise PermanentFailure("400 Bad Request")

    async with queue:
        refused = await refuse.submit()
        await run_until_idle(queue)
    dead = {r.job_id: r for r in events(caplog, "dead_lettered")}  # type: ignore[attr-defined]
    assert set(dead) == {unknown.id, refused.id}
    assert fields(dead[refused.id], "task", "destination", "attempt", "error") == {
        "task": "refuse",
        "destination": "crm",
        "attempt": 1,
        "error": "PermanentFailure: 400 Bad Request",
    }
    assert fields(dead[unknown.id], "task", "destination") == {
        "task": "billing.charge",
        "destination": "billing",
    }
    assert dead[unknown.id].error.startswith("UnknownTask: no task named 'billing.charge'")  # type: ignore[attr-defined]
    assert events(caplog, "retry_scheduled") == []


async def test_a_retry_after_logs_the_hold_of_its_destination(
    make_queue: MakeQueue, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue()

    @queue.task(name="enrich", destination="enrichment")
    async def enrich() -> None:
        raise RetryAfter(30)

    async with queue:
        job = await enrich.submit()
        await run_until_idle(queue)
    (hold,) = events(caplog, "retry_after_hold")
    assert hold.levelno == logging.INFO
    assert fields(hold, "job_id", "task", "destination", "attempt", "hold_until") == {
        "job_id": job.id,
        "task": "enrich",
        "destination": "enrichment",
        "attempt": 1,
        "hold_until": clock.now() + 30,
    }
    assert "destination 'enrichment' held until" in hold.getMessage()
    assert events(caplog, "retry_scheduled") == []  # a snooze is not a retry


async def test_a_circuit_logs_when_it_opens_refuses_and_closes(
    make_queue: MakeQueue, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue(concurrency=1)
    queue.destination(
        "crm", retry=Retry(schedule=[1, 1, 1]), circuit=Circuit(failures=2, cooldown=10)
    )
    failing = True

    @queue.task(name="post", destination="crm")
    async def post() -> None:
        if failing:
            raise ConnectionError("down")

    async with queue:
        await post.submit_many([{}, {}])
        await run_until_idle(queue)
        (opened,) = events(caplog, "circuit_opened")
        assert opened.levelno == logging.WARNING
        assert fields(opened, "destination", "failures", "circuit_until") == {
            "destination": "crm",
            "failures": 2,
            "circuit_until": clock.now() + 10,
        }
        clock.advance(1)  # both are due again, while the circuit is open: refused
        await run_until_idle(queue)
        (refused,) = events(caplog, "circuit_refused")
        assert fields(refused, "destination", "jobs") == {"destination": "crm", "jobs": 2}
        failing = False
        clock.advance(10)  # past the cooldown: a probe goes through and succeeds
        await run_until_idle(queue)
    (closed,) = events(caplog, "circuit_closed")
    assert closed.levelno == logging.INFO
    assert closed.destination == "crm"  # type: ignore[attr-defined]
    assert len(events(caplog, "circuit_opened")) == 1


async def test_a_job_whose_lease_expired_is_logged_when_taken_back(
    make_queue: MakeQueue, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue(lease=30)
    queue.destination("crm", retry=Retry(schedule=[5]))

    @queue.task(name="post", destination="crm")
    async def post() -> None:
        pass

    async with queue:
        job = await queue.submit(post, delay=1)
        # Another process claims the job, starts it and dies without renewing its lease.
        taken = await claim_start_and_die(queue._journal, "dead-host:1:x", clock.now() + 1)
        assert taken == [job.id]
        clock.advance(20)
        await run_until_idle(queue)
        assert events(caplog, "lease_expired") == []
        clock.advance(20)
        await run_until_idle(queue)
        (expired,) = events(caplog, "lease_expired")
    assert expired.levelno == logging.WARNING
    assert fields(expired, "job_id", "task", "destination", "attempt", "started") == {
        "job_id": job.id,
        "task": "post",
        "destination": "crm",
        "attempt": 1,
        "started": True,
    }
    assert "its lease expired while its handler ran" in expired.getMessage()


class _Waiter(logging.Handler):
    """Sets an event when a record of one event arrives."""

    def __init__(self, event: str) -> None:
        super().__init__()
        self.event = event
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == self.event:
            self.seen.set()


async def test_a_process_that_renews_its_leases_too_late_logs_that_it_lost_them(
    make_queue: MakeQueue, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue(lease=30)
    started = asyncio.Event()
    release = asyncio.Event()
    waiter = _Waiter("lease_lost")
    logging.getLogger("asyncq.events").addHandler(waiter)

    @queue.task(name="slow")
    async def slow() -> None:
        started.set()
        await release.wait()

    try:
        async with queue:
            await slow.submit()
            await started.wait()
            assert queue._engine is not None
            upkeep = queue._engine.upkeep
            await upkeep._chores()  # renewed on time: until now + 30
            assert events(caplog, "lease_lost") == []
            clock.advance(45)  # the lease keeper ran 15 s after the leases ran out
            await waiter.seen.wait()
            release.set()
    finally:
        logging.getLogger("asyncq.events").removeHandler(waiter)
    lost = events(caplog, "lease_lost")
    assert lost
    assert lost[0].levelno == logging.WARNING
    assert lost[0].late == pytest.approx(15)  # type: ignore[attr-defined]
    assert lost[0].owner == queue._owner  # type: ignore[attr-defined]
