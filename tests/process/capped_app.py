"""A queue for worker subprocesses whose destination "api" has a concurrency cap.

ASYNCQ_TEST_JOURNAL      the journal (a SQLite file or a `postgresql://` string)
ASYNCQ_TEST_RUN_LOG_DIR  where each process appends "start|end <job> <unix time>"
ASYNCQ_CAPPED_CAP        the cap of "api" (default 2)

Each call records its start and its end with one `os.write` of a short line to a
per-process file opened with O_APPEND; the test reads every process's file and
counts the calls in flight at each moment (one machine, one clock).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from asyncq import Queue

TASK_NAME = "capped.call"
CALL_SECONDS = 0.01
_log_fd: int | None = None


def _record(event: str, i: int) -> None:
    global _log_fd
    if _log_fd is None:
        path = Path(os.environ["ASYNCQ_TEST_RUN_LOG_DIR"]) / f"calls-{os.getpid()}.log"
        _log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log_fd, f"{event} {i} {time.time():.6f}\n".encode())


async def call(i: int) -> None:
    _record("start", i)
    await asyncio.sleep(CALL_SECONDS)
    _record("end", i)


def _queue(journal: str, concurrency: int) -> Queue:
    made = Queue(journal, concurrency=concurrency, poll_interval=0.01, shutdown_timeout=2.0)
    made.destination("api", concurrency=int(os.environ.get("ASYNCQ_CAPPED_CAP", "2")))
    made.task(name=TASK_NAME, destination="api")(call)
    return made


queue = _queue(os.environ.get("ASYNCQ_TEST_JOURNAL", ":memory:"), concurrency=8)


def producer(journal: str) -> Queue:
    """A queue that only submits calls (concurrency=0)."""
    return _queue(journal, concurrency=0)


def calls_in_flight(log_dir: Path) -> tuple[int, int, set[int]]:
    """From every process's records: the most calls in flight at once, the number
    of calls ended, and the pids of the processes that made calls."""
    events: list[tuple[float, int]] = []
    ended = 0
    pids: set[int] = set()
    for path in log_dir.glob("calls-*.log"):
        lines = path.read_text().splitlines()
        if lines:
            pids.add(int(path.stem.split("-")[1]))
        for line in lines:
            event, _, at = line.split()
            # At one time, an end counts before a start: a slot frees, then is taken.
            events.append((float(at), -1 if event == "end" else 1))
            ended += event == "end"
    most = level = 0
    for _, step in sorted(events):
        level += step
        most = max(most, level)
    return most, ended, pids
