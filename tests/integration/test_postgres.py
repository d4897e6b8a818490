"""The queue on PostgreSQL: what the journal contract suite cannot show on its own
(the Queue's choice of backend, wake-ups across processes, migrations racing,
connection strings kept secret, hosts' clocks). Against the real server that
tests/postgres.py finds, a fresh schema per test."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asyncq import JobState, JournalError, Queue, Retry
from asyncq._journal import NewJob, PostgresJournal
from asyncq._journal._postgres_dsn import describe, scrub
from asyncq._journal._postgres_schema import SCHEMA_VERSION
from tests.postgres import CommitCutter, fresh_schema, postgres_dsn_or_skip


@pytest.fixture
async def schema_dsn() -> AsyncIterator[str]:
    async with fresh_schema(postgres_dsn_or_skip()) as dsn:
        yield dsn


async def test_a_postgresql_url_selects_the_postgresql_journal(schema_dsn: str) -> None:
    queue = Queue(schema_dsn, concurrency=4)
    seen: list[int] = []

    queue.destination("calc", retry=Retry(schedule=[0.1]))

    @queue.task(name="add", destination="calc")
    async def add(a: int, b: int) -> int:
        seen.append(a)
        if a == 0 and len(seen) == 1:
            raise ValueError("the first attempt fails")
        return a + b

    async with queue:
        jobs = [await add.submit(i, 10) for i in range(3)]
        results = [await job.result(timeout=10) for job in jobs]
        info = await queue.get(jobs[0].id)
        stats = await queue.stats()
    assert isinstance(queue._journal, PostgresJournal)
    assert results == [10, 11, 12]
    assert (info.state, info.attempts) == (JobState.SUCCEEDED, 2)
    assert info.last_error is not None
    assert info.last_error.startswith("ValueError: the first attempt fails")
    assert stats.succeeded == 3


async def test_a_job_submitted_in_one_process_wakes_a_worker_in_another(schema_dsn: str) -> None:
    # The worker polls only every 60 s: the job can start at once only if the
    # producer's commit NOTIFYs it.
    worker = Queue(schema_dsn, concurrency=2, poll_interval=60)
    producer = Queue(schema_dsn, concurrency=0)
    started = asyncio.Event()

    for queue in (worker, producer):

        @queue.task(name="ping")
        async def ping() -> str:
            started.set()
            return "pong"

    async with worker, producer:
        # Let the worker's dispatcher go idle (its claim found nothing) first.
        for _ in range(50):
            await asyncio.sleep(0)
        job = await producer.submit("ping")
        await asyncio.wait_for(started.wait(), timeout=10)
        assert await job.result(timeout=10) == "pong"


async def test_a_capped_destination_goes_on_as_soon_as_a_slot_frees(schema_dsn: str) -> None:
    # The cap is counted in the database, where a finished call holds its slot
    # until its outcome is written: the next claim must follow that write, not
    # wait for a poll (every 60 s here).
    queue = Queue(schema_dsn, concurrency=4, poll_interval=60)
    queue.destination("one", concurrency=1)
    running = 0
    most = 0

    @queue.task(name="call", destination="one")
    async def call(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0)
        running -= 1
        return i

    async with queue:
        jobs = await call.submit_many([{"i": i} for i in range(10)])
        results = [await job.result(timeout=10) for job in jobs]
    assert results == list(range(10))
    assert most == 1


async def test_hosts_starting_at_once_migrate_the_schema_once(schema_dsn: str) -> None:
    journals = [PostgresJournal(schema_dsn) for _ in range(5)]
    await asyncio.gather(*(journal.open() for journal in journals))
    try:
        ids = await asyncio.gather(
            *(j.insert_many([NewJob("t", "{}", "d", 0, 0.0)], 0.0) for j in journals)
        )
        assert len({inserted[0].id for inserted in ids}) == 5
    finally:
        for journal in journals:
            await journal.close()
    import asyncpg

    conn = await asyncpg.connect(schema_dsn.split("?")[0])
    try:
        schema = journals[0].schema
        versions = await conn.fetch(f"SELECT version FROM {schema}.schema_version")
    finally:
        await conn.close()
    assert [row[0] for row in versions] == [SCHEMA_VERSION]


async def test_a_schema_of_another_application_is_refused_and_left_alone(
    schema_dsn: str,
) -> None:
    import asyncpg

    journal = PostgresJournal(schema_dsn)
    conn = await asyncpg.connect(schema_dsn.split("?")[0])
    try:
        await conn.execute(f"CREATE SCHEMA {journal.schema}")
        await conn.execute(f"CREATE TABLE {journal.schema}.invoices (id int)")
        with pytest.raises(JournalError, match="not asyncq's"):
            await journal.open()
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1", journal.schema
        )
    finally:
        await conn.close()
    assert [row[0] for row in tables] == ["invoices"]


async def test_a_schema_written_by_a_newer_asyncq_is_refused(schema_dsn: str) -> None:
    journal = PostgresJournal(schema_dsn)
    await journal.open()
    await journal.close()
    import asyncpg

    conn = await asyncpg.connect(schema_dsn.split("?")[0])
    try:
        await conn.execute(f"UPDATE {journal.schema}.schema_version SET version = 99")
    finally:
        await conn.close()
    with pytest.raises(JournalError, match="schema version 99 was written by a newer asyncq"):
        await journal.open()


async def test_a_schema_of_version_3_gets_the_counts_of_its_jobs(schema_dsn: str) -> None:
    import asyncpg

    from asyncq._journal._postgres_connections import split_dsn
    from asyncq._journal._postgres_schema import MIGRATIONS

    server, schema = split_dsn(schema_dsn, None)
    conn = await asyncpg.connect(server, server_settings={"search_path": schema})
    try:
        # The schema as asyncq left it at version 3, with jobs in every state.
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.schema_version (version integer NOT NULL)")
        await conn.execute(f"INSERT INTO {schema}.schema_version VALUES (3)")
        for statements in MIGRATIONS[:3]:
            await conn.execute(";\n".join(statements))
        states = ["pending"] * 3 + ["scheduled", "running", "succeeded", "succeeded", "dead"]
        await conn.executemany(
            "INSERT INTO jobs (task, payload, destination, state, created_at, run_at) "
            "VALUES ('t', '{}', $1, $2, 0, 0)",
            [("crm" if n % 2 else "mail", state) for n, state in enumerate(states)],
        )
    finally:
        await conn.close()
    journal = PostgresJournal(schema_dsn)
    await journal.open()
    try:
        stats = await journal.stats(0.0)
    finally:
        await journal.close()
    crm, mail = stats.destinations["crm"], stats.destinations["mail"]
    # crm's scheduled job is due (at 0): ready; mail's running one is claimed.
    assert (crm.ready, crm.scheduled, crm.succeeded, crm.dead) == (2, 0, 1, 1)
    assert (mail.ready, mail.claimed, mail.succeeded, mail.dead) == (2, 1, 1, 0)


async def test_processes_count_in_rows_of_their_own_and_fold_them_at_close(
    schema_dsn: str,
) -> None:
    from tests.postgres import query

    journals = [PostgresJournal(schema_dsn) for _ in range(3)]
    for journal in journals:
        await journal.open()
    for n, journal in enumerate(journals):
        await journal.insert_many([NewJob("t", "{}", "crm", 0, 0.0)] * (n + 1), 0.0)
    writers = await asyncio.to_thread(query, schema_dsn, "SELECT writer, n FROM counts ORDER BY n")
    assert [n for _, n in writers] == [1, 2, 3]  # nobody waited on a shared row
    assert len({writer for writer, _ in writers}) == 3
    assert (await journals[0].stats(0.0)).destinations["crm"].ready == 6
    for journal in journals:
        await journal.close()
    folded = await asyncio.to_thread(query, schema_dsn, "SELECT writer, n FROM counts")
    assert folded == [("", 6)]


async def test_a_process_that_starts_folds_the_counts_of_the_others(schema_dsn: str) -> None:
    from tests.postgres import query

    alive = PostgresJournal(schema_dsn)
    await alive.open()
    try:
        await alive.insert_many([NewJob("t", "{}", "crm", 0, 0.0)] * 2, 0.0)
        # A process killed long ago left rows of its own: 5 jobs that exist.
        await asyncio.to_thread(
            query,
            schema_dsn,
            "INSERT INTO jobs (task, payload, destination, state, created_at, run_at) "
            "SELECT 't', '{}', 'crm', 'pending', 0, 0 FROM generate_series(1, 5)",
        )
        await asyncio.to_thread(
            query, schema_dsn, "INSERT INTO counts VALUES ('crm', 'pending', 'killed', 5)"
        )
        starting = PostgresJournal(schema_dsn)
        await starting.open()  # folds every other writer's rows, the live one's too
        try:
            folded = await asyncio.to_thread(query, schema_dsn, "SELECT writer, n FROM counts")
            assert folded == [("", 7)]
            await alive.insert_many([NewJob("t", "{}", "crm", 0, 0.0)], 0.0)  # a row anew
            assert (await starting.stats(0.0)).destinations["crm"].ready == 8
        finally:
            await starting.close()
    finally:
        await alive.close()


def test_a_password_never_shows_in_descriptions() -> None:
    dsn = "postgresql://app:s3cr%40t@db.internal:5432/app?sslmode=require&password=other"
    assert describe(dsn) == "postgresql://app@db.internal:5432/app?sslmode=require&password=***"
    assert scrub("failed for s3cr@t and s3cr%40t and other", dsn) == (
        "failed for *** and *** and ***"
    )
    queue = Queue(dsn, concurrency=0)
    for text in (queue.path, repr(queue._journal), queue._journal.description):
        assert "s3cr" not in text
        assert "other" not in text


async def test_a_password_never_shows_in_a_connection_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: the connection fails, and says so without the password.
    queue = Queue("postgresql://app:hunter2-secret@127.0.0.1:1/app", concurrency=0)
    with caplog.at_level(logging.DEBUG), pytest.raises(JournalError) as failed:
        await queue.start()
    shown = [str(failed.value), repr(failed.value), caplog.text]
    chain: BaseException | None = failed.value
    while chain is not None:
        shown.append(str(chain))
        chain = chain.__cause__ or chain.__context__
    assert "cannot connect" in str(failed.value)
    assert not any("hunter2" in text for text in shown)


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import asyncpg now fails
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'asyncq\[postgres\]'"):
        Queue("postgresql://app@db/app")


async def test_hosts_with_skewed_clocks_read_the_database_servers_time(
    schema_dsn: str,
) -> None:
    ahead = PostgresJournal(schema_dsn, local_clock=lambda: time.time() + 2.0)
    behind = PostgresJournal(schema_dsn, local_clock=lambda: time.time() - 2.0)
    for journal in (ahead, behind):
        await journal.open()
    try:
        a, b = ahead.clock().now(), behind.clock().now()
        server = await ahead._read(
            lambda conn: conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
        )
    finally:
        for journal in (ahead, behind):
            await journal.close()
    # 4 s apart on their own, within a few ms of each other and of the server here.
    assert abs(a - b) < 0.05
    assert abs(a - server) < 0.05
    assert abs(ahead.clock_offset - behind.clock_offset - -4.0) < 0.05


def test_the_readmes_postgresql_snippet_builds_its_queues() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "?schema=" in b]
    scope: dict[str, object] = {"Queue": Queue}
    exec(block, scope)  # builds the queues; nothing connects before start
    queue = scope["queue"]
    assert isinstance(queue, Queue)
    assert isinstance(queue._journal, PostgresJournal)
    assert queue._journal.schema == "outbound"


async def test_work_committed_as_the_connection_was_lost_is_not_reported_lost(
    schema_dsn: str,
) -> None:
    # The proxy cuts the connection between the server's COMMIT and its answer:
    # the journal asks the server (on a new connection) whether the transaction
    # committed, and hands the callers their results instead of an error that
    # would make them submit again (a duplicate) or leave a claim unseen (a job
    # kept `running` by this process's lease renewals).
    host, port = urllib.parse.urlsplit(schema_dsn).hostname, urllib.parse.urlsplit(schema_dsn).port
    async with CommitCutter(host or "127.0.0.1", port or 5432) as cutter:
        journal = PostgresJournal(cutter.dsn(schema_dsn))
        await journal.open()
        try:
            cutter.armed = True
            (inserted,) = await journal.insert_many([NewJob("t", "{}", "d", 0, 0.0)], 0.0)
            assert cutter.cuts == 1
            cutter.armed = True
            claim = await journal.claim("host:1:a", 10, 60.0, 1.0)
            assert cutter.cuts == 2
            info = await journal.get(inserted.id)
        finally:
            await journal.close()
    assert [job.id for job in claim.jobs] == [inserted.id]
    assert info is not None
    assert info.state == JobState.RUNNING


async def test_a_keyed_submit_whose_commit_is_in_doubt_can_be_retried(schema_dsn: str) -> None:
    # The answer to COMMIT is lost and the server cannot be asked (it refuses the
    # next connection, as one still restarting would): the submit raises a
    # transient error although its job was written. Submitted again with the same
    # key, it finds that job instead of adding a second.
    parts = urllib.parse.urlsplit(schema_dsn)
    async with CommitCutter(parts.hostname or "127.0.0.1", parts.port or 5432) as cutter:
        queue = Queue(cutter.dsn(schema_dsn), concurrency=0)

        @queue.task(name="charge")
        async def charge(order: int) -> None:
            pass

        async with queue:
            cutter.armed, cutter.refuse_after_cut = True, 1
            with pytest.raises(JournalError, match="lost the connection") as raised:
                await charge.options(key="order-7").submit(order=7)
            assert raised.value.transient
            job = await charge.options(key="order-7").submit(order=7)
            info = await queue.get(job.id)
            stats = await queue.stats()
    assert cutter.cuts == 1
    assert info is not None
    assert info.key == "order-7"
    assert stats.destinations["default"].pending == 1  # one job, not two
