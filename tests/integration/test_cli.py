"""The asyncq command on a real journal file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from asyncq import JobState, JournalCorrupt, Queue, Retry
from asyncq.cli import main, run_worker
from asyncq.testing import run_until_idle


async def test_dead_letters_are_listed_and_redriven_from_the_command_line(
    make_queue: Callable[..., Queue], db_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = make_queue()
    queue.destination("hook", retry=Retry.never())

    @queue.task(name="deliver", destination="hook")
    async def deliver(i: int) -> None:
        raise ConnectionError(f"receiver down ({i})")

    async with queue:
        jobs = await deliver.submit_many([{"i": 1}, {"i": 2}])
        await run_until_idle(queue)

    # The command runs its own event loop: run it in a thread, as a shell would.
    await asyncio.to_thread(main, ["dead", db_path, "--destination", "hook", "--json"])
    listed = json.loads(capsys.readouterr().out)["dead"]
    assert sorted(job["id"] for job in listed) == [job.id for job in jobs]
    assert all(
        (job["destination"], job["task"], job["attempts"]) == ("hook", "deliver", 1)
        and job["last_error"].startswith("ConnectionError: receiver down")
        for job in listed
    )

    await asyncio.to_thread(main, ["redrive", db_path, str(jobs[0].id)])
    assert "redrove 1 job(s)" in capsys.readouterr().out
    await asyncio.to_thread(main, ["pause", db_path, "hook"])
    assert "hook: paused" in capsys.readouterr().out

    async with Queue(db_path, concurrency=0) as reader:
        assert (await reader.get(jobs[0].id)).state is JobState.PENDING
        assert (await reader.get(jobs[1].id)).state is JobState.DEAD


def test_redrive_without_ids_or_destination_is_refused(db_path: str) -> None:
    with pytest.raises(SystemExit):
        main(["redrive", db_path])


async def test_a_worker_whose_queue_fails_exits_with_an_error(
    make_queue: Callable[..., Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue()

    async def damaged(*args: object, **kwargs: object) -> list[object]:
        raise JournalCorrupt(queue.path, "database disk image is malformed")

    monkeypatch.setattr(queue._journal, "claim", damaged)  # the dispatcher's first claim
    async with asyncio.timeout(10):  # rather than wait for a signal forever
        assert await run_worker(queue, concurrency=2) == 1
    assert queue._journal._db is None  # type: ignore[attr-defined]
