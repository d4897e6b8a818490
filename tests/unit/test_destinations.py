from asyncq import Circuit, Rate
from asyncq._destinations import CircuitState, DestinationPolicy, Destinations
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
    assert state.circuit == CircuitState.OPEN
    assert state.closed_to_claims(clock.now())
    assert state.wait_seconds(clock.now()) == 10
    clock.advance(10)
    assert state.wait_seconds(clock.now()) == 0
    assert state.circuit == CircuitState.HALF_OPEN
    assert state.record_outcome(None, clock.now()) is False  # a 400 says nothing about health
    assert state.record_outcome(False, clock.now())
    assert state.circuit == CircuitState.CLOSED
