"""asyncq reaches into aiolimiter in one place; pin it and check the bucket's arithmetic."""

import random
from typing import Any

import aiolimiter
import pytest

from asyncq import Rate
from asyncq._limiter import (
    LOOSE_START,
    TESTED_AIOLIMITER,
    Bucket,
    booking_horizon,
    booking_rate,
    schedule_calls,
    start_within,
)
from asyncq._policy import LATE_START
from asyncq.testing import ManualClock
from tests.pacing import most_in_any_window


def test_the_installed_aiolimiter_is_one_the_adapter_was_checked_against() -> None:
    version = ".".join(aiolimiter.__version__.split(".")[:2])  # type: ignore[attr-defined]
    assert version in TESTED_AIOLIMITER, f"aiolimiter {version}: check asyncq._limiter, then add it"


def test_a_bucket_lets_a_burst_through_then_paces_on_the_clock() -> None:
    clock = ManualClock()
    bucket = Bucket(Rate(2, per=1, burst=3), clock)
    assert [bucket.take_or_wait() == 0 for _ in range(4)] == [True, True, True, False]
    assert bucket.seconds_until_room() == pytest.approx(0.5)
    clock.advance(0.25)
    assert bucket.take_or_wait() == pytest.approx(0.25)
    clock.advance(0.25)
    assert bucket.take_or_wait() == 0
    assert bucket.level == pytest.approx(3)


def test_a_restored_bucket_continues_where_it_was() -> None:
    clock = ManualClock()
    bucket = Bucket(Rate(1, per=1, burst=5), clock)
    bucket.restore(full_at=clock.now() - 2, now=clock.now())
    assert bucket.level == pytest.approx(3)
    assert bucket.full_at(clock.now()) == pytest.approx(clock.now() - 2)
    bucket.restore(full_at=clock.now() + 30, now=clock.now())  # reserved into the future
    assert bucket.level == pytest.approx(5)


def test_calls_are_booked_at_the_earliest_times_the_bucket_allows() -> None:
    rate = Rate(10, per=1, burst=2)
    t = 1_000.0
    times, full_at = schedule_calls(rate, want=5, full_at=0.0, now=t, horizon=0.25)
    # Two at once (the burst), then one every 0.1 s, none past the horizon.
    assert times == pytest.approx([t, t, t + 0.1, t + 0.2])
    assert full_at == pytest.approx(t + 0.2)
    # Booked ahead: a second process sees the bucket full until then.
    later, _ = schedule_calls(rate, want=2, full_at=full_at, now=t, horizon=1.0)
    assert later == pytest.approx([t + 0.3, t + 0.4])
    none, unchanged = schedule_calls(rate, want=1, full_at=full_at, now=t, horizon=0.05)
    assert (none, unchanged) == ([], pytest.approx(full_at))


def test_take_or_wait_spends_or_says_how_long() -> None:
    clock = ManualClock()
    bucket = Bucket(Rate(4, per=1, burst=1), clock)
    assert bucket.take_or_wait() == 0
    assert bucket.take_or_wait() == pytest.approx(0.25)
    clock.advance(0.25)
    assert bucket.take_or_wait() == 0


def test_take_or_wait_leaks_exactly_as_aiolimiter_does() -> None:
    # take_or_wait inlines aiolimiter's leak; the same bucket spent through
    # aiolimiter's own has_capacity (which leaks first) must agree at every step.
    clock = ManualClock()
    rate = Rate(3, per=2, burst=4)
    bucket, reference = Bucket(rate, clock), Bucket(rate, clock)
    limiter: Any = reference._limiter

    def take_through_aiolimiter() -> float:
        limiter.has_capacity(1)
        excess = limiter._level + 1 - rate.burst
        if excess > 1e-9:
            return float(excess / rate.per_second)
        limiter._level += 1
        return 0.0

    for step in [0.0, 0.1, 0.0, 0.7, 0.05, 1.3, 0.0, 0.0, 0.0, 0.0, 2.5, 0.2, 0.0]:
        clock.advance(step)
        assert bucket.take_or_wait() == pytest.approx(take_through_aiolimiter(), abs=1e-9)
        assert bucket.level == pytest.approx(reference.level, abs=1e-9)


