"""A queue with one periodic schedule, every second, for worker subprocesses.

ASYNCQ_PERIODIC_JOURNAL  the journal file
ASYNCQ_PERIODIC_LOG_DIR  where each process appends the id of each job it ran
"""

from __future__ import annotations

import os
from pathlib import Path

from asyncq import Queue, current_job

TASK_NAME = "periodic.beat"

queue = Queue(
    os.environ.get("ASYNCQ_PERIODIC_JOURNAL", ":memory:"),
    concurrency=4,
    poll_interval=0.01,
    shutdown_timeout=2.0,
)
_log_fd: int | None = None


@queue.task(name=TASK_NAME)
async def beat(team: str) -> None:
    """Record the run, durably (one O_APPEND write), before returning."""
    global _log_fd
    if _log_fd is None:
        path = Path(os.environ["ASYNCQ_PERIODIC_LOG_DIR"]) / f"runs-{os.getpid()}.log"
        _log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log_fd, f"{current_job().id}\n".encode())


queue.periodic(beat, every=1, kwargs={"team": "ops"})
