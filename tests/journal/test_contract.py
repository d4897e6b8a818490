"""The contract every journal backend keeps, with time passed in."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from asyncq import JobNotFound, JobState, PayloadError, Rate
from asyncq._journal import (
    Cancellation,
    Cancelled,
    Claim,
    ClaimedJob,
    ClaimLimits,
    DestinationRecord,
    Failed,
    Journal,
    NewBatch,
    NewJob,
    Released,
    SqliteJournal,
    Started,
    Succeeded,
    micros,
)

NOW = 1_800_000_000.0
LEASE = 30.0


def new(i: int = 0, *, priority: int = 0, run_at: float = NOW, key: str | None = None) -> NewJob:
    return NewJob("t", f'{{"i":{i}}}', "default", priority, run_at, key)


def batch(payloads: list[object], *, limit: int = 1024, run_at: float = NOW) -> NewBatch:
    return NewBatch("t", json.dumps(payloads), len(payloads), "default", 0, run_at, limit)


async def claim(
    journal: Journal, owner: str = "a", limit: int = 100, now: float = NOW
) -> list[ClaimedJob]:
    return (await journal.claim(owner, limit, now + LEASE, now)).jobs


def ok(job: ClaimedJob, result: str = "null", started: float = NOW) -> Succeeded:
    """The outcome of a claimed job whose handler returned `result` (JSON)."""
    return Succeeded(job.id, job.token, result, micros(started), job.destination)


def fail(job: ClaimedJob, error: str, retry_at: float | None, started: float = NOW) -> Failed:
    return Failed(job.id, job.token, error, retry_at, 0, micros(started))


async def test_ids_increase_in_submission_order(journal: Journal) -> None:
    first = await journal.insert_many([new(i) for i in range(3)], NOW)
    second = await journal.insert_many([new(i) for i in range(3)], NOW)
    ids = [r.id for r in first + second]
    assert ids == sorted(ids)
    assert len(set(ids)) == 6
    assert all(r.created for r in first + second)


async def test_claim_takes_higher_priority_first_then_fifo(journal: Journal) -> None:
    await journal.insert_many([new(0), new(1, priority=5), new(2), new(3, priority=5)], NOW)
    claimed = await claim(journal)
    assert [job.payload["i"] for job in claimed] == [1, 3, 0, 2]
    assert all(job.attempts == 1 for job in claimed)


async def test_claim_leaves_jobs_whose_time_has_not_come(journal: Journal) -> None:
    await journal.insert_many([new(0, run_at=NOW + 60), new(1)], NOW)
    assert [j.payload["i"] for j in await claim(journal)] == [1]
    assert await journal.next_run_at() == NOW + 60
    assert await claim(journal, now=NOW + 59) == []
    assert [j.payload["i"] for j in await claim(journal, now=NOW + 60)] == [0]


async def test_claim_respects_limit_and_never_hands_a_job_to_two_owners(journal: Journal) -> None:
    await journal.insert_many([new(i) for i in range(10)], NOW)
    first = await claim(journal, "a", limit=4)
    second = await claim(journal, "b", limit=100)
    assert len(first) == 4
    assert len(second) == 6
    assert not {j.id for j in first} & {j.id for j in second}


async def test_concurrent_claims_split_the_work(journal: Journal) -> None:
    await journal.insert_many([new(i) for i in range(100)], NOW)
    batches = await asyncio.gather(*(claim(journal, f"o{n}", limit=30) for n in range(5)))
    ids = [j.id for batch in batches for j in batch]
    assert len(ids) == len(set(ids)) == 100


async def test_complete_stores_the_result(journal: Journal) -> None:
    (inserted,) = await journal.insert_many([new()], NOW)
    (job,) = await claim(journal)
    await journal.record_outcomes("a", NOW + 1, succeeded=[ok(job, '{"ok":true}')])
    info = await journal.get(inserted.id)
    assert info is not None
    assert info.state is JobState.SUCCEEDED
    assert info.result == {"ok": True}
    assert info.finished_at == NOW + 1


async def test_one_batch_of_many_claims_and_results_stores_each_as_it_came(
    journal: Journal,
) -> None:
    inserted = await journal.insert_many([new(i) for i in range(6)], NOW)
    a1, a2, a3 = await claim(journal, limit=3)
    b1, b2, b3 = await claim(journal, limit=3)
    await journal.record_outcomes(
        "a", NOW + 1, started=[Started(b1.id, b1.token, micros(NOW + 0.25))]
    )
    # Claims interleaved, results null and not, one start written before.
    outcomes = [
        ok(a1, started=NOW + 0.5),
        ok(b2, '{"b":2}', started=NOW + 0.75),
        ok(a2, '"two"', started=NOW + 0.125),
        ok(b1, started=NOW + 0.9),
        ok(a3, started=NOW + 0.375),
        ok(b3, "null", started=NOW + 0.625),
    ]
    await journal.record_outcomes("a", NOW + 2, succeeded=outcomes)
    infos = [await journal.get(r.id) for r in inserted]
    assert [(i.state, i.attempts) for i in infos if i] == [(JobState.SUCCEEDED, 1)] * 6
    by_id = {i.id: i for i in infos if i}
    assert [(by_id[o.id].result, by_id[o.id].started_at) for o in outcomes] == [
        (None, NOW + 0.5),
        ({"b": 2}, NOW + 0.75),
        ("two", NOW + 0.125),
        (None, NOW + 0.25),  # its start was written first
        (None, NOW + 0.375),
        (None, NOW + 0.625),
    ]


async def test_a_stale_ack_does_not_overwrite_a_newer_attempt(journal: Journal) -> None:
    await journal.insert_many([new()], NOW)
    (first,) = await claim(journal, "a")
    await journal.record_outcomes("a", NOW, started=[Started(first.id, first.token, micros(NOW))])
    assert len(await journal.reclaim_expired(NOW + LEASE + 1)) == 1
    (second,) = await claim(journal, "b", now=NOW + LEASE + 1)
    assert second.attempts == 2
    await journal.record_outcomes("a", NOW, succeeded=[ok(first, "1")])
    info = await journal.get(first.id)
    assert info is not None
    assert info.state is JobState.RUNNING


async def test_renewed_leases_are_not_reclaimed(journal: Journal) -> None:
    await journal.insert_many([new(0), new(1)], NOW)
    (mine,) = await claim(journal, "a", limit=1)
    await journal.record_outcomes("a", NOW, started=[Started(mine.id, mine.token, micros(NOW))])
    await claim(journal, "b", limit=1)
    assert await journal.renew("a", NOW + 2 * LEASE) == 1
    assert len(await journal.reclaim_expired(NOW + LEASE + 1)) == 1  # only b's
    stats = await journal.stats(NOW + LEASE + 1)
    assert stats.destinations["default"].running == 1
    assert stats.destinations["default"].claimed == 0
    assert stats.destinations["default"].ready == 1


async def test_a_crashed_attempt_that_had_started_counts_and_says_why(journal: Journal) -> None:
    (inserted,) = await journal.insert_many([new()], NOW)
    (job,) = await claim(journal)
    assert job.attempts == 1  # the number this attempt gets if its handler starts
    await journal.record_outcomes(
        "a", NOW + 2, started=[Started(job.id, job.token, micros(NOW + 1))]
    )
    ((expired, retry_at),) = await journal.reclaim_expired(NOW + LEASE + 1)
    assert (expired.id, expired.attempts, expired.started) == (job.id, 1, True)
    assert retry_at == NOW + LEASE + 1
    info = await journal.get(inserted.id)
    assert info is not None
    assert info.state is JobState.PENDING
    assert info.attempts == 1
    assert info.last_error is not None
    assert info.last_error.startswith("LeaseExpired")
    # The attempt ran from its handler's start, not from the claim.
    assert [h[:2] for h in info.history] == [(NOW + 1, NOW + LEASE + 1)]


async def test_a_claim_lost_before_its_start_is_not_charged_until_its_third_loss(
    journal: Journal,
) -> None:
    (inserted,) = await journal.insert_many([new()], NOW)
    now = NOW
    for loss in range(2):
        assert len(await claim(journal, f"crashed-{loss}", now=now)) == 1
        now += LEASE + 1
        ((expired, retry_at),) = await journal.reclaim_expired(now)
        assert (expired.started, retry_at) == (False, now)
        info = await journal.get(inserted.id)
        assert info is not None
        assert (info.state, info.attempts, info.last_error) == (JobState.PENDING, 0, None)
    # A job that kills its process before its start is written still ends somewhere.
    await claim(journal, "crashed-2", now=now)
    now += LEASE + 1
    ((expired, _),) = await journal.reclaim_expired(now, decide=lambda job: None)
    assert expired.attempts == 1
    info = await journal.get(inserted.id)
    assert info is not None
    assert (info.state, info.attempts) == (JobState.DEAD, 1)


async def test_an_attempt_counts_once_from_its_handlers_start(journal: Journal) -> None:
    first, second = await journal.insert_many([new(0), new(1)], NOW)
    done, failed = await claim(journal)
    await journal.record_outcomes(
        "a", NOW + 6, started=[Started(done.id, done.token, micros(NOW + 5))]
    )
    await journal.record_outcomes(
        "a",
        NOW + 7,
        succeeded=[ok(done, started=NOW + 5)],
        failed=[fail(failed, "E", None, NOW + 3)],
    )
    ran, dead = await journal.get(first.id), await journal.get(second.id)
    assert ran is not None
    assert dead is not None
    assert (ran.attempts, ran.started_at) == (1, NOW + 5)
    assert (dead.attempts, dead.history) == (1, [(NOW + 3, NOW + 7, "E")])


async def test_release_does_not_count_the_attempt(journal: Journal) -> None:
    (inserted,) = await journal.insert_many([new()], NOW)
    (job,) = await claim(journal)
    await journal.record_outcomes("a", NOW, released=[Released(job.id, job.token)])
    info = await journal.get(inserted.id)
    assert info is not None
    assert (info.state, info.attempts) == (JobState.PENDING, 0)


async def test_failure_is_dead_or_rescheduled(journal: Journal) -> None:
    inserted = await journal.insert_many([new(0), new(1)], NOW)
    jobs = await claim(journal)
    await journal.record_outcomes(
        "a",
        NOW,
        failed=[
            fail(jobs[0], "ValueError: no", None),
            fail(jobs[1], "E", NOW + 60),
        ],
    )
    dead, retrying = [await journal.get(r.id) for r in inserted]
    assert dead is not None
    assert retrying is not None
    assert (dead.state, dead.last_error) == (JobState.DEAD, "ValueError: no")
    assert (retrying.state, retrying.run_at) == (JobState.PENDING, NOW + 60)
    assert await claim(journal, now=NOW + 59) == []
    assert len(await claim(journal, now=NOW + 60)) == 1


async def test_a_live_key_returns_the_existing_job(journal: Journal) -> None:
    (first,) = await journal.insert_many([new(0, key="deal-1")], NOW)
    again, other = await journal.insert_many([new(1, key="deal-1"), new(2, key="deal-2")], NOW)
    assert again == (first.id, False)
    assert other.created
    (job, _) = await claim(journal)
    await journal.record_outcomes("a", NOW, succeeded=[ok(job, "null")])
    (after,) = await journal.insert_many([new(3, key="deal-1")], NOW)
    assert after.created
    assert after.id != first.id


async def test_a_key_repeated_within_one_batch_makes_one_job(journal: Journal) -> None:
    first, second = await journal.insert_many([new(0, key="k"), new(1, key="k")], NOW)
    assert first.created
    assert second == (first.id, False)


async def test_cancel_ends_a_waiting_job_and_asks_a_running_one_to_stop(journal: Journal) -> None:
    waiting, started = await journal.insert_many([new(0, run_at=NOW + 5), new(1)], NOW)
    await claim(journal)
    assert await journal.cancel(waiting.id, NOW) == Cancellation(
        [waiting.id], [], [], JobState.CANCELLED
    )
    assert await journal.cancel(started.id, NOW) == Cancellation(
        [], [(started.id, "a")], [], JobState.RUNNING
    )
    assert (await journal.get(started.id)).state is JobState.RUNNING  # type: ignore[union-attr]
    assert await journal.cancel(10_000, NOW) is None


async def test_stats_count_per_destination_and_state(journal: Journal) -> None:
    await journal.insert_many(
        [new(0), new(1, run_at=NOW + 5), NewJob("t", "{}", "crm", 0, NOW)], NOW
    )
    stats = await journal.stats(NOW)
    assert stats.destinations["default"].pending == 2
    assert stats.destinations["default"].ready == 1
    assert stats.destinations["crm"].ready == 1
    assert stats.destinations["default"].oldest_ready_at == NOW


async def test_concurrent_writes_share_transactions(journal: Journal) -> None:
    commits_before = getattr(journal, "commits", None)
    if commits_before is None:
        pytest.skip("this backend does not count its commits")
    results = await asyncio.gather(*(journal.insert_many([new(i)], NOW) for i in range(200)))
    assert len({r[0].id for r in results}) == 200
    # 200 writers, and far fewer transactions: group commit.
    assert journal.commits - commits_before <= 10  # type: ignore[attr-defined]


async def test_a_claim_books_calls_for_the_paced_jobs_it_takes(journal: Journal) -> None:
    await journal.insert_many(
        [NewJob("t", "{}", "paced", 0, NOW)] * 3 + [NewJob("t", "{}", "free", 0, NOW)] * 2, NOW
    )
    rate = Rate(10, per=1, burst=3)
    limits = ClaimLimits(
        room=lambda name: 100,
        rate=lambda name: rate if name == "paced" else None,
        clock=lambda: NOW,
    )
    claimed = await journal.claim("a", 10, NOW + LEASE, NOW, limits)
    assert len(claimed.jobs) == 5
    # Only the paced destination, for what was taken: a burst of 3 fits at once.
    assert claimed.booked == {"paced": ([NOW, NOW, NOW], NOW)}
    # The bucket's new state was written: the next booking starts from it (full at
    # NOW, draining 10 a second, so the next call fits a tenth of a second later).
    booked = await journal.take_tokens({"paced": 1}, {"paced": rate}, lambda: NOW, 0.2)
    assert booked == {"paced": ([NOW + 0.1], NOW + 0.1)}


def capped(cap: int) -> ClaimLimits:
    """Limits for a claim where "capped" has a concurrency cap of `cap`."""
    return ClaimLimits(
        room=lambda name: 100,
        rate=lambda name: None,
        clock=lambda: NOW,
        cap=lambda name: cap if name == "capped" else None,
    )


async def claim_capped(journal: Journal, owner: str, now: float = NOW, cap: int = 2) -> Claim:
    return await journal.claim(owner, 100, now + LEASE, now, capped(cap))


async def test_a_cap_is_shared_by_every_claimer_and_counts_unstarted_claims(
    journal: Journal,
) -> None:
    await journal.insert_many(
        [NewJob("t", "{}", "capped", 0, NOW)] * 5 + [NewJob("t", "{}", "free", 0, NOW)] * 2, NOW
    )
    first = await claim_capped(journal, "a")
    # Two of "capped" (its cap), and every "free" one.
    assert first.taken == {"capped": 2, "free": 2}
    # Claimed but not started, a's two jobs hold both slots: b gets none.
    second = await claim_capped(journal, "b")
    assert second.jobs == []
    assert second.at_cap == {"capped"}
    # A slot frees when its job's outcome is written, not before.
    done = next(job for job in first.jobs if job.destination == "capped")
    await journal.record_outcomes("a", NOW, succeeded=[ok(done)])
    third = await claim_capped(journal, "b", now=NOW + 10)
    assert third.taken == {"capped": 1}


async def test_an_expired_lease_holds_no_slot_of_a_cap(journal: Journal) -> None:
    await journal.insert_many([NewJob("t", "{}", "capped", 0, NOW)] * 5, NOW)
    assert (await claim_capped(journal, "a")).taken == {"capped": 2}  # lease to NOW + 30
    assert (await claim_capped(journal, "b", now=NOW + 29)).taken == {}
    # a's process is gone (its leases ran out): its jobs hold nothing, even before
    # they are reclaimed.
    assert (await claim_capped(journal, "b", now=NOW + 31)).taken == {"capped": 2}
    # A cap declared higher by another process is its own: it takes up to its cap.
    assert (await claim_capped(journal, "c", now=NOW + 31, cap=3)).taken == {"capped": 1}


async def test_prune_deletes_only_jobs_finished_before_the_cutoff(journal: Journal) -> None:
    old, recent, dead, pending = await journal.insert_many([new(i) for i in range(4)], NOW)
    jobs = await claim(journal, limit=3)
    await journal.record_outcomes("a", NOW, succeeded=[ok(jobs[0], "null")])
    await journal.record_outcomes("a", NOW + 100, succeeded=[ok(jobs[1], "null")])
    await journal.record_outcomes("a", NOW, failed=[fail(jobs[2], "E", None)])
    assert (await journal.prune_finished(NOW + 50)).deleted == 1
    assert await journal.get(old.id) is None
    assert [await journal.get(r.id) is not None for r in (recent, dead, pending)] == [True] * 3


async def test_ids_are_never_reused_even_after_the_newest_job_is_deleted(
    journal: Journal,
) -> None:
    (first,) = await journal.insert_many([new(0)], NOW)
    (job,) = await claim(journal)
    await journal.record_outcomes("a", NOW, failed=[fail(job, "E", None)])
    assert await journal.purge(ids=[first.id], destination=None, before=None) == 1
    (second,) = await journal.insert_many([new(1)], NOW)
    assert second.id > first.id


async def test_a_batch_gets_consecutive_ids_in_payload_order(journal: Journal) -> None:
    (single,) = await journal.insert_many([new(0)], NOW)
    ids = await journal.insert_batch(batch([{"i": i} for i in range(1, 6)]), NOW)
    assert list(ids) == list(range(single.id + 1, single.id + 6))
    claimed = await claim(journal)
    assert [job.payload for job in claimed] == [{"i": i} for i in range(6)]


async def test_a_batch_keeps_every_payload_as_it_was(journal: Journal) -> None:
    tricky = {
        "text": 'é "quoted" \\ back\nslash \u2028 \U0001f600',
        "big": 123456789012345678901234567890,
        "floats": [1.5, -0.0, 1e100, 2.5e-300],
        "nested": {"a": [None, True, False, {"b": []}]},
    }
    (job_id,) = await journal.insert_batch(batch([tricky], limit=10_000), NOW)
    info = await journal.get(job_id)
    assert info is not None
    assert info.payload == tricky


async def test_a_batch_with_one_payload_over_the_limit_writes_nothing(journal: Journal) -> None:
    payloads: list[object] = [{"i": 0}, {"body": "x" * 2000}, {"i": 2}]
    with pytest.raises(PayloadError, match=r"'t'.*payload 1 is 2011 bytes, over the 1024-byte"):
        await journal.insert_batch(batch(payloads), NOW)
    with pytest.raises(PayloadError, match=r"payload 1 is a JSON array, not an object"):
        await journal.insert_batch(batch([{"i": 0}, [1, 2]]), NOW)
    assert await claim(journal) == []


async def test_a_refused_batch_fails_only_its_own_caller(journal: Journal) -> None:
    results = await asyncio.gather(
        journal.insert_many([new(0)], NOW),
        journal.insert_batch(batch([{"body": "x" * 2000}]), NOW),
        journal.insert_batch(batch([{"i": 1}, {"i": 2}]), NOW),
        journal.insert_many([new(3)], NOW),
        return_exceptions=True,
    )
    assert isinstance(results[1], PayloadError)
    assert not any(isinstance(r, BaseException) for i, r in enumerate(results) if i != 1)
    assert sorted(job.payload["i"] for job in await claim(journal)) == [0, 1, 2, 3]


async def test_concurrent_single_inserts_share_one_statement_and_keep_their_ids(
    journal: Journal,
) -> None:
    results = await asyncio.gather(
        *(journal.insert_many([new(i), new(i + 1000)], NOW) for i in range(50)),
        journal.insert_many([new(5000, key="k")], NOW),
    )
    ids = [r.id for result in results for r in result]
    assert len(set(ids)) == 101
    claimed = {job.id: job.payload["i"] for job in await claim(journal, limit=200)}
    for i, (first, second) in enumerate(results[:50]):
        assert claimed[first.id] == i
        assert claimed[second.id] == i + 1000


async def test_a_turn_of_few_jobs_stores_what_a_turn_of_many_stores(journal: Journal) -> None:
    # The SQLite journal writes up to 4 jobs of a turn one statement each, more as
    # one JSON array: the rows, and the counts, must not tell which.
    at = NOW + 0.1234567  # not a whole microsecond
    jobs = [new(0, run_at=at), new(1, priority=3, run_at=at + 5.5), new(2, run_at=at - 1)]
    few = await journal.insert_many(jobs, at)
    many = await journal.insert_many(jobs + jobs, at)
    assert len({r.id for r in few + many}) == 9
    for inserted, again in zip(few, many[:3], strict=True):
        stored, stored_again = await journal.get(inserted.id), await journal.get(again.id)
        assert stored is not None
        assert stored_again is not None
        fields = ("state", "priority", "run_at", "created_at", "payload", "destination")
        assert [getattr(stored, f) for f in fields] == [getattr(stored_again, f) for f in fields]
    # A job due at once is due at its submit time in whole microseconds (here a
    # fraction of one after `at`): look a millisecond later.
    await assert_stats_agree_with_the_jobs(journal, [r.id for r in few + many], at + 0.001)


async def assert_stats_agree_with_the_jobs(journal: Journal, ids: list[int], now: float) -> None:
    """What stats() says per destination is what the jobs themselves say."""
    expected: dict[str, dict[str, int]] = {}
    for job_id in ids:
        info = await journal.get(job_id)
        if info is None:
            continue
        state = info.state.value
        if info.state is JobState.PENDING:
            state = "ready" if info.run_at <= now else "scheduled"
        elif info.state is JobState.RUNNING:
            state = "in_flight"
        counts = expected.setdefault(info.destination, {})
        counts[state] = counts.get(state, 0) + 1
    stats = await journal.stats(now)
    seen = {
        name: {
            state: n
            for state, n in (
                ("ready", c.ready),
                ("scheduled", c.scheduled),
                ("blocked", c.blocked),
                ("in_flight", c.claimed + c.running),
                ("succeeded", c.succeeded),
                ("dead", c.dead),
                ("cancelled", c.cancelled),
                ("blocked", c.blocked),
            )
            if n
        }
        for name, c in stats.destinations.items()
    }
    assert {k: v for k, v in seen.items() if v} == expected


async def test_an_ack_batch_with_a_stale_outcome_counts_only_what_moved(
    journal: Journal,
) -> None:
    inserted = await journal.insert_many(
        [new(0), NewJob("t", "{}", "crm", 0, NOW), NewJob("t", "{}", "crm", 0, NOW)], NOW
    )
    ids = [r.id for r in inserted]
    first, crm_lost, crm_kept = await claim(journal, "a")
    await journal.record_outcomes("a", NOW, started=[Started(crm_lost.id, crm_lost.token, 0)])
    assert await journal.renew("a", NOW) == 3  # a's lease runs out ...
    assert len(await journal.reclaim_expired(NOW + 1)) == 3
    retaken = {job.id: job for job in await claim(journal, "b", now=NOW + 1)}  # ... b claims
    assert set(retaken) == set(ids)
    # One outcome of b's batch names a's old claim of its job (a's token): stale. It
    # must neither move the job nor count; the other two must both count.
    stale = ok(crm_lost, "2")
    await journal.record_outcomes(
        "b", NOW + 2, succeeded=[ok(retaken[first.id], "1"), stale, ok(retaken[crm_kept.id], "3")]
    )
    info = await journal.get(crm_lost.id)
    assert info is not None
    assert info.state is JobState.RUNNING
    await assert_stats_agree_with_the_jobs(journal, ids, NOW + 2)
    stats = await journal.stats(NOW + 2)
    assert stats.destinations["crm"].succeeded == 1
    assert stats.destinations["default"].succeeded == 1


async def test_stats_follow_every_move_a_job_can_make(journal: Journal) -> None:
    ids: list[int] = []
    inserted = await journal.insert_many(
        [new(i) for i in range(6)]
        + [NewJob("t", "{}", "crm", 0, NOW), NewJob("t", "{}", "crm", 0, NOW + 50)],
        NOW,
    )
    ids += [r.id for r in inserted]
    ids += list(await journal.insert_batch(batch([{"b": i} for i in range(3)]), NOW))
    ids += [r.id for r in await journal.insert_many([new(9, key="k")], NOW)]
    await assert_stats_agree_with_the_jobs(journal, ids, NOW)

    done, retried, dead, released = await claim(journal, limit=4)
    await journal.record_outcomes(
        "a",
        NOW,
        succeeded=[ok(done, "1")],
        failed=[
            fail(retried, "E", NOW + 10),
            fail(dead, "E", None),
        ],
        released=[Released(released.id, released.token)],
    )
    await assert_stats_agree_with_the_jobs(journal, ids, NOW)

    cancelled = next(i for i in ids if i not in {done.id, retried.id, dead.id, released.id})
    assert (await journal.cancel(cancelled, NOW)).state is JobState.CANCELLED  # type: ignore[union-attr]
    crashed = await claim(journal, "b", limit=2)
    assert len(crashed) == 2
    await assert_stats_agree_with_the_jobs(journal, ids, NOW + 1)
    assert len(await journal.reclaim_expired(NOW + LEASE + 1)) == 2
    await assert_stats_agree_with_the_jobs(journal, ids, NOW + LEASE + 1)

    assert await journal.redrive(ids=[dead.id], destination=None, now=NOW + 40) == 1
    (again,) = [j for j in await claim(journal, "c", now=NOW + 41) if j.id == dead.id]
    await journal.record_outcomes("c", NOW + 41, failed=[fail(again, "E", None)])
    await assert_stats_agree_with_the_jobs(journal, ids, NOW + 60)
    assert await journal.purge(ids=[dead.id], destination=None, before=None) == 1
    assert (await journal.prune_finished(NOW + 100)).deleted >= 2  # the succeeded and cancelled
    await assert_stats_agree_with_the_jobs(journal, ids, NOW + 100)


async def test_a_scheduled_job_holds_its_key(journal: Journal) -> None:
    (first,) = await journal.insert_many([new(0, run_at=NOW + 60, key="k")], NOW)
    (again,) = await journal.insert_many([new(1, key="k")], NOW)
    assert again == (first.id, False)


async def test_redrive_leaves_dead_a_job_whose_key_a_live_job_holds(journal: Journal) -> None:
    (old,) = await journal.insert_many([new(0, key="k")], NOW)
    (job,) = await claim(journal)
    await journal.record_outcomes("a", NOW, failed=[fail(job, "E", None)])
    (live,) = await journal.insert_many([new(1, key="k")], NOW)
    assert live.created
    assert await journal.redrive(ids=[old.id], destination=None, now=NOW) == 0
    info = await journal.get(old.id)
    assert info is not None
    assert info.state is JobState.DEAD
    # Every claim still works (a collision used to fail them all).
    (running,) = await claim(journal)
    assert running.id == live.id
    await journal.record_outcomes("a", NOW, succeeded=[ok(running, "1")])
    # Once the key is free again, the dead job can go.
    assert await journal.redrive(ids=None, destination="default", now=NOW) == 1


async def test_pruning_reaches_finished_jobs_behind_many_dead_ones(journal: Journal) -> None:
    dead = await journal.insert_batch(batch([{"d": i} for i in range(25_000)]), NOW)
    for start in range(0, 25_000, 5_000):
        jobs = await claim(journal, limit=5_000)
        assert len(jobs) == 5_000, start
        await journal.record_outcomes("a", NOW, failed=[fail(j, "E", None) for j in jobs])
    done = await journal.insert_batch(batch([{"s": i} for i in range(1_000)]), NOW)
    jobs = await claim(journal, limit=1_000)
    await journal.record_outcomes("a", NOW, succeeded=[ok(j, "null") for j in jobs])
    pruned = 0
    for _ in range(20):  # each call walks a bounded part of the table
        pruned += (await journal.prune_finished(NOW + 1)).deleted
    assert pruned == 1_000
    assert await journal.get(done[0]) is None
    assert await journal.get(dead[0]) is not None


async def test_destinations_are_saved_and_loaded(journal: Journal) -> None:
    record = DestinationRecord("crm", paused=True, hold_until=NOW + 5, circuit="open")
    await journal.save_destinations([record])
    (loaded,) = await journal.load_destinations()
    assert (loaded.name, loaded.paused, loaded.hold_until, loaded.circuit) == (
        "crm",
        True,
        NOW + 5,
        "open",
    )
    # A hold never moves back: the later of the two is kept.
    await journal.save_destinations([DestinationRecord("crm", hold_until=NOW + 1)])
    (loaded,) = await journal.load_destinations()
    assert (loaded.paused, loaded.hold_until) == (False, NOW + 5)
    stats = await journal.stats(NOW)
    assert stats.destinations["crm"].held_until == NOW + 5


async def test_dead_letters_come_newest_first_and_filter(journal: Journal) -> None:
    inserted = await journal.insert_many([new(0), new(1), NewJob("t", "{}", "crm", 0, NOW)], NOW)
    jobs = await claim(journal)
    for offset, job in enumerate(jobs):
        await journal.record_outcomes("a", NOW + offset, failed=[fail(job, f"E{offset}", None)])
    everything = await journal.dead_letters(destination=None, since=None, limit=10)
    assert [d.id for d in everything] == [r.id for r in reversed(inserted)]
    only_default = await journal.dead_letters(destination="default", since=None, limit=10)
    assert {d.destination for d in only_default} == {"default"}
    assert len(await journal.dead_letters(destination=None, since=NOW + 1, limit=10)) == 2
    assert len(await journal.dead_letters(destination=None, since=None, limit=1)) == 1


async def test_changed_elsewhere_tells_of_another_writer(journal: Journal) -> None:
    seen: list[bool] = []
    journal.on_change_elsewhere(lambda: seen.append(True))  # may never be called (SQLite)
    await journal.changed_elsewhere()  # the baseline
    await journal.insert_many([new()], NOW)
    assert not await journal.changed_elsewhere()  # its own write is not news
    other = type(journal)(journal.description)  # type: ignore[call-arg]
    await other.open()
    try:
        await other.insert_many([new()], NOW)
    finally:
        await other.close()
    assert await journal.changed_elsewhere()
    assert seen in ([], [True])
    journal.on_change_elsewhere(None)


def test_the_contract_suite_calls_every_method_of_the_interface() -> None:
    here = Path(__file__).parent
    files = [*sorted(here.glob("test_contract*.py")), here / "conftest.py"]
    source = "".join(path.read_text() for path in files)
    methods = [name for name, value in vars(Journal).items() if callable(value)]
    missing = [name for name in methods if not name.startswith("_") and f".{name}(" not in source]
    assert missing == []


async def test_a_failure_hook_is_not_called_while_the_journal_works(journal: Journal) -> None:
    failures: list[BaseException] = []
    journal.on_failure(failures.append)
    await journal.insert_many([new()], NOW)
    await claim(journal)
    assert failures == []
    journal.on_failure(None)


def tick_job(tick: float, destination: str = "default") -> NewJob:
    return NewJob("t", '{"tick":1}', destination, 0, tick)


async def test_a_tick_is_made_once_even_after_its_job_finished_and_was_pruned(
    journal: Journal,
) -> None:
    assert await journal.last_ticks() == {}
    made = await journal.make_tick("digest", NOW, tick_job(NOW, "crm"), NOW)
    assert made is not None
    assert await journal.make_tick("digest", NOW, tick_job(NOW, "crm"), NOW + 1) is None
    assert await journal.make_tick("digest", NOW - 60, tick_job(NOW - 60), NOW + 1) is None
    assert await journal.last_ticks() == {"digest": NOW}
    await assert_stats_agree_with_the_jobs(journal, [made], NOW)
    info = await journal.get(made)
    assert info is not None
    assert (info.task, info.destination, info.run_at, info.payload) == (
        "t",
        "crm",
        NOW,
        {"tick": 1},
    )

    (job,) = await claim(journal)
    await journal.record_outcomes("a", NOW, succeeded=[ok(job)])
    assert (await journal.prune_finished(NOW + 1)).deleted == 1
    assert await journal.get(made) is None
    assert await journal.make_tick("digest", NOW, tick_job(NOW, "crm"), NOW + 2) is None
    later = await journal.make_tick("digest", NOW + 300, tick_job(NOW + 300), NOW + 300)
    assert later is not None
    assert later != made
    # Schedules are independent of each other.
    other = await journal.make_tick("refresh", NOW, tick_job(NOW), NOW + 300)
    assert other is not None
    assert await journal.last_ticks() == {"digest": NOW + 300, "refresh": NOW}
    await assert_stats_agree_with_the_jobs(journal, [made, later, other], NOW + 300)


async def test_processes_racing_for_ticks_make_one_job_per_tick(journal: Journal) -> None:
    others = [type(journal)(journal.description) for _ in range(2)]  # type: ignore[call-arg]
    for other in others:
        await other.open()
    try:
        journals = [journal, *others, journal]  # twice the same one: one turn, two calls
        made: list[int] = []
        for n in range(20):
            tick = NOW + 60 * n
            results = await asyncio.gather(
                *(j.make_tick("every-minute", tick, tick_job(tick), tick) for j in journals)
            )
            ids = [r for r in results if r is not None]
            assert len(ids) == 1, (n, results)
            made += ids
    finally:
        for other in others:
            await other.close()
    assert await journal.last_ticks() == {"every-minute": NOW + 60 * 19}
    runs = sorted([info.run_at for i in made if (info := await journal.get(i)) is not None])
    assert runs == [NOW + 60 * n for n in range(20)]
    await assert_stats_agree_with_the_jobs(journal, made, NOW + 60 * 19)


# -- dependencies (after=) -------------------------------------------------------


def child(i: int, *after: int, mode: str = "cancel", run_at: float = NOW) -> NewJob:
    return NewJob("t", f'{{"i":{i}}}', "default", 0, run_at, None, after, mode)


async def state_of(journal: Journal, job_id: int) -> JobState:
    info = await journal.get(job_id)
    assert info is not None
    return info.state


async def test_a_child_is_blocked_until_its_last_parent_succeeds(journal: Journal) -> None:
    settled: list[list[int]] = []
    journal.on_children_settled(settled.append)
    a, b = await journal.insert_many([new(0), new(1)], NOW)
    (c,) = await journal.insert_many([child(2, a.id, b.id)], NOW)
    assert await state_of(journal, c.id) is JobState.BLOCKED
    assert (await journal.stats(NOW)).blocked == 1
    first, second = await claim(journal)  # the blocked child is not claimed
    await journal.record_outcomes("a", NOW, succeeded=[ok(first, '"A"')])
    assert await state_of(journal, c.id) is JobState.BLOCKED
    assert settled == []
    await journal.record_outcomes("a", NOW, succeeded=[ok(second, '{"b":2}')])
    assert await state_of(journal, c.id) is JobState.PENDING  # in the same write
    assert settled == [[]]
    (claimed,) = await claim(journal)
    assert claimed.id == c.id
    assert claimed.parents == {a.id: "A", b.id: {"b": 2}}
    assert (await journal.stats(NOW)).blocked == 0
    await assert_stats_agree_with_the_jobs(journal, [a.id, b.id, c.id], NOW)
    journal.on_children_settled(None)


async def test_a_plain_claim_carries_no_parents(journal: Journal) -> None:
    await journal.insert_many([new(0)], NOW)
    (job,) = await claim(journal)
    assert job.parents is None


async def test_a_child_of_succeeded_parents_is_ready_at_once(journal: Journal) -> None:
    (a,) = await journal.insert_many([new(0)], NOW)
    (job,) = await claim(journal)
    await journal.record_outcomes("a", NOW, succeeded=[ok(job, "1")])
    (c,) = await journal.insert_many([child(1, a.id, run_at=NOW + 5)], NOW)
    assert await state_of(journal, c.id) is JobState.PENDING
    assert (await journal.stats(NOW)).scheduled == 1


async def test_a_missing_parent_refuses_the_insert_and_writes_nothing(journal: Journal) -> None:
    (a,) = await journal.insert_many([new(0)], NOW)
    with pytest.raises(JobNotFound) as refused:
        await journal.insert_many([child(1, a.id, 999)], NOW)
    assert refused.value.job_id == 999
    children = batch([{"x": 1}])._replace(after=(998,))
    with pytest.raises(JobNotFound):
        await journal.insert_batch(children, NOW)
    assert (await journal.stats(NOW)).ready == 1
    assert await journal.get(a.id + 1) is None


async def test_a_batch_of_children_shares_its_parents(journal: Journal) -> None:
    (a,) = await journal.insert_many([new(0)], NOW)
    ids = await journal.insert_batch(
        batch([{"c": i} for i in range(50)])._replace(after=(a.id,)), NOW
    )
    assert (await journal.stats(NOW)).blocked == 50
    (parent,) = await claim(journal)
    await journal.record_outcomes("a", NOW, succeeded=[ok(parent, "7")])
    claimed = await claim(journal)
    assert sorted(j.id for j in claimed) == list(ids)
    assert all(j.parents == {a.id: 7} for j in claimed)


async def test_a_parent_result_that_is_not_json_reaches_its_child_as_none(
    journal: Journal,
) -> None:
    """A result edited by hand into something that is not JSON costs its child that
    one value, not the claim."""
    if not isinstance(journal, SqliteJournal):
        pytest.skip("edits the SQLite file")
    a, b = await journal.insert_many([new(0), new(1)], NOW)
    (c,) = await journal.insert_many([child(2, a.id, b.id)], NOW)
    first, second = await claim(journal)
    await journal.record_outcomes("a", NOW, succeeded=[ok(first, "[1]"), ok(second, '"B"')])
    with sqlite3.connect(journal.path) as conn:
        conn.execute("UPDATE jobs SET result = '{broken' WHERE id = ?", (a.id,))
    await journal.insert_many([new(3)], NOW)
    claimed = {j.id: j for j in await claim(journal)}
    assert claimed[c.id].parents == {a.id: None, b.id: "B"}
    assert claimed[c.id + 1].parents is None


async def test_stats_follow_children_made_ready_in_one_or_several_destinations(
    journal: Journal,
) -> None:
    """A parent's end moves its children out of `blocked`, counted per destination
    and state whether they share a destination or not."""

    def to(destination: str, c: NewJob) -> NewJob:
        return c._replace(destination=destination)

    a, b, c, d = await journal.insert_many([new(0), new(1), new(2), new(3)], NOW)
    ids = [a.id, b.id, c.id, d.id]
    # a's children share one destination; one is delayed, one waits for b too.
    ids += [
        r.id
        for r in await journal.insert_many(
            [
                to("x", child(10, a.id)),
                to("x", child(11, a.id, run_at=NOW + 60)),
                to("x", child(12, a.id, b.id)),
            ],
            NOW,
        )
    ]
    # c's children are in two destinations, one delayed; d's ("run") in two as well.
    ids += [
        r.id
        for r in await journal.insert_many(
            [
                to("x", child(20, c.id)),
                to("y", child(21, c.id)),
                to("y", child(22, c.id, run_at=NOW + 60)),
                to("x", child(30, d.id, mode="run")),
                to("y", child(31, d.id, mode="run")),
                to("y", child(32, d.id)),  # cancelled with d
            ],
            NOW,
        )
    ]
    jobs = {j.id: j for j in await claim(journal)}
    await journal.record_outcomes("a", NOW, succeeded=[ok(jobs[a.id])])
    await assert_stats_agree_with_the_jobs(journal, ids, NOW)
    x = (await journal.stats(NOW)).destinations["x"]
    assert (x.ready, x.scheduled, x.blocked) == (1, 1, 3)  # 12 waits for b; 20 and 30 wait
    await journal.record_outcomes("a", NOW, succeeded=[ok(jobs[c.id])])
    await assert_stats_agree_with_the_jobs(journal, ids, NOW)
    await journal.record_outcomes("a", NOW, failed=[fail(jobs[d.id], "E", None)])
    await assert_stats_agree_with_the_jobs(journal, ids, NOW)
    await journal.record_outcomes("a", NOW, succeeded=[ok(jobs[b.id])])
    await assert_stats_agree_with_the_jobs(journal, ids, NOW)
    stats = await journal.stats(NOW)
    assert (stats.blocked, stats.ready, stats.scheduled, stats.cancelled) == (0, 6, 2, 1)


async def test_a_dead_parent_cancels_the_subtree_and_says_which(journal: Journal) -> None:
    settled: list[list[int]] = []
    journal.on_children_settled(settled.append)
    a, other = await journal.insert_many([new(0), new(1)], NOW)
    (b,) = await journal.insert_many([child(2, a.id)], NOW)
    (c,) = await journal.insert_many([child(3, b.id, other.id)], NOW)
    (r,) = await journal.insert_many([child(4, b.id, mode="run")], NOW)
    jobs = {j.id: j for j in await claim(journal)}
    await journal.record_outcomes("a", NOW, failed=[fail(jobs[a.id], "E", None)])
    assert settled == [[b.id, c.id]]
    assert [await state_of(journal, j) for j in (b.id, c.id)] == [JobState.CANCELLED] * 2
    assert await state_of(journal, r.id) is JobState.PENDING  # its mode is "run"
    (ran,) = await claim(journal)
    assert ran.parents == {b.id: None}
    await assert_stats_agree_with_the_jobs(journal, [a.id, other.id, b.id, c.id, r.id], NOW)
    journal.on_children_settled(None)


async def test_a_parent_dead_after_a_crash_or_cancelled_ends_its_children(
    journal: Journal,
) -> None:
    a, b = await journal.insert_many([new(0), new(1, run_at=NOW + 60)], NOW)
    (ca,) = await journal.insert_many([child(2, a.id)], NOW)
    (cb,) = await journal.insert_many([child(3, b.id)], NOW)
    (job,) = await claim(journal)
    await journal.record_outcomes("a", NOW, started=[Started(job.id, job.token, micros(NOW))])
    reclaimed = await journal.reclaim_expired(NOW + LEASE + 1, lambda expired: None)
    assert [at for _, at in reclaimed] == [None]  # dead
    assert await state_of(journal, ca.id) is JobState.CANCELLED
    assert await journal.cancel(b.id, NOW) == Cancellation([b.id], [], [cb.id], JobState.CANCELLED)
    assert await state_of(journal, cb.id) is JobState.CANCELLED


async def test_redrive_brings_back_what_a_death_cancelled(journal: Journal) -> None:
    (a,) = await journal.insert_many([new(0)], NOW)
    (b,) = await journal.insert_many([child(1, a.id)], NOW)
    (c,) = await journal.insert_many([child(2, b.id)], NOW)
    (job,) = await claim(journal)
    await journal.record_outcomes("a", NOW, failed=[fail(job, "E", None)])
    assert await journal.redrive(ids=[a.id], destination=None, now=NOW) == 1
    assert [await state_of(journal, j) for j in (a.id, b.id, c.id)] == [
        JobState.PENDING,
        JobState.BLOCKED,
        JobState.BLOCKED,
    ]
    await assert_stats_agree_with_the_jobs(journal, [a.id, b.id, c.id], NOW)
    (again,) = await claim(journal)
    await journal.record_outcomes("a", NOW, succeeded=[ok(again, "1")])
    assert await state_of(journal, b.id) is JobState.PENDING


async def test_pruning_a_child_forgets_its_dependencies(journal: Journal) -> None:
    (a,) = await journal.insert_many([new(0)], NOW)
    (b,) = await journal.insert_many([child(1, a.id)], NOW)
    for _ in range(2):
        (job,) = await claim(journal)
        await journal.record_outcomes("a", NOW, succeeded=[ok(job, "1")])
    assert (await journal.prune_finished(NOW + 1)).deleted == 2
    assert await journal.get(b.id) is None
    if isinstance(journal, SqliteJournal):
        with sqlite3.connect(journal.path) as conn:
            assert conn.execute("SELECT count(*) FROM deps").fetchone() == (0,)


async def test_a_cancel_of_a_finished_job_changes_nothing(journal: Journal) -> None:
    (job,) = await journal.insert_many([new()], NOW)
    (claimed,) = await claim(journal)
    await journal.record_outcomes("a", NOW, succeeded=[ok(claimed, "7")])
    assert await journal.cancel(job.id, NOW) == Cancellation([], [], [], JobState.SUCCEEDED)
    info = await journal.get(job.id)
    assert info is not None
    assert (info.state, info.result) == (JobState.SUCCEEDED, 7)
    await assert_stats_agree_with_the_jobs(journal, [job.id], NOW)


async def test_an_owner_finds_its_cancel_requests_and_records_them_final(
    journal: Journal,
) -> None:
    ids = [r.id for r in await journal.insert_many([new(i) for i in range(3)], NOW)]
    mine, unstarted = await claim(journal, "a", limit=2)
    (theirs,) = await claim(journal, "b")
    await journal.record_outcomes("a", NOW, started=[Started(mine.id, mine.token, micros(NOW))])
    for job in (mine, unstarted, theirs):
        assert (await journal.cancel(job.id, NOW)).requested == [  # type: ignore[union-attr]
            (job.id, "b" if job is theirs else "a")
        ]
    assert await journal.cancel_requests("a") == [mine.id, unstarted.id]
    assert await journal.cancel_requests("b") == [theirs.id]
    assert await state_of(journal, mine.id) is JobState.RUNNING  # until its owner acts

    stale = Cancelled(theirs.id, theirs.token + 1000, None)  # a claim b no longer holds
    finished = await journal.record_outcomes(
        "a",
        NOW + 1,
        cancelled=[
            Cancelled(mine.id, mine.token, micros(NOW)),
            Cancelled(unstarted.id, unstarted.token),
        ],
    )
    assert sorted(finished) == sorted([mine.id, unstarted.id])
    assert await journal.record_outcomes("b", NOW + 1, cancelled=[stale]) == []
    assert await state_of(journal, theirs.id) is JobState.RUNNING
    assert await journal.cancel_requests("a") == []
    for job_id, attempts in ((mine.id, 1), (unstarted.id, 0)):  # a start is an attempt
        info = await journal.get(job_id)
        assert info is not None
        assert (info.state, info.attempts, info.finished_at) == (
            JobState.CANCELLED,
            attempts,
            NOW + 1,
        )
    await assert_stats_agree_with_the_jobs(journal, ids, NOW + 1)


async def test_a_requested_job_that_fails_or_is_released_is_cancelled_not_retried(
    journal: Journal,
) -> None:
    ids = [r.id for r in await journal.insert_many([new(i) for i in range(4)], NOW)]
    retried, released, died, succeeded = await claim(journal)
    for job_id in ids:
        await journal.cancel(job_id, NOW)
    finished = await journal.record_outcomes(
        "a",
        NOW + 1,
        failed=[fail(retried, "E", NOW + 10), fail(died, "E", None)],
        released=[Released(released.id, released.token)],
        succeeded=[ok(succeeded)],
    )
    assert sorted(finished) == sorted([retried.id, released.id])
    assert [await state_of(journal, i) for i in ids] == [
        JobState.CANCELLED,
        JobState.CANCELLED,
        JobState.DEAD,  # it died before the cancel reached it: first come
        JobState.SUCCEEDED,
    ]
    assert await claim(journal, "b", now=NOW + 20) == []
    assert await journal.cancel_requests("a") == []
    await assert_stats_agree_with_the_jobs(journal, ids, NOW + 20)


async def test_a_requested_job_whose_owner_died_is_cancelled_not_retried(
    journal: Journal,
) -> None:
    ids = [r.id for r in await journal.insert_many([new(0), new(1)], NOW)]
    asked, other = await claim(journal)
    await journal.record_outcomes("a", NOW, started=[Started(asked.id, asked.token, micros(NOW))])
    await journal.cancel(asked.id, NOW)
    reclaimed = await journal.reclaim_expired(NOW + LEASE + 1)
    assert [job.id for job, _ in reclaimed] == [other.id]  # the other runs again
    assert await state_of(journal, asked.id) is JobState.CANCELLED
    await assert_stats_agree_with_the_jobs(journal, ids, NOW + LEASE + 1)


async def test_a_cancel_after_the_owner_lease_expired_is_at_once(journal: Journal) -> None:
    (job,) = await journal.insert_many([new()], NOW)
    await claim(journal)
    outcome = await journal.cancel(job.id, NOW + LEASE + 1)
    assert outcome == Cancellation([job.id], [], [], JobState.CANCELLED)
    await assert_stats_agree_with_the_jobs(journal, [job.id], NOW + LEASE + 1)


async def test_cancel_where_takes_a_selection_in_one_transaction(journal: Journal) -> None:
    (running,) = await journal.insert_many([NewJob("send", "{}", "mail", 0, NOW)], NOW)
    await claim(journal)
    jobs = [
        NewJob("send", "{}", "mail", 0, NOW),
        NewJob("send", "{}", "mail", 0, NOW + 60),  # scheduled: pending too
        NewJob("other", "{}", "mail", 0, NOW),  # another task
        NewJob("send", "{}", "crm", 0, NOW),  # another destination
    ]
    ids = [running.id] + [r.id for r in await journal.insert_many(jobs, NOW)]
    commits = getattr(journal, "commits", None)
    outcome = await journal.cancel_where(
        destination="mail", task="send", states=[JobState.PENDING, JobState.RUNNING], now=NOW
    )
    if commits is not None:
        assert journal.commits == commits + 1  # type: ignore[attr-defined]
    assert sorted(outcome.cancelled) == [ids[1], ids[2]]
    assert outcome.requested == [(ids[0], "a")]
    assert await journal.cancel_requests("a") == [ids[0]]
    states = [await state_of(journal, i) for i in ids]
    assert states == [JobState.RUNNING, *[JobState.CANCELLED] * 2, *[JobState.PENDING] * 2]
    only_running = await journal.cancel_where(
        destination=None, task="other", states=[JobState.RUNNING], now=NOW
    )
    assert only_running == Cancellation([], [], [])
    await assert_stats_agree_with_the_jobs(journal, ids, NOW)


# -- retention: a journal that stays small ----------------------------------------


async def prune_all(journal: Journal, before: float | None, keep: int | None = None) -> int:
    """Prune until the journal says nothing more is left; the number deleted."""
    deleted = 0
    for _ in range(100):
        pruned = await journal.prune_finished(before, keep)
        deleted += pruned.deleted
        if not pruned.more:
            return deleted
    raise AssertionError("prune_finished kept saying that more is left")


async def test_prune_keeps_the_newest_finished_jobs_over_the_count(journal: Journal) -> None:
    ids = [r.id for r in await journal.insert_many([new(i) for i in range(30)], NOW)]
    jobs = await claim(journal, limit=23)
    await journal.record_outcomes("a", NOW, succeeded=[ok(j) for j in jobs[:20]])
    await journal.record_outcomes("a", NOW, failed=[fail(j, "E", None) for j in jobs[20:]])
    for job_id in ids[23:27]:
        assert (await journal.cancel(job_id, NOW)) == Cancellation(
            [job_id], [], [], JobState.CANCELLED
        )
    # 24 finished (20 succeeded, 4 cancelled), 3 dead, 3 pending: keep the newest 10.
    assert await prune_all(journal, None, keep=10) == 14
    kept = [job_id for job_id in ids if await journal.get(job_id) is not None]
    assert kept == ids[14:]  # the lowest ids went first; dead and pending jobs stay
    await assert_stats_agree_with_the_jobs(journal, ids, NOW)
    assert (await journal.stats(NOW)).succeeded + (await journal.stats(NOW)).cancelled == 10
    # Under the count, nothing more goes (and the call says so).
    assert await journal.prune_finished(None, 10) == (0, False)


async def test_prune_by_count_and_by_age_together(journal: Journal) -> None:
    ids = [r.id for r in await journal.insert_many([new(i) for i in range(10)], NOW)]
    jobs = await claim(journal, limit=10)
    await journal.record_outcomes("a", NOW, succeeded=[ok(j) for j in jobs[:5]])
    await journal.record_outcomes("a", NOW + 100, succeeded=[ok(j) for j in jobs[5:]])
    # The first five are too old; of the rest, only the newest three are kept.
    assert await prune_all(journal, NOW + 50, keep=3) == 7
    assert [job_id for job_id in ids if await journal.get(job_id) is not None] == ids[7:]


async def test_prune_by_count_walks_past_many_dead_jobs(journal: Journal) -> None:
    await journal.insert_batch(batch([{"d": i} for i in range(12_000)]), NOW)
    jobs = await claim(journal, limit=12_000)
    await journal.record_outcomes("a", NOW, failed=[fail(j, "E", None) for j in jobs])
    done = await journal.insert_batch(batch([{"s": i} for i in range(100)]), NOW)
    jobs = await claim(journal, limit=100)
    await journal.record_outcomes("a", NOW, succeeded=[ok(j) for j in jobs])
    assert await prune_all(journal, None, keep=40) == 60
    assert await journal.get(done[59]) is None
    assert await journal.get(done[60]) is not None
    assert (await journal.stats(NOW)).dead == 12_000


async def test_checkpoint_loses_nothing_and_the_journal_goes_on(journal: Journal) -> None:
    ids = await journal.insert_batch(batch([{"i": i} for i in range(2_000)]), NOW)
    jobs = await claim(journal, limit=1_000)
    await journal.record_outcomes("a", NOW, succeeded=[ok(j) for j in jobs])
    await journal.checkpoint()  # a checkpoint cannot run inside a transaction: it must not
    await journal.checkpoint()
    stats = await journal.stats(NOW)
    assert (stats.succeeded, stats.ready) == (1_000, 1_000)
    assert len(await claim(journal, limit=2_000)) == 1_000
    info = await journal.get(ids[-1])
    assert info is not None
    assert info.payload == {"i": 1_999}


async def test_trace_contexts_are_stored_at_submit_and_handed_over_by_the_claim(
    journal: Journal,
) -> None:
    traced = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
    plain, merged = await journal.insert_many([new(0), new(1)._replace(trace=traced)], NOW)
    (keyed,) = await journal.insert_many([new(2, key="k")._replace(trace=traced)], NOW)
    many = await journal.insert_batch(batch([{}, {}])._replace(trace=traced), NOW)
    claim = await journal.claim("a", 10, NOW + LEASE, NOW)
    assert len(claim.jobs) == 5
    assert claim.traces == {merged.id: traced, keyed.id: traced, **dict.fromkeys(many, traced)}
    assert plain.id not in claim.traces
