"""Periodic jobs: the `periodic` method of `Queue` (a base class, as `Submitting`
is), which checks a schedule and hands it to the queue's `PeriodicJobs`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._periodic import PeriodicJobs, build_schedule, registered_task
from ._tasks import Task, TaskRegistry


class Scheduling:
    """Declaring periodic jobs. `Queue` provides the state."""

    _open: bool
    _periodic: PeriodicJobs
    _registry: TaskRegistry
    max_payload_bytes: int

    def periodic(
        self,
        task: Task[..., Any] | str,
        *,
        cron: str | None = None,
        every: float | None = None,
        kwargs: Mapping[str, Any] | None = None,
        destination: str | None = None,
        priority: int = 0,
        tz: str = "UTC",
        name: str | None = None,
    ) -> None:
        """Submit a job of `task` with `kwargs` at every tick of a schedule: `cron`
        (a cron expression, read in time zone `tz`) or `every` (seconds; ticks at
        multiples of it since the epoch). Exactly one job per tick, whatever the
        number of processes; after downtime, one catch-up job for the latest tick.
        Every queue that runs jobs runs the schedules; declare them before `start`.

        `name` (default: the task's name) identifies the schedule in the journal;
        two schedules of one task need their own names.
        """
        if self._open:
            raise RuntimeError("declare periodic jobs before the queue starts")
        self._periodic.add(
            build_schedule(
                registered_task(self._registry, task),
                cron=cron,
                every=every,
                kwargs=kwargs,
                destination=destination,
                priority=priority,
                tz=tz,
                name=name,
                max_payload_bytes=self.max_payload_bytes,
            )
        )

    async def _periodic_settled(self) -> None:
        """Wait until every tick due at the clock's time has been made (for
        `asyncq.testing.run_until_idle`)."""
        await self._periodic.settled()
