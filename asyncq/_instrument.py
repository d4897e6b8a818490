"""The engine's instrumentation hook: what metrics and traces (`asyncq.contrib`)
see of a queue from inside. Private: the contrib modules attach to it.

An `Instrument` hears of each job submitted in this process, and of each attempt
that starts here and how it ended (its outcome, its error, its duration on the
queue's clock), and may run background parts that the queue supervises. It may
also give a trace context to store with each job submitted (`trace_context`),
which the attempt gets back, in whichever process runs it.

With nothing attached it costs a test per job: the workers look for an instrument
once, when they start, and a claim hands over trace contexts only to a pool that
has an instrument. Attach before the queue starts.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._journal import ClaimedJob
    from ._queue import Queue

#: How an attempt ended. `retry`: failed, to run again later; `snoozed`: a
#: `RetryAfter`, to run again without using an attempt; `dead`: failed for good
#: (its policy gave up, `PermanentFailure`, or it can never run); `cancelled`:
#: stopped by `queue.cancel`; `released`: cut off at shutdown, handed back uncharged.
Outcome = Literal["succeeded", "retry", "snoozed", "dead", "cancelled", "released"]

#: An attempt's outcome and the exception that decided it, if any.
Ended = tuple[Outcome, BaseException | None]

#: Called once when an attempt ends: outcome, error, duration (seconds).
AttemptEnd = Callable[[Outcome, BaseException | None, float], None]

#: A background part: a coroutine and its name, which the queue runs supervised.
Part = tuple[Coroutine[Any, Any, None], str]


class Instrument:
    """What watches a queue from inside. Every method does nothing here: a
    subclass overrides what it needs. Methods run on the queue's event loop, on
    the engine's paths: they must be quick, and must not block or raise."""

    #: Whether to ask `trace_context` at each submit, and to hand `attempt` the
    #: trace context stored with each job.
    wants_traces = False

    #: Whether `attempt` gives the same end for every job of a destination, and does
    #: nothing else (counts, no context): the workers then ask it once per
    #: destination and keep the end, a Python call less per attempt.
    ends_by_destination = False

    def background(self, queue: Queue) -> list[Part]:
        """Parts to run while `queue` runs (in every process, producers too)."""
        return []

    def trace_context(self) -> str | None:
        """Text to store with the job being submitted now (None: nothing)."""
        return None

    def submitted(self, task: str, destination: str, count: int) -> None:
        """`count` jobs of `task` for `destination` were written by this process."""

    def attempt(self, job: ClaimedJob, trace: str | None) -> AttemptEnd | None:
        """An attempt of `job` starts now, in the worker that runs it (handlers
        run in the context this leaves); `trace` is what `trace_context` gave
        when it was submitted. Returns what to call when it ends, if anything."""
        return None


class Instruments(Instrument):
    """Several instruments as one (metrics and traces together)."""

    def __init__(self, instruments: list[Instrument]) -> None:
        self.instruments = instruments
        self.wants_traces = any(i.wants_traces for i in instruments)
        self.ends_by_destination = all(i.ends_by_destination for i in instruments)

    def background(self, queue: Queue) -> list[Part]:
        return [part for i in self.instruments for part in i.background(queue)]

    def trace_context(self) -> str | None:
        for instrument in self.instruments:
            if (context := instrument.trace_context()) is not None:
                return context
        return None

    def submitted(self, task: str, destination: str, count: int) -> None:
        for instrument in self.instruments:
            instrument.submitted(task, destination, count)

    def attempt(self, job: ClaimedJob, trace: str | None) -> AttemptEnd | None:
        ends = [end for i in self.instruments if (end := i.attempt(job, trace)) is not None]
        if not ends:
            return None
        if len(ends) == 1:
            return ends[0]

        def ended(outcome: Outcome, error: BaseException | None, seconds: float) -> None:
            # The reverse order of the starts: a trace's context was entered last.
            for end in reversed(ends):
                end(outcome, error, seconds)

        return ended


def attach(queue: Queue, instrument: Instrument) -> None:
    """Let `instrument` watch `queue` (before it starts; it stays attached)."""
    if queue._open:
        raise RuntimeError("attach instruments before the queue starts")
    current = queue._instrument
    if current is None:
        queue._instrument = instrument
    elif isinstance(current, Instruments):
        queue._instrument = Instruments([*current.instruments, instrument])
    else:
        queue._instrument = Instruments([current, instrument])
