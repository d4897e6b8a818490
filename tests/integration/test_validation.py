"""Options and names are checked at submit (or at declaration): a bad one raises a
clear error and nothing is written."""

from __future__ import annotations

import enum
import math
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from asyncq import Queue
from asyncq.testing import ManualClock, run_until_idle

MakeQueue = Callable[..., Queue]

CENTURY = 100 * 365.25 * 86400

BAD_NAMES: list[tuple[Any, type[Exception], str]] = [
    ("", ValueError, "must not be empty"),
    ("a\x00b", ValueError, "control character"),
    ("line\nbreak", ValueError, "control character"),
    ("del\x7f", ValueError, "control character"),
    ("fs\udcffname", ValueError, "surrogate"),
    ("x" * 256, ValueError, "at most 255"),
    (42, TypeError, "must be a str"),
    (b"bytes", TypeError, "must be a str"),
]


def row_count(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"delay": math.nan}, ValueError, "finite"),
        ({"delay": math.inf}, ValueError, "finite"),
        ({"delay": -1}, ValueError, ">= 0"),
        ({"delay": CENTURY + 86400}, ValueError, "100 years"),
        ({"delay": 10**400}, ValueError, "finite"),
        ({"delay": "5"}, TypeError, "number of seconds"),
        ({"delay": True}, TypeError, "number of seconds"),
        ({"at": math.nan}, ValueError, "finite"),
        ({"at": -math.inf}, ValueError, "finite"),
        ({"at": 1_800_000_000.0 + CENTURY + 86400}, ValueError, "100 years"),
        ({"at": -1e300}, ValueError, "100 years"),
        ({"delay": 1, "at": 1_800_000_000.0}, ValueError, "not both"),
        ({"priority": "high"}, TypeError, "must be an int"),
        ({"priority": True}, TypeError, "must be an int"),
        ({"priority": 1.5}, TypeError, "must be an int"),
        ({"priority": None}, TypeError, "must be an int"),
        ({"priority": 2**31}, ValueError, "between"),
        ({"priority": -(2**31) - 1}, ValueError, "between"),
        *[({"destination": name}, error, message) for name, error, message in BAD_NAMES],
        ({"key": ""}, ValueError, "must not be empty"),
        ({"key": "order-\x00"}, ValueError, "control character"),
        ({"key": "\udcff"}, ValueError, "surrogate"),
        ({"key": "k" * 1025}, ValueError, "at most 1024"),
        ({"key": 7}, TypeError, "must be a str"),
    ],
)
async def test_a_bad_option_is_refused_and_nothing_is_written(
    make_queue: MakeQueue,
    db_path: str,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    queue = make_queue()

    @queue.task
    async def step(i: int) -> int:
        return i

    async with queue:
        with pytest.raises(error, match=message):
            await queue.submit(step, 1, **options)
        with pytest.raises(error, match=message):
            await queue._submit_payload(step, {"i": 1}, **options)  # Task.options() goes here
        if "key" not in options:  # submit_many takes no key
            with pytest.raises(error, match=message):
                await queue.submit_many(step, [{"i": 1}, {"i": 2}], **options)
        if not options.keys() & {"key", "at"}:
            with pytest.raises(error, match=message):
                await step.submit_many([{"i": 1}], **options)
        assert row_count(db_path) == 0
        # ...and the queue is none the worse for it.
        assert await (await step.submit(3)).result(timeout=10) == 3


class Urgency(enum.IntEnum):
    HIGH = 10


async def test_options_at_their_limits_are_accepted(
    make_queue: MakeQueue, db_path: str, clock: ManualClock
) -> None:
    queue = make_queue()

    @queue.task
    async def step(i: int) -> int:
        return i

    async with queue:
        jobs = [
            await queue.submit(step, 1, priority=2**31 - 1),
            await queue.submit(step, 2, priority=-(2**31)),
            await queue.submit(step, 3, priority=Urgency.HIGH),
            await queue.submit(step, 4, at=0.0),  # long past: due now
            await queue.submit(step, 5, delay=0),
            await queue.submit(step, 6, key="k" * 1024, destination="d" * 255),
            await queue.submit(
                step, 7, key="caf\u00e9 \u2603 \U0001f600", destination="emoji:\u2603"
            ),
            await queue.submit(step, 8, delay=CENTURY - 1),
        ]
        await run_until_idle(queue)
        assert [await job.result(timeout=10) for job in jobs[:7]] == [1, 2, 3, 4, 5, 6, 7]
        assert (await queue.get(jobs[2].id)).priority == 10
    assert row_count(db_path) == 8


@pytest.mark.parametrize(("name", "error", "message"), BAD_NAMES)
async def test_bad_task_and_destination_names_are_refused_where_they_are_declared(
    make_queue: MakeQueue, name: Any, error: type[Exception], message: str
) -> None:
    queue = make_queue()

    async def handler() -> None:
        pass

    with pytest.raises(error, match=message):
        queue.task(name=name)(handler)
    with pytest.raises(error, match=message):
        queue.task(destination=name)(handler)
    with pytest.raises(error, match=message):
        queue.destination(name)
    assert queue._registry.names() == ["asyncq.http"]  # only the built-in delivery task
