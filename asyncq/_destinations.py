"""Destinations: named outbound targets, their policies, and their live state.

A policy is declared for a name (`"crm"`) or a pattern (`"endpoint:*"`); every
concrete name gets its own state (bucket, calls in flight, pause, hold,
circuit) built from the first matching policy, else the defaults.
"""

from __future__ import annotations

import fnmatch
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from ._clock import Clock
from ._http import Http
from ._journal import DestinationRecord
from ._limiter import Bucket, booking_horizon, booking_rate, room_at, start_within
from ._policy import Circuit, Rate, Retry


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationPolicy:
    """How one destination is called. Times are seconds."""

    rate: Rate | None = None
    concurrency: int | None = None
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None
    circuit: Circuit | None = field(default_factory=Circuit)
    http: Http | None = None  # how `submit_http` deliveries to it are made

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("a destination's concurrency must be at least 1")


class CircuitState(StrEnum):
    """Where a destination's circuit breaker stands (kept in the journal by value)."""

    #: Calls go out.
    CLOSED = "closed"
    #: No call until `circuit_until`: jobs that come due fail at once with `CircuitOpen`.
    OPEN = "open"
    #: The cooldown is over: one probe call goes out, and its outcome decides.
    HALF_OPEN = "half_open"


# Looking a member up on an enum class costs about 70 ns on Python 3.11; these run
# once per job.
CLOSED, HALF_OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN


@dataclass(slots=True)
class DestinationState:
    """One concrete destination's live state in this process."""

    name: str
    policy: DestinationPolicy
    in_flight: int = 0
    paused: bool = False
    hold_until: float = 0.0  # RetryAfter: no call before this time
    circuit: CircuitState = CircuitState.CLOSED
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
    horizon: float = 0.0  # how far ahead calls are booked (`booking_horizon`)
    booking_rate: Rate | None = None  # the shared bucket's rate (`booking_rate`)
    start_within: float = 0.0  # how late a booked call may start (`start_within`)

    # -- questions (they change nothing) -------------------------------------

    def circuit_open(self, now: float) -> bool:
        """The circuit is open and cooling down: calls are refused."""
        return self.circuit is CircuitState.OPEN and self.circuit_until > now

    def stays_in_journal(self, now: float) -> bool:
        """Jobs for this destination should stay in the journal for now (paused,
        or held by a RetryAfter). Jobs of an open circuit are claimed, to be refused."""
        return self.paused or self.hold_until > now

    def blocked(self) -> bool:
        """Blocked for a reason that only an event (not time) clears."""
        if self.paused:
            return True
        if self.probe_in_flight and self.circuit is HALF_OPEN:
            return True
        cap = self.policy.concurrency
        return cap is not None and self.in_flight >= cap

    def wait_seconds(self, now: float) -> float:
        """0 if a call may go now (time-wise), or a booking be asked for, else how
        long until then. An open circuit is not a wait: its calls are refused.
        Mirrors `Lanes.take`."""
        if self.hold_until > now:
            return self.hold_until - now
        if self.bucket is None:
            return 0.0
        slot = self.next_slot(now)
        if slot == math.inf:
            # Nothing booked: a booking is asked for half a horizon before room.
            return max(0.0, self.room_expected_at() - self.horizon / 2 - now)
        if slot > now:
            return slot - now
        return self.bucket.seconds_until_room()

    def next_slot(self, now: float) -> float:
        """The time of the next booked call still on time, or +inf if none is booked."""
        for slot in self.slots:
            if slot + self.start_within >= now:
                return slot
        return math.inf

    def room_expected_at(self) -> float:
        """When the shared bucket has room for another call, as far as this process
        knows (another process may have booked since): 0 if not paced."""
        rate = self.booking_rate
        return 0.0 if rate is None else room_at(rate, self.full_at)

    # -- actions --------------------------------------------------------------

    def drop_late_slots(self, now: float) -> int:
        """Forget booked calls too late to start now; how many were dropped."""
        slots = self.slots
        dropped = 0
        while slots and slots[0] + self.start_within < now:
            slots.popleft()
            dropped += 1
        return dropped

    def half_open_if_cooled(self, now: float) -> None:
        """An open circuit whose cooldown is over lets a probe through."""
        if self.circuit is CircuitState.OPEN and self.circuit_until <= now:
            self.circuit = CircuitState.HALF_OPEN

    def record_outcome(self, failed: bool | None, now: float) -> bool:
        """Move the circuit on an attempt's outcome (`None`: says nothing about
        the receiver's health). True if the circuit changed state."""
        circuit = self.policy.circuit
        if circuit is None or failed is None:
            return False
        if not failed:
            self.consecutive_failures = 0
            if self.circuit is CircuitState.CLOSED:
                return False
            self.circuit = CircuitState.CLOSED
            return True
        self.consecutive_failures += 1
        if self.circuit is CircuitState.OPEN:
            return False
        if self.circuit is CircuitState.HALF_OPEN or self.consecutive_failures >= circuit.failures:
            self.circuit = CircuitState.OPEN
            self.circuit_until = now + circuit.cooldown
            return True
        return False


