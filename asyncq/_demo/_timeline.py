"""What happened during the demo, over time: snapshots of the queue's depth and
dead letters, and the story's events (an outage, a redrive, a backlog alert)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._journal import JournalStats
from ._alerts import AlertRecord


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds since the demo started
    depth: dict[str, int]  # jobs not finished: ready, waiting, claimed, running
    dead: dict[str, int]


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    text: str


@dataclass(slots=True)
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    alerts: list[AlertRecord] = field(default_factory=list)

    def sample(self, at: float, stats: JournalStats) -> None:
        depth = {
            name: counts.pending + counts.blocked + counts.claimed + counts.running
            for name, counts in stats.destinations.items()
        }
        dead = {name: counts.dead for name, counts in stats.destinations.items()}
        self.samples.append(Sample(at, depth, dead))

    def event(self, at: float, text: str) -> None:
        self.events.append(Event(at, text))

    def alert(self, record: AlertRecord) -> None:
        self.alerts.append(record)
        verb = "cleared" if record.cleared else "fired"
        detail = f" ({record.cause}): {record.detail}" if record.detail else ""
        self.event(record.at, f"backlog alert {verb} on {record.destination}{detail}")


def per_second(times: Sequence[float], until: float) -> list[int]:
    """How many of `times` fall in each whole second from 0 to `until`."""
    counts = [0] * max(1, math.ceil(until))
    for at in times:
        index = int(at)
        if 0 <= index < len(counts):
            counts[index] += 1
    return counts
