"""asyncq reaches into aiosqlite in one place; pin what it relies on, and keep the
public fallback (used when the private hook is gone) working."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, cast

import aiosqlite
import pytest

from asyncq import Queue
from asyncq._journal import _sqlite_connections, _thread
from asyncq._journal._thread import TESTED_AIOSQLITE, ConnectionThread, hook_fits
from asyncq.testing import ManualClock, run_until_idle


def test_the_installed_aiosqlite_is_one_the_adapter_was_checked_against() -> None:
    # pyproject.toml has no upper bound on aiosqlite, so users can upgrade; this test
    # is what makes a new release get checked (in CI) before the hook is trusted.
    version = aiosqlite.__version__
    assert ".".join(version.split(".")[:2]) in TESTED_AIOSQLITE, (
        f"aiosqlite {version} is not one ConnectionThread was checked against "
        f"({', '.join(TESTED_AIOSQLITE)}): read its Connection._execute and _conn "
        "(aiosqlite/core.py), run this file, then add it to TESTED_AIOSQLITE"
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    async with aiosqlite.connect(tmp_path / "t.db", isolation_level=None) as db:
        yield db


async def test_a_function_runs_on_the_connection_thread_with_the_live_connection(
    db: aiosqlite.Connection,
) -> None:
    thread = ConnectionThread(db)
    seen: dict[str, object] = {}

    def probe(conn: sqlite3.Connection) -> int:
        seen["thread"] = threading.current_thread()
        seen["conn"] = conn
        return int(conn.execute("SELECT 41 + 1").fetchone()[0])

    assert thread.private_hook
    assert await thread.run(probe) == 42
    assert seen["thread"] is not threading.current_thread()
    assert isinstance(seen["conn"], sqlite3.Connection)
    # The live connection aiosqlite's own calls use: a row written by one is seen by the other.
    await thread.run(lambda conn: conn.execute("CREATE TABLE t (x)"))
    await db.execute("INSERT INTO t VALUES (7)")
    assert await thread.run(lambda conn: conn.execute("SELECT x FROM t").fetchall()) == [(7,)]
    await thread.close()  # nothing to do on the private hook; aiosqlite's stays usable
    assert await db.execute_fetchall("SELECT x FROM t") == [(7,)]


class WithoutHook:
    """An aiosqlite connection seen only through its public API: no `_execute`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._inner = db
        self.isolation_level = db.isolation_level

    async def execute_fetchall(self, sql: str) -> Iterable[sqlite3.Row]:
        return await self._inner.execute_fetchall(sql)


class SyncExecute:
    _conn = property(lambda self: None)

    def _execute(self, fn: Any, *args: Any) -> None: ...


class NoArgsExecute:
    _conn = property(lambda self: None)

    async def _execute(self, fn: Any) -> None: ...


class NoCallQueue:
    """`_execute` and `_conn` as aiosqlite has them, but no `_tx` queue to put calls on."""

    _conn = property(lambda self: None)

    async def _execute(self, fn: Any, *args: Any) -> None: ...


async def test_the_hook_is_used_only_when_it_has_the_expected_shape(
    db: aiosqlite.Connection,
) -> None:
    assert hook_fits(db)
    for other in (WithoutHook(db), SyncExecute(), NoArgsExecute(), NoCallQueue(), object()):
        assert not hook_fits(other), type(other).__name__


