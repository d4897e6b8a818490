"""When periodic ticks are: pure functions of a time, tested as tables, no loop."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from asyncq._periodic import Cron, Every, Times, first_at_or_after

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> float:
    """An ISO time in UTC, as seconds since the epoch."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


START = at("2027-01-15T08:00:00")  # the ManualClock's default start


@pytest.mark.parametrize(
    ("times", "t", "after", "at_or_before", "first"),
    [
        (Every(300), START, START + 300, START, START),
        (Every(300), START + 0.5, START + 300, START, START + 300),
        (Every(300), START + 299.999, START + 300, START, START + 300),
        (Every(7), START, 1_800_000_006.0, 1_799_999_999.0, 1_800_000_006.0),
        (Every(0.25), 10.1, 10.25, 10.0, 10.25),
        (Cron("*/5 * * * *", ZoneInfo("UTC")), START, START + 300, START, START),
        (Cron("*/5 * * * *", ZoneInfo("UTC")), START + 0.5, START + 300, START, START + 300),
        (Cron("*/5 * * * *", ZoneInfo("UTC")), START - 1, START, START - 300, START),
        # Daily at 09:00: 08:00 UTC in Berlin's winter, 07:00 in its summer.
        (Cron("0 9 * * *", BERLIN), START - 1, START, START - 86400, START),
        (
            Cron("0 9 * * *", BERLIN),
            at("2027-07-15T12:00:00"),
            at("2027-07-16T07:00:00"),
            at("2027-07-15T07:00:00"),
            at("2027-07-16T07:00:00"),
        ),
        (
            Cron("0 9 * * *", ZoneInfo("UTC")),
            START,
            START + 3600,
            START - 23 * 3600,
            START + 3600,
        ),
        # Six fields: cronsim's seconds field.
        (Cron("*/10 * * * * *", ZoneInfo("UTC")), START + 1, START + 10, START, START + 10),
    ],
)
def test_ticks_around_a_time(
    times: Times, t: float, after: float, at_or_before: float, first: float
) -> None:
    assert times.after(t) == after
    assert times.at_or_before(t) == at_or_before
    assert first_at_or_after(times, t) == first


@pytest.mark.parametrize(
    "times",
    [Every(0.1), Every(3), Every(86400), Cron("0 * * * *", BERLIN), Cron("30 2 * * *", BERLIN)],
)
def test_ticks_go_forward_and_agree_both_ways(times: Times) -> None:
    # Across Berlin's switch to summer time (2027-03-28), when 02:30 does not exist.
    previous = first_at_or_after(times, at("2027-03-26T00:00:00"))
    for _ in range(100):
        tick = times.after(previous)
        assert tick > previous
        assert times.at_or_before(tick) == tick
        assert times.at_or_before(tick - 0.001) == previous
        assert first_at_or_after(times, previous + 0.001) == tick
        previous = tick


def test_an_hourly_cron_in_berlin_ticks_every_hour_through_the_daylight_saving_switch() -> None:
    times = Cron("0 * * * *", BERLIN)
    t = at("2027-03-28T00:00:00")  # 01:00 in Berlin; at 02:00 the clocks jump to 03:00
    ticks = []
    for _ in range(4):
        t = times.after(t)
        ticks.append(t)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [3600.0] * 3
