"""Records as JSON documents: what `--json` prints and what the tables are drawn from.

The keys are stable: every field of the stats contract is present, null where
this journal does not know it. Times are seconds since the epoch, ages and
latencies seconds, rates per second (`retries_per_minute`, `dead_per_minute`:
per minute), as in `Queue.stats()`.
"""

from __future__ import annotations

from typing import Any

from .._journal import DestinationCounts, JournalStats
from .._journal._sqlite_readonly import JobDetail
from .._records import JobInfo

Document = dict[str, Any]

COUNTS = ("ready", "scheduled", "blocked", "claimed", "running", "succeeded", "dead", "cancelled")
FLOW = (
    "arrival_rate",
    "completion_rate",
    "call_rate",
    "retries_per_minute",
    "dead_per_minute",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "limit",
    "limit_used",
)
HOLDS = ("paused", "held_until", "circuit", "circuit_until")


def stats_document(stats: JournalStats, now: float) -> Document:
    """`{"at", "workers", "totals", "destinations": {name: ...}}`."""
    at = getattr(stats, "at", None) or now
    destinations = {
        name: destination_document(counts, at) for name, counts in stats.destinations.items()
    }
    totals: Document = {name: getattr(stats, name, None) for name in COUNTS + FLOW}
    ages = [d["oldest_ready_age"] for d in destinations.values()]
    ages = [age for age in ages if age is not None]
    totals["oldest_ready_age"] = max(ages, default=None)
    return {
        "at": at,
        "workers": getattr(stats, "workers", None),
        "totals": totals,
        "destinations": destinations,
    }


def destination_document(counts: DestinationCounts, at: float) -> Document:
    document: Document = {name: getattr(counts, name, None) for name in COUNTS + FLOW + HOLDS}
    document["oldest_ready_at"] = counts.oldest_ready_at
    document["oldest_ready_age"] = oldest_ready_age(counts, at)
    return document


def oldest_ready_age(counts: DestinationCounts, at: float) -> float | None:
    """Seconds the oldest ready job has waited (None: nothing is ready)."""
    age: float | None = getattr(counts, "oldest_ready_age", None)
    if age is None and counts.oldest_ready_at is not None:
        age = max(0.0, at - counts.oldest_ready_at)
    return age


def job_document(info: JobInfo) -> Document:
    """Every field of a `JobInfo`; `history` as one object per failed attempt."""
    return {
        "id": info.id,
        "task": info.task,
        "state": info.state.value,
        "destination": info.destination,
        "priority": info.priority,
        "key": info.key,
        "attempts": info.attempts,
        "snoozes": info.snoozes,
        "created_at": info.created_at,
        "run_at": info.run_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "payload": info.payload,
        "result": info.result,
        "last_error": info.last_error,
        "history": [
            {"started_at": started, "ended_at": ended, "error": error}
            for started, ended, error in info.history
        ],
    }


def detail_document(detail: JobDetail) -> Document:
    """A job with what only the journal knows: who holds it, its dependencies."""
    return {
        **job_document(detail.info),
        "first_started_at": detail.first_started_at,
        "owner": detail.owner,
        "lease_until": detail.lease_until,
        "cancel_requested": detail.cancel_requested,
        "parents": detail.parents,
        "children": detail.children,
        "on_parent_failure": detail.on_parent_failure,
        "cancelled_by": detail.cancelled_by,
    }
