"""The rule every background part follows on a journal fault: a transient one
(a full disk, an I/O error) is waited out, anything else stops the queue (the
Queue's supervisor then tells every caller)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ._errors import JournalError

T = TypeVar("T")

log = logging.getLogger("asyncq")

#: Waits between retries of a transient journal fault, in real seconds (not the
#: queue's clock, which a test may hold still): 50 ms, doubling up to 2 s.
FIRST_BACKOFF, MAX_BACKOFF = 0.05, 2.0


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a journal fault that may clear by itself (a full disk)."""
    return isinstance(exc, JournalError) and exc.transient


class Backoff:
    """Waits out a transient journal fault for one background part, in real time.

    A streak of failures is logged twice: when it starts, and when the part's
    journal work succeeds again. `cut_short`, once set, ends any wait at once.
    """

    def __init__(
        self,
        part: str,
        *,
        logger: logging.Logger = log,
        cut_short: asyncio.Event | None = None,
    ) -> None:
        self.part = part
        self._log = logger
        self._cut_short = cut_short
        self._delay = FIRST_BACKOFF
        self._failures = 0

    @property
    def failing(self) -> bool:
        """A streak of failures is under way."""
        return self._failures > 0

    async def failed(self, exc: BaseException) -> None:
        """Log (once per streak) and wait before the next try; re-raise `exc`
        if it is not transient."""
        if not is_transient(exc):
            raise exc
        if not self._failures:
            self._log.warning("asyncq %s: %s; retrying until it clears", self.part, exc)
        self._failures += 1
        delay, self._delay = self._delay, min(self._delay * 2, MAX_BACKOFF)
        if self._cut_short is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cut_short.wait(), delay)

    def succeeded(self) -> None:
        """The part's journal work went through: the streak, if any, is over."""
        if self._failures:
            self._log.warning(
                "asyncq %s: the journal works again (%d retries)", self.part, self._failures
            )
        self._delay, self._failures = FIRST_BACKOFF, 0


#: Tries of each journal call as a queue starts, transient faults waited out between.
START_TRIES = 5


async def retried_at_start(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, tried again after a transient journal fault (a connection cut as
    the queue starts), a few times, as the background parts would; then its error."""
    backoff = Backoff("start")
    for _ in range(START_TRIES - 1):
        try:
            return await call()
        except JournalError as exc:
            await backoff.failed(exc)  # re-raises what is not transient
    return await call()
