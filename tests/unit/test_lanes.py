"""The order within a lane: higher priority first, then claim order (FIFO)."""

from asyncq._destinations import Destinations
from asyncq._journal import ClaimedJob
from asyncq._lanes import Lanes
from asyncq.testing import ManualClock


def _job(job_id: int, priority: int, destination: str = "d") -> ClaimedJob:
    return ClaimedJob(job_id, "t", {}, destination, priority, 1, None)


def _take_all(lanes: Lanes) -> list[int]:
    taken = []
    while (job := lanes.take()) is not None:
        taken.append(job.id)
        lanes.finished(job.destination)
    return taken


def test_a_later_claim_of_higher_priority_goes_first_and_equals_keep_their_order() -> None:
    clock = ManualClock()
    lanes = Lanes(clock, Destinations(clock), prefetch=100)
    # Each claim comes sorted (priority first); the second brings a higher one.
    lanes._add([_job(1, 5), _job(2, 0), _job(3, 0)])
    lanes._add([_job(4, 9), _job(5, 5), _job(6, 0)])
    assert _take_all(lanes) == [4, 1, 5, 2, 3, 6]


def test_claims_of_falling_priority_are_appended_in_order() -> None:
    clock = ManualClock()
    lanes = Lanes(clock, Destinations(clock), prefetch=100)
    lanes._add([_job(1, 3, "a"), _job(2, 3, "b"), _job(3, 1, "a")])
    lanes._add([_job(4, 1, "a"), _job(5, 0, "a"), _job(6, 3, "b")])
    taken = _take_all(lanes)
    assert [i for i in taken if i in (1, 3, 4, 5)] == [1, 3, 4, 5]
    assert [i for i in taken if i in (2, 6)] == [2, 6]
    assert lanes.buffered == 0
