"""Durable storage of jobs: the interface and the SQLite implementation."""

from ._base import (
    ClaimedJob,
    DestinationCounts,
    Failed,
    Inserted,
    Journal,
    JournalStats,
    NewJob,
    Released,
    Succeeded,
)
from ._sqlite import SqliteJournal

__all__ = [
    "ClaimedJob",
    "DestinationCounts",
    "Failed",
    "Inserted",
    "Journal",
    "JournalStats",
    "NewJob",
    "Released",
    "SqliteJournal",
    "Succeeded",
]
