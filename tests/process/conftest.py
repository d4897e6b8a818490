"""Worker subprocesses for the process tests, and the records of what they ran."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.postgres import fresh_schema, kept_and_counted, postgres_dsn_or_skip, query

from . import app

REPO_ROOT = Path(__file__).resolve().parents[2]

# Waits poll a condition this often; the deadline is what fails a stuck test.
POLL = 0.02


@dataclass
class Worker:
    """One `asyncq worker tests.process.app:queue` process."""

    proc: asyncio.subprocess.Process
    output_path: Path
    name: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def is_ready(self) -> bool:
        """The worker has opened the journal and started its workers."""
        return "worker running" in self.output()


@dataclass
class WorkerSet:
    """Starts workers on one journal and always ends them (see the `workers` fixture)."""

    journal: Path | str  # a SQLite file, or a `postgresql://...?schema=` string
    log_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    started: list[Worker] = field(default_factory=list)

    async def start(self, app: str = "tests.process.app:queue") -> Worker:
        """Start a worker of `app` on the journal, configured by `settings` (see app.py)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env["ASYNCQ_TEST_JOURNAL"] = str(self.journal)
        env["ASYNCQ_TEST_RUN_LOG_DIR"] = str(self.log_dir)
        env.update(self.settings)
        name = f"worker-{len(self.started)}"
        output_path = self.log_dir / f"{name}.out"
        with output_path.open("wb") as output:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "asyncq.cli",
                "worker",
                app,
                cwd=REPO_ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        worker = Worker(proc, output_path, name)
        self.started.append(worker)
        return worker

    async def kill(self, worker: Worker) -> None:
        """SIGKILL: no shutdown, no final flush; whatever it held stays claimed."""
        worker.proc.kill()
        await worker.proc.wait()

    async def stop(self, worker: Worker, timeout: float = 20.0) -> int:
        """SIGTERM, as an operator would: the worker shuts down gracefully."""
        worker.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await worker.proc.wait()

    def check_alive(self, workers: list[Worker]) -> None:
        for worker in workers:
            if not worker.alive:
                pytest.fail(
                    f"{worker.name} (pid {worker.pid}) exited with {worker.proc.returncode}:\n"
                    f"{worker.output()}\n{self.describe()}"
                )

    def describe(self) -> str:
        """The journal's job counts and the end of each worker's output, for a failure."""
        lines = [f"journal {self.journal}: {journal_states(self.journal)}"]
        for worker in self.started:
            state = "running" if worker.alive else f"exited {worker.proc.returncode}"
            tail = worker.output().splitlines()[-15:]
            lines += [f"{worker.name} (pid {worker.pid}, {state}):", *tail]
        return "\n".join(lines)

    async def close(self) -> None:
        for worker in self.started:
            # It may die between the check and the kill; wait() reaps it all the same.
            if worker.alive:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
        for worker in self.started:
            await worker.proc.wait()


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[WorkerSet]:
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    worker_set = WorkerSet(journal=tmp_path / "jobs.db", log_dir=log_dir)
    try:
        yield worker_set
    finally:
        await worker_set.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_workers(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[WorkerSet]:
    """Workers on a SQLite file, then on a fresh PostgreSQL schema."""
    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    if request.param == "sqlite":
        worker_set = WorkerSet(journal=tmp_path / "jobs.db", log_dir=log_dir)
        try:
            yield worker_set
        finally:
            await worker_set.close()
        return
    async with fresh_schema(postgres_dsn_or_skip()) as dsn:
        worker_set = WorkerSet(journal=dsn, log_dir=log_dir)
        try:
            yield worker_set
        finally:
            await worker_set.close()
        # Every worker ended (killed ones too): the counts that stats() reads are
        # the jobs' own.
        kept, counted = await kept_and_counted(dsn)
        assert kept == counted


class RunLogs:
    """What the workers ran, read from the files `app.record` appends to."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._offsets: dict[int, int] = {}
        self._runs: dict[int, list[int]] = {}

    def refresh(self) -> int:
        """Read what was appended since the last call; the number of runs so far."""
        for pid in list(self._offsets) + [p for p in self._pids() if p not in self._offsets]:
            path = app.run_log_path(self._log_dir, pid)
            offset = self._offsets.get(pid, 0)
            with path.open("rb") as log:
                log.seek(offset)
                data = log.read()
            # Only whole lines: a line being appended right now is read next time.
            complete = data[: data.rfind(b"\n") + 1]
            self._offsets[pid] = offset + len(complete)
            self._runs.setdefault(pid, []).extend(int(line) for line in complete.split())
        return self.total

    def _pids(self) -> list[int]:
        return [int(p.stem.removeprefix("runs-")) for p in self._log_dir.glob("runs-*.log")]

    @property
    def total(self) -> int:
        return sum(len(runs) for runs in self._runs.values())

    def of(self, pid: int) -> list[int]:
        return self._runs.get(pid, [])

    def per_job(self) -> Counter[int]:
        return Counter(i for runs in self._runs.values() for i in runs)


def held_by(journal: Path | str, pid: int) -> set[int]:
    """The jobs (their `i`) that the worker with this pid had claimed and not acked.

    Relies on the engine's owner tag, `host:pid:token`, which is how a claim is
    stamped in the journal.
    """
    if isinstance(journal, str):
        rows = query(
            journal,
            "SELECT (payload::json ->> 'i')::int FROM jobs "
            "WHERE state = 'running' AND owner LIKE $1",
            f"%:{pid}:%",
        )
        return {int(i) for (i,) in rows}
    with contextlib.closing(sqlite3.connect(journal, timeout=10)) as conn:
        rows = conn.execute(
            "SELECT json_extract(payload, '$.i') FROM jobs "
            "WHERE state = 'running' AND owner LIKE ?",
            (f"%:{pid}:%",),
        ).fetchall()
    return {int(i) for (i,) in rows}


def journal_states(journal: Path | str) -> dict[str, int]:
    """Jobs per stored state, read straight from the file (or the schema)."""
    if isinstance(journal, str):
        return dict(query(journal, "SELECT state, count(*) FROM jobs GROUP BY state"))
    if not journal.exists():
        return {}
    with contextlib.closing(sqlite3.connect(journal, timeout=10)) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    deadline: float,
    what: str,
    check: Callable[[], None] = lambda: None,
    explain: Callable[[], str] = lambda: "",
) -> None:
    """Poll `condition` (a function, or a coroutine function) every POLL seconds
    until it holds; fail at `deadline` (event loop time).

    `check` runs at every poll, to fail fast (a worker that died, say);
    `explain` says what was going on, if the deadline passes.
    """
    loop = asyncio.get_running_loop()
    while True:
        holds = condition()
        if inspect.isawaitable(holds):
            holds = await holds
        if holds:
            return
        check()
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{explain()}")
        await asyncio.sleep(POLL)
