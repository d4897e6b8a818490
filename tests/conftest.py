from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncq import Queue
from asyncq.testing import ManualClock
from tests.faults import small_disk  # noqa: F401 - a fixture, used by name


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_queue(db_path: str, clock: ManualClock) -> Callable[..., Queue]:
    """A queue on a real SQLite file and the controlled clock."""

    def make(**options: Any) -> Queue:
        options.setdefault("clock", clock)
        options.setdefault("concurrency", 4)
        return Queue(options.pop("path", db_path), **options)

    return make
