"""What the reading commands read through: a SQLite file opened read-only
(`ReadOnlyJournal`), or a PostgreSQL database: `jobs`, `show` and `dead` read-only
(`PostgresReadOnly`), `stats` through a producer `Queue`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from .._journal import JournalStats
from .._journal._postgres_dsn import is_postgres_dsn
from .._journal._postgres_readonly import PostgresReadOnly
from .._journal._sqlite_readonly import JobDetail, ReadOnlyJournal
from .._queue import Queue
from .._records import JobInfo, JobState

T = TypeVar("T")


class Reader(Protocol):
    def stats(self, now: float) -> JournalStats: ...

    def dead_letters(
        self, destination: str | None = None, *, limit: int = 100
    ) -> list[JobInfo]: ...

    def get(self, job_id: int) -> JobDetail | None: ...

    def jobs(
        self,
        *,
        state: JobState | None = None,
        destination: str | None = None,
        task: str | None = None,
        after: int = 0,
        limit: int = 50,
    ) -> list[JobInfo]: ...


def reader(path: str) -> Reader:
    """The reader for `path`: a file, or a `postgresql://` connection string."""
    if is_postgres_dsn(path):
        return DatabaseReader(path)
    return ReadOnlyJournal(path)


class DatabaseReader:
    """Reads a PostgreSQL journal. `jobs`, `show` and `dead` read without writing
    (`PostgresReadOnly`: a missing schema is an error, never created). `stats` goes
    through a producer queue, whose opening brings the schema up to this asyncq's
    version, as any process of the queue would; it changes no job."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._readonly = PostgresReadOnly(dsn)

    def _with(self, read: Callable[[Queue], Awaitable[T]]) -> T:
        async def run() -> T:
            async with Queue(self.dsn, concurrency=0) as queue:
                return await read(queue)

        return asyncio.run(run())

    def stats(self, now: float) -> JournalStats:
        return self._with(lambda queue: queue.stats())

    def dead_letters(self, destination: str | None = None, *, limit: int = 100) -> list[JobInfo]:
        return self._readonly.dead_letters(destination, limit=limit)

    def get(self, job_id: int) -> JobDetail | None:
        return self._readonly.get(job_id)

    def jobs(
        self,
        *,
        state: JobState | None = None,
        destination: str | None = None,
        task: str | None = None,
        after: int = 0,
        limit: int = 50,
    ) -> list[JobInfo]:
        return self._readonly.jobs(
            state=state, destination=destination, task=task, after=after, limit=limit
        )