def test_the_default_burst_lets_10_ms_of_lateness_be_caught_up() -> None:
    assert LATE_START == 0.010
    assert Rate(1000).burst == pytest.approx(11)
    assert Rate(10_000).burst == pytest.approx(101)
    assert Rate(50).burst == pytest.approx(1.5)
    assert Rate(100, per=60).burst == pytest.approx(1 + 100 / 60 * 0.01)
    # An explicit burst is taken as given.
    assert Rate(1000, burst=1).burst == 1
    assert Rate(20, per=1, burst=10).burst == 10


def test_the_shared_bucket_keeps_room_for_late_starts() -> None:
    assert booking_rate(Rate(1000)) == Rate(1000, burst=1)  # 11 - 10 ms of calls
    assert booking_rate(Rate(20, burst=10)) == Rate(20, burst=9.8)
    assert booking_rate(Rate(1000, burst=1)) == Rate(1000, burst=1)  # never below 1


def test_calls_must_start_on_time_where_the_burst_has_room_for_it() -> None:
    # The burst keeps LATE_START of room (or nearly: Rate(1, burst=1) keeps all
    # but 0.01 of a call), and calls start within it.
    for exact in (Rate(50), Rate(1000), Rate(10_000), Rate(20, burst=10), Rate(1, burst=1)):
        assert start_within(exact) == pytest.approx(LATE_START - 0.001), exact
    # A burst smaller than 10 ms of calls: a call may start late, as before (the
    # bound holds within one process; across processes, by the calls that start late).
    for loose in (Rate(1000, burst=1), Rate(1_000_000, burst=1_000)):
        assert start_within(loose) == LOOSE_START, loose


def _worst_excess(rate: Rate, seed: int) -> float:
    """Calls booked in the shared bucket (by any number of processes: bookings
    `booking_horizon` ahead at random moments), each started up to `LATE_START`
    after its booked time: the largest excess of calls over `burst + rate * W`
    in any window."""
    rng = random.Random(seed)
    book_in = booking_rate(rate)
    horizon = booking_horizon(rate)
    full_at, now, starts = 0.0, 1_000.0, []
    for _ in range(400):
        now += rng.uniform(0, horizon / 2)
        times, full_at = schedule_calls(book_in, rng.randint(1, 40), full_at, now, horizon)
        starts += [t + rng.choice([0.0, LATE_START, rng.uniform(0, LATE_START)]) for t in times]
    return max(
        most_in_any_window(starts, w) - (rate.burst + rate.per_second * w)
        for w in (0.0, 0.001, 0.01, 0.02, 0.1, 0.5, 1.0)
    )


@pytest.mark.parametrize("rate", [Rate(50), Rate(1000), Rate(10_000), Rate(20, burst=10)])
def test_calls_that_start_late_stay_within_the_bound(rate: Rate) -> None:
    # Booked in the shared bucket with room kept back, and started no later than
    # LATE_START after their times, calls never exceed burst + rate * W.
    for seed in range(5):
        assert _worst_excess(rate, seed) <= 1e-6, seed


def test_without_the_room_kept_back_late_starts_would_exceed_the_bound() -> None:
    # Why the room is kept: calls booked back to back in a bucket of the full burst
    # (as before), the first started LATE_START late (by one process), the next on
    # time (by another): two calls at once, against a bound of 1.5.
    rate = Rate(50)
    times, _ = schedule_calls(rate, 2, 0.0, 1_000.0, horizon=0.1)
    starts = [times[0] + LATE_START, times[1]]
    assert most_in_any_window(starts, 0.0) > rate.burst
