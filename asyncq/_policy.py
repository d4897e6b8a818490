"""Rates and retry policies, and the pure retry decision.

tenacity is the policy language: any of its wait, stop and retry strategies
can be given. asyncq never runs tenacity's retry loop (it would sleep inline
and cost 50-70 us per call even on success); it rebuilds tenacity's call state
from what the journal knows and asks the strategies for a decision, only when
an attempt has failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import tenacity
from tenacity import RetryCallState

from ._errors import CircuitOpen, LeaseExpired

WaitStrategy = Callable[[RetryCallState], float]
StopStrategy = Callable[[RetryCallState], bool]
RetryPredicate = Callable[[RetryCallState], bool]


#: How late (seconds) a call may start after the time booked for it in its
#: destination's bucket. Timers and a busy event loop make every call start a little
#: late; the default burst lets such a call be caught up, and the buckets every
#: process books from keep this much room, so late calls never exceed the bound.
LATE_START = 0.010


@dataclass(frozen=True, slots=True, init=False)
class Rate:
    """At most `n` calls per `per` seconds, as a leaky bucket.

    The bucket drains at `n / per` calls a second and holds `burst` calls: in any
    window of `W` seconds a destination sees at most `burst + n / per * W` calls,
    from all the processes that share its journal.

    The default burst is one call plus 10 ms of calls (`LATE_START`):
    `Rate(1000)` holds 11 calls, `Rate(50)` 1.5, `Rate(100, per=60)` about 1.02.
    Calls are spaced evenly (one every `per / n` seconds), and a call that starts
    up to 10 ms late, as timers and a busy event loop make some, is caught up
    rather than pushing every later call back. An explicit `burst` is honoured
    exactly; with `burst=1` calls are never closer than `per / n` seconds, so a
    late call delays all later ones and at high rates the destination gets less
    than its rate. (With a burst below the default, several processes together
    may exceed the bound: by a fraction of a call, or, with a burst smaller than
    10 ms of calls, by the calls that start late. One process never does.)
    """

    n: float
    per: float
    burst: float

    def __init__(self, n: float, per: float = 1.0, burst: float | None = None) -> None:
        if not (n > 0 and per > 0 and math.isfinite(n / per)):
            raise ValueError("Rate needs n > 0 calls per `per` > 0 seconds")
        if burst is None:
            burst = 1.0 + n / per * LATE_START
        if not burst >= 1 or not math.isfinite(burst):
            raise ValueError("Rate burst must be at least 1 call")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "per", per)
        object.__setattr__(self, "burst", float(burst))

    @property
    def per_second(self) -> float:
        return self.n / self.per


def _default_wait() -> WaitStrategy:
    # Exponential from 1 s, capped at 10 min, with full jitter so that recovering
    # receivers are not hit by every retry at once.
    return tenacity.wait_random_exponential(multiplier=1, max=600)


@dataclass(frozen=True, slots=True)
class Retry:
    """How a destination retries a failed job.

    `Retry(schedule=[60, 300, 1800, 7200])` waits exactly those seconds before
    attempts 2, 3, 4 and 5, then gives up. Otherwise `wait`, `stop` and `retry`
    are tenacity strategies (`wait_exponential`, `stop_after_attempt`,
    `retry_if_exception_type`, ...). The default: exponential backoff with full
    jitter from 1 s up to 10 min, at most 10 attempts. `jitter` (seconds) adds a
    random 0..jitter to a schedule's waits.

    `max_snoozes` bounds `RetryAfter`: a job may ask to be retried later that many
    times without using an attempt; after that, a `RetryAfter` counts as a failure.
    """

    schedule: Sequence[float] | None = None
    wait: WaitStrategy | None = None
    stop: StopStrategy | None = None
    retry: RetryPredicate | None = None
    jitter: float = 0.0
    max_snoozes: int = 20
    _wait: WaitStrategy = field(init=False, repr=False, compare=False)
    _stop: StopStrategy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.schedule is not None:
            if self.wait is not None or self.stop is not None:
                raise ValueError("give Retry a schedule, or wait/stop strategies, not both")
            steps = [tenacity.wait_fixed(s) for s in self.schedule]
            wait: WaitStrategy = tenacity.wait_chain(*steps) if steps else tenacity.wait_none()
            if self.jitter:
                wait = wait + tenacity.wait_random(0, self.jitter)
            stop: StopStrategy = tenacity.stop_after_attempt(len(self.schedule) + 1)
        else:
            wait = self.wait or _default_wait()
            stop = self.stop or tenacity.stop_after_attempt(10)
        object.__setattr__(self, "_wait", wait)
        object.__setattr__(self, "_stop", stop)

    @classmethod
    def never(cls) -> Retry:
        """No retries: the first failure is final."""
        return cls(schedule=[])

    def decide(
        self,
        *,
        attempt: int,
        error: BaseException,
        first_attempt_at: float,
        now: float,
        ignore_predicate: bool = False,
    ) -> float | None:
        """When to run the job again after failed attempt number `attempt`
        (seconds since the epoch), or None: it is dead.

        `first_attempt_at` comes from the journal, so `stop_after_delay` counts
        from the job's first attempt even after a restart. `ignore_predicate`
        leaves the `retry=` predicate out (a crashed attempt: wait and stop only).
        """
        state = _call_state(attempt, error, first_attempt_at, now)
        # A crash or a refusal by an open circuit says nothing about whether the call
        # can succeed: only wait and stop judge those.
        judged = not ignore_predicate and not isinstance(error, CircuitOpen | LeaseExpired)
        if self.retry is not None and judged and not self.retry(state):
            return None
        wait = max(0.0, float(self._wait(state)))
        state.upcoming_sleep = wait
        if self._stop(state):
            return None
        return now + wait


class _NoRetrying(tenacity.BaseRetrying):
    """A stand-in retry object: asyncq never runs tenacity's loop."""

    def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError


_RETRY_OBJECT = _NoRetrying()


def _call_state(
    attempt: int, error: BaseException, first_attempt_at: float, now: float
) -> RetryCallState:
    state = RetryCallState(_RETRY_OBJECT, None, (), {})
    # tenacity stamps time.monotonic(); a state rebuilt from the journal takes
    # its times from the job instead, on asyncq's clock.
    state.start_time = first_attempt_at
    state.attempt_number = attempt
    outcome = tenacity.Future(attempt)
    outcome.set_exception(error)
    state.outcome = outcome
    state.outcome_timestamp = now
    return state


@dataclass(frozen=True, slots=True)
class Circuit:
    """Stop calling a destination after `failures` consecutive failed attempts.

    While the circuit is open (for `cooldown` seconds) its handler is not called:
    a job that comes due fails at once with `CircuitOpen`, without a worker, and
    that failed attempt counts. Its retry policy's wait and stop say when it runs
    again (its `retry=` predicate is not asked: the refusal says nothing about the
    call), so every job keeps to its own schedule and reaches the dead letters by
    its last retry, as it would without a circuit; only the one probe call then in
    flight (at most its timeout) can hold it back. After `cooldown` seconds one
    probe job goes through (half-open): success closes the circuit, failure opens
    it for another `cooldown`.

    The circuit's state is kept in the journal, so it outlives a restart. When a
    destination is redeclared with `circuit=None`, a state left by an earlier
    policy is dropped (closed); a new `cooldown` shortens an open circuit's wait.
    """

    failures: int = 10
    cooldown: float = 60.0

    def __post_init__(self) -> None:
        if self.failures < 1 or self.cooldown <= 0 or math.isnan(self.cooldown):
            raise ValueError("Circuit needs failures >= 1 and cooldown > 0 seconds")
