"""Tasks: typed handles on handler functions, and the registry that names them."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from ._errors import PayloadError, UnknownTask

if TYPE_CHECKING:
    from ._dependencies import After, OnParentFailure
    from ._job import Job
    from ._queue import Queue

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_DESTINATION = "default"


class Task(Generic[P, R]):
    """A handler registered with a queue. Calling it runs the handler inline;
    `submit` writes a job that a worker runs later."""

    def __init__(
        self,
        queue: Queue,
        fn: Callable[P, Awaitable[R]],
        *,
        name: str,
        destination: str,
        timeout: float | None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"task {name!r}: the handler must be an `async def` function")
        self.queue = queue
        self.fn = fn
        self.name = name
        self.destination = destination
        self.timeout = timeout
        self._signature = inspect.signature(fn)
        params = self._signature.parameters.values()
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY) for p in params):
            # A payload is a JSON object of keyword arguments; these cannot be named in one.
            raise TypeError(
                f"task {name!r}: handlers with *args, **kwargs or positional-only "
                "parameters cannot be queued"
            )
        self._allowed = frozenset(p.name for p in params)
        self._required = frozenset(p.name for p in params if p.default is p.empty)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        return self.fn(*args, **kwargs)

    async def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Write one job for this task; returns once it is durable."""
        return await self.queue._submit_payload(self, self.payload_from_call(args, kwargs))

    def options(
        self,
        *,
        key: str | None = None,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        destination: str | None = None,
        after: After | None = None,
        on_parent_failure: OnParentFailure = "cancel",
    ) -> TaskOptions[P, R]:
        """Options for the next submits, kept apart from the handler's arguments:
        `task.options(key="k", delay=5).submit(key="a handler argument")`.

        The same options as `Queue.submit`; they are checked when a job is submitted.
        """
        return TaskOptions(
            self,
            key=key,
            delay=delay,
            at=at,
            priority=priority,
            destination=destination,
            after=after,
            on_parent_failure=on_parent_failure,
        )

    async def submit_many(
        self,
        payloads: Sequence[dict[str, Any]],
        *,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        destination: str | None = None,
        after: After | None = None,
        on_parent_failure: OnParentFailure = "cancel",
    ) -> list[Job[R]]:
        """Write many jobs (one keyword dict each) in one transaction."""
        return await self.queue.submit_many(
            self,
            payloads,
            delay=delay,
            at=at,
            priority=priority,
            destination=destination,
            after=after,
            on_parent_failure=on_parent_failure,
        )

    def payload_from_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword payload for a call, checked against the handler's signature."""
        if not args:
            return self.check_payload(kwargs)
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise PayloadError(self.name, f"arguments do not match the handler ({exc})") from None
        return dict(bound.arguments)

    def check_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """`payload` if it fits the handler's keyword parameters, else `PayloadError`."""
        if not isinstance(payload, dict):
            kind = type(payload).__name__
            raise PayloadError(
                self.name, f"payload must be a dict of keyword arguments, not {kind}"
            )
        keys = payload.keys()
        if not (keys <= self._allowed and self._required <= keys):
            unknown = sorted(keys - self._allowed)
            missing = sorted(self._required - keys)
            raise PayloadError(
                self.name,
                f"arguments do not match the handler (unknown: {unknown}, missing: {missing})",
            )
        return payload

    def __repr__(self) -> str:
        return f"<Task {self.name} -> {self.destination}>"


@dataclass(frozen=True, slots=True)
class TaskOptions(Generic[P, R]):
    """A task with submit options bound (`Task.options`); immutable, so it can be
    kept and reused. Its `submit` is checked against the handler's signature."""

    task: Task[P, R]
    _: KW_ONLY
    key: str | None = None
    delay: float | None = None
    at: float | None = None
    priority: int = 0
    destination: str | None = None
    after: After | None = None
    on_parent_failure: OnParentFailure = "cancel"

    async def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Write one job with these options; returns once it is durable."""
        task = self.task
        return await task.queue._submit_payload(
            task,
            task.payload_from_call(args, kwargs),
            delay=self.delay,
            at=self.at,
            priority=self.priority,
            key=self.key,
            destination=self.destination,
            after=self.after,
            on_parent_failure=self.on_parent_failure,
        )

    async def submit_many(self, payloads: Sequence[dict[str, Any]]) -> list[Job[R]]:
        """Write many jobs (one keyword dict each) with these options, in one
        transaction. A `key` names one job, so it cannot be used here."""
        if self.key is not None:
            raise TypeError(
                f"task {self.task.name!r}: key= names one job; submit_many cannot use it"
            )
        return await self.task.queue.submit_many(
            self.task,
            payloads,
            delay=self.delay,
            at=self.at,
            priority=self.priority,
            destination=self.destination,
            after=self.after,
            on_parent_failure=self.on_parent_failure,
        )


class TaskRegistry:
    """The tasks one queue knows, by name."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}

    def add(self, task: Task[Any, Any]) -> None:
        existing = self._tasks.get(task.name)
        if existing is not None and existing.fn is not task.fn:
            raise ValueError(f"a different handler is already registered as {task.name!r}")
        self._tasks[task.name] = task

    def get(self, name: str) -> Task[Any, Any] | None:
        return self._tasks.get(name)

    def resolve(self, task: Task[Any, Any] | str) -> Task[Any, Any]:
        if isinstance(task, Task):
            return task
        found = self._tasks.get(task)
        if found is None:
            raise UnknownTask(task)
        return found

    def names(self) -> list[str]:
        return sorted(self._tasks)


def default_task_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"
