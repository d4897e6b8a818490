"""The asyncq command against a PostgreSQL connection string (a fresh schema)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from asyncq import JobState, Queue, Retry
from asyncq.cli import main
from asyncq.testing import ManualClock, run_until_idle
from tests.postgres import fresh_schema, postgres_dsn_or_skip, query

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
