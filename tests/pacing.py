"""Helpers for tests of pacing: drive the controlled clock, check sliding windows."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from asyncq import Queue
from asyncq.testing import ManualClock, run_until_idle


async def drive(
    queue: Queue, clock: ManualClock, *, step: float, until: Callable[[], bool], limit: float
) -> None:
    """Advance the clock `step` seconds at a time, running what becomes runnable,
    until `until()` holds; fail if that takes more than `limit` seconds of clock time."""
    start = clock.now()
    await run_until_idle(queue)
    while not until():
        if clock.now() - start > limit:
            raise AssertionError(f"not done after {limit} s of clock time")
        clock.advance(step)
        await run_until_idle(queue)


def most_in_any_window(times: Sequence[float], window: float) -> int:
    """The largest number of `times` inside any closed window of `window` seconds."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_right(ordered, t + window) - i for i, t in enumerate(ordered)), default=0
    )
