"""The one adapter onto aiolimiter's internals.

The dispatcher must never wait on a limiter: it asks "may a call go now?" and,
if not, "when?", and spends the token in the same breath. aiolimiter's public
API only offers `has_capacity` and an awaiting `acquire`, so the spend and the
"when" read its private level here, and nowhere else (the per-call spend repeats its
leak inline; a test holds it to `has_capacity`'s arithmetic). The bucket reads time
from asyncq's clock instead of the event loop's, so limits are tested on the
controlled clock. tests/unit/test_limiter.py pins the versions this was
checked against.
"""

from __future__ import annotations

from typing import Any

from aiolimiter import AsyncLimiter

from ._clock import Clock
from ._policy import LATE_START, Rate

TESTED_AIOLIMITER = ("1.1", "1.2", "1.3")

# Leaking at epoch-sized times leaves rounding dust on the level (1e-12 or so);
# without a tolerance a bucket could report "room in 1e-15 s" forever.
_DUST = 1e-9


class _ClockAsLoop:
    """What aiolimiter asks of its event loop when nothing waits on it: the time."""

    def __init__(self, clock: Clock) -> None:
        self.time = clock.now

    def is_closed(self) -> bool:
        return False


class _Instant:
    """A clock that stands still unless moved: the ledger's arithmetic runs on it."""

    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now

    def move_to(self, when: float) -> None:
        self._now = max(self._now, when)

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - never waited on
        raise NotImplementedError


def schedule_calls(
    rate: Rate, want: int, full_at: float, now: float, horizon: float
) -> tuple[list[float], float]:
    """Book up to `want` calls in a bucket last full at `full_at`, each at the
    earliest time it fits and none later than `now + horizon`.

    A bucket's whole state is one time: when it was, or will have been, full
    (later than `now` when calls are already booked ahead). Returns the booked
    calls' times and the bucket's new `full_at`.
    """
    start = max(now, full_at)
    bucket = Bucket(rate, _Instant(start))
    bucket.restore(full_at, start)
    # What fits at once goes at `start`; every further call one drain step later.
    at_once = min(want, max(0, int(rate.burst - bucket.level + _DUST)))
    times = [start] * at_once
    step = 1 / rate.per_second
    first = start + max(0.0, bucket.level + at_once + 1 - rate.burst) * step
    end = now + horizon
    later = 0 if first > end else min(want - at_once, int((end - first) / step) + 1)
    times += [first + i * step for i in range(later)]
    if later:
        return times, times[-1]  # the last booked call fills the bucket at its time
    return times, start - (rate.burst - bucket.level - at_once) * step


def booking_rate(rate: Rate) -> Rate:
    """The bucket that calls are booked in, shared by every process: `rate` with
    `LATE_START` seconds of calls kept back from its burst (as far as the burst
    allows).

    A call starts at or after its booked time, and no later than `start_within`
    after it (a later one is dropped and booked again). The calls that start in a
    window of W seconds were booked in a window of `W + start_within`: at most
    `booked burst + rate * (W + start_within)`, which is `rate.burst + rate * W`
    when the burst has room for `LATE_START` of calls.
    """
    kept_back = rate.per_second * LATE_START
    return Rate(rate.n, rate.per, burst=max(1.0, rate.burst - kept_back))


#: How late (seconds) a booked call may start where the burst is smaller than
#: `LATE_START` of calls: as before asyncq kept that room. See `start_within`.
LOOSE_START = 1.0


def start_within(rate: Rate) -> float:
    """How late (seconds) a call booked at `rate` may start; a later one is dropped
    (its process stalled) and booked again.

    Calls must start within `LATE_START` (less 1 ms, for the step from taking a
    job to its handler's start), and `booking_rate` keeps that much room: across
    processes the bound is exact where the burst holds `1 + rate * LATE_START`
    calls or more (the default burst does); a burst between `rate * LATE_START`
    and that leaves a fraction of a call, `1 + rate * LATE_START - burst`.

    A burst smaller than `rate * LATE_START` (`burst=1` at 100 calls/s or more, or
    a generous limit) cannot be exact across processes whatever asyncq does: there
    a call may start up to `LOOSE_START` late, as before, which costs nothing where
    a process is far from the rate (booked calls that go unused for 10 ms would
    otherwise be dropped and booked again and again). Within one process its own
    bucket keeps the bound exact; several processes together may exceed it by the
    calls that start late (calls start within milliseconds of their time unless a
    process stalls).
    """
    if rate.burst < rate.per_second * LATE_START:
        return LOOSE_START
    return LATE_START - 0.001


#: How far ahead a paced lane books calls (seconds): 5 ms, plus 1 ms for every
#: 100 calls/s of its rate, up to 50 ms.
HORIZON_MIN = 0.005
_HORIZON_PER_CALL_PER_SECOND = 1e-5
_HORIZON_MAX = 0.05


def booking_horizon(rate: Rate) -> float:
    """How far ahead (seconds) calls at `rate` are booked.

    A lane books again when less than half of this is left, so a booking's round
    trip through the journal has that long before the lane runs dry (a gap is rate
    lost: the bucket cannot give it back). A process that stalls past a booked
    call's time (`LATE_START`) drops it: a longer horizon wastes more. Fast
    destinations book further ahead: more calls per round trip, more margin.
    """
    return min(_HORIZON_MAX, HORIZON_MIN + rate.per_second * _HORIZON_PER_CALL_PER_SECOND)


def room_at(rate: Rate, full_at: float) -> float:
    """When a bucket last full at `full_at` has room for one more call."""
    return full_at + 1 / rate.per_second


class Bucket:
    """A leaky bucket of capacity `rate.burst` draining `rate.per_second`."""

    __slots__ = ("_limiter", "_now", "rate")

    def __init__(self, rate: Rate, clock: Clock) -> None:
        self.rate = rate
        self._now = clock.now
        self._limiter = AsyncLimiter(rate.burst, rate.burst / rate.per_second)
        limiter: Any = self._limiter
        limiter._event_loop = _ClockAsLoop(clock)
        limiter._last_check = clock.now()

    def take_or_wait(self) -> float:
        """Spend one call if it fits now (returns 0), else how long until it would."""
        limiter: Any = self._limiter
        # aiolimiter's leak (`_leak`, what `has_capacity` runs first), inlined: this
        # runs once per paced call, and the call chain cost 1.5 us of a 35 us job.
        now = self._now()
        level = limiter._level
        if level:
            level = max(level - (now - limiter._last_check) * limiter._rate_per_sec, 0.0)
        limiter._last_check = now
        excess = level + 1 - self.rate.burst
        if excess > _DUST:
            limiter._level = level
            return float(excess / self.rate.per_second)
        limiter._level = level + 1
        return 0.0

    def seconds_until_room(self) -> float:
        """How long until one more call fits (0 if it fits now)."""
        excess = self.level + 1 - self.rate.burst
        return 0.0 if excess <= _DUST else excess / self.rate.per_second

    def restore(self, full_at: float, now: float) -> None:
        """Set the level as if the bucket was full at `full_at` and has drained since."""
        level = self.rate.burst - max(0.0, now - full_at) * self.rate.per_second
        self._limiter.has_capacity(1)
        limiter: Any = self._limiter
        limiter._level = min(float(self.rate.burst), max(0.0, level))

    def full_at(self, now: float) -> float:
        """The time at which a full bucket would have drained to today's level."""
        return now - (self.rate.burst - self.level) / self.rate.per_second

    @property
    def level(self) -> float:
        self._limiter.has_capacity(1)
        limiter: Any = self._limiter
        return float(limiter._level)