@pytest.mark.parametrize(
    ("private_hook", "placeholder"),
    [(True, False), (True, True), (False, False)],
    ids=["private hook", "private hook, aiosqlite before 0.22.1", "fallback"],
)
async def test_a_submitted_call_is_answered_once_on_the_event_loop(
    db: aiosqlite.Connection,
    private_hook: bool,
    placeholder: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `submit` is how a journal turn runs: the thread answers through `on_done`
    # alone, a result or an error. aiosqlite sends no reply of its own: from 0.22.1
    # the call goes without a future; before it (whose thread died of a call without
    # one), with a future done already, whose reply aiosqlite drops.
    if private_hook and not placeholder and not _thread._NO_FUTURE_OK:
        pytest.skip(f"aiosqlite {aiosqlite.__version__} cannot take a call without a future")
    monkeypatch.setattr(_thread, "_NO_FUTURE_OK", not placeholder)
    thread = ConnectionThread(db, private_hook=private_hook)
    assert thread.private_hook is private_hook
    await thread.run(lambda conn: conn.execute("CREATE TABLE t (x)"))
    loop = asyncio.get_running_loop()
    answers: list[tuple[object, BaseException | None, threading.Thread]] = []
    both = asyncio.Event()

    def on_done(result: object, error: BaseException | None) -> None:
        answers.append((result, error, threading.current_thread()))
        if len(answers) == 2:
            loop.call_soon(both.set)

    thread.submit(lambda conn: conn.execute("INSERT INTO t VALUES (1)").rowcount, on_done)
    thread.submit(lambda conn: conn.execute("SELECT * FROM missing"), on_done)
    await both.wait()
    # Nothing else arrives (a reply of aiosqlite's own would fail: it has no future).
    assert await thread.run(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()) == (1,)
    (one, none, loop_thread), (nothing, error, same_thread) = answers
    assert (one, none, nothing) == (1, None, None)
    assert isinstance(error, sqlite3.OperationalError)
    assert "no such table: missing" in str(error)
    assert loop_thread is same_thread is threading.current_thread()
    await thread.close()


async def test_an_unchecked_release_with_the_expected_hook_is_used_and_named_once(
    db: aiosqlite.Connection, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aiosqlite, "__version__", "9.9.0")
    monkeypatch.setattr(_thread, "_untested_version_logged", False)
    with caplog.at_level(logging.INFO, logger="asyncq"):
        first, second = ConnectionThread(db), ConnectionThread(db)
    assert first.private_hook
    assert second.private_hook
    (note,) = caplog.records
    assert "aiosqlite 9.9.0 was not checked" in note.getMessage()
    assert await second.run(lambda conn: conn.execute("SELECT 1").fetchone()) == (1,)


async def test_without_the_hook_functions_run_on_one_thread_of_its_own(
    db: aiosqlite.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="asyncq"):
        public_only = WithoutHook(db)  # kept: the fallback stops when it is collected
        thread = ConnectionThread(cast(aiosqlite.Connection, public_only))
    assert not thread.private_hook
    (warning,) = caplog.records
    assert f"aiosqlite {aiosqlite.__version__}" in warning.getMessage()

    threads: set[threading.Thread] = set()
    order: list[int] = []

    def step(i: int, conn: sqlite3.Connection) -> int:
        threads.add(threading.current_thread())
        assert not conn.in_transaction  # the previous call has finished: one at a time
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        order.append(i)
        conn.execute("COMMIT")
        return i

    await db.execute("CREATE TABLE t (x)")
    results = await asyncio.gather(*(thread.run(functools.partial(step, i)) for i in range(50)))
    assert results == order == list(range(50))
    (own,) = threads
    assert own is not threading.current_thread()
    # Its connection is to the same file, with the same isolation level.
    assert await thread.run(lambda conn: conn.isolation_level) is None
    rows = await db.execute_fetchall("SELECT count(*) FROM t")
    assert list(rows) == [(50,)]

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT * FROM missing")

    with pytest.raises(sqlite3.OperationalError, match="no such table: missing"):
        await thread.run(broken)
    assert await thread.run(lambda conn: conn.execute("SELECT 1").fetchone()) == (1,)

    await thread.close()
    assert not own.is_alive()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        await thread.run(lambda conn: None)


async def test_a_call_whose_connection_went_away_meanwhile_is_answered(
    db: aiosqlite.Connection,
) -> None:
    # Submitted while aiosqlite's connection was open, run after it went (aiosqlite's
    # close() queues the close, then forgets the connection): the caller hears why,
    # and does not wait forever for a reply aiosqlite would have dropped.
    thread = ConnectionThread(db)
    release = threading.Event()
    answers: list[tuple[object, BaseException | None]] = []
    answered = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_done(result: object, error: BaseException | None) -> None:
        answers.append((result, error))
        if len(answers) == 2:
            loop.call_soon(answered.set)

    inside = asyncio.Event()

    def hold(conn: sqlite3.Connection) -> bool:
        loop.call_soon_threadsafe(inside.set)
        return release.wait()

    thread.submit(hold, on_done)  # holds the thread
    thread.submit(lambda conn: 1, on_done)
    await inside.wait()
    connection, db._connection = db._connection, None
    release.set()
    try:
        async with asyncio.timeout(10):  # a hang fails here, not the whole run
            await answered.wait()
    finally:
        db._connection = connection
    (held, _), (result, error) = answers
    assert held is True
    assert result is None
    assert isinstance(error, ValueError)
    assert "no active connection" in str(error)
    assert await thread.run(lambda conn: conn.execute("SELECT 1").fetchone()) == (1,)


async def test_the_fallback_answers_a_submitted_call_when_it_cannot_connect(
    tmp_path: Path,
) -> None:
    # The fallback opens its own connection on its thread, at the first call: if it
    # cannot (the database's folder went away meanwhile), the call fails with why.
    folder = tmp_path / "gone"
    folder.mkdir()
    async with aiosqlite.connect(folder / "t.db", isolation_level=None) as db:
        await db.execute("CREATE TABLE t (x)")
        thread = ConnectionThread(db, private_hook=False)
        for name in os.listdir(folder):
            os.unlink(folder / name)
        folder.rmdir()
        async with asyncio.timeout(10):  # a hang fails here, not the whole run
            with pytest.raises(sqlite3.OperationalError, match="unable to open"):
                await thread.run_then(lambda conn: conn.execute("SELECT 1"), lambda r: None)
        await thread.close()


@pytest.mark.parametrize("private_hook", [True, False], ids=["private hook", "fallback"])
async def test_run_then_wakes_whoever_then_wakes_before_the_caller(
    db: aiosqlite.Connection, private_hook: bool
) -> None:
    # The writer's turns: `then` resolves the turn's callers, which must run before
    # the writer task resumes (so that their next calls join the next turn).
    thread = ConnectionThread(db, private_hook=private_hook)
    order: list[str] = []
    woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def caller() -> None:
        await woken
        order.append("caller")

    waiting = asyncio.create_task(caller())
    await asyncio.sleep(0)  # the caller waits

    def then(result: int) -> None:
        order.append(f"then {result}")
        woken.set_result(None)

    assert await thread.run_then(lambda conn: conn.execute("SELECT 7").fetchone()[0], then) == 7
    order.append("writer")
    assert order == ["then 7", "caller", "writer"]
    await waiting

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT * FROM missing")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await thread.run_then(broken, lambda result: order.append("not called"))
    assert order[-1] == "writer"
    await thread.close()


async def test_the_fallback_serves_an_in_memory_database() -> None:
    async with aiosqlite.connect(":memory:") as db:
        thread = ConnectionThread(db, private_hook=False)
        assert not thread.private_hook
        await thread.run(lambda conn: conn.execute("CREATE TABLE t (x)"))
        assert await thread.run(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()) == (
            0,
        )
        await thread.close()


async def test_the_fallback_stops_with_aiosqlites_connection_if_not_closed(
    tmp_path: Path,
) -> None:
    db = await aiosqlite.connect(tmp_path / "t.db")
    thread = ConnectionThread(db, private_hook=False)
    await thread.run(lambda conn: conn.execute("SELECT 1"))
    assert thread._own is not None
    assert thread._own._thread is not None
    own = thread._own._thread
    await db.close()
    del db
    gc.collect()
    await asyncio.to_thread(own.join, 10)
    assert not own.is_alive()


async def test_a_queue_runs_on_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        _sqlite_connections,
        "ConnectionThread",
        functools.partial(ConnectionThread, private_hook=False),
    )
    path = str(tmp_path / "jobs.db")
    queue = Queue(path, concurrency=4, clock=ManualClock())

    @queue.task(name="double")
    async def double(n: int) -> int:
        return n * 2

    async with queue:
        assert queue._journal._thread is not None  # type: ignore[attr-defined]
        assert not queue._journal._thread.private_hook  # type: ignore[attr-defined]
        jobs = await double.submit_many([{"n": n} for n in range(20)])
        await run_until_idle(queue)
        assert [await job.result(timeout=5) for job in jobs] == [n * 2 for n in range(20)]
        await double.options(delay=60).submit(n=100)
    with sqlite3.connect(path) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    assert states == {"succeeded": 20, "scheduled": 1}
