"""The asyncq command's reading and writing commands on a real journal, in this
process: tables, `--json` documents, paging, purging, and the worker's errors.
(tests/process/test_cli.py runs them all as subprocesses while a worker runs.)"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncq import Queue, Retry
from asyncq.cli import main
from asyncq.testing import ManualClock, run_until_idle


async def run(command: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    # The command runs its own event loop: run it in a thread, as a shell would.
    status = await asyncio.to_thread(main, command)
    out, err = capsys.readouterr()
    return status, out, err


async def document(command: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    status, out, err = await run([*command, "--json"], capsys)
    assert (status, err) == (0, "")
    return json.loads(out)


async def make_workflow(queue: Queue) -> None:
    """Job 1 succeeds, job 2 (after 1) fails twice and dies, job 3 (after 2) is
    cancelled by that, jobs 4-8 are pending on a paused destination."""
    queue.destination("crm", retry=Retry(schedule=[0]))

    @queue.task(name="fetch", destination="api")
    async def fetch(url: str) -> dict[str, Any]:
        return {"url": url, "status": 200}

    @queue.task(name="post", destination="crm")
    async def post(deal: int) -> None:
        raise ConnectionError(f"crm [bold]down[/bold] for deal {deal}")

    @queue.task(name="mail", destination="mailer")
    async def mail(to: str) -> None: ...

    async with queue:
        await queue.pause("mailer")
        first = await fetch.submit("https://example.test/a")
        second = await post.options(after=[first]).submit(42)
        await fetch.options(after=[second]).submit("https://example.test/b")
        await mail.submit_many([{"to": f"user{i}@example.test"} for i in range(5)])
        await run_until_idle(queue)


async def test_show_prints_every_field_of_a_job(
    make_queue: Callable[..., Queue], db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await make_workflow(make_queue())

    fetched = await document(["show", db_path, "1"], capsys)
    assert fetched["state"] == "succeeded"
    assert fetched["result"] == {"url": "https://example.test/a", "status": 200}
    assert fetched["payload"] == {"url": "https://example.test/a"}
    assert fetched["children"] == [2]

    dead = await document(["show", db_path, "2"], capsys)
    assert (dead["state"], dead["attempts"], dead["parents"]) == ("dead", 2, [1])
    assert dead["last_error"].startswith("ConnectionError: crm [bold]down[/bold] for deal 42")
    first_line = "ConnectionError: crm [bold]down[/bold] for deal 42"
    assert [a["error"].splitlines()[0] for a in dead["history"]] == [first_line] * 2
    assert all(a["ended_at"] >= a["started_at"] for a in dead["history"])
    assert set(dead) >= {
        "id", "task", "destination", "priority", "key", "snoozes", "created_at", "run_at",
        "started_at", "finished_at", "first_started_at", "owner", "lease_until",
        "cancel_requested", "on_parent_failure", "cancelled_by",
    }  # fmt: skip
    cancelled = await document(["show", db_path, "3"], capsys)
    assert (cancelled["state"], cancelled["cancelled_by"]) == ("cancelled", 2)

    status, out, err = await run(["show", db_path, "2"], capsys)
    assert (status, err) == (0, "")
    for shown in ("post", "dead", "crm", '"deal": 42', "history (failed attempts)"):
        assert shown in out
    # Markup in the journal's text is shown as written, not interpreted.
    assert out.count(first_line) == 3


async def test_jobs_are_listed_a_page_at_a_time(
    make_queue: Callable[..., Queue], db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await make_workflow(make_queue())

    pages, after = [], 0
    while True:
        page = await document(["jobs", db_path, "--limit", "3", "--after", str(after)], capsys)
        pages.append([job["id"] for job in page["jobs"]])
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert pages == [[1, 2, 3], [4, 5, 6], [7, 8]]

    pending = await document(["jobs", db_path, "--state", "pending", "-d", "mailer"], capsys)
    assert [job["id"] for job in pending["jobs"]] == [4, 5, 6, 7, 8]
    fetches = await document(["jobs", db_path, "--task", "fetch"], capsys)
    assert [(job["id"], job["state"]) for job in fetches["jobs"]] == [
        (1, "succeeded"),
        (3, "cancelled"),
    ]

    status, out, _ = await run(["jobs", db_path, "--limit", "2", "--state", "pending"], capsys)
    lines = out.splitlines()
    assert status == 0
    assert lines[0].split()[:5] == ["id", "state", "destination", "task", "attempts"]
    assert [line.split()[:4] for line in lines[2:4]] == [
        ["4", "pending", "mailer", "mail"],
        ["5", "pending", "mailer", "mail"],
    ]
    assert lines[-1] == "more: --after 5"


async def test_stats_and_top_show_each_destination(
    make_queue: Callable[..., Queue], db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await make_workflow(make_queue())

    shown = await document(["stats", db_path], capsys)
    destinations = shown["destinations"]
    assert (destinations["mailer"]["ready"], destinations["mailer"]["paused"]) == (5, True)
    assert (destinations["crm"]["dead"], destinations["api"]["succeeded"]) == (1, 1)
    assert shown["totals"]["ready"] == 5
    assert shown["totals"]["oldest_ready_age"] >= 0

    status, out, _ = await run(["stats", db_path], capsys)
    assert status == 0
    counts, flow = out.split("last minute")
    rows = {line.split()[0]: line.split() for line in counts.splitlines() if line.strip()}
    # destination ready sched blocked claimed running succeeded dead cancelled oldest
    assert rows["mailer"][1:9] == ["5", "0", "0", "0", "0", "0", "0", "0"]
    assert rows["api"][1:9] == ["0", "0", "0", "0", "0", "1", "0", "1"]
    rows = {line.split()[0]: line.split() for line in flow.splitlines() if line.strip()}
    assert (rows["mailer"][-1], rows["crm"][-1]) == ("paused", "ok")

    status, out, _ = await run(["top", db_path, "--once"], capsys)
    assert status == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # destination depth ready running oldest ... dead holds
    assert rows["mailer"][1:3] == ["5", "5"]
    assert rows["mailer"][-1] == "paused"
    assert rows["crm"][-2:] == ["1", "ok"]


async def test_purge_deletes_dead_jobs_by_id_destination_or_age(
    make_queue: Callable[..., Queue],
    db_path: str,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queue = make_queue()
    queue.destination("*", retry=Retry.never())

    @queue.task(name="fail")
    async def fail() -> None:
        raise ConnectionError("down")

    async with queue:
        for destination in ("a", "a", "b", "b", "c"):
            await fail.options(destination=destination).submit()
            await run_until_idle(queue)
            clock.advance(60)
    # Died at clock times t, t+60, ..., t+240 (the clock is years ahead of the wall clock).
    died = clock.now() - 60

    async def purged(*command: str) -> int:
        return int((await document(["purge", db_path, *command], capsys))["purged"])

    assert await purged("5") == 1
    assert await purged("--before", str(died - 180)) == 1  # job 1
    assert await purged("--destination", "b", "--before", str(died - 60)) == 1  # job 3
    status, out, _ = await run(["purge", db_path, "--destination", "b"], capsys)
    assert (status, out) == (0, "deleted 1 dead job(s)\n")  # job 4
    assert await purged("--older-than", "1d") == 0  # job 2 died in the future
    assert await purged("--all") == 1
    assert (await document(["dead", db_path], capsys))["dead"] == []


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["7", "--all"],
        ["--all", "--destination", "a"],
        ["--before", "x"],
        ["--older-than", "1w"],
    ],
)
def test_purge_refuses_an_unclear_selection(
    command: list[str], db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["purge", db_path, *command])
    assert exit.value.code == 2
    assert "asyncq purge: error:" in capsys.readouterr().err


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for the module `asyncq_boom` a test writes; forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("asyncq_boom", None)


@pytest.mark.parametrize(
    ("source", "spec", "error"),
    [
        (
            None,
            "asyncq_nosuch.module:queue",
            "cannot import 'asyncq_nosuch.module': No module named 'asyncq_nosuch'",
        ),
        (
            "raise RuntimeError('API_KEY is not set\\nsee the docs')",
            "asyncq_boom:queue",
            "importing 'asyncq_boom' failed: RuntimeError: API_KEY is not set",
        ),
        (
            "import asyncq_missing_dependency",
            "asyncq_boom:queue",
            "importing 'asyncq_boom' failed: ModuleNotFoundError: No module named "
            "'asyncq_missing_dependency'",
        ),
        ("def broken(:", "asyncq_boom:queue", "importing 'asyncq_boom' failed: SyntaxError: "),
        ("queue = 3", "asyncq_boom:queue", "'asyncq_boom:queue' is of type int, not a Queue"),
        ("", "asyncq_boom:nope", "module 'asyncq_boom' has no attribute 'nope'"),
    ],
)
def test_a_worker_module_that_does_not_give_a_queue_is_one_line(
    source: str | None,
    spec: str,
    error: str,
    modules: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if source is not None:
        (modules / "asyncq_boom.py").write_text(source + "\n")
    assert main(["worker", spec]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"asyncq: {error}")
    assert err.count("\n") == 1


def test_a_queue_spec_without_an_attribute_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["worker", "myapp.jobs"])
    assert exit.value.code == 2
    assert "expected 'package.module:queue', got 'myapp.jobs'" in capsys.readouterr().err
