"""The demo's backlog alert on the CRM destination: `queue.on_backlog` (issue 11)
fires when the receiver goes down and the backlog builds, and clears when it
drains. Each event goes to the demo's timeline, view and summary.

A build without `Queue.on_backlog` runs the demo without alerts and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._queue import Queue


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One backlog event as the demo keeps it (seconds since the demo started)."""

    at: float
    destination: str | None
    depth: int
    cause: str
    detail: str
    cleared: bool


def watch_backlog(
    queue: Queue,
    *,
    destination: str,
    depth: int,
    clock: Callable[[], float],
    record: Callable[[AlertRecord], None],
) -> bool:
    """Ask `queue` to call back when `destination` holds more than `depth` jobs, and
    when that clears; `record` gets each event. False if this build has no alerts."""
    on_backlog = getattr(queue, "on_backlog", None)
    if on_backlog is None:
        return False

    def alert(event: object) -> None:
        record(
            AlertRecord(
                at=clock(),
                destination=getattr(event, "destination", None),
                depth=int(getattr(event, "depth", 0)),
                cause=str(getattr(event, "cause", "")),
                detail=str(getattr(event, "detail", "")),
                cleared=bool(getattr(event, "cleared", False)),
            )
        )

    on_backlog(alert, depth=depth, destination=destination)
    return True
