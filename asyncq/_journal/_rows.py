"""What both SQL journals make of their rows: a stored state's public name, stored
JSON as a value, a row of `jobs` (the columns both select, in one order) as the
`JobInfo` the queue hands out, and which dead jobs a redrive may bring back."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from .._records import JobInfo, JobState

log = logging.getLogger("asyncq.journal")

#: A stored state as users see it: a job waiting for its time is pending to them.
PUBLIC_STATE = {
    "blocked": JobState.BLOCKED,
    "pending": JobState.PENDING,
    "scheduled": JobState.PENDING,
    "running": JobState.RUNNING,
    "succeeded": JobState.SUCCEEDED,
    "dead": JobState.DEAD,
    "cancelled": JobState.CANCELLED,
}


def decoded(text: str) -> Any:
    """Stored JSON text as a value; None if it is not JSON (a row edited by hand)."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def job_info(row: Sequence[Any]) -> JobInfo:
    """A row of the jobs' columns (id, task, state, destination, priority, payload,
    key, attempts, created_at, run_at, started_at, finished_at, result, last_error,
    snoozes, history) as a `JobInfo`."""
    (id_, task, state, dest, prio, payload, key, attempts, created, run_at, started,
     finished, result, error, snoozes, history) = row  # fmt: skip
    return JobInfo(
        id=id_,
        task=task,
        state=PUBLIC_STATE[state],
        destination=dest,
        priority=prio,
        payload=decoded(payload),
        key=key,
        attempts=attempts,
        created_at=created,
        run_at=run_at,
        started_at=started,
        finished_at=finished,
        result=None if result is None else decoded(result),
        last_error=error,
        snoozes=snoozes,
        history=[(float(a), float(b), e) for a, b, e in json.loads(history)] if history else [],
    )


def redrivable(rows: Iterable[Sequence[Any]], asked: int) -> list[int]:
    """Of dead jobs about to be redriven, as rows (id, key, whether a live job holds
    that key) in id order, those whose key no live job holds: a key names one live
    job at a time, so the others stay dead (of two with the same key, the older
    goes). `asked`: how many were chosen, for the warning about those left."""
    free: list[int] = []
    taken: set[str] = set()
    for job_id, key, held in rows:
        if key is not None:
            if held or key in taken:
                continue
            taken.add(key)
        free.append(job_id)
    if len(free) < asked:
        log.warning(
            "redrive: %d dead job(s) stay dead: a live job holds their key", asked - len(free)
        )
    return free
