"""Durable storage of jobs: the interface and the SQLite implementation."""

from ._base import (
    Booking,
    ClaimedJob,
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
    Succeeded,
    TokenGrant,
)
from ._sqlite import SqliteJournal

__all__ = [
    "Booking",
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
    "Succeeded",
    "TokenGrant",
]
