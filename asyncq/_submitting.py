"""Writing jobs: the submit family of `Queue`, checked before anything is written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from ._clock import Clock
from ._codec import encode_payload, encode_payloads
from ._dependencies import After, OnParentFailure, check_on_parent_failure, parent_ids
from ._instrument import Instrument
from ._job import Job
from ._journal import Journal, NewBatch, NewJob
from ._tasks import Task, TaskRegistry
from ._validate import MAX_PRIORITY, MIN_PRIORITY, check_key, check_name, check_priority, run_at

if TYPE_CHECKING:
    from ._engine import Engine
    from ._queue import Queue

P = ParamSpec("P")
R = TypeVar("R")


class Submitting:
    """The submit methods of `Queue` (a base class, so that the queue's module
    holds its lifecycle and these their checks). `Queue` provides the state."""

    _journal: Journal
    _registry: TaskRegistry
    _engine: Engine | None
    _instrument: Instrument | None
    clock: Clock
    max_payload_bytes: int

    def _require_open(self) -> None:
        raise NotImplementedError

    # Only the result type is checked here (option keywords cannot sit between
    # P.args and P.kwargs); `task.options(...).submit(...)` checks the arguments too.
    @overload
    async def submit(
        self,
        task: Task[..., R],
        /,
        *args: Any,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        key: str | None = None,
        destination: str | None = None,
        after: After | None = None,
        on_parent_failure: OnParentFailure = "cancel",
        **kwargs: Any,
    ) -> Job[R]: ...

    @overload
    async def submit(
        self,
        task: str,
        /,
        *args: Any,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        key: str | None = None,
        destination: str | None = None,
        after: After | None = None,
        on_parent_failure: OnParentFailure = "cancel",
        **kwargs: Any,
    ) -> Job[Any]: ...

    async def submit(
        self,
        task: Task[..., Any] | str,
        /,
        *args: Any,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        key: str | None = None,
        destination: str | None = None,
        after: After | None = None,
        on_parent_failure: OnParentFailure = "cancel",
        **kwargs: Any,
    ) -> Job[Any]:
        """Write one job; returns once it is durable.

        `delay` (seconds) or `at` (seconds since the epoch) hold it back, at most
        100 years; a higher `priority` (an int, 32-bit) runs first; `key` returns
        the live job with that key instead of writing a second one; `destination`
        overrides the task's. A bad option raises `TypeError` or `ValueError`, and
        nothing is written.

        `after` (jobs or job ids) makes the job wait, `blocked`, until every parent
        succeeded; a parent that ends dead or cancelled cancels it (and the jobs
        that wait for it), or with `on_parent_failure="run"` counts as done. The
        parents must exist already (`JobNotFound` otherwise), so no cycle can be built.
        """
        resolved = self._registry.resolve(task)
        payload = resolved.payload_from_call(args, kwargs)
        return await self._submit_payload(
            resolved,
            payload,
            delay=delay,
            at=at,
            priority=priority,
            key=key,
            destination=destination,
            after=after,
            on_parent_failure=on_parent_failure,
        )

    async def _submit_payload(
        self,
        task: Task[..., R],
        payload: dict[str, Any],
        *,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        key: str | None = None,
        destination: str | None = None,
        after: After | None = None,
        on_parent_failure: OnParentFailure = "cancel",
    ) -> Job[R]:
        now = self.clock.now()
        when = now if delay is None and at is None else run_at(now, delay, at)
        if priority.__class__ is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            priority = check_priority(priority)
        if key is not None:
            check_key(key)
        parents = () if after is None else parent_ids(after)
        if on_parent_failure != "cancel":
            on_parent_failure = check_on_parent_failure(on_parent_failure)
        job = NewJob(
            task.name,
            encode_payload(task.name, payload, self.max_payload_bytes),
            task.destination if destination is None else check_name(destination, "destination"),
            priority,
            when,
            key,
            parents,
            on_parent_failure,
        )
        # An instrument watching: the job carries its trace context, and the
        # instrument hears of the job once it is written. (Here, not in a coroutine
        # of its own: awaiting one more costs about 1,000 instructions a submit.)
        instrument = self._instrument
        if (
            instrument is not None
            and instrument.wants_traces
            and (trace := instrument.trace_context()) is not None
        ):
            # (Built whole: `_replace` costs twice as much, in Python.)
            name, text, dest, priority, when, key, parents, mode, _ = job
            job = NewJob(name, text, dest, priority, when, key, parents, mode, trace)
        self._require_open()
        (inserted,) = await self._journal.insert_many([job], now)
        self._notify_dispatcher()
        if instrument is not None and inserted.created:
            instrument.submitted(job.task, job.destination, 1)
        # (`self` is the Queue: `cast` would cost a call per submit.)
        return Job(self, inserted.id, created=inserted.created)  # type: ignore[arg-type]

    async def submit_many(
        self,
        task: Task[..., Any] | str,
        payloads: Sequence[dict[str, Any]],
        *,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        destination: str | None = None,
        after: After | None = None,
        on_parent_failure: OnParentFailure = "cancel",
    ) -> list[Job[Any]]:
        """Write many jobs, one keyword dict each, in one transaction: all or none.
        The options are checked as `submit` checks them; every job gets the parents
        `after` (a fan-out of many children is one call)."""
        resolved = self._registry.resolve(task)
        now = self.clock.now()
        when = run_at(now, delay, at)
        priority = check_priority(priority)
        parents = parent_ids(after)
        mode = check_on_parent_failure(on_parent_failure)
        name = resolved.name
        dest = (
            resolved.destination if destination is None else check_name(destination, "destination")
        )
        self._require_open()
        check = resolved.check_payload
        for payload in payloads:
            check(payload)
        limit = self.max_payload_bytes
        # One encoder call for the whole list; the journal checks each payload's size.
        text = encode_payloads(name, payloads, limit)
        instrument = self._instrument
        trace = None
        if instrument is not None and instrument.wants_traces:
            trace = instrument.trace_context()
        batch = NewBatch(
            name, text, len(payloads), dest, priority, when, limit, parents, mode, trace
        )
        ids = await self._journal.insert_batch(batch, now)
        self._notify_dispatcher()
        if instrument is not None and ids:
            instrument.submitted(name, dest, len(ids))
        queue = cast("Queue", self)
        return [Job(queue, job_id) for job_id in ids]

    def _notify_dispatcher(self) -> None:
        if self._engine is not None:
            self._engine.dispatcher.notify()
