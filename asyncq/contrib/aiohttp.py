"""Run a queue for as long as an aiohttp web application runs.

    from asyncq.contrib.aiohttp import QUEUE, setup
    setup(app, queue)            # handlers: request.app[QUEUE]

The queue opens when the app starts (its journal, its workers unless
`concurrency=0`) and stops at its cleanup: running jobs finish (up to the
queue's `shutdown_timeout`), the rest stay in the journal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .._queue import Queue

try:
    from aiohttp import web
except ImportError:  # pragma: no cover - the message is the point
    raise ImportError("asyncq.contrib.aiohttp needs aiohttp: pip install 'asyncq[http]'") from None

#: The queue `setup` gave the app: `request.app[QUEUE]`.
QUEUE = web.AppKey("asyncq.queue", Queue)


def setup(app: web.Application, queue: Queue) -> None:
    """Open `queue` when `app` starts and stop it at the app's cleanup."""

    async def run_queue(app: web.Application) -> AsyncIterator[None]:
        async with queue:
            yield

    app[QUEUE] = queue
    app.cleanup_ctx.append(run_queue)
