"""asyncq reaches into aiolimiter in one place; pin it and check the bucket's arithmetic."""

from typing import Any

import aiolimiter
import pytest

from asyncq import Rate
from asyncq._limiter import TESTED_AIOLIMITER, Bucket, schedule_calls
from asyncq.testing import ManualClock


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
