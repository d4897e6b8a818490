"""The demo's queue: three destinations, one typed task each, and the HTTP session
they share, opened in the queue's lifespan."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from .._context import current_job
from .._errors import PermanentFailure, RetryAfter
from .._policy import Circuit, Rate, Retry
from .._queue import Queue
from ._receivers import JOB_HEADER
from ._scenario import Scenario


class ReceiverError(Exception):
    """The receiver answered with a server error: worth another try."""


@asynccontextmanager
async def http_session(queue: Queue) -> AsyncIterator[dict[str, Any]]:
    """One HTTP session for every handler, opened when the workers start."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield {"http": http}


class DemoJobs:
    """The queue and its tasks. `failed_calls[destination]` lists the times
    (`clock()`) of calls that failed and were left to the retry policy."""

    def __init__(self, path: Path, scenario: Scenario, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.failed_calls: dict[str, list[float]] = collections.defaultdict(list)
        self.queue = queue = Queue(path, concurrency=16, lifespan=http_session)
        quick_retry = Retry(schedule=[scenario.duration * 0.02] * 5)
        queue.destination(
            "email", rate=Rate(scenario.email_rate, per=1), concurrency=4, retry=quick_retry
        )
        # One call at a time: when the API answers 429, no other call is on its way.
        queue.destination(
            "enrichment",
            rate=Rate(scenario.enrichment_rate, per=1),
            concurrency=1,
            retry=quick_retry,
        )
        queue.destination(
            "crm",
            rate=Rate(50, per=1),
            concurrency=4,
            retry=Retry(schedule=scenario.crm_ladder),
            circuit=Circuit(failures=5, cooldown=scenario.circuit_cooldown),
        )

        @queue.task(name="demo.send_email", destination="email")
        async def send_email(url: str, to: str, campaign: str) -> int:
            return await self._post(url, {"to": to, "campaign": campaign})

        @queue.task(name="demo.post_deal", destination="crm")
        async def post_deal(url: str, deal: int, stage: str) -> int:
            return await self._post(url, {"deal": deal, "stage": stage})

        @queue.task(name="demo.enrich_contact", destination="enrichment")
        async def enrich_contact(url: str, contact: int) -> int:
            return await self._post(url, {"contact": contact})

        self.send_email = send_email
        self.post_deal = post_deal
        self.enrich_contact = enrich_contact

    async def _post(self, url: str, body: dict[str, Any]) -> int:
        """POST `body` to `url`; the answer decides the job's outcome."""
        job = current_job()
        http: aiohttp.ClientSession = job.state["http"]
        try:
            async with http.post(url, json=body, headers={JOB_HEADER: str(job.id)}) as answer:
                await answer.read()
                status = answer.status
                retry_after = answer.headers.get("Retry-After", "1")
        except aiohttp.ClientError:
            self.failed_calls[job.destination].append(self.clock())
            raise
        if status == 429:
            self.failed_calls[job.destination].append(self.clock())
            raise RetryAfter(float(retry_after) if retry_after.isdigit() else 1.0)
        if status >= 500:
            self.failed_calls[job.destination].append(self.clock())
            raise ReceiverError(f"HTTP {status}")
        if status >= 400:
            raise PermanentFailure(f"HTTP {status}")
        return status
