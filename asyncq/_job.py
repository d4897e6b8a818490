"""The `Job` handle: a submitted job's id, and a way to wait for its outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar, cast

from ._records import JobInfo

if TYPE_CHECKING:
    from ._queue import Queue

R = TypeVar("R")


class Job(Generic[R]):
    """A handle on a submitted job: its id, and a way to wait for its outcome.

    `R` is the handler's return type, so `await job.result()` is typed as it.
    """

    __slots__ = ("_queue", "created", "id")

    def __init__(self, queue: Queue, job_id: int, *, created: bool = True) -> None:
        self._queue = queue
        self.id = job_id
        #: False when `key=` matched a live job and this handle points at that job.
        self.created = created

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return the handler's value (as it came
        back from JSON: a tuple returns as a list).

        Raises `JobDead` or `JobCancelled`, or `TimeoutError` after `timeout` seconds.
        """
        return cast(R, await self._queue._wait_result(self.id, timeout))

    async def info(self) -> JobInfo:
        """The job as the journal holds it now."""
        return await self._queue.get(self.id)

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other._queue is self._queue

    def __hash__(self) -> int:
        return hash(self.id)
