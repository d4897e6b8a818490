"""Periodic jobs: schedules (a cron expression, or every N seconds), their ticks,
and the scheduler that makes one job per tick.

A tick is its own idempotency key. The journal's `make_tick` records a
schedule's last tick and inserts the tick's job in one transaction, and only if
the tick is later than the last one recorded: however many processes run the
schedule, and across restarts, a tick makes one job. The record outlives the
job, so a finished (even pruned) job is not made again.

When ticks come due:
- A schedule never seen by the journal starts at its first tick at or after the
  moment the queue starts: a tick from before then is not made.
- After downtime (every process stopped, a suspended machine), one catch-up job
  for the latest tick due, not one per missed tick.
- `every=` ticks are multiples of `every` seconds since the epoch, so that every
  process agrees on them; cron ticks are computed in the schedule's time zone.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ._backoff import Backoff
from ._clock import Clock
from ._codec import encode_payload
from ._engine import Spawn
from ._journal import Journal, NewJob
from ._tasks import Task, TaskRegistry
from ._validate import check_name, check_priority, check_seconds

log = logging.getLogger("asyncq")

#: The longest the scheduler sleeps before it reads the clock again, in seconds of
#: the queue's clock. A sleep is measured on the event loop's monotonic clock; when
#: the wall clock jumps (an NTP step, a machine waking up), a tick is late by at
#: most this much.
MAX_SLEEP = 60.0

# cronsim gives up on an expression that matches nothing for 50 years.
_NEVER = math.inf


class Times(Protocol):
    """When a schedule's ticks are: seconds since the epoch."""

    def after(self, t: float) -> float:
        """The first tick later than `t` (`inf`: none)."""
        ...

    def at_or_before(self, t: float) -> float | None:
        """The latest tick at or before `t` (None: none)."""
        ...


@dataclass(frozen=True, slots=True)
class Every:
    """Ticks at whole multiples of `seconds` since the epoch."""

    seconds: float

    def after(self, t: float) -> float:
        tick = (math.floor(t / self.seconds) + 1) * self.seconds
        # A float quotient can land a tick at or just before `t`: step past it.
        return tick if tick > t else tick + self.seconds

    def at_or_before(self, t: float) -> float | None:
        tick = math.floor(t / self.seconds) * self.seconds
        return tick if tick <= t else tick - self.seconds


@dataclass(frozen=True, slots=True)
class Cron:
    """Ticks where a cron expression matches, read in time zone `tz`."""

    expression: str
    tz: ZoneInfo

    def after(self, t: float) -> float:
        # cronsim starts from the whole second at or before `t` and returns later
        # ticks only; the loop guards the daylight-saving fix-ups it applies.
        ticks = CronSim(self.expression, datetime.fromtimestamp(t, self.tz))
        for found in ticks:
            if found.timestamp() > t:
                return found.timestamp()
        return _NEVER

    def at_or_before(self, t: float) -> float | None:
        # In reverse, cronsim returns ticks before the (whole) second it is given.
        start = datetime.fromtimestamp(math.floor(t) + 1, self.tz)
        for found in CronSim(self.expression, start, reverse=True):
            if found.timestamp() <= t:
                return found.timestamp()
        return None


def first_at_or_after(times: Times, t: float) -> float:
    """The first tick at or after `t`."""
    return t if times.at_or_before(t) == t else times.after(t)


@dataclass(frozen=True, slots=True)
class Schedule:
    """One periodic schedule: what job each tick makes, and when ticks are."""

    name: str
    times: Times
    task: str
    payload: str  # JSON text, checked by the codec
    destination: str
    priority: int

    def job(self, tick: float) -> NewJob:
        """The tick's job, due at the tick."""
        return NewJob(self.task, self.payload, self.destination, self.priority, tick)


def registered_task(registry: TaskRegistry, task: object) -> Task[..., Any]:
    """`task` (a `Task` or a task name) as registered in `registry`: a schedule's
    jobs are run by name, so a task of another queue would not be found."""
    if isinstance(task, str):
        return registry.resolve(task)
    if not isinstance(task, Task):
        raise TypeError(f"task must be a Task or a task name, not {type(task).__name__}")
    registered = registry.get(task.name)
    if registered is None or registered.fn is not task.fn:
        raise ValueError(f"task {task.name!r} is not registered with this queue")
    return task


def build_schedule(
    task: Task[..., Any],
    *,
    cron: str | None,
    every: float | None,
    kwargs: Mapping[str, Any] | None,
    destination: str | None,
    priority: int,
    tz: str,
    name: str | None,
    max_payload_bytes: int,
) -> Schedule:
    """A schedule from `Queue.periodic`'s arguments; `TypeError` or `ValueError`
    (a `PayloadError` for the kwargs) naming the argument that is wrong."""
    times: Times
    if (cron is None) == (every is None):
        raise ValueError("periodic: give exactly one of cron= or every=")
    if cron is not None:
        times = Cron(_check_cron(cron), _zone(tz))
    else:
        if tz != "UTC":
            raise ValueError("periodic: tz= applies to cron= schedules; every= ticks ignore it")
        times = Every(_check_every(every))
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"periodic: kwargs must be a mapping, not {type(kwargs).__name__}")
    payload = task.check_payload(dict(kwargs or {}))
    return Schedule(
        name=check_name(task.name if name is None else name, "periodic name"),
        times=times,
        task=task.name,
        payload=encode_payload(task.name, payload, max_payload_bytes),
        destination=task.destination
        if destination is None
        else check_name(destination, "destination"),
        priority=check_priority(priority),
    )


