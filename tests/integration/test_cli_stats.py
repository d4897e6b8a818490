"""`asyncq stats` shows what holds a destination back, not only its counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from asyncq import Queue, RetryAfter
from asyncq.cli import main
from asyncq.testing import ManualClock, run_until_idle


async def test_stats_show_pauses_holds_and_counts(
    make_queue: Callable[..., Queue],
    db_path: str,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queue = make_queue()

    @queue.task(name="enrich", destination="provider")
    async def enrich() -> None:
        raise RetryAfter(120)

    @queue.task(name="post", destination="crm")
    async def post() -> None: ...

    async with queue:
        await queue.pause("crm")
        await post.submit()
        await enrich.submit()
        await run_until_idle(queue)

    await asyncio.to_thread(main, ["stats", db_path, "--json"])
    shown = json.loads(capsys.readouterr().out)["destinations"]
    assert shown["crm"]["paused"] is True
    assert shown["crm"]["ready"] == 1
    assert shown["provider"]["held_until"] is not None
    assert shown["provider"]["scheduled"] == 1
