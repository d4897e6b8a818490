"""Handler timeouts: one timer for every running job.

A cancel scope per job (anyio's `move_on_after`, or `asyncio.timeout`) costs
4-5 us, a third of a no-op job's whole cost. Here a job's deadline is a dict
entry; one timer wakes at the earliest deadline and cancels the tasks past
theirs. Times are the event loop's (real elapsed time, as a timeout should be).
"""

from __future__ import annotations

import asyncio
import math


class Deadlines:
    """Cancels the task running a job once the job's deadline passes."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[asyncio.Task[object], float]] = {}
        self._expired: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def start(self, key: int, task: asyncio.Task[object], seconds: float | None) -> None:
        """`task` runs job `key` from now for at most `seconds` (None: no limit)."""
        if seconds is None:
            self._running[key] = (task, math.inf)  # no deadline; `task_of` still knows it
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        self._running[key] = (task, deadline)
        if deadline < self._timer_at:
            self._wake_at(loop, deadline)

    def finish(self, key: int) -> bool:
        """Job `key` is over. True if it overran: it was cancelled by this watch,
        and that cancellation is withdrawn from its task."""
        entry = self._running.pop(key, None)
        if key not in self._expired:
            return False
        self._expired.discard(key)
        if entry is not None and entry[0].cancelling():
            entry[0].uncancel()
        return True

    def task_of(self, key: int) -> asyncio.Task[object] | None:
        """The task running job `key` now, if any."""
        entry = self._running.get(key)
        return None if entry is None else entry[0]

    def _wake_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        now, earliest = loop.time(), math.inf
        for key, (task, deadline) in self._running.items():
            if deadline <= now:
                if key not in self._expired:
                    self._expired.add(key)
                    task.cancel()
            else:
                earliest = min(earliest, deadline)
        if earliest < math.inf:
            self._wake_at(loop, earliest)
