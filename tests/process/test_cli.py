"""Every `asyncq` command as a subprocess, on a journal that a worker process is
working: tables and `--json`, `top` in a pseudo-terminal, and errors in one line."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from asyncq import JobState, Queue

from . import cli_app
from .conftest import REPO_ROOT, Worker, WorkerSet, wait_until

pytestmark = pytest.mark.process

DEADLINE = 30.0  # seconds: what fails a stuck test, far above what each step takes
#: The console script of this environment, and `python -m asyncq`.
ASYNCQ = [str(Path(sys.executable).with_name("asyncq"))]
PYTHON_M_ASYNCQ = [sys.executable, "-m", "asyncq"]
# Tables are as wide as they need when not written to a terminal, unless $COLUMNS says.
ENV = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Ran:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        assert (self.status, self.err) == (0, ""), self
        return json.loads(self.out)

    def rows(self) -> dict[str, list[str]]:
        """Rows by their first cell (the first row of that name, if tables repeat it)."""
        assert (self.status, self.err) == (0, ""), self
        rows: dict[str, list[str]] = {}
        for line in self.out.splitlines():
            if line.strip():
                rows.setdefault(line.split()[0], line.split())
        return rows


async def asyncq(*args: str, command: list[str] = ASYNCQ, cwd: Path = REPO_ROOT) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        *command,
        *args,
        cwd=cwd,
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(DEADLINE):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def until(what: str, condition: Any, workers: WorkerSet, worker: Worker) -> None:
    await wait_until(
        condition,
        deadline=asyncio.get_running_loop().time() + DEADLINE,
        what=what,
        check=lambda: workers.check_alive([worker]),
        explain=workers.describe,
    )


async def counts(producer: Queue, destination: str) -> dict[str, int]:
    found = (await producer.stats()).destinations.get(destination)
    if found is None:
        return {}
    return {state: getattr(found, state) for state in ("ready", "running", "succeeded", "dead")}


async def start(workers: WorkerSet, producer: Queue) -> tuple[Worker, list[int], list[int]]:
    """A worker that has sent 40 emails, buried 3 CRM posts and runs 2 slow jobs."""
    await producer.submit_many(cli_app.SEND, [{"i": i} for i in range(40)])
    posts = await producer.submit_many(cli_app.POST, [{"i": i} for i in range(3)])
    waits = await producer.submit_many(cli_app.WAIT, [{"i": i} for i in range(2)])
    worker = await workers.start("tests.process.cli_app:queue")

    async def settled() -> bool:
        return (
            (await counts(producer, "email")).get("succeeded") == 40
            and (await counts(producer, "crm")).get("dead") == 3
            and (await counts(producer, "slow")).get("running") == 2
        )

    await until("the worker to settle", settled, workers, worker)
    return worker, [job.id for job in posts], [job.id for job in waits]


async def test_every_command_on_a_journal_that_a_worker_is_working(workers: WorkerSet) -> None:
    journal = str(workers.journal)
    async with cli_app.producer(journal) as producer:
        worker, posts, waits = await start(workers, producer)

        # -- reading, all at once, while the worker runs the slow jobs and renews their leases
        (
            stats,
            stats_json,
            dead_jobs,
            emails,
            shown,
            shown_json,
            dead,
            dead_json,
        ) = await asyncio.gather(
            asyncq("stats", journal),
            asyncq("stats", journal, "--json"),
            asyncq("jobs", journal, "--state", "dead", "--json"),
            asyncq("jobs", journal, "-d", "email", "-n", "10"),
            asyncq("show", journal, str(posts[0])),
            asyncq("show", journal, str(waits[0]), "--json"),
            asyncq("dead", journal),
            asyncq("dead", journal, "--json"),
        )
        destinations = stats_json.json()["destinations"]
        assert destinations["email"]["succeeded"] == 40
        assert (destinations["crm"]["dead"], destinations["slow"]["running"]) == (3, 2)
        table = stats.rows()  # the jobs table's rows come first
        assert (table["email"][6], table["crm"][7], table["slow"][5]) == ("40", "3", "2")

        assert [job["id"] for job in dead_jobs.json()["jobs"]] == posts
        email_rows = [row for row in emails.rows().values() if row[0].isdigit()]
        assert [(row[1], row[2], row[3]) for row in email_rows] == [
            ("succeeded", "email", cli_app.SEND)
        ] * 10
        assert emails.out.splitlines()[-1] == f"more: --after {email_rows[-1][0]}"

        assert "ConnectionError: crm down (0)" in shown.out
        assert "history (failed attempts)" in shown.out
        running = shown_json.json()
        assert (running["state"], running["task"]) == ("running", cli_app.WAIT)
        assert f":{worker.pid}:" in running["owner"]  # host:pid:token of the worker
        assert running["lease_until"] > time.time()

        dead_rows = [row for row in dead.rows().values() if row[0].isdigit()]
        assert sorted(int(row[0]) for row in dead_rows) == posts
        assert all(row[1:4] == ["crm", cli_app.POST, "1"] for row in dead_rows)
        assert sorted(job["id"] for job in dead_json.json()["dead"]) == posts

        # -- the live view, in a pseudo-terminal
        check_top(journal)

        # -- writing (`python -m asyncq` this time)
        paused = await asyncq("pause", journal, "crm", command=PYTHON_M_ASYNCQ)
        assert (paused.status, paused.out) == (0, "crm: paused\n")
        assert (await producer.stats()).destinations["crm"].paused is True
        resumed = await asyncq("resume", journal, "crm", "--json", command=PYTHON_M_ASYNCQ)
        assert resumed.json() == {"destination": "crm", "paused": False}
        assert (await producer.stats()).destinations["crm"].paused is False

        died = max([(await producer.get(job_id)).finished_at or 0.0 for job_id in posts])
        redriven = await asyncq("redrive", journal, "-d", "crm", "--json", command=PYTHON_M_ASYNCQ)
        assert redriven.json() == {"redriven": 3}

        async def buried_again() -> bool:
            infos = [await producer.get(job_id) for job_id in posts]
            return all(
                info.state is JobState.DEAD and (info.finished_at or 0.0) > died for info in infos
            )

        await until("the redriven jobs to die again", buried_again, workers, worker)
        purged = await asyncq("purge", journal, "--destination", "crm", command=PYTHON_M_ASYNCQ)
        assert (purged.status, purged.out) == (0, "deleted 3 dead job(s)\n")
        assert (await counts(producer, "crm")).get("dead", 0) == 0

        # A running job, cancelled in the worker's process; then a selection.
        cancelled = await asyncq("cancel", journal, str(waits[0]), command=PYTHON_M_ASYNCQ)
        assert (cancelled.status, cancelled.out) == (0, f"cancelled job {waits[0]}\n")
        selection = await asyncq("cancel", journal, "-d", "slow", "--json")
        assert selection.json() == {"cancelled": 1}

        async def all_cancelled() -> bool:
            infos = [await producer.get(job_id) for job_id in waits]
            return all(info.state is JobState.CANCELLED for info in infos)

        await until("the slow jobs to end cancelled", all_cancelled, workers, worker)
    workers.check_alive([worker])
    assert await workers.stop(worker) == 0


# -- top, in a pseudo-terminal ------------------------------------------------------------

#: Printed once per frame, in the frame's first line.
FRAME = b"Ctrl-C to quit"


def run_in_terminal(argv: list[str], frames: int, columns: int = 200) -> tuple[int, bytes]:
    """Run `argv` in a pseudo-terminal until it has drawn `frames` frames, then
    press Ctrl-C (SIGINT); its exit status and everything it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO_ROOT, env=ENV, close_fds=True
    )
    os.close(slave)
    output = bytearray()
    end = time.monotonic() + DEADLINE

    def read() -> bool:
        """Read what is there; False at the end of the output."""
        ready, _, _ = select.select([master], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            pytest.fail(f"no output for {DEADLINE} s; so far: {bytes(output)!r}")
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every process let go of the terminal
            return False
        output.extend(chunk)
        return bool(chunk)

    try:
        while output.count(FRAME) < frames:
            if not read():
                break
        proc.send_signal(signal.SIGINT)
        while read():
            pass
        return proc.wait(timeout=DEADLINE), bytes(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def frame_rows(frame: bytes) -> dict[str, list[str]]:
    text = ANSI.sub(b"", frame).decode()
    return {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}


def check_top(journal: str) -> None:
    """`asyncq top` redraws its frames in place until Ctrl-C, then exits 0."""
    status, output = run_in_terminal([*ASYNCQ, "top", journal, "--interval", "0.1"], frames=4)
    assert status == 0, output
    assert b"Traceback" not in output
    frames = output.split(FRAME)
    assert len(frames) >= 5  # before the first mark, then one piece per frame
    # Every frame after the first starts by going back up over the one before it
    # (erase the line, cursor up, once per line): redrawn in place, not appended.
    height = frames[1].count(b"\n")
    assert height >= 5
    for drawn in frames[2:-1]:
        assert b"\x1b[2K\x1b[1A" * (height - 1) in drawn
    rows = frame_rows(frames[-2])
    # destination depth ready running oldest in/s done/s calls/s limit used retry/m dead/m dead
    assert rows["destination"][:4] == ["destination", "depth", "ready", "running"]
    assert rows["slow"][1:4] == ["0", "0", "2"]
    assert rows["crm"][-2:] == ["3", "ok"]
    assert rows["email"][1:4] == ["0", "0", "0"]


# -- errors, in one line ---------------------------------------------------------


async def test_errors_are_one_line_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('API_KEY is not set')\n")
    missing, broken, nosuch = await asyncio.gather(
        asyncq("stats", str(tmp_path / "typo.db")),
        asyncq("worker", "broken_app:queue", cwd=tmp_path),
        asyncq("worker", "nosuch.module:queue", command=PYTHON_M_ASYNCQ),
    )
    assert (missing.status, missing.out) == (1, "")
    assert missing.err == f"asyncq: journal {str(tmp_path / 'typo.db')!r}: no such file\n"
    assert not (tmp_path / "typo.db").exists()
    assert (broken.status, broken.out) == (1, "")
    assert broken.err == (
        "asyncq: importing 'broken_app' failed: RuntimeError: API_KEY is not set\n"
    )
    assert (nosuch.status, nosuch.err) == (
        1,
        "asyncq: cannot import 'nosuch.module': No module named 'nosuch'\n",
    )


WITHOUT_RICH = """
import sys
import asyncq.cli
assert "rich" not in sys.modules, "rich imported before a table is drawn"
sys.modules["rich"] = None  # as if the extra were not installed
from asyncq.cli import main
assert main(["stats", sys.argv[1], "--json"]) == 0
assert main(["stats", sys.argv[1]]) == 1
assert main(["top", sys.argv[1], "--once"]) == 1
"""


async def test_without_rich_json_works_and_tables_name_the_extra(tmp_path: Path) -> None:
    journal = str(tmp_path / "jobs.db")
    async with cli_app.producer(journal) as producer:
        await producer.submit(cli_app.SEND, i=1)
    ran = await asyncq("-c", WITHOUT_RICH, journal, command=[sys.executable])
    assert ran.status == 0, ran
    assert json.loads(ran.out)["destinations"]["email"]["ready"] == 1
    need = "asyncq: tables need the 'cli' extra: pip install 'asyncq[cli]'"
    assert ran.err.splitlines() == [
        f"{need} (or add --json)",
        f"{need} (or use asyncq stats --json)",
    ]


def into_a_closed_pipe(argv: list[str]) -> tuple[int, bytes]:
    """Run `argv` with its output into a pipe nobody reads any more (as after
    `| head` has gone); its exit status and what it said on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(argv, env=ENV, stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


async def test_a_reader_that_went_away_ends_the_output_quietly(tmp_path: Path) -> None:
    journal = str(tmp_path / "jobs.db")
    async with cli_app.producer(journal) as producer:
        await producer.submit(cli_app.SEND, i=1)
    for output in ([], ["--json"]):
        argv = [*ASYNCQ, "jobs", journal, *output]
        assert await asyncio.to_thread(into_a_closed_pipe, argv) == (1, b"")


async def test_top_into_a_pipe_prints_frame_after_frame_and_outlives_a_lost_journal(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "jobs.db"
    async with cli_app.producer(journal) as producer:
        await producer.submit(cli_app.SEND, i=1)
    proc = await asyncio.create_subprocess_exec(
        *ASYNCQ, "top", str(journal), "--interval", "0.1",
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(DEADLINE):
            first = await proc.stdout.readuntil(b"Ctrl-C to quit")
            second = await proc.stdout.readuntil(b"Ctrl-C to quit")
            journal.unlink()  # the frames go on, marked stale, with the reason
            stale = await proc.stdout.readuntil(b"no such file; retrying)")
            proc.send_signal(signal.SIGINT)
            rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (proc.returncode, err) == (0, b"")
    assert b"\x1b[" not in first + second + stale + rest  # no terminal, no redrawing
    assert frame_rows(second)["email"][1:3] == ["1", "1"]
    # The stale frame (written at once with its header) shows the last figures read.
    assert frame_rows(rest)["email"][1:3] == ["1", "1"]
