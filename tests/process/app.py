"""The queue that the worker subprocesses of the process tests run.

`python -m asyncq.cli worker tests.process.app:queue` imports this module in a
fresh interpreter, so everything comes from the environment:

ASYNCQ_TEST_JOURNAL      the journal file
ASYNCQ_TEST_RUN_LOG_DIR  where each process appends the ids it ran, one per line
ASYNCQ_TEST_CONCURRENCY  worker coroutines (default 8)
ASYNCQ_TEST_LEASE        seconds a claim lasts unless renewed (default 30)
ASYNCQ_TEST_PREFETCH     jobs claimed ahead (default: the engine's own)
ASYNCQ_TEST_JOB_SECONDS  how long a run takes on average (default 0): each
                         takes between none and twice that, at random
ASYNCQ_TEST_SHUTDOWN_TIMEOUT  seconds running jobs get to finish at stop (default 30)

The handler records its run before it returns, with one `os.write` of a short
line to a per-process file opened with O_APPEND: the line is in the file as soon
as the call returns (a SIGKILL cannot take it back), so a run counts even when
the process dies before the journal hears of it. The test process imports this
module too, with none of these set; it only uses `TASK_NAME` and `producer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from pathlib import Path

from asyncq import Queue, current_job

_env = os.environ.get
_prefetch = _env("ASYNCQ_TEST_PREFETCH")
_job_seconds = float(_env("ASYNCQ_TEST_JOB_SECONDS", "0"))
_log_fd: int | None = None


def run_log_path(log_dir: str | os.PathLike[str], pid: int) -> Path:
    """The file in which process `pid` records its runs."""
    return Path(log_dir) / f"runs-{pid}.log"


def _record_run(i: int) -> None:
    global _log_fd
    if _log_fd is None:
        path = run_log_path(os.environ["ASYNCQ_TEST_RUN_LOG_DIR"], os.getpid())
        _log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log_fd, f"{i}\n".encode())


async def record(i: int, seconds: float | None = None) -> None:
    """The job: take a moment, as an outbound call would, then record the run.

    The times vary so that runs end at scattered moments, as real calls do: a
    kill then finds jobs at every stage (claimed, running, run but not acked).
    `seconds` makes one run take that long instead (longer than a lease, say).
    """
    await asyncio.sleep(random.uniform(0, 2 * _job_seconds) if seconds is None else seconds)
    _record_run(i)


async def stubborn(i: int) -> None:
    """A job that records its start, then runs forever, ignoring every cancellation."""
    _record_run(i)
    never = asyncio.Event()  # nothing sets it: the job waits until cancelled, and goes on
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await never.wait()


async def echo_parents(i: int) -> dict[str, object]:
    """A job of a workflow: records its run, returns `i` and its parents' results."""
    await asyncio.sleep(random.uniform(0, 2 * _job_seconds))
    _record_run(i)
    return {"i": i, "parents": {str(k): v for k, v in current_job().parents.items()}}


TASK_NAME = "tests.process.app.record"
STUBBORN_NAME = "tests.process.app.stubborn"
ECHO_NAME = "tests.process.app.echo_parents"

queue = Queue(
    _env("ASYNCQ_TEST_JOURNAL", ":memory:"),
    concurrency=int(_env("ASYNCQ_TEST_CONCURRENCY", "8")),
    lease=float(_env("ASYNCQ_TEST_LEASE", "30")),
    prefetch=None if _prefetch is None else int(_prefetch),
    shutdown_timeout=float(_env("ASYNCQ_TEST_SHUTDOWN_TIMEOUT", "30")),
)
queue.task(name=TASK_NAME)(record)
queue.task(name=STUBBORN_NAME)(stubborn)
queue.task(name=ECHO_NAME)(echo_parents)


def producer(path: str | os.PathLike[str]) -> Queue:
    """A queue that only submits (concurrency=0) `record`, `stubborn` and
    `echo_parents` jobs to the journal at `path`."""
    submitter = Queue(path, concurrency=0)
    submitter.task(name=TASK_NAME)(record)
    submitter.task(name=STUBBORN_NAME)(stubborn)
    submitter.task(name=ECHO_NAME)(echo_parents)
    return submitter