def _check_cron(expression: object) -> str:
    if not isinstance(expression, str):
        raise TypeError(f"cron must be a str, not {type(expression).__name__}")
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")))
    except CronSimError as exc:
        raise ValueError(f"cron={expression!r} is not a valid cron expression ({exc})") from None
    return expression


def _check_every(every: object) -> float:
    seconds = check_seconds(every, "every")
    if seconds <= 0:
        raise ValueError(f"every must be a finite number of seconds > 0, not {every!r}")
    return seconds


def _zone(tz: object) -> ZoneInfo:
    if not isinstance(tz, str):
        raise TypeError(f"tz must be a time zone name (str), not {type(tz).__name__}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"tz={tz!r} is not a known time zone (an IANA name: 'Europe/Berlin')"
        ) from None


class Scheduler:
    """Makes the jobs of due ticks, for one run of a queue (start to stop).

    Sleeps on the queue's clock until the next tick; `on_made()` runs after a
    tick made a job here (the queue wakes its dispatcher).
    """

    def __init__(
        self,
        schedules: list[Schedule],
        journal: Journal,
        clock: Clock,
        on_made: Callable[[], None],
    ) -> None:
        self._schedules = schedules
        self._journal = journal
        self._clock = clock
        self._on_made = on_made
        self._started_at = clock.now()  # a schedule never seen starts from here
        self._due: dict[str, float] = {}
        self._asleep = False
        self._changed = asyncio.Event()

    async def run(self) -> None:
        """Make due ticks until cancelled; a transient journal fault is waited out."""
        backoff = Backoff("periodic scheduler")
        while True:
            try:
                self._due = self._first_dues(await self._journal.last_ticks())
                break
            except Exception as exc:  # noqa: BLE001 - Backoff re-raises what is not transient
                await backoff.failed(exc)
        while True:
            now = self._clock.now()
            due = [s for s in self._schedules if self._due[s.name] <= now]
            if not due:
                await self._sleep(min(self._due.values()) - now)
                continue
            for schedule in due:
                try:
                    await self._make(schedule, now)
                except Exception as exc:  # noqa: BLE001 - Backoff re-raises what is not transient
                    await backoff.failed(exc)
                    break
                backoff.succeeded()

    def _first_dues(self, last_ticks: Mapping[str, float]) -> dict[str, float]:
        dues = {}
        for schedule in self._schedules:
            last = last_ticks.get(schedule.name)
            if last is None:  # never seen: from the queue's start on, nothing from before
                dues[schedule.name] = first_at_or_after(schedule.times, self._started_at)
            else:  # due now after downtime: one catch-up tick (see `_make`)
                dues[schedule.name] = schedule.times.after(last)
        return dues

    async def _make(self, schedule: Schedule, now: float) -> None:
        # The latest tick due: after downtime, the missed ones before it are skipped.
        due = self._due[schedule.name]
        tick = schedule.times.at_or_before(now)
        if tick is None or tick <= due:
            tick = due
        else:
            log.info(
                "asyncq periodic %r: the ticks from %s on were missed; one catch-up job for %s",
                schedule.name,
                _iso(due),
                _iso(tick),
            )
        job_id = await self._journal.make_tick(schedule.name, tick, schedule.job(tick), now)
        if job_id is not None:
            self._on_made()
        self._due[schedule.name] = schedule.times.after(tick)

    async def _sleep(self, seconds: float) -> None:
        self._asleep = True
        self._changed.set()
        try:
            await self._clock.sleep(min(seconds, MAX_SLEEP))
        finally:
            self._asleep = False

    def settled(self) -> bool:
        """Asleep, with no tick due at the clock's time: every due tick is made."""
        return self._asleep and bool(self._due) and min(self._due.values()) > self._clock.now()

    async def wait_settled(self) -> None:
        """Wait until `settled()` (for `asyncq.testing.run_until_idle`)."""
        while not self.settled():
            self._changed.clear()
            await self._changed.wait()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class PeriodicJobs:
    """The schedules one queue declared, and their scheduler while the queue runs."""

    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}
        self._scheduler: Scheduler | None = None
        self._task: asyncio.Task[None] | None = None

    def add(self, schedule: Schedule) -> None:
        if schedule.name in self._schedules:
            raise ValueError(
                f"a periodic schedule named {schedule.name!r} exists already "
                "(two schedules for one task need name=)"
            )
        self._schedules[schedule.name] = schedule

    def start(
        self, journal: Journal, clock: Clock, spawn: Spawn, on_made: Callable[[], None]
    ) -> None:
        """Start the scheduler, supervised by `spawn`, if there are schedules."""
        if not self._schedules:
            return
        self._scheduler = Scheduler(list(self._schedules.values()), journal, clock, on_made)
        self._task = spawn(self._scheduler.run(), "periodic scheduler")

    async def stop(self) -> None:
        """Stop the scheduler (a tick being written may still be made)."""
        task, self._task, self._scheduler = self._task, None, None
        if task is not None:
            task.cancel()
            # Not awaited directly: its failure was reported when it happened.
            await asyncio.wait({task})

    async def settled(self) -> None:
        """Wait until every tick due at the clock's time is made (or the scheduler ended)."""
        if self._scheduler is None or self._task is None:
            return
        settling = asyncio.ensure_future(self._scheduler.wait_settled())
        try:
            await asyncio.wait({settling, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            settling.cancel()
