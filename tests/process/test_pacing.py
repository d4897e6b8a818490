"""A limit is a limit across processes and across a crash: real worker
subprocesses, real time, call times checked over sliding windows."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncq import Queue
from tests.pacing import most_in_any_window

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.process


class Workers:
    def __init__(self, journal: Path, log_dir: Path, rate: float, burst: float) -> None:
        self.env = dict(os.environ)
        self.env.update(
            PYTHONPATH=str(REPO_ROOT),
            ASYNCQ_PACED_JOURNAL=str(journal),
            ASYNCQ_PACED_LOG_DIR=str(log_dir),
            ASYNCQ_PACED_RATE=str(rate),
            ASYNCQ_PACED_BURST=str(burst),
        )
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        out = (self.log_dir / f"worker-{len(self.procs)}.out").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "asyncq.cli", "worker", "tests.process.paced_app:queue"],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def calls(self) -> list[tuple[int, float]]:
        found = []
        for path in self.log_dir.glob("calls-*.log"):
            for line in path.read_text().splitlines():
                job, at = line.split()
                found.append((int(job), float(at)))
        return found

    def outputs(self) -> str:
        return "".join(p.read_text() for p in self.log_dir.glob("worker-*.out"))

    async def wait_for_calls(self, count: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while len({job for job, _ in self.calls()}) < count:
            assert loop.time() < end, f"only {len(self.calls())} calls after {deadline} s"
            await asyncio.sleep(0.02)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def workers(tmp_path: Path, log_dir: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    rate, burst = request.param
    pool = Workers(tmp_path / "paced.db", log_dir, rate, burst)
    try:
        yield pool
    finally:
        pool.stop_all()


async def submit(journal: Path, count: int) -> None:
    producer = Queue(journal, concurrency=0)

    @producer.task(name="paced.call", destination="api")
    async def call(i: int) -> None:
        pass

    async with producer:
        await call.submit_many([{"i": i} for i in range(count)])


def assert_paced(times: list[float], rate: float, burst: float) -> None:
    """At most burst + rate * W calls in any window of W seconds.

    The windows are chosen so that rate * W ends in .5: a call started up to
    0.5 / rate seconds after its token was granted cannot tip an integer count
    over the bound, while one call more than the limit would."""
    for whole in (1, 5, 10, 20, 40):
        window = (whole - 0.5) / rate
        most = most_in_any_window(times, window)
        assert most <= math.floor(burst + rate * window), (window, most)


@pytest.mark.parametrize("workers", [(20.0, 5.0)], indirect=True)
async def test_three_processes_share_one_limit(tmp_path: Path, workers: Workers) -> None:
    await submit(tmp_path / "paced.db", 200)
    for _ in range(3):
        workers.start()
    await workers.wait_for_calls(200, deadline=60)
    calls = workers.calls()
    assert sorted(job for job, _ in calls) == list(range(200))  # no job twice
    times = [at for _, at in calls]
    assert_paced(times, rate=20, burst=5)
    # The limit is shared, not multiplied by three: 200 calls take ~(200 - 5) / 20 s.
    assert max(times) - min(times) >= (200 - 5) / 20 - 0.5
    busy = [p for p in workers.log_dir.glob("calls-*.log") if p.read_text()]
    assert len(busy) >= 2  # more than one process made calls
    assert "Traceback" not in workers.outputs()


@pytest.mark.parametrize("workers", [(20.0, 10.0)], indirect=True)
async def test_a_crash_and_restart_is_not_a_free_burst(tmp_path: Path, workers: Workers) -> None:
    await submit(tmp_path / "paced.db", 120)
    first = workers.start()
    await workers.wait_for_calls(50, deadline=30)
    first.send_signal(signal.SIGKILL)
    first.wait()
    workers.start()
    await workers.wait_for_calls(120, deadline=60)
    calls = workers.calls()
    assert {job for job, _ in calls} == set(range(120))  # nothing lost
    # Every call counts against the limit, re-runs after the crash included.
    assert_paced([at for _, at in calls], rate=20, burst=10)
