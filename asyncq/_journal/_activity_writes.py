"""When a journal writes the counts its turns left pending (see `_activity.py`):
once its writer has been idle for `WRITE_EVERY` seconds, so that other processes
see the last of them, and at close. The same for every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from .._errors import JournalError
from ._activity import WRITE_EVERY

#: Turns a close spends writing what is pending at most: counts are never worth a hang.
_TURNS_AT_CLOSE = 40


class _Pending(Protocol):
    @property
    def pending(self) -> bool: ...

    write_wanted: bool


class PendingWrites:
    """Has the writer write a log's pending counts in a turn of their own, after
    an idle while and at close. `empty_turn` queues a turn that does nothing else
    (its future; `JournalError` once the writer is closed or stopped)."""

    def __init__(self, log: _Pending, empty_turn: Callable[[], asyncio.Future[Any]]) -> None:
        self._log = log
        self._empty_turn = empty_turn
        self._later: asyncio.TimerHandle | None = None

    def after_commit(self) -> None:
        """A turn committed: if counts are left pending, write them once idle."""
        if self._later is None and self._log.pending:
            self._later = asyncio.get_running_loop().call_later(WRITE_EVERY, self.write)

    def write(self) -> asyncio.Future[Any] | None:
        """Have the next turn write the pending counts (a turn of its own if need
        be); the turn's future, or None if there is nothing to write or no writer."""
        self._later = None
        if not self._log.pending:
            return None
        self._log.write_wanted = True
        try:
            future = self._empty_turn()
        except JournalError:
            return None  # closed or stopped: those counts are lost, never jobs
        future.add_done_callback(_ignore_failure)
        return future

    async def close(self) -> None:
        """Before the writer stops: what is pending, a turn's share at a time."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        for _ in range(_TURNS_AT_CLOSE):
            written = self.write()
            if written is None:
                return
            await asyncio.wait({written})


def _ignore_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: the writer's fault is told elsewhere
