"""The demo's backlog alert on the CRM destination: `queue.on_backlog` (issue 11)
fires when the receiver goes down and the backlog builds, and clears when it
drains. Each event goes to the demo's timeline, view and summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._backlog import BacklogEvent
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
) -> None:
    """Ask `queue` to call back when `destination` holds more than `depth` jobs, and
    when that clears; `record` gets each event."""

    def alert(event: BacklogEvent) -> None:
        record(
            AlertRecord(
                at=clock(),
                destination=event.destination,
                depth=event.depth,
                cause=str(event.cause),
                detail=event.detail,
                cleared=event.cleared,
            )
        )

    queue.on_backlog(alert, depth=depth, destination=destination)
