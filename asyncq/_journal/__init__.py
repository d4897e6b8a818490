"""Durable storage of jobs: the interface and the SQLite implementation."""

from ._base import (
    Booked,
    Claim,
    ClaimedJob,
    ClaimLimits,
    DestinationCounts,
    DestinationRecord,
    ExpiredJob,
    Failed,
    Inserted,
    Journal,
    JournalStats,
    NewBatch,
    NewJob,
    Released,
    RetryDecision,
    Started,
    Succeeded,
)
from ._sqlite import SqliteJournal

__all__ = [
    "Booked",
    "Claim",
    "ClaimLimits",
    "ClaimedJob",
    "DestinationCounts",
    "DestinationRecord",
    "ExpiredJob",
    "Failed",
    "Inserted",
    "Journal",
    "JournalStats",
    "NewBatch",
    "NewJob",
    "Released",
    "RetryDecision",
    "SqliteJournal",
    "Started",
    "Succeeded",
]
