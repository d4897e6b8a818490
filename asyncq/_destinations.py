"""Destinations: named outbound targets, their policies, and their live state.

A policy is declared for a name (`"crm"`) or a pattern (`"endpoint:*"`); every
concrete name gets its own state (bucket, calls in flight, pause, hold,
circuit) built from the first matching policy, else the defaults.
"""

from __future__ import annotations

import fnmatch
import math
from collections import deque
from dataclasses import dataclass, field

from ._clock import Clock
from ._journal import DestinationRecord
from ._limiter import Bucket
from ._policy import Circuit, Rate, Retry


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationPolicy:
    """How one destination is called. Times are seconds."""

    rate: Rate | None = None
    concurrency: int | None = None
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None
    circuit: Circuit | None = field(default_factory=Circuit)

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("a destination's concurrency must be at least 1")


#: A booked call not started this many seconds after its time is dropped (a
#: stalled process must not later fire its old bookings beside other processes').
SLOT_STALE = 1.0


class CircuitState:
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class DestinationState:
    """One concrete destination's live state in this process."""

    name: str
    policy: DestinationPolicy
    in_flight: int = 0
    paused: bool = False
    hold_until: float = 0.0  # RetryAfter: no call before this time
    circuit: str = CircuitState.CLOSED
    circuit_until: float = 0.0  # open: no call before this time
    probe_in_flight: bool = False
    consecutive_failures: int = 0
    # Pacing: the rate bucket lives in the journal, shared by every process. These
    # are the times of calls booked in it for this process, and when the bucket was
    # last seen full.
    slots: deque[float] = field(default_factory=deque)
    full_at: float = 0.0
    # ...and this process's own bucket (aiolimiter), which paces the calls it
    # actually starts, whenever they start.
    bucket: Bucket | None = None

    def wait_seconds(self, now: float, *, bucket: bool = True) -> float:
        """0 if a call may go now (time-wise), else how long until it might.
        `bucket=False` leaves this process's own bucket out (the caller takes
        from it in the same breath)."""
        wait = 0.0
        if self.hold_until > now:
            wait = self.hold_until - now
        if self.circuit == CircuitState.OPEN:
            if self.circuit_until > now:
                wait = max(wait, self.circuit_until - now)
            else:
                self.circuit = CircuitState.HALF_OPEN
        if wait == 0.0 and self.bucket is not None:
            # Wait for the next booked call, or else for this process's own bucket.
            slot = self.next_slot(now)
            if now < slot < math.inf:
                wait = slot - now
            elif bucket:
                wait = self.bucket.seconds_until_room()
        return wait

    def next_slot(self, now: float) -> float:
        """The time of the next booked call, or +inf if none is booked."""
        slots = self.slots
        while slots and slots[0] + SLOT_STALE < now:
            slots.popleft()
        return slots[0] if slots else math.inf

    def record_outcome(self, failed: bool | None, now: float) -> bool:
        """Move the circuit on an attempt's outcome (`None`: says nothing about
        the receiver's health). True if the circuit changed state."""
        circuit = self.policy.circuit
        if circuit is None or failed is None:
            return False
        if not failed:
            self.consecutive_failures = 0
            if self.circuit == CircuitState.CLOSED:
                return False
            self.circuit = CircuitState.CLOSED
            return True
        self.consecutive_failures += 1
        if self.circuit == CircuitState.OPEN:
            return False
        if self.circuit == CircuitState.HALF_OPEN or self.consecutive_failures >= circuit.failures:
            self.circuit = CircuitState.OPEN
            self.circuit_until = now + circuit.cooldown
            return True
        return False

    def closed_to_claims(self, now: float) -> bool:
        """Jobs for this destination should stay in the journal for now."""
        return (
            self.paused
            or self.hold_until > now
            or (self.circuit == CircuitState.OPEN and self.circuit_until > now)
        )

    def blocked(self) -> bool:
        """Blocked for a reason that only an event (not time) clears."""
        if self.paused:
            return True
        if self.circuit == CircuitState.HALF_OPEN and self.probe_in_flight:
            return True
        cap = self.policy.concurrency
        return cap is not None and self.in_flight >= cap


class Destinations:
    """Policies by name or pattern, and the live state of every name seen."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._exact: dict[str, DestinationPolicy] = {}
        self._patterns: list[tuple[str, DestinationPolicy]] = []
        self.default = DestinationPolicy()
        self._states: dict[str, DestinationState] = {}
        self._lane_caps: dict[str, float] = {}  # by policy; inf: only the prefetch
        self._records: dict[str, DestinationRecord] = {}

    def declare(self, name: str, policy: DestinationPolicy) -> None:
        if name == "*":
            self.default = policy
        elif any(ch in name for ch in "*?["):
            self._patterns = [(p, pol) for p, pol in self._patterns if p != name]
            self._patterns.append((name, policy))
        else:
            self._exact[name] = policy
        # States built from an older policy pick up the new one.
        self._lane_caps = {}
        for state_name, state in list(self._states.items()):
            if self.policy_for(state_name) is not state.policy:
                del self._states[state_name]

    def rate_for(self, name: str) -> Rate | None:
        """The rate that paces calls to `name`, if any (safe from any thread)."""
        return self.policy_for(name).rate

    def lane_cap(self, name: str, prefetch: int) -> int:
        """How many claimed jobs of `name` to hold at most: a paced or capped
        destination holds only what it can start soon, so its backlog stays in
        the journal and never crowds other destinations out of the prefetch."""
        cap = self._lane_caps.get(name)
        if cap is None:
            policy = self.policy_for(name)
            cap = math.inf
            if policy.rate is not None:
                second = math.ceil(policy.rate.burst + policy.rate.per_second)
                cap = min(cap, max(2, second))
            if policy.concurrency is not None:
                cap = min(cap, max(2, 2 * policy.concurrency))
            self._lane_caps[name] = cap
        return int(min(cap, prefetch))

    def policy_for(self, name: str) -> DestinationPolicy:
        policy = self._exact.get(name)
        if policy is not None:
            return policy
        for pattern, pattern_policy in self._patterns:
            if fnmatch.fnmatchcase(name, pattern):
                return pattern_policy
        return self.default

    def state(self, name: str) -> DestinationState:
        state = self._states.get(name)
        if state is None:
            policy = self.policy_for(name)
            bucket = None if policy.rate is None else Bucket(policy.rate, self._clock)
            state = self._states[name] = DestinationState(name, policy, bucket=bucket)
            record = self._records.get(name)
            if record is not None:
                self._apply(state, record)
        return state

    # -- what outlives the process ------------------------------------------

    def known(self) -> list[DestinationState]:
        return list(self._states.values())

    def load(self, records: list[DestinationRecord]) -> None:
        """Take the journal's records: at start, or after another process wrote."""
        self._records = {record.name: record for record in records}
        for record in records:
            state = self._states.get(record.name)
            if state is not None:
                self._apply(state, record)

    def _apply(self, state: DestinationState, record: DestinationRecord) -> None:
        state.paused = record.paused
        state.hold_until = max(state.hold_until, record.hold_until)
        state.circuit = record.circuit
        state.circuit_until = record.circuit_until
        state.full_at = max(state.full_at, record.full_at)

    def record(self, state: DestinationState) -> DestinationRecord:
        """`state` as the journal keeps it (the bucket is kept by `take_tokens`)."""
        record = DestinationRecord(
            state.name,
            state.paused,
            state.hold_until,
            state.circuit,
            state.circuit_until,
            state.full_at,
        )
        self._records[state.name] = record
        return record
