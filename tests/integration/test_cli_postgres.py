"""The asyncq command against a PostgreSQL connection string (a fresh schema)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator

import pytest

from asyncq import JobState, Queue, Rate, Retry
from asyncq._cli._documents import stats_document
from asyncq._journal._postgres import PostgresJournal
from asyncq._journal._postgres_readonly import PostgresReadOnly
from asyncq._journal._postgres_schema import SCHEMA_VERSION
from asyncq._journal._sqlite_readonly import ReadOnlyJournal
from asyncq.cli import main
from asyncq.testing import ManualClock, run_until_idle
from tests.postgres import fresh_schema, postgres_dsn_or_skip, query
from tests.process.test_cli import ASYNCQ, ENV, FRAME, frame_rows, run_in_terminal

from .test_cli_commands import document, make_workflow, run


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with fresh_schema(postgres_dsn_or_skip()) as schema_dsn:
        yield schema_dsn


async def test_stats_dead_redrive_pause_resume_and_cancel_on_a_connection_string(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = Queue(dsn, concurrency=2)
    queue.destination("hook", retry=Retry.never())

    @queue.task(name="deliver", destination="hook")
    async def deliver(i: int) -> None:
        raise ConnectionError(f"receiver down ({i})")

    async with queue:
        jobs = await deliver.submit_many([{"i": 1}, {"i": 2}])
        await run_until_idle(queue)

    # Each command runs its own event loop: in a thread, as a shell would run it.
    await asyncio.to_thread(main, ["stats", dsn, "--json"])
    assert json.loads(capsys.readouterr().out)["destinations"]["hook"]["dead"] == 2
    await asyncio.to_thread(main, ["dead", dsn, "--destination", "hook", "--json"])
    listed = json.loads(capsys.readouterr().out)["dead"]
    assert sorted(job["id"] for job in listed) == sorted(job.id for job in jobs)
    assert all(job["last_error"].startswith("ConnectionError: receiver down") for job in listed)
    await asyncio.to_thread(main, ["pause", dsn, "hook"])
    assert "hook: paused" in capsys.readouterr().out
    await asyncio.to_thread(main, ["redrive", dsn, str(jobs[0].id)])
    assert "redrove 1 job(s)" in capsys.readouterr().out

    async with Queue(dsn, concurrency=0) as reader:
        assert (await reader.get(jobs[0].id)).state is JobState.PENDING
        assert (await reader.get(jobs[1].id)).state is JobState.DEAD
        assert (await reader.stats()).destinations["hook"].paused
    await asyncio.to_thread(main, ["resume", dsn, "hook"])
    assert "hook: resumed" in capsys.readouterr().out
    async with Queue(dsn, concurrency=0) as reader:
        assert not (await reader.stats()).destinations["hook"].paused
    # The redriven job waits (its worker is gone): cancel it by id.
    await asyncio.to_thread(main, ["cancel", dsn, str(jobs[0].id)])
    capsys.readouterr()
    async with Queue(dsn, concurrency=0) as reader:
        assert (await reader.get(jobs[0].id)).state is JobState.CANCELLED


async def test_jobs_and_show_on_a_connection_string_read_as_on_a_journal_file(
    dsn: str, db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same jobs at the same (controlled) times in both journals: every document
    # of `jobs` and `show`, columns, filters and paging, must come out the same.
    for path in (db_path, dsn):
        await make_workflow(Queue(path, concurrency=4, clock=ManualClock()))
    commands = [
        ["jobs", "--limit", "3"],
        ["jobs", "--limit", "3", "--after", "3"],
        ["jobs", "--limit", "3", "--after", "6"],
        ["jobs", "--state", "pending", "-d", "mailer"],
        ["jobs", "--task", "fetch"],
        ["jobs", "--state", "dead"],
        ["show", "1"],
        ["show", "2"],
        ["show", "3"],
        ["show", "8"],
        ["dead"],
        ["dead", "-d", "crm"],
    ]
    for command, *options in commands:
        on_file = await document([command, db_path, *options], capsys)
        on_server = await document([command, dsn, *options], capsys)
        assert on_server == on_file, (command, options)
    assert (await document(["show", dsn, "2"], capsys))["parents"] == [1]  # not vacuous

    status, out, err = await run(["jobs", dsn, "--limit", "2", "--state", "pending"], capsys)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["id", "state", "destination", "task", "attempts"]
    assert [line.split()[:4] for line in lines[2:4]] == [
        ["4", "pending", "mailer", "mail"],
        ["5", "pending", "mailer", "mail"],
    ]
    assert lines[-1] == "more: --after 5"
    status, out, err = await run(["show", dsn, "2"], capsys)
    assert (status, err) == (0, "")
    for shown in ("post", "dead", "crm", '"deal": 42', "history (failed attempts)"):
        assert shown in out
    status, out, err = await run(["show", dsn, "99"], capsys)
    assert status == 1
    assert "no job with id 99" in err


def test_jobs_show_and_dead_on_a_missing_schema_name_it_and_create_nothing(dsn: str) -> None:
    # The server trusts the test's connections: the password is only there to be hidden.
    server = dsn.split("?")[0].replace("postgres@", "postgres:s3cret-pw@", 1)
    schema = f"asyncq_missing_{uuid.uuid4().hex[:10]}"
    for command in (["jobs"], ["show", "1"], ["dead"]):
        done = subprocess.run(
            [sys.executable, "-m", "asyncq.cli", command[0], f"{server}?schema={schema}",
             *command[1:]],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 1, done
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        assert f"no schema {schema!r}" in done.stderr
        assert "s3cret-pw" not in done.stderr
    assert query(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema) == [(0,)]


async def test_jobs_on_a_schema_that_is_not_a_journal_is_refused(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = dsn.rsplit("schema=", 1)[1]
    query(dsn, f"CREATE SCHEMA {schema}")
    query(dsn, f"CREATE TABLE {schema}.orders (id int)")
    status, out, err = await run(["jobs", dsn], capsys)
    assert (status, out) == (1, "")
    assert f"schema {schema!r} holds no asyncq journal" in err
    # Left as it was: no asyncq table was added.
    tables = query(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    assert tables == [("orders",)]


async def test_stats_on_a_connection_string_reads_what_the_queue_and_a_file_report(
    dsn: str, db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same jobs at the same (controlled) times in both journals, a rate on "api".
    clocks = {path: ManualClock() for path in (db_path, dsn)}
    for path, clock in clocks.items():
        queue = Queue(path, concurrency=4, clock=clock)
        queue.destination("api", rate=Rate(20, per=1.0))
        await make_workflow(queue)
    now = clocks[dsn].now() + 5.0
    read_only = await asyncio.to_thread(PostgresReadOnly(dsn).stats, now)
    journal = PostgresJournal(dsn)  # what a producer queue's stats() reads through
    await journal.open()
    try:
        through_queue = await journal.stats(now)
    finally:
        await journal.close()
    on_file = await asyncio.to_thread(ReadOnlyJournal(db_path).stats, now)
    shown = stats_document(read_only, now)
    assert shown == stats_document(through_queue, now)
    assert shown == stats_document(on_file, now)
    # Not vacuous: counts, rates, the limit and the pause are all there.
    api, mailer = shown["destinations"]["api"], shown["destinations"]["mailer"]
    assert (api["succeeded"], api["cancelled"], api["limit"]) == (1, 1, 20.0)
    assert api["arrival_rate"] > 0
    assert api["limit_used"] is not None
    assert (mailer["ready"], mailer["paused"], mailer["oldest_ready_age"]) == (5, True, 5.0)
    assert shown["destinations"]["crm"]["retries_per_minute"] > 0

    # The command: the document, the table and one frame of `top`, as on a file.
    destinations = (await document(["stats", dsn], capsys))["destinations"]
    assert (destinations["mailer"]["ready"], destinations["mailer"]["paused"]) == (5, True)
    assert (destinations["crm"]["dead"], destinations["api"]["limit"]) == (1, 20.0)
    status, out, err = await run(["stats", dsn], capsys)
    assert (status, err) == (0, "")
    counts, flow = out.split("last minute")
    rows = {line.split()[0]: line.split() for line in counts.splitlines() if line.strip()}
    # destination ready sched blocked claimed running succeeded dead cancelled oldest
    assert rows["mailer"][1:9] == ["5", "0", "0", "0", "0", "0", "0", "0"]
    assert rows["api"][1:9] == ["0", "0", "0", "0", "0", "1", "0", "1"]
    rows = {line.split()[0]: line.split() for line in flow.splitlines() if line.strip()}
    assert (rows["mailer"][-1], rows["crm"][-1]) == ("paused", "ok")
    status, out, err = await run(["top", dsn, "--once"], capsys)
    assert (status, err) == (0, "")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["mailer"][1:3] == ["5", "5"]
    assert rows["mailer"][-1] == "paused"
    assert rows["crm"][-2:] == ["1", "ok"]


async def test_top_on_a_connection_string_redraws_in_a_terminal(dsn: str) -> None:
    await make_workflow(Queue(dsn, concurrency=4, clock=ManualClock()))
    argv = [*ASYNCQ, "top", dsn, "--interval", "0.1"]
    status, output = await asyncio.to_thread(run_in_terminal, argv, 3)
    assert status == 0, output
    assert b"Traceback" not in output
    frames = output.split(FRAME)
    assert len(frames) >= 4
    height = frames[1].count(b"\n")
    for drawn in frames[2:-1]:
        assert b"\x1b[2K\x1b[1A" * (height - 1) in drawn  # redrawn in place
    rows = frame_rows(frames[-2])
    assert rows["mailer"][1:3] == ["5", "5"]
    assert rows["crm"][-2:] == ["1", "ok"]


async def test_stats_and_top_on_a_missing_schema_name_it_and_create_nothing(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = dsn.split("?")[0].replace("postgres@", "postgres:s3cret-pw@", 1)
    missing = f"{server}?schema=asyncq_missing_{uuid.uuid4().hex[:10]}"
    schema = missing.rsplit("=", 1)[1]
    exists = "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1"
    assert query(dsn, exists, schema) == [(0,)]

    # Two as processes, at once (each is mostly a Python start-up); two in this one.
    async def as_process(*command: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *ASYNCQ, *command, stdout=PIPE, stderr=PIPE, env=ENV
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    failures = await asyncio.gather(
        as_process("stats", missing), as_process("top", missing, "--interval", "0.1")
    )
    failures += [await run(["stats", missing, "--json"], capsys)]
    failures += [await run(["top", missing, "--once"], capsys)]
    for status, out, err in failures:
        assert (status, out) == (1, ""), err
        assert err.count("\n") == 1, err
        assert f"no schema {schema!r}" in err
        assert "s3cret-pw" not in err
    assert query(dsn, exists, schema) == [(0,)]
    assert query(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema) == [(0,)]


@pytest.mark.parametrize(
    ("version", "said"),
    [
        (SCHEMA_VERSION - 1, f"older than this asyncq's {SCHEMA_VERSION}: start a worker"),
        (SCHEMA_VERSION + 1, "was written by a newer asyncq"),
    ],
)
async def test_stats_and_top_refuse_a_schema_of_another_version_and_leave_it(
    dsn: str, version: int, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = PostgresJournal(dsn)
    await journal.open()
    await journal.close()
    query(dsn, "UPDATE schema_version SET version = $1", version)
    for command in (["stats", dsn, "--json"], ["stats", dsn], ["top", dsn, "--once"]):
        status, out, err = await run(command, capsys)
        assert (status, out) == (1, ""), command
        assert f"schema version {version}" in err, err
        assert said in err
        assert err.count("\n") == 1
    assert query(dsn, "SELECT version FROM schema_version") == [(version,)]  # not migrated
