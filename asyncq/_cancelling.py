"""Cancelling jobs in every state, in this process or another.

A job that is not running is cancelled in the journal at once. A running job
belongs to the process that claimed it: the cancel marks it in the journal, and
that process, which looks for marks on its own jobs whenever another process
wrote (the dispatcher's poll) and every `poll_interval` while it holds jobs,
cancels the handler's coroutine and records the job cancelled. In the process
that asks, that happens at once, without the journal round trip.

`queue.cancel(id)` waits for a running job to end: True if it ended cancelled,
False if its handler finished first. A handler that swallows its `CancelledError`
changes nothing: the job was recorded cancelled when the error was delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._backoff import Backoff
from ._clock import Clock
from ._errors import JobNotFound, JournalError
from ._journal import Journal
from ._records import JobState
from ._results import Waiters
from ._tasks import Task
from ._validate import check_name

if TYPE_CHECKING:
    from ._pool import WorkerPool

log = logging.getLogger("asyncq")

#: The states a cancel can select: a job in any other is finished.
LIVE_STATES = (JobState.PENDING, JobState.BLOCKED, JobState.RUNNING)
_MAX_POLL = 1.0  # seconds between looks at a running job another process ends

#: Stops running jobs of this process now (`WorkerPool.cancel`), given their ids.
StopHere = Callable[[list[int]], object]


@dataclass(frozen=True, slots=True)
class Selection:
    """The jobs a bulk cancel selects: all of them must match."""

    destination: str | None
    task: str | None
    states: tuple[JobState, ...]


def select(destination: object, task: object, state: object) -> Selection:
    """The selection that `queue.cancel(destination=, task=, state=)` names, checked."""
    if destination is None and task is None and state is None:
        raise ValueError(
            "cancel needs a job id, or a selection: destination=, task= or state= "
            "(nothing is cancelled without one)"
        )
    if destination is not None:
        destination = check_name(destination, "destination")
    if isinstance(task, Task):
        task = task.name
    elif task is not None:
        if not isinstance(task, str):
            raise TypeError(f"task must be a Task or a task name, not {type(task).__name__}")
        task = check_name(task, "task")
    return Selection(destination, task, _states(state))


def _states(state: object) -> tuple[JobState, ...]:
    if state is None:
        return LIVE_STATES
    if not isinstance(state, str):  # a JobState is a str
        raise TypeError(f"state must be a JobState or its name, not {type(state).__name__}")
    names = ", ".join(repr(s.value) for s in LIVE_STATES)
    try:
        chosen = JobState(state)
    except ValueError:
        raise ValueError(f"state must be one of {names}, not {state!r}") from None
    if chosen not in LIVE_STATES:
        raise ValueError(f"state must be one of {names}: a {chosen.value} job is finished")
    return (chosen,)


def check_job_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise TypeError(f"job_id must be an int, not {type(job_id).__name__}")
    return job_id


async def cancel_job(
    journal: Journal,
    job_id: int,
    *,
    clock: Clock,
    waiters: Waiters,
    owner: str,
    stop_here: StopHere | None,
    poll: float,
) -> bool:
    """Cancel one job (see `Queue.cancel`). A running one is waited for: the cancel
    is asked again at each look, so that once its owner's lease expires (the owner
    died) the journal cancels it even if no worker is there to take it back."""
    asked = False
    while True:
        outcome = await journal.cancel(job_id, clock.now())
        if outcome is None:
            raise JobNotFound(job_id)
        if outcome.cancelled:
            if stop_here is not None:
                # Running here under an expired lease (a stalled loop): stop it too.
                stop_here(outcome.cancelled)
            waiters.finished(outcome.cancelled + outcome.settled)
            return True
        if outcome.state is not JobState.RUNNING:
            # Finished: by this call's request (True), or before it (False).
            return asked and outcome.state is JobState.CANCELLED
        if not asked and stop_here is not None:
            stop_here([job_id for job_id, by in outcome.requested if by == owner])
        asked = True
        await waiters.finished_or_after(job_id, poll)
        poll = min(poll * 2, _MAX_POLL)


async def cancel_selection(
    journal: Journal,
    selection: Selection,
    *,
    clock: Clock,
    waiters: Waiters,
    owner: str,
    stop_here: StopHere | None,
) -> int:
    """Cancel every selected job in one transaction (see `Queue.cancel`)."""
    outcome = await journal.cancel_where(
        destination=selection.destination,
        task=selection.task,
        states=selection.states,
        now=clock.now(),
    )
    if outcome.cancelled or outcome.settled:
        waiters.finished(outcome.cancelled + outcome.settled)
    mine = [job_id for job_id, by in outcome.requested if by == owner]
    if mine and stop_here is not None:
        stop_here(mine)
    return len(outcome.cancelled) + len(outcome.requested)


class CancelWatch:
    """Finds cancel requests for the running jobs of this process (`owner`) and
    stops them: when another process wrote (`news`, the dispatcher's poll), and
    every `poll_interval` while this process holds jobs (a busy dispatcher may
    not poll for a while). One indexed read per look."""

    def __init__(
        self, journal: Journal, clock: Clock, pool: WorkerPool, *, owner: str, poll_interval: float
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._pool = pool
        self._owner = owner
        self._poll_interval = poll_interval
        self._news = asyncio.Event()

    def news(self) -> None:
        """Another process wrote: look now."""
        self._news.set()

    async def run(self) -> None:
        """Look until cancelled; transient journal faults are waited out."""
        backoff = Backoff("cancel watch")
        while True:
            await self._next_look()
            if not self._pool.holds_jobs:
                continue
            try:
                ids = await self._journal.cancel_requests(self._owner)
            except JournalError as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            if ids:
                self._pool.cancel(ids)

    async def _next_look(self) -> None:
        news = asyncio.ensure_future(self._news.wait())
        timer = asyncio.ensure_future(self._clock.sleep(self._poll_interval))
        try:
            await asyncio.wait((news, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            news.cancel()
            timer.cancel()
        self._news.clear()
