"""Simulated crashes: another process claims jobs, starts them, and dies silently."""

from __future__ import annotations

from asyncq._journal import Journal, Started, micros


async def claim_start_and_die(
    journal: Journal, owner: str, now: float, lease: float = 30.0
) -> list[int]:
    """`owner` claims what is ready at `now` under a `lease`, writes its handlers'
    starts, and is never heard of again. The ids it took."""
    claimed = (await journal.claim(owner, 10, now + lease, now)).jobs
    started = [Started(job.id, job.token, micros(now)) for job in claimed]
    await journal.record_outcomes(owner, now, started=started)
    return [job.id for job in claimed]
