"""What the reading commands read through: a SQLite file opened read-only
(`ReadOnlyJournal`), or a PostgreSQL database read in a read-only transaction
(`PostgresReadOnly`). Neither creates, migrates or changes a journal."""

from __future__ import annotations

from typing import Protocol

from .._journal import JournalStats
from .._journal._postgres_dsn import is_postgres_dsn
from .._journal._postgres_readonly import PostgresReadOnly
from .._journal._sqlite_readonly import JobDetail, ReadOnlyJournal
from .._records import JobInfo, JobState


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
        return PostgresReadOnly(path)
    return ReadOnlyJournal(path)
