"""Looking at the queue: `stats()` and backlog alerts (`on_backlog`), calls of
`Queue`. A base class, as `Submitting` is; `Queue` provides the state and starts
and stops the watch with the queue.

The watch takes the stats every `CHECK_EVERY` seconds of the queue's clock and
hands them to each rule (`_backlog.py` decides); it runs in every queue that has
rules, a producer (`concurrency=0`) too: the stats come from the journal, which
every process shares. A callback's exception is logged and the watch goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

from ._backlog import BacklogEvent, BacklogRule, Callback, check_thresholds
from ._backoff import Backoff
from ._clock import Clock
from ._errors import JournalError
from ._journal import Journal, JournalStats
from ._validate import check_name

log = logging.getLogger("asyncq")

#: Seconds of the queue's clock between two looks at the stats.
CHECK_EVERY = 1.0


class BacklogWatch:
    """Takes the stats now and then and tells each rule's callback what they show."""

    def __init__(self, journal: Journal, clock: Clock) -> None:
        self._journal = journal
        self._clock = clock
        self.rules: list[BacklogRule] = []
        self.checks = 0  # looks taken (for tests)
        self._checked: asyncio.Event | None = None

    async def run(self) -> None:
        """Look every `CHECK_EVERY` seconds, until cancelled."""
        backoff = Backoff("backlog watch")
        while True:
            await self._clock.sleep(CHECK_EVERY)
            while True:
                try:
                    await self.check()
                except JournalError as exc:
                    await backoff.failed(exc)
                else:
                    backoff.succeeded()
                    break

    async def check(self) -> None:
        """Take the stats and call back for every alert and recovery they show."""
        stats = await self._journal.stats(self._clock.now())
        for rule in self.rules:
            for event in rule.events(stats):
                _log(event)
                await _call(rule.callback, event)
        self.checks += 1
        if self._checked is not None:
            self._checked.set()
            self._checked = None

    def next_check(self) -> Awaitable[bool]:
        """Something to await until the next look has been taken (for tests: then
        advance the clock by `CHECK_EVERY` to start it)."""
        if self._checked is None:
            self._checked = asyncio.Event()
        return self._checked.wait()


def _log(event: BacklogEvent) -> None:
    where = "the queue" if event.destination is None else repr(event.destination)
    extra = {
        "destination": event.destination,
        "cause": event.cause.value,
        "depth": event.depth,
        "cleared": event.cleared,
    }
    if event.cleared:
        log.warning("asyncq backlog of %s cleared: %s", where, event.detail, extra=extra)
    else:
        log.warning(
            "asyncq backlog of %s: %s (%s; arriving %.1f/s, draining %.1f/s)",
            where,
            event.detail,
            event.reason,
            event.arrival_rate,
            event.drain_rate,
            extra=extra,
        )


async def _call(callback: Callback, event: BacklogEvent) -> None:
    try:
        result = callback(event)
        if inspect.isawaitable(result):
            await result
    except Exception:  # a user's callback may raise anything: logged, the watch goes on
        log.exception(
            "asyncq: the on_backlog callback %r failed",
            callback,
            extra={"destination": event.destination, "cause": event.cause.value},
        )


class Monitoring:
    """`stats()` and `on_backlog()` (see the module's docstring)."""

    _journal: Journal
    _backlog: BacklogWatch
    _backlog_task: asyncio.Task[None] | None
    _open: bool
    clock: Clock

    def _require_open(self) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, None], part: str) -> asyncio.Task[None]:
        raise NotImplementedError

    async def stats(self) -> JournalStats:
        """Jobs per destination and state, and the last minute's rates and latencies
        (of every process on the journal), from the journal. Reads only: it never
        waits for the writer, nor delays a submit."""
        self._require_open()
        return await self._journal.stats(self.clock.now())

    def on_backlog(
        self,
        callback: Callback,
        *,
        depth: int | None = None,
        oldest_age: float | None = None,
        growing_for: float | None = None,
        destination: str | None = None,
        total: bool = False,
    ) -> None:
        """Call `callback(event)` (a function or a coroutine function) once when a
        destination's backlog crosses a threshold, and once more with
        `event.cleared` True when it has recovered. Thresholds: `depth` jobs
        waiting to run (ready, scheduled: delayed or waiting to retry, and claimed),
        the oldest ready job waiting `oldest_age` seconds, or filling faster than
        it drains for `growing_for` seconds (and deeper than when it started).

        `destination` watches one destination, or each of those a pattern
        (`"endpoint:*"`) matches; None watches each destination on its own (every
        event names its destination). `total=True` watches the whole queue's
        totals instead (events name no destination). The event names the likely
        cause (`BacklogCause`); it is also logged as a warning on the `asyncq`
        logger, with `destination` and `cause` as `extra` fields.

        Works in any queue on the journal, one that runs no jobs too. Checked every
        second of the queue's clock while the queue runs.
        """
        if not callable(callback):
            raise TypeError("on_backlog needs a callable (a function or coroutine function)")
        limits = check_thresholds(depth, oldest_age, growing_for)
        if destination is not None:
            if total:
                raise ValueError("give a destination or total=True, not both")
            check_name(destination, "destination name")
        if self._open:
            self._require_open()  # from the queue's own loop, and not failed
        rule = BacklogRule(callback, *limits, destination=destination, total=bool(total))
        self._backlog.rules.append(rule)
        if self._open:
            self._start_backlog_watch()

    def _start_backlog_watch(self) -> None:
        if self._backlog.rules and self._backlog_task is None:
            self._backlog_task = self._spawn(self._backlog.run(), "backlog watch")

    async def _stop_backlog_watch(self) -> None:
        task, self._backlog_task = self._backlog_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
