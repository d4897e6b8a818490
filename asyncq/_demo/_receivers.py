"""The demo's receivers: three local HTTP services on 127.0.0.1 that play the
stories and count what they see. The demo's verdict comes from their counts.

Each receiver records every call (its time and the answer), the job ids it
accepted (a 2xx answer), and every violation of its terms: a call over its limit,
or a call while a Retry-After it gave was still in force.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from aiohttp import web

from ._scenario import Scenario

JOB_HEADER = "X-Asyncq-Job"  # the handlers send their job's id in it


@dataclass(frozen=True, slots=True)
class Violation:
    at: float  # seconds since the demo started
    what: str


@dataclass(slots=True)
class Ledger:
    """What one receiver saw. Times are seconds since the demo started."""

    name: str
    limit: int | None = None  # calls allowed in any window of `window` seconds
    window: float = 1.0
    calls: list[tuple[float, int]] = field(default_factory=list)  # (time, status)
    accepted: collections.Counter[int] = field(default_factory=collections.Counter)
    violations: list[Violation] = field(default_factory=list)
    most_in_window: int = 0

    def record(self, at: float, status: int, job_id: int | None) -> None:
        self.calls.append((at, status))
        if 200 <= status < 300 and job_id is not None:
            self.accepted[job_id] += 1

    @property
    def duplicates(self) -> int:
        """Accepted more than once (the queue runs jobs at least once)."""
        return sum(count - 1 for count in self.accepted.values())


class SlidingWindow:
    """Counts calls in the last `window` seconds: (now - window, now]."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def add(self, now: float) -> int:
        """Count a call at `now`; return the calls in the window, this one included."""
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        self._times.append(now)
        return len(self._times)


def _job_id(request: web.Request) -> int | None:
    raw = request.headers.get(JOB_HEADER, "")
    return int(raw) if raw.isdigit() else None


class Clock:
    """Seconds since the demo started, on the monotonic clock."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self._start


class EmailProvider:
    """Allows `limit` calls in any sliding window; a call over it is answered 429
    and recorded as a violation of the provider's terms."""

    def __init__(self, scenario: Scenario, clock: Clock) -> None:
        self.ledger = Ledger("email", limit=scenario.email_limit, window=scenario.window)
        self._window = SlidingWindow(scenario.window)
        self._clock = clock

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        now = self._clock()
        seen = self._window.add(now)
        ledger = self.ledger
        ledger.most_in_window = max(ledger.most_in_window, seen)
        if ledger.limit is not None and seen > ledger.limit:
            ledger.violations.append(
                Violation(now, f"{seen} calls in {ledger.window:g} s, limit {ledger.limit}")
            )
            ledger.record(now, 429, _job_id(request))
            return web.Response(status=429, headers={"Retry-After": "1"}, text="rate limited")
        ledger.record(now, 202, _job_id(request))
        return web.Response(status=202, text="queued for delivery")


class EnrichmentApi:
    """Allows `limit` calls in any sliding window and answers 429 with Retry-After
    when pushed past it; once, busy, it pushes back on its own (`push_back_at`).
    A call over the limit, or while its Retry-After is in force, is a violation."""

    def __init__(self, scenario: Scenario, clock: Clock) -> None:
        self.ledger = Ledger("enrichment", limit=scenario.enrichment_limit, window=scenario.window)
        self._window = SlidingWindow(scenario.window)
        self._clock = clock
        self._push_back_at = scenario.push_back_at
        self._push_back_for = scenario.push_back_for
        self.held_until = 0.0
        self.pushed_back: list[tuple[float, int]] = []  # (when, Retry-After seconds)

    def _too_many(self, seconds: int, request: web.Request, now: float) -> web.Response:
        self.held_until = max(self.held_until, now + seconds)
        self.ledger.record(now, 429, _job_id(request))
        return web.Response(status=429, headers={"Retry-After": str(seconds)}, text="slow down")

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        now = self._clock()
        seen = self._window.add(now)
        ledger = self.ledger
        ledger.most_in_window = max(ledger.most_in_window, seen)
        if now < self.held_until:
            ledger.violations.append(
                Violation(now, f"called {self.held_until - now:.2f} s before Retry-After ended")
            )
            return self._too_many(1, request, now)
        if ledger.limit is not None and seen > ledger.limit:
            ledger.violations.append(
                Violation(now, f"{seen} calls in {ledger.window:g} s, limit {ledger.limit}")
            )
            return self._too_many(1, request, now)
        if not self.pushed_back and now >= self._push_back_at:
            self.pushed_back.append((now, self._push_back_for))
            return self._too_many(self._push_back_for, request, now)
        ledger.record(now, 200, _job_id(request))
        return web.json_response({"company": "Example Ltd", "employees": 42})


class Crm:
    """A webhook receiver that goes down for a while: first it answers 503, then
    it stops answering at all (its port refuses connections), then it is back."""

    def __init__(self, clock: Clock) -> None:
        self.ledger = Ledger("crm")
        self._clock = clock
        self.state = "up"  # "up", "failing" (503) or "unreachable"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        now = self._clock()
        if self.state == "unreachable":
            # A connection opened before the port closed: drop it unanswered.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)  # never reaches the caller
        if self.state == "failing":
            self.ledger.record(now, 503, _job_id(request))
            return web.Response(status=503, text="CRM is down for maintenance")
        self.ledger.record(now, 204, _job_id(request))
        return web.Response(status=204)


class Receivers:
    """The three receivers, each on its own port of 127.0.0.1."""

    def __init__(self, scenario: Scenario, clock: Clock) -> None:
        self.email = EmailProvider(scenario, clock)
        self.crm = Crm(clock)
        self.enrichment = EnrichmentApi(scenario, clock)
        self.urls: dict[str, str] = {}
        self._runners: dict[str, web.AppRunner] = {}
        self._sites: dict[str, web.TCPSite] = {}
        self._ports: dict[str, int] = {}

    @property
    def ledgers(self) -> list[Ledger]:
        return [self.email.ledger, self.crm.ledger, self.enrichment.ledger]

    async def start(self) -> None:
        routes = {
            "email": ("/v1/send", self.email.handle),
            "crm": ("/hooks/deal-won", self.crm.handle),
            "enrichment": ("/v2/enrich", self.enrichment.handle),
        }
        for name, (path, handler) in routes.items():
            app = web.Application()
            app.router.add_post(path, handler)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            self._runners[name] = runner
            await self._listen(name, 0)
            self.urls[name] = f"http://127.0.0.1:{self._ports[name]}{path}"

    async def _listen(self, name: str, port: int) -> None:
        site = web.TCPSite(self._runners[name], "127.0.0.1", port, reuse_address=True)
        await site.start()
        self._ports[name] = int(self._runners[name].addresses[0][1])
        self._sites[name] = site

    async def crm_goes(self, state: str) -> None:
        """Move the CRM to "failing", "unreachable" or back "up"."""
        if state == "unreachable":
            await self._sites.pop("crm").stop()
        elif "crm" not in self._sites:
            await self._listen("crm", self._ports["crm"])
        self.crm.state = state

    async def stop(self) -> None:
        for runner in self._runners.values():
            await runner.cleanup()
