"""Run a queue for as long as a FastAPI (or any Starlette) app runs.

    from asyncq.contrib.fastapi import lifespan
    app = FastAPI(lifespan=lifespan(queue))

The queue opens at the app's startup (its journal, its workers unless
`concurrency=0`) and stops at its shutdown: running jobs finish (up to the
queue's `shutdown_timeout`), the rest stay in the journal. FastAPI is not
imported here; each startup may be in a new event loop (test clients do that).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from .._queue import Queue


def lifespan(queue: Queue) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for `FastAPI(lifespan=...)` that runs `queue` while the app runs."""

    @asynccontextmanager
    async def run_queue(app: Any) -> AsyncIterator[None]:
        async with queue:
            yield

    return run_queue
