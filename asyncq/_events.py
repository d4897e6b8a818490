"""The notable events of a queue, logged: one line each on the `asyncq.events`
logger, with what it concerns as `extra` fields (`record.job_id`, `.task`,
`.destination`, `.attempt`, and `.event`, the event's name). The README lists them.

Nothing here runs for a job that succeeds: these are the paths of failures,
holds, circuits and leases. A retry is logged at INFO, a death, an open circuit
and a lost lease at WARNING.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("asyncq.events")


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def first_line(error: str) -> str:
    """The `Type: message` line of an error as the journal stores it."""
    return error.split("\n", 1)[0]


def _job(event: str, job_id: int, task: str, destination: str, attempt: int) -> dict[str, Any]:
    return {
        "event": event,
        "job_id": job_id,
        "task": task,
        "destination": destination,
        "attempt": attempt,
    }


def retry_scheduled(
    job_id: int, task: str, destination: str, attempt: int, error: str, retry_at: float, now: float
) -> None:
    """An attempt failed and the job's policy runs it again at `retry_at`."""
    if not log.isEnabledFor(logging.INFO):
        return
    extra = _job("retry_scheduled", job_id, task, destination, attempt)
    extra.update(error=first_line(error), retry_at=retry_at)
    log.info(
        "job %d (%s to %s): attempt %d failed (%s); retry in %.3g s",
        job_id,
        task,
        destination,
        attempt,
        extra["error"],
        max(0.0, retry_at - now),
        extra=extra,
    )


def dead_lettered(job_id: int, task: str, destination: str, attempt: int, error: str) -> None:
    """A job is dead: its policy gave up, it failed permanently, or it can never run."""
    if not log.isEnabledFor(logging.WARNING):
        return
    extra = _job("dead_lettered", job_id, task, destination, attempt)
    extra["error"] = first_line(error)
    log.warning(
        "job %d (%s to %s): dead after attempt %d (%s)",
        job_id,
        task,
        destination,
        attempt,
        extra["error"],
        extra=extra,
    )


def retry_after_hold(
    job_id: int, task: str, destination: str, attempt: int, seconds: float, until: float
) -> None:
    """A handler raised `RetryAfter`: the whole destination is held until `until`."""
    if not log.isEnabledFor(logging.INFO):
        return
    extra = _job("retry_after_hold", job_id, task, destination, attempt)
    extra["hold_until"] = until
    log.info(
        "destination %r held until %s: job %d (%s) was told to retry after %g s",
        destination,
        _when(until),
        job_id,
        task,
        seconds,
        extra=extra,
    )


def circuit_opened(destination: str, failures: int, until: float) -> None:
    """A destination's circuit opened: its due jobs fail at once until `until`."""
    log.warning(
        "destination %r: circuit opened after %d failed attempts in a row; next probe at %s",
        destination,
        failures,
        _when(until),
        extra={
            "event": "circuit_opened",
            "destination": destination,
            "failures": failures,
            "circuit_until": until,
        },
    )


def circuit_closed(destination: str) -> None:
    """A destination's probe succeeded: calls go out again."""
    log.info(
        "destination %r: circuit closed, calls go out again",
        destination,
        extra={"event": "circuit_closed", "destination": destination},
    )


def circuit_refused(destination: str, count: int, until: float) -> None:
    """Jobs came due while their destination's circuit was open: each was charged
    an attempt without a call (the retries and deaths follow from their policies)."""
    if not log.isEnabledFor(logging.INFO):
        return
    log.info(
        "destination %r: circuit open until %s, %d job(s) refused without a call",
        destination,
        _when(until),
        count,
        extra={
            "event": "circuit_refused",
            "destination": destination,
            "jobs": count,
            "circuit_until": until,
        },
    )


def lease_expired(
    job_id: int,
    task: str,
    destination: str,
    attempt: int,
    *,
    started: bool,
    retry_at: float | None,
    now: float,
) -> None:
    """A job's lease ran out (its worker died or stalled) and it was taken back.
    `started`: its handler's start had been written (the attempt is charged)."""
    if not log.isEnabledFor(logging.WARNING):
        return
    extra = _job("lease_expired", job_id, task, destination, attempt)
    extra.update(started=started, retry_at=retry_at)
    when = "while its handler ran" if started else "before its handler started"
    if retry_at is None:
        then = "it is dead"
    else:
        then = f"it runs again in {max(0.0, retry_at - now):.3g} s"
    log.warning(
        "job %d (%s to %s): its lease expired %s (its worker died or stalled); %s",
        job_id,
        task,
        destination,
        when,
        then,
        extra=extra,
    )


def lease_lost(owner: str, late: float) -> None:
    """This process renewed its leases after they had run out (its event loop was
    blocked, or the process suspended): another process may have taken its jobs."""
    log.warning(
        "this process's leases ran out %.3g s before it renewed them (its event loop was "
        "blocked or it was suspended): its running jobs may run again elsewhere",
        late,
        extra={"event": "lease_lost", "owner": owner, "late": late},
    )
