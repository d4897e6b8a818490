"""Periodic ticks from real worker processes sharing one journal, in real time:
each tick makes exactly one job, also when a worker restarts meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import wait_until
from .periodic_app import TASK_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.process


@dataclass
class Beaters:
    """`asyncq worker tests.process.periodic_app:queue` processes on one journal."""

    journal: Path
    log_dir: Path
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start(self) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env["ASYNCQ_PERIODIC_JOURNAL"] = str(self.journal)
        env["ASYNCQ_PERIODIC_LOG_DIR"] = str(self.log_dir)
        with (self.log_dir / f"worker-{len(self.procs)}.out").open("wb") as output:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "asyncq.cli",
                "worker",
                "tests.process.periodic_app:queue",
                cwd=REPO_ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        self.procs.append(proc)
        return proc

    def outputs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_dir.glob("worker-*.out"))

    def running(self) -> int:
        """How many workers have started their queue."""
        return self.outputs().count("worker running")

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.returncode is not None and proc.returncode != 0:
                pytest.fail(f"a worker exited with {proc.returncode}:\n{self.outputs()}")

    def runs(self) -> Counter[int]:
        """How often each job ran, over every process."""
        return Counter(
            int(line)
            for path in self.log_dir.glob("runs-*.log")
            for line in path.read_text().split()
        )

    async def stop(self, proc: asyncio.subprocess.Process) -> int:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            return await proc.wait()


@pytest.fixture
async def beaters(tmp_path: Path) -> AsyncIterator[Beaters]:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    pool = Beaters(tmp_path / "periodic.db", log_dir)
    try:
        yield pool
    finally:
        for proc in pool.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()


def made(journal: Path) -> list[tuple[int, float, str]]:
    """The ticks' jobs (id, run_at, state), by due time, read from the file."""
    if not journal.exists():
        return []
    with contextlib.closing(sqlite3.connect(journal, timeout=10)) as conn:
        try:
            rows = conn.execute(
                "SELECT id, run_at, state FROM jobs WHERE task = ? ORDER BY run_at, id",
                (TASK_NAME,),
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return []
    return [(int(i), float(at), str(state)) for i, at, state in rows]


async def test_three_worker_processes_make_one_job_per_tick(beaters: Beaters) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    workers = [await beaters.start() for _ in range(3)]
    await wait_until(
        lambda: beaters.running() == 3,
        deadline=deadline,
        what="three workers running",
        check=beaters.check_alive,
        explain=beaters.outputs,
    )
    ready_at = len(made(beaters.journal))
    await wait_until(
        lambda: len(made(beaters.journal)) >= ready_at + 3,
        deadline=deadline,
        what="three ticks with three workers",
        check=beaters.check_alive,
        explain=beaters.outputs,
    )
    # A restart in the middle: the new process must not remake the ticks made so far.
    assert await beaters.stop(workers[0]) == 0
    workers.append(await beaters.start())
    await wait_until(
        lambda: beaters.running() == 4,
        deadline=deadline,
        what="the restarted worker running",
        check=beaters.check_alive,
        explain=beaters.outputs,
    )
    restarted_at = len(made(beaters.journal))
    await wait_until(
        lambda: len(made(beaters.journal)) >= restarted_at + 3,
        deadline=deadline,
        what="three more ticks",
        check=beaters.check_alive,
        explain=beaters.outputs,
    )
    for proc in workers[1:]:
        assert await beaters.stop(proc) == 0

    jobs = made(beaters.journal)
    ticks = [at for _, at, _ in jobs]
    assert len(ticks) >= 6
    assert len(set(ticks)) == len(ticks), ticks  # no tick made twice
    assert all(at == int(at) for at in ticks), ticks  # every=1: whole seconds
    with contextlib.closing(sqlite3.connect(beaters.journal)) as conn:
        periodic = conn.execute("SELECT name, last_tick, job_id FROM periodic").fetchall()
    assert periodic == [(TASK_NAME, ticks[-1], jobs[-1][0])]
    runs = beaters.runs()
    assert max(runs.values()) == 1, runs  # no job ran twice
    succeeded = {job_id for job_id, _, state in jobs if state == "succeeded"}
    assert set(runs) == succeeded
    # At most the last tick or two may still wait for a worker after all stopped.
    assert len(succeeded) >= len(jobs) - 2
    assert "Traceback" not in beaters.outputs()
