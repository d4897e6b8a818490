"""Backlog alerts as pure decisions (`asyncq._backlog`): the cause a backlog is given,
when an alert fires and when it clears, from stats alone (no queue, no loop)."""

from __future__ import annotations

import pytest

from asyncq import BacklogCause, BacklogEvent, DestinationCounts, JournalStats
from asyncq._backlog import BacklogRule, diagnose

AT = 1_800_000_000.0


def stats(workers: int = 1, **counts: object) -> JournalStats:
    return JournalStats({"crm": DestinationCounts(**counts)}, at=AT, workers=workers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("workers", "counts", "cause", "drain_time"),
    [
        # Nobody runs jobs: whatever else is true.
        (0, {"ready": 300, "circuit": "open", "paused": True}, "no_workers", None),
        (1, {"ready": 300, "paused": True, "circuit": "open"}, "paused", None),
        # The circuit, or half the calls failing (retried or dead), is a failing receiver.
        (1, {"ready": 300, "circuit": "open", "completion_rate": 3.0}, "failing", 100.0),
        (1, {"ready": 300, "call_rate": 1.0, "retries_per_minute": 30.0}, "failing", None),
        (1, {"ready": 300, "call_rate": 1.0, "retries_per_minute": 29.0}, "slow_workers", None),
        # A limit below the arrivals, or calls at 90 % of it: the limit drains it.
        (
            1,
            {"ready": 300, "limit": 1.7, "arrival_rate": 5.0, "completion_rate": 1.7},
            "rate_limited",
            300 / 1.7,
        ),
        (
            1,
            {"ready": 90, "scheduled": 10, "limit": 10.0, "limit_used": 0.95},
            "rate_limited",
            10.0,
        ),
        (1, {"ready": 100, "held_until": AT + 30, "completion_rate": 2.0}, "rate_limited", 50.0),
        (
            1,
            {"ready": 100, "limit": 10.0, "limit_used": 0.5, "completion_rate": 4.0},
            "slow_workers",
            25.0,
        ),
    ],
)
def test_the_likely_cause(
    workers: int, counts: dict[str, object], cause: str, drain_time: float | None
) -> None:
    taken = stats(workers, **counts)
    crm = taken.destinations["crm"]
    depth = crm.ready + crm.scheduled + crm.claimed
    found, detail, drained_in = diagnose("crm", crm, taken, depth)
    assert found == BacklogCause(cause)
    assert drained_in == (None if drain_time is None else pytest.approx(drain_time))
    assert detail  # one readable sentence


def test_the_rate_limited_sentence() -> None:
    taken = stats(ready=300, limit=1.7, arrival_rate=5.0)
    _, detail, _ = diagnose("crm", taken.destinations["crm"], taken, 300)
    assert detail == "rate limit 1.7/s is below arrival 5.0/s: 300 jobs drain in 176 s"


def test_an_alert_fires_once_and_clears_at_half_its_threshold() -> None:
    told: list[BacklogEvent] = []
    rule = BacklogRule(told.append, depth=100)
    for depth in (50, 100, 150, 99, 51):  # crosses once, stays up above half
        assert [e.cleared for e in rule.events(stats(ready=depth))] == (
            [False] if depth == 100 else []
        )
    (cleared,) = rule.events(stats(ready=50))
    assert (cleared.cleared, cleared.depth, cleared.destination) == (True, 50, "crm")
    assert rule.events(stats(ready=99)) == []  # below the threshold again: quiet
    assert told == []  # the rule decides; the watch calls back


def test_growing_needs_the_time_and_a_deeper_backlog() -> None:
    rule = BacklogRule(lambda event: None, growing_for=30)

    def at(seconds: float, depth: int, arrival: float, drain: float) -> list[BacklogEvent]:
        taken = JournalStats(
            {"crm": DestinationCounts(ready=depth, arrival_rate=arrival, completion_rate=drain)},
            at=AT + seconds,
            workers=1,
        )
        return rule.events(taken)

    assert at(0, 10, 5.0, 1.0) == []  # filling: the clock starts
    assert at(29, 200, 5.0, 1.0) == []  # not for 30 s yet
    (fired,) = at(30, 210, 5.0, 1.0)
    assert "filling faster than it drains for 30 s (10 -> 210" in fired.reason
    assert at(40, 150, 5.0, 4.9) == []  # no longer filling by 5 %, but not draining yet
    (cleared,) = at(41, 140, 5.0, 5.0)
    assert cleared.cleared
    # A steady queue (the same rates, give or take 5 %) never counts as growing.
    assert at(100, 20, 5.0, 4.9) == []
    assert at(200, 30, 5.0, 4.9) == []