class Destinations:
    """Policies by name or pattern, and the live state of every name seen."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._exact: dict[str, DestinationPolicy] = {}
        self._patterns: list[tuple[str, DestinationPolicy]] = []
        self.default = DestinationPolicy()
        self._states: dict[str, DestinationState] = {}
        self._lane_caps: dict[str, float] = {}  # by policy; inf: only the prefetch
        self._booking_rates: dict[Rate, Rate] = {}
        self._records: dict[str, DestinationRecord] = {}
        self._corrections: dict[str, DestinationRecord] = {}

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
        self._booking_rates = {}
        for state_name, state in list(self._states.items()):
            if self.policy_for(state_name) is not state.policy:
                del self._states[state_name]

    def rate_for(self, name: str) -> Rate | None:
        """The rate that paces calls to `name`, if any (safe from any thread)."""
        return self.policy_for(name).rate

    def booking_rate_for(self, name: str) -> Rate | None:
        """The rate of the bucket that `name`'s calls are booked in, shared by every
        process (see `booking_rate`), if it is paced. Safe from any thread."""
        state = self._states.get(name)
        if state is not None:  # no pattern matching: a claim asks for every destination
            return state.booking_rate
        return self._booking_rate(self.policy_for(name).rate)

    def _booking_rate(self, rate: Rate | None) -> Rate | None:
        if rate is None:
            return None
        booked = self._booking_rates.get(rate)
        if booked is None:
            booked = self._booking_rates[rate] = booking_rate(rate)
        return booked

    def concurrency_for(self, name: str) -> int | None:
        """`name`'s concurrency cap, or None. Safe from any thread."""
        state = self._states.get(name)
        return (state.policy if state is not None else self.policy_for(name)).concurrency

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

    def declared_rates(self) -> dict[str, float | None]:
        """Calls per second allowed to each destination declared by name (None: no
        rate); patterns and `"*"` name no destination."""
        return {
            name: None if policy.rate is None else policy.rate.per_second
            for name, policy in self._exact.items()
        }

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
            rate = policy.rate
            state = DestinationState(name, policy)
            if rate is not None:
                state.bucket = Bucket(rate, self._clock)
                state.horizon = booking_horizon(rate)
                state.booking_rate = self._booking_rate(rate)
                state.start_within = start_within(rate)
            record = self._records.get(name)
            if record is not None:
                self._apply(state, record)
            self._states[name] = state  # complete before another thread can see it
        return state

    # -- what outlives the process ------------------------------------------

    def known(self) -> list[DestinationState]:
        return list(self._states.values())

    @property
    def existing(self) -> Mapping[str, DestinationState]:
        """The states made so far, by name (read-only; safe to read from any thread)."""
        return self._states

    @property
    def any_lane_caps(self) -> bool:
        """Some declared policy paces or caps its destination (see `lane_cap`)."""
        policies = [self.default, *self._exact.values(), *(p for _, p in self._patterns)]
        return any(p.rate is not None or p.concurrency is not None for p in policies)

    def load(self, records: list[DestinationRecord]) -> None:
        """Take the journal's records: at start, or after another process wrote.

        A circuit that today's policy does not allow is corrected here (see
        `_sane_circuit`); `take_corrections` hands the corrected records out, to be
        written back."""
        self._records = {}
        for record in records:
            circuit, until = self._sane_circuit(self.policy_for(record.name), record)
            if (circuit.value, until) != (record.circuit, record.circuit_until):
                record = replace(record, circuit=circuit.value, circuit_until=until)
                self._corrections[record.name] = record
            self._records[record.name] = record
            state = self._states.get(record.name)
            if state is not None:
                self._apply(state, record)

    def take_corrections(self) -> list[DestinationRecord]:
        """The records `load` corrected since the last call, to be written back."""
        corrected = list(self._corrections.values())
        self._corrections.clear()
        return corrected

    def _apply(self, state: DestinationState, record: DestinationRecord) -> None:
        state.paused = record.paused
        state.hold_until = max(state.hold_until, record.hold_until)
        state.full_at = max(state.full_at, record.full_at)
        state.circuit, state.circuit_until = self._sane_circuit(state.policy, record)

    def _sane_circuit(
        self, policy: DestinationPolicy, record: DestinationRecord
    ) -> tuple[CircuitState, float]:
        """The circuit a record describes, as far as today's policy allows: a circuit
        left by an earlier policy must not outlive it. No circuit in the policy (or
        a state this version does not know): closed. An open circuit waits no longer
        than today's cooldown from now."""
        circuit = policy.circuit
        try:
            loaded = CircuitState(record.circuit)
        except ValueError:
            loaded = CircuitState.CLOSED
        if circuit is None or loaded is CircuitState.CLOSED:
            return CircuitState.CLOSED, 0.0
        until = min(record.circuit_until, self._clock.now() + circuit.cooldown)
        return loaded, until

    def record(self, state: DestinationState) -> DestinationRecord:
        """`state` as the journal keeps it (the bucket is kept by `take_tokens`)."""
        record = DestinationRecord(
            state.name,
            state.paused,
            state.hold_until,
            state.circuit.value,
            state.circuit_until,
            state.full_at,
        )
        self._records[state.name] = record
        return record
