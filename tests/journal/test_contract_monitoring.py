"""The journal's contract for monitoring: the last minute's activity, rates and
latencies in stats(), workers' heartbeats and destinations' rates, on every
backend, with time passed in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from asyncq import Rate
from asyncq._journal import (
    Cancelled,
    ClaimedJob,
    DestinationCounts,
    Failed,
    Journal,
    NewJob,
    Started,
    Succeeded,
    WorkerRecord,
    micros,
)

NOW = 1_800_000_000.0
LEASE = 30.0
# Rates are over the last minute as the journal counts it (between 55 and 60 s), or
# over its life so far if shorter (since its first event, at least a second).
SHORTEST_MINUTE, LONGEST_MINUTE = 55.0, 60.0


def job(destination: str = "crm", run_at: float = NOW) -> NewJob:
    return NewJob("t", "{}", destination, 0, run_at)


async def claim(journal: Journal, now: float = NOW, limit: int = 100) -> list[ClaimedJob]:
    return (await journal.claim("a", limit, now + LEASE, now)).jobs


def per_second_over_a_minute(rate: float, count: int, age: float = LONGEST_MINUTE) -> None:
    """`rate` is `count` events over the journal's last minute, for a journal whose
    first activity was `age` seconds ago."""
    longest = max(1.0, min(LONGEST_MINUTE, age))
    shortest = max(1.0, min(SHORTEST_MINUTE, age))
    assert count / longest - 1e-9 <= rate <= count / shortest + 1e-9, (rate, count, age)


async def scripted_minute(journal: Journal) -> None:
    """10 jobs to "crm" at NOW; at NOW + 2: 6 succeeded after 1 s each, 2 failed
    after 0.5 s and wait to retry, 1 failed after 0.5 s and is dead, 1 was
    cancelled while running."""
    await journal.insert_many([job() for _ in range(10)], NOW)
    jobs = await claim(journal)
    a, b, c, d, e, f, g, h, i, j = jobs
    one_s, half_s = micros(NOW + 1), micros(NOW + 1.5)
    await journal.record_outcomes(
        "a",
        NOW + 2,
        succeeded=[Succeeded(x.id, x.token, "null", one_s, "crm") for x in (a, b, c, d, e, f)],
        failed=[
            Failed(g.id, g.token, "E", NOW + 60, 0, half_s, "crm"),
            Failed(h.id, h.token, "E", NOW + 60, 0, half_s, "crm"),
            Failed(i.id, i.token, "E", None, 0, half_s, "crm"),
        ],
        cancelled=[Cancelled(j.id, j.token, one_s, "crm")],
    )


@pytest.mark.needs_activity
async def test_stats_give_the_last_minutes_rates_and_latencies(journal: Journal) -> None:
    await scripted_minute(journal)
    stats = await journal.stats(NOW + 5)
    crm = stats.destinations["crm"]
    assert (crm.succeeded, crm.scheduled, crm.dead, crm.cancelled) == (6, 2, 1, 1)
    per_second_over_a_minute(crm.arrival_rate, 10, age=5)
    per_second_over_a_minute(crm.completion_rate, 8, age=5)  # succeeded, dead, cancelled
    per_second_over_a_minute(crm.call_rate, 10, age=5)  # every attempt reached the handler
    per_second_over_a_minute(crm.retries_per_minute / 60, 2, age=5)
    per_second_over_a_minute(crm.dead_per_minute / 60, 1, age=5)
    # The same minute for every figure: their ratios are exact.
    assert crm.completion_rate / crm.arrival_rate == pytest.approx(0.8)
    assert crm.retries_per_minute / 60 / crm.arrival_rate == pytest.approx(0.2)
    # Durations: six of 1 s and three of 0.5 s (a cancelled call's says nothing).
    assert crm.latency_p50 == pytest.approx(1.0, rel=0.045)
    assert crm.latency_p99 == pytest.approx(1.0, rel=0.045)
    assert (stats.latency_p50, stats.latency_p99) == (crm.latency_p50, crm.latency_p99)
    assert stats.at == NOW + 5
    assert stats.arrival_rate == crm.arrival_rate
    assert (crm.limit, crm.limit_used) == (None, None)


@pytest.mark.needs_activity
async def test_a_third_of_attempts_half_a_second_long_is_the_median(journal: Journal) -> None:
    await journal.insert_many([job() for _ in range(3)], NOW)
    fast, slow, slower = await claim(journal)
    await journal.record_outcomes(
        "a",
        NOW + 4,
        succeeded=[
            Succeeded(fast.id, fast.token, "null", micros(NOW + 3.9), "crm"),
            Succeeded(slow.id, slow.token, "null", micros(NOW + 3.5), "crm"),
            Succeeded(slower.id, slower.token, "null", micros(NOW + 1), "crm"),
        ],
    )
    crm = (await journal.stats(NOW + 4)).destinations["crm"]
    assert crm.latency_p50 == pytest.approx(0.5, rel=0.045)
    assert crm.latency_p95 == pytest.approx(3.0, rel=0.045)


@pytest.mark.needs_activity
async def test_another_journal_on_the_file_sees_the_same_activity(
    journal: Journal, tmp_path: Path
) -> None:
    await scripted_minute(journal)
    await journal.close()  # what was not written yet is written at close
    other = type(journal)(journal.description)  # type: ignore[call-arg]
    await other.open()
    try:
        seen = (await other.stats(NOW + 5)).destinations["crm"]
    finally:
        await other.close()
    await journal.open()
    assert seen == (await journal.stats(NOW + 5)).destinations["crm"]
    per_second_over_a_minute(seen.completion_rate, 8, age=5)


async def test_activity_older_than_a_minute_no_longer_counts(journal: Journal) -> None:
    await scripted_minute(journal)
    later = (await journal.stats(NOW + 2 + LONGEST_MINUTE + 5)).destinations["crm"]
    assert later.succeeded == 6  # counts by state stay
    assert (later.arrival_rate, later.completion_rate, later.call_rate) == (0.0, 0.0, 0.0)
    assert (later.retries_per_minute, later.dead_per_minute) == (0.0, 0.0)
    assert later.latency_p50 is None


@pytest.mark.needs_activity
async def test_every_way_in_and_out_is_counted(journal: Journal) -> None:
    # A worker dies in a call: the reclaim counts the call, and its retry.
    await journal.insert_many([job("crash")], NOW)
    (crashed,) = await claim(journal)
    started = [Started(crashed.id, crashed.token, micros(NOW))]
    await journal.record_outcomes("a", NOW, started=started)
    (taken_back,) = await journal.reclaim_expired(NOW + LEASE + 1, lambda expired: NOW + 600)
    assert taken_back[1] == NOW + 600
    crash = (await journal.stats(NOW + LEASE + 1)).destinations["crash"]
    assert crash.scheduled == 1
    per_second_over_a_minute(crash.call_rate, 1, age=LEASE + 1)
    per_second_over_a_minute(crash.retries_per_minute / 60, 1, age=LEASE + 1)
    assert crash.completion_rate == 0.0
    # A periodic tick's job arrives; cancelling a waiting job finishes it.
    await journal.make_tick("digest", NOW, job("ticks"), NOW)
    (waiting,) = await journal.insert_many([job("ticks")], NOW)
    await journal.cancel(waiting.id, NOW + 1)
    ticks = (await journal.stats(NOW + 2)).destinations["ticks"]
    per_second_over_a_minute(ticks.arrival_rate, 2, age=2)
    per_second_over_a_minute(ticks.completion_rate, 1, age=2)


async def test_a_destination_with_nothing_done_lately_has_zero_rates(journal: Journal) -> None:
    await journal.insert_many([job("quiet", run_at=NOW - 30)], NOW - 3600)
    quiet = (await journal.stats(NOW)).destinations["quiet"]
    assert quiet == DestinationCounts(ready=1, oldest_ready_at=NOW - 30, oldest_ready_age=30.0)


async def test_heartbeats_say_how_many_workers_are_alive(journal: Journal) -> None:
    assert (await journal.stats(NOW)).workers == 0
    for n in (1, 2):
        worker = WorkerRecord(owner=f"h:{n}:x", host="h", pid=n, concurrency=8, started_at=NOW)
        await journal.heartbeat(worker, NOW, NOW + LEASE)
    assert (await journal.stats(NOW)).workers == 2
    await journal.sign_off("h:1:x")
    assert (await journal.stats(NOW + LEASE)).workers == 1
    assert (await journal.stats(NOW + LEASE + 1)).workers == 0  # no beat since: gone


@pytest.mark.needs_activity
async def test_the_rates_of_destinations_are_kept_for_stats(journal: Journal) -> None:
    await journal.insert_many([job("crm"), job("mail"), job("free")], NOW)
    await journal.save_rates({"crm": 2.0, "free": None, "idle": 3.0})
    await journal.take_tokens({"mail": 1}, {"mail": Rate(50, per=10)}, lambda: NOW, 0.2)
    stats = await journal.stats(NOW)
    limits = {name: d.limit for name, d in stats.destinations.items()}
    assert limits == {"crm": 2.0, "mail": 5.0, "free": None}
    assert stats.destinations["crm"].limit_used == 0.0
    assert "idle" not in stats.destinations  # a rate alone does not list a destination
    await journal.save_rates({"crm": None})  # a redeploy without a rate
    assert (await journal.stats(NOW)).destinations["crm"].limit is None


@pytest.mark.needs_activity
async def test_a_journal_counts_across_its_slots(journal: Journal) -> None:
    # Arrivals every second for two minutes: the rate is the last minute's.
    for second in range(120):
        await journal.insert_many([job() for _ in range(3)], NOW + second)
    crm = (await journal.stats(NOW + 119.5)).destinations["crm"]
    assert crm.arrival_rate == pytest.approx(3.0, rel=0.02)
    assert crm.ready == 360


@pytest.mark.needs_activity
async def test_a_burst_over_many_destinations_is_counted_in_full(journal: Journal) -> None:
    # 1,000 destinations busy at once: several turns write them, the last ones at
    # close (see MAX_ROWS_PER_TURN).
    await journal.insert_many([job(f"endpoint:{n}") for n in range(1000)], NOW)
    await journal.insert_many([job("endpoint:0")], NOW + 0.5)
    mine = await journal.stats(NOW + 1)
    await journal.close()
    other = type(journal)(journal.description)  # type: ignore[call-arg]
    await other.open()
    try:
        theirs = await other.stats(NOW + 1)
    finally:
        await other.close()
        await journal.open()
    for stats in (mine, theirs):
        rates = {name: d.arrival_rate for name, d in stats.destinations.items()}
        assert len(rates) == 1000
        assert rates["endpoint:0"] == 2 * rates["endpoint:999"] > 0


@pytest.mark.needs_activity
async def test_counts_of_one_slot_written_in_several_turns_add_up(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    # The second submit's count waits (written at most once a second); the third's
    # is written with it, in the same slot, in one write that must not fail.
    for at in (NOW, NOW + 0.4, NOW + 1.2):
        await journal.insert_many([job()], at)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    await journal.close()
    other = type(journal)(journal.description)  # type: ignore[call-arg]
    await other.open()
    try:
        crm = (await other.stats(NOW + 2)).destinations["crm"]
    finally:
        await other.close()
        await journal.open()
    per_second_over_a_minute(crm.arrival_rate, 3, age=2)
