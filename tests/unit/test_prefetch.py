"""The adaptive prefetch: about 50 ms of work at the recent pace, within bounds."""

import pytest

from asyncq import Rate
from asyncq._destinations import DestinationPolicy, Destinations
from asyncq._dispatcher import paced_prefetch
from asyncq.testing import ManualClock


@pytest.mark.parametrize(
    ("finished", "elapsed", "expected"),
    [
        (30_000, 1.0, 1_500),  # fast no-op jobs: big claims, fewer transactions
        (100_000, 1.0, 2_048),  # never above the upper bound
        (200, 1.0, 256),  # slow jobs: the lower bound, so no process hoards work
        (0, 2.0, 256),  # idle
        (10, 0.0, 2_048),  # no time passed: cannot tell, so the bound
    ],
)
def test_prefetch_follows_the_pace(finished: int, elapsed: float, expected: int) -> None:
    assert paced_prefetch(finished, elapsed, 256, 2_048) == expected


def test_a_lane_cap_is_the_policy_cap_or_the_prefetch_whichever_is_smaller() -> None:
    destinations = Destinations(ManualClock())
    destinations.declare("paced", DestinationPolicy(rate=Rate(10, per=1, burst=5)))
    assert destinations.lane_cap("paced", 256) == 15  # a second of calls
    assert destinations.lane_cap("paced", 8) == 8  # the prefetch shrank below it
    assert destinations.lane_cap("free", 256) == 256
    assert destinations.lane_cap("free", 1_500) == 1_500  # the prefetch grew
