"""Retry decisions as a table: (attempt, exception, times) -> run again at T, or dead.
No event loop; tenacity's strategies are the policy language."""

from __future__ import annotations

import math

import pytest
import tenacity

from asyncq import Circuit, CircuitOpen, Rate, Retry

T0 = 1_800_000_000.0  # the first attempt, as the journal records it

LADDER = Retry(schedule=[60, 300, 1800, 7200])
EXPONENTIAL = Retry(
    wait=tenacity.wait_exponential(multiplier=2, max=100), stop=tenacity.stop_after_attempt(6)
)
WITHIN_AN_HOUR = Retry(wait=tenacity.wait_fixed(30), stop=tenacity.stop_after_delay(3600))
ONLY_CONNECTION_ERRORS = Retry(
    wait=tenacity.wait_fixed(5),
    stop=tenacity.stop_after_attempt(3),
    retry=tenacity.retry_if_exception_type(ConnectionError),
)
CHAIN = Retry(
    wait=tenacity.wait_chain(*[tenacity.wait_fixed(1)] * 2, tenacity.wait_fixed(10)),
    stop=tenacity.stop_after_attempt(5),
)


@pytest.mark.parametrize(
    ("policy", "attempt", "error", "now", "expected"),
    [
        # The exact ladder, then dead.
        (LADDER, 1, ConnectionError(), T0, T0 + 60),
        (LADDER, 2, ConnectionError(), T0 + 100, T0 + 400),
        (LADDER, 3, TimeoutError(), T0 + 500, T0 + 2300),
        (LADDER, 4, ValueError(), T0 + 3000, T0 + 10200),
        (LADDER, 5, ValueError(), T0 + 11000, None),
        # tenacity's exponential wait (2, 4, 8, ... capped at 100), stop after 6 attempts.
        (EXPONENTIAL, 1, ValueError(), T0, T0 + 2),
        (EXPONENTIAL, 3, ValueError(), T0, T0 + 8),
        (EXPONENTIAL, 5, ValueError(), T0, T0 + 32),
        (EXPONENTIAL, 6, ValueError(), T0, None),
        # stop_after_delay counts from the first attempt the journal recorded, not
        # from when this process started: right after a restart too.
        (WITHIN_AN_HOUR, 7, ValueError(), T0 + 3599, T0 + 3629),
        (WITHIN_AN_HOUR, 8, ValueError(), T0 + 3600, None),
        # A retry predicate: only some exceptions are worth another attempt.
        (ONLY_CONNECTION_ERRORS, 1, ConnectionError(), T0, T0 + 5),
        (ONLY_CONNECTION_ERRORS, 1, KeyError("bad payload"), T0, None),
        (ONLY_CONNECTION_ERRORS, 3, ConnectionError(), T0, None),
        # wait_chain: 1 s, 1 s, then 10 s.
        (CHAIN, 2, ValueError(), T0, T0 + 1),
        (CHAIN, 3, ValueError(), T0, T0 + 10),
        (CHAIN, 5, ValueError(), T0, None),
        # Retry.never: the first failure is final.
        (Retry.never(), 1, ValueError(), T0, None),
    ],
)
def test_retry_decisions(
    policy: Retry, attempt: int, error: BaseException, now: float, expected: float | None
) -> None:
    assert policy.decide(attempt=attempt, error=error, first_attempt_at=T0, now=now) == expected


def test_the_default_backs_off_exponentially_with_jitter_and_gives_up() -> None:
    policy = Retry()
    waits = [
        policy.decide(attempt=a, error=ValueError(), first_attempt_at=T0, now=T0)
        for a in range(1, 11)
    ]
    assert all(w is not None for w in waits[:9])
    assert waits[9] is None  # ten attempts in all
    for attempt, retry_at in enumerate(waits[:9], start=1):
        assert retry_at is not None
        assert 0 <= retry_at - T0 <= min(600, 2**attempt)
    spread = {
        policy.decide(attempt=8, error=ValueError(), first_attempt_at=T0, now=T0) for _ in range(20)
    }
    assert len(spread) > 1  # jitter: recovering receivers are not hit all at once


def test_a_schedule_can_take_jitter() -> None:
    policy = Retry(schedule=[60], jitter=10)
    retry_at = policy.decide(attempt=1, error=ValueError(), first_attempt_at=T0, now=T0)
    assert retry_at is not None
    assert T0 + 60 <= retry_at <= T0 + 70


def test_a_schedule_and_strategies_do_not_mix() -> None:
    with pytest.raises(ValueError, match="not both"):
        Retry(schedule=[1], wait=tenacity.wait_fixed(1))


def test_rates_and_circuits_refuse_nonsense() -> None:
    assert Rate(100, per=60).per_second == pytest.approx(100 / 60)
    with pytest.raises(ValueError, match="n > 0"):
        Rate(0)
    with pytest.raises(ValueError, match="burst"):
        Rate(10, burst=0.5)
    with pytest.raises(ValueError, match="failures"):
        Circuit(failures=0)


def test_a_refusal_by_an_open_circuit_is_judged_by_wait_and_stop_only() -> None:
    refused = CircuitOpen("crm", until=T0 + 60)
    # The predicate would give up on anything but a ConnectionError; a refusal says
    # nothing about the call, so the job keeps to its schedule...
    assert ONLY_CONNECTION_ERRORS.decide(
        attempt=1, error=refused, first_attempt_at=T0, now=T0
    ) == pytest.approx(T0 + 5)
    # ...and still stops when its attempts are spent.
    assert (
        ONLY_CONNECTION_ERRORS.decide(attempt=3, error=refused, first_attempt_at=T0, now=T0) is None
    )
    assert LADDER.decide(attempt=5, error=refused, first_attempt_at=T0, now=T0) is None


def test_a_refusal_says_why() -> None:
    refused = CircuitOpen("receiver:dead", until=1_800_000_060.0)
    assert str(refused) == (
        "not called: the circuit of destination 'receiver:dead' is open after repeated "
        "failures, until 2027-01-15 08:01:00 UTC"
    )
    assert (refused.destination, refused.until) == ("receiver:dead", 1_800_000_060.0)


def test_rates_refuse_what_is_not_a_number() -> None:
    for bad in (
        lambda: Rate(math.inf),
        lambda: Rate(math.nan),
        lambda: Rate(10, burst=math.nan),
        lambda: Rate(10, burst=math.inf),
    ):
        with pytest.raises(ValueError, match="Rate"):
            bad()
