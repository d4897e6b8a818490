"""A paced queue for worker subprocesses: calls to "api" limited by a Rate.

ASYNCQ_PACED_JOURNAL   the journal file
ASYNCQ_PACED_LOG_DIR   where each process appends "<job> <unix time>" per call
ASYNCQ_PACED_RATE      calls per second (default 20)
ASYNCQ_PACED_BURST     bucket size (default 5; empty: the Rate's default burst)
ASYNCQ_PACED_CLOCK_OFFSET  seconds this host's clock is off (PostgreSQL journals only;
                       default 0): a host whose clock is ahead or behind the others'
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from asyncq import Queue, Rate
from asyncq._journal import PostgresJournal

_env = os.environ.get

queue = Queue(
    _env("ASYNCQ_PACED_JOURNAL", ":memory:"),
    concurrency=8,
    lease=1.0,
    poll_interval=0.01,
    shutdown_timeout=2.0,
)
_offset = float(_env("ASYNCQ_PACED_CLOCK_OFFSET", "0"))
if _offset:
    journal = queue._journal
    assert isinstance(journal, PostgresJournal)
    journal.local_clock = lambda: time.time() + _offset
_burst = _env("ASYNCQ_PACED_BURST", "5")
queue.destination(
    "api",
    rate=Rate(
        float(_env("ASYNCQ_PACED_RATE", "20")), per=1, burst=float(_burst) if _burst else None
    ),
)
_log_fd: int | None = None


@queue.task(name="paced.call", destination="api")
async def call(i: int) -> None:
    """Record the call's start time, durably, before anything else."""
    global _log_fd
    if _log_fd is None:
        path = Path(os.environ["ASYNCQ_PACED_LOG_DIR"]) / f"calls-{os.getpid()}.log"
        _log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log_fd, f"{i} {time.time():.6f}\n".encode())
