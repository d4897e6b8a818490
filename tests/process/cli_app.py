"""The queue that the worker subprocess of tests/process/test_cli.py runs:
`asyncq worker tests.process.cli_app:queue`, its journal from ASYNCQ_TEST_JOURNAL.

Three destinations, one of each kind an operator looks at: "email", paced, whose
jobs succeed; "crm", whose jobs fail and are dead at once; "slow", whose jobs run
until they are cancelled.
"""

from __future__ import annotations

import asyncio
import os

from asyncq import Queue, Rate, Retry

SEND, POST, WAIT = "cli.send", "cli.post", "cli.wait"


async def send(i: int) -> str:
    return f"sent {i}"


async def post(i: int) -> None:
    raise ConnectionError(f"crm down ({i})")


async def wait(i: int) -> None:
    await asyncio.Event().wait()  # nothing sets it: runs until cancelled


def make(path: str | os.PathLike[str], concurrency: int) -> Queue:
    queue = Queue(path, concurrency=concurrency, poll_interval=0.02, shutdown_timeout=1.0)
    queue.destination("email", rate=Rate(100, per=1))
    queue.destination("crm", retry=Retry.never())
    queue.task(name=SEND, destination="email")(send)
    queue.task(name=POST, destination="crm")(post)
    queue.task(name=WAIT, destination="slow")(wait)
    return queue


queue = make(os.environ.get("ASYNCQ_TEST_JOURNAL", ":memory:"), concurrency=8)


def producer(path: str | os.PathLike[str]) -> Queue:
    """A queue on the same journal that only submits and looks."""
    return make(path, concurrency=0)
