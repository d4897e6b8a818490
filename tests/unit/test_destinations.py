from enum import StrEnum

import pytest

from asyncq import Circuit, Rate
from asyncq._destinations import CircuitState, DestinationPolicy, Destinations
from asyncq._journal import DestinationRecord
from asyncq.testing import ManualClock


def test_names_take_the_exact_policy_then_a_pattern_then_the_default() -> None:
    destinations = Destinations(ManualClock())
    crm = DestinationPolicy(concurrency=8)
    endpoints = DestinationPolicy(rate=Rate(10))
    destinations.declare("crm", crm)
    destinations.declare("endpoint:*", endpoints)
    assert destinations.policy_for("crm") is crm
    assert destinations.policy_for("endpoint:42") is endpoints
    assert destinations.policy_for("other") is destinations.default
    # Every dynamic name has its own state (and its own bucket in the journal).
    first, second = destinations.state("endpoint:1"), destinations.state("endpoint:2")
    assert first is not second
    assert first.policy is second.policy is endpoints


def test_paced_and_capped_destinations_hold_only_what_they_can_start_soon() -> None:
    destinations = Destinations(ManualClock())
    destinations.declare("slow", DestinationPolicy(rate=Rate(1, per=60)))
    destinations.declare("capped", DestinationPolicy(concurrency=4))
    assert destinations.lane_cap("slow", 256) == 2
    assert destinations.lane_cap("capped", 256) == 8
    assert destinations.lane_cap("free", 256) == 256


def test_circuit_transitions() -> None:
    clock = ManualClock()
    destinations = Destinations(clock)
    destinations.declare("d", DestinationPolicy(circuit=Circuit(failures=2, cooldown=10)))
    state = destinations.state("d")
    assert not state.record_outcome(True, clock.now())
    assert state.record_outcome(True, clock.now())
    assert state.circuit is CircuitState.OPEN
    assert state.circuit_open(clock.now())
    # Open is not a wait: due jobs are refused, not held back in the journal.
    assert not state.stays_in_journal(clock.now())
    clock.advance(10)
    assert not state.circuit_open(clock.now())
    # Questions change nothing: only the action lets the probe through.
    assert state.wait_seconds(clock.now()) == 0
    assert state.circuit is CircuitState.OPEN
    state.half_open_if_cooled(clock.now())
    assert state.circuit is CircuitState.HALF_OPEN
    assert state.record_outcome(None, clock.now()) is False  # a 400 says nothing about health
    assert state.record_outcome(False, clock.now())
    assert state.circuit is CircuitState.CLOSED


def test_circuit_states_are_an_enum_kept_by_value() -> None:
    assert issubclass(CircuitState, StrEnum)
    assert [s.value for s in CircuitState] == ["closed", "open", "half_open"]
    destinations = Destinations(ManualClock())
    state = destinations.state("d")
    state.circuit = CircuitState.HALF_OPEN
    assert destinations.record(state).circuit == "half_open"
    assert type(destinations.record(state).circuit) is str


def test_booked_slots_are_read_by_a_question_and_dropped_by_an_action() -> None:
    clock = ManualClock()
    destinations = Destinations(clock)
    destinations.declare("d", DestinationPolicy(rate=Rate(100)))
    state = destinations.state("d")
    now = clock.now()
    late = state.start_within
    assert late == pytest.approx(0.009)
    state.slots.extend([now - 1, now - late, now + 0.01])
    assert state.next_slot(now) == now - late  # still on time
    assert len(state.slots) == 3
    assert state.drop_late_slots(now) == 1
    assert list(state.slots) == [now - late, now + 0.01]


def _record(name: str, circuit: str, until: float) -> DestinationRecord:
    return DestinationRecord(name, circuit=circuit, circuit_until=until)


def test_a_circuit_left_by_an_earlier_policy_does_not_outlive_it() -> None:
    clock = ManualClock()
    destinations = Destinations(clock)
    destinations.declare("hooks:*", DestinationPolicy(circuit=None))
    now = clock.now()
    destinations.load(
        [
            _record("hooks:a", "half_open", now - 5),
            _record("hooks:b", "open", now + 600),
            _record("hooks:c", "closed", 0.0),
        ]
    )
    for name in ("hooks:a", "hooks:b"):
        state = destinations.state(name)
        assert (state.circuit, state.circuit_until) == (CircuitState.CLOSED, 0.0)
        assert not state.blocked()
        state.probe_in_flight = True  # even so: no circuit, no probe to wait for
        assert not state.blocked()
    # The journal's records are written right (the dispatcher saves these at start).
    fixed = {r.name: (r.circuit, r.circuit_until) for r in destinations.take_corrections()}
    assert fixed == {"hooks:a": ("closed", 0.0), "hooks:b": ("closed", 0.0)}
    assert destinations.take_corrections() == []


def test_a_changed_circuit_policy_starts_sane() -> None:
    clock = ManualClock()
    destinations = Destinations(clock)
    destinations.declare("crm", DestinationPolicy(circuit=Circuit(cooldown=60)))
    now = clock.now()
    # Opened for an hour by a policy with a longer cooldown; a state from a newer
    # version of asyncq that this one does not know.
    destinations.load([_record("crm", "open", now + 3600), _record("other", "tripped", now + 9)])
    clock.advance(20)  # the state is built later: its cooldown still counts from the load
    crm = destinations.state("crm")
    assert (crm.circuit, crm.circuit_until) == (CircuitState.OPEN, now + 60)
    assert destinations.state("other").circuit is CircuitState.CLOSED
    fixed = {r.name: (r.circuit, r.circuit_until) for r in destinations.take_corrections()}
    assert fixed == {"crm": ("open", now + 60), "other": ("closed", 0.0)}
    # A circuit the policy allows is left as it is.
    destinations.load([_record("crm", "open", now + 30)])
    assert destinations.take_corrections() == []
