"""The SQLite journal's writer: how a turn's callers hear of its commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncq._journal import NewJob, SqliteJournal, _thread

NOW = 1_800_000_000.0
SUBMITS = 40


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    opened = SqliteJournal(str(tmp_path / "j.db"))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_lone_insert_costs_the_event_loop_two_turns(journal: SqliteJournal) -> None:
    # One producer awaiting each insert: the commit's callback wakes the producer
    # (turn 1), whose next insert and the writer's hand-over of it share the next
    # turn (turn 2). Were the callers woken by the writer task instead, every insert
    # would cost a third turn (the one-producer figure of benchmarks/throughput.py).
    loop = asyncio.get_running_loop()
    turns = 0
    run_once = loop._run_once  # type: ignore[attr-defined]

    def counting() -> None:
        nonlocal turns
        turns += 1
        run_once()

    await journal.insert_many([NewJob("t", "{}", "d", 0, NOW)], NOW)  # warm: statements cached
    commits = journal.commits
    loop._run_once = counting  # type: ignore[attr-defined]
    try:
        for i in range(SUBMITS):
            (inserted,) = await journal.insert_many([NewJob("t", f'{{"i":{i}}}', "d", 0, NOW)], NOW)
            assert inserted.created
    finally:
        del loop._run_once  # type: ignore[attr-defined]
    assert journal.commits - commits == SUBMITS  # one turn each, counted before its callers ran
    # Before aiosqlite 0.22.1 its thread also replies to each turn (to a future done
    # already): a loop turn more, not a hang.
    per_insert = 2 if _thread._NO_FUTURE_OK else 3
    assert turns <= per_insert * SUBMITS + 2
