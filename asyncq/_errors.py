"""The error types. One base class; the docstring is the default message."""

from __future__ import annotations

from datetime import UTC, datetime


class AsyncqError(Exception):
    """An asyncq error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class PayloadError(AsyncqError, ValueError):
    """The payload cannot be stored as a job; nothing was written."""

    def __init__(self, task: str, reason: str) -> None:
        self.task = task
        self.reason = reason
        super().__init__(f"cannot submit {task!r}: {reason}; nothing was written")


class UnknownTask(AsyncqError, LookupError):
    """No task of that name is registered with this queue."""

    def __init__(self, task: str) -> None:
        self.task = task
        super().__init__(f"no task named {task!r} is registered with this queue")


class JournalError(AsyncqError):
    """The journal cannot be used.

    `transient` is True for faults that may clear by themselves (disk full, an I/O
    error, a lock held too long): the queue's background work retries those.
    """

    def __init__(self, path: str, reason: str, *, transient: bool = False) -> None:
        self.path = path
        self.reason = reason
        self.transient = transient
        super().__init__(f"journal {path!r}: {reason}")


class JournalCorrupt(JournalError):
    """The journal file is not an asyncq database or is damaged; it was left untouched."""


class QueueNotRunning(AsyncqError, RuntimeError):
    """The queue is not open: use `async with queue:` first."""


class QueueFailed(AsyncqError, RuntimeError):
    """A part of the queue's engine stopped; the queue cannot go on until restarted.

    The error that stopped it is `__cause__` (and `cause`)."""

    def __init__(self, part: str, cause: BaseException) -> None:
        self.part = part
        self.cause = cause
        super().__init__(
            f"asyncq's {part} stopped ({type(cause).__name__}: {cause}); "
            "the queue cannot go on: restart it"
        )
        self.__cause__ = cause


class JobNotFound(AsyncqError, LookupError):
    """No job with that id is in the journal."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id} in the journal")


class JobDead(AsyncqError):
    """The job failed for good and is in the dead-letter queue."""

    def __init__(self, job_id: int, last_error: str | None) -> None:
        self.job_id = job_id
        self.last_error = last_error
        first_line = (last_error or "no error recorded").splitlines()[0]
        super().__init__(f"job {job_id} is dead: {first_line}")


class JobCancelled(AsyncqError):
    """The job was cancelled before it ran."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} was cancelled")


class LeaseExpired(Exception):
    """An attempt whose worker stopped renewing its lease (killed, or its event loop
    blocked). The policy's wait and stop apply to it; its `retry=` predicate does not:
    a crash says nothing about whether the call can succeed."""


class CircuitOpen(AsyncqError):
    """The destination's circuit is open: the handler was not called.

    Recorded as a failed attempt of each job that came due while its destination's
    circuit was open. The job's retry policy decides the next attempt by its wait
    and stop (not its `retry=` predicate), so every job keeps to its own schedule.
    """

    def __init__(self, destination: str, until: float) -> None:
        self.destination = destination
        self.until = until  # seconds since the epoch: the circuit's next probe
        when = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(
            f"not called: the circuit of destination {destination!r} is open after "
            f"repeated failures, until {when}"
        )


class RetryAfter(Exception):
    """Raised by a handler: try again no sooner than `seconds` from now (an HTTP 429)."""

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("RetryAfter seconds must be >= 0")
        self.seconds = float(seconds)
        super().__init__(f"retry after {self.seconds:g} s")


class PermanentFailure(Exception):
    """Raised by a handler: do not retry, send the job to the dead letters (an HTTP 400)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NotInJob(AsyncqError, LookupError):
    """current_job() was called outside a job's handler (or a task it started)."""


class WrongEventLoop(AsyncqError, RuntimeError):
    """The queue runs in another event loop (another thread, or an `asyncio.run` of
    its own). Call it from the loop that started it; from another thread, use
    `asyncio.run_coroutine_threadsafe(queue.submit(...), queue_loop)`."""
