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

WaitStrategy = Callable[[RetryCallState], float]
StopStrategy = Callable[[RetryCallState], bool]
RetryPredicate = Callable[[RetryCallState], bool]


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `n` calls per `per` seconds, as a leaky bucket.

    The bucket drains at `n / per` calls a second and holds `burst` calls: in any
    window of `W` seconds a destination sees at most `burst + n / per * W` calls.
    The default `burst=1` spaces calls evenly (one every `per / n` seconds).
    """

    n: float
    per: float = 1.0
    burst: float = 1.0

    def __post_init__(self) -> None:
        if not (self.n > 0 and self.per > 0):
            raise ValueError("Rate needs n > 0 calls per `per` > 0 seconds")
        if self.burst < 1:
            raise ValueError("Rate burst must be at least 1 call")

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
        if self.retry is not None and not ignore_predicate and not self.retry(state):
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

    While open, its jobs wait without using attempts; after `cooldown` seconds one
    probe job goes through (half-open): success closes the circuit, failure
    opens it for another `cooldown`.
    """

    failures: int = 10
    cooldown: float = 60.0

    def __post_init__(self) -> None:
        if self.failures < 1 or self.cooldown <= 0 or math.isnan(self.cooldown):
            raise ValueError("Circuit needs failures >= 1 and cooldown > 0 seconds")
