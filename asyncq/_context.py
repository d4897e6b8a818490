"""`current_job()`: who a handler is running for, and the lifespan's shared state.

Each worker coroutine sets one context variable per job to the claimed job
itself (a single `ContextVar.set`, some 50 ns); the `JobContext` record is built
only when a handler asks for it. Tasks a handler starts copy its context, so
they see the same job.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._errors import NotInJob

if TYPE_CHECKING:
    from ._journal import ClaimedJob

_NO_STATE: Mapping[str, Any] = MappingProxyType({})
_NO_PARENTS: Mapping[int, Any] = MappingProxyType({})

#: The job the current worker runs now (set by the pool, once per job).
running_job: ContextVar[ClaimedJob] = ContextVar("asyncq_running_job")
#: The lifespan's mapping of the queue whose worker this is (set once per worker).
lifespan_state: ContextVar[Mapping[str, Any]] = ContextVar(
    "asyncq_lifespan_state", default=_NO_STATE
)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobContext:
    """The job a handler is running for.

    `attempt` is this attempt's number (1 on the first run); `parents` maps each
    parent job's id (`after=`) to its result (None for a parent that did not
    succeed, with `on_parent_failure="run"`; empty for a job without parents);
    `state` is the mapping the queue's `lifespan` yielded (empty without one).
    """

    id: int
    task: str
    destination: str
    attempt: int
    parents: Mapping[int, Any] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=lambda: _NO_STATE)


def current_job() -> JobContext:
    """The job the calling handler runs for; `LookupError` outside a handler."""
    try:
        job = running_job.get()
    except LookupError:
        raise NotInJob() from None
    return JobContext(
        id=job.id,
        task=job.task,
        destination=job.destination,
        attempt=job.attempts,
        parents=_NO_PARENTS if job.parents is None else MappingProxyType(job.parents),
        state=lifespan_state.get(),
    )


def as_state(value: object) -> Mapping[str, Any]:
    """What a lifespan yielded, as the read-only `state` handlers see."""
    if value is None:
        return _NO_STATE
    if not isinstance(value, Mapping):
        raise TypeError(f"a lifespan must yield a mapping or None, not {type(value).__name__}")
    return MappingProxyType(dict(value))
