"""Real HTTP servers on 127.0.0.1 for the delivery tests: a receiver whose routes
play every kind of answer, and a canary that only counts connections."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult


@dataclass
class Seen:
    """One request as the receiver got it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int = 0  # the connection it came on


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1. Routes:

    /status/{code}?retry_after=...&location=...  answers `code`, body "answer {code}"
    /hook          records the request, answers 204 (or what `hook_status` holds)
    /big           a body of 100,000 bytes
    /slow          never answers until `release` is set
    /gated         holds each request until `gate` opens; counts those in flight
    """

    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    hook_statuses: list[int] = field(default_factory=list)  # answers to /hook, in turn
    release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most_in_flight: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when that many /gated requests are in flight at once.
    arrivals: dict[int, asyncio.Event] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    async def note(self, request: web.Request) -> None:
        body = await request.read()
        assert request.transport is not None
        port = request.transport.get_extra_info("peername")[1]
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body, port))

    async def status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        await self.note(request)
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        if "location" in request.query:
            headers["Location"] = request.query["location"]
        return web.Response(status=code, text=f"answer {code}", headers=headers)

    async def hook(self, request: web.Request) -> web.Response:
        await self.note(request)
        status = self.hook_statuses.pop(0) if self.hook_statuses else 204
        return web.Response(status=status, text=None if status == 204 else f"hook {status}")

    async def big(self, request: web.Request) -> web.Response:
        await self.note(request)
        return web.Response(status=200, body=b"x" * 100_000)

    async def slow(self, request: web.Request) -> web.Response:
        await self.note(request)
        self.slow_arrived.set()
        await self.release.wait()
        return web.Response(status=200, text="late")

    async def gated(self, request: web.Request) -> web.Response:
        await self.note(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight in self.arrivals:
            self.arrivals[self.in_flight].set()
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        return web.Response(status=200, text="through")


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    return runner, server.sockets[0].getsockname()[1]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()
    app = web.Application()
    app.router.add_route("*", "/status/{code}", state.status)
    app.router.add_route("*", "/hook", state.hook)
    app.router.add_route("*", "/big", state.big)
    app.router.add_route("*", "/slow", state.slow)
    app.router.add_route("*", "/gated", state.gated)
    runner, port = await serve(app)
    state.base = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        state.release.set()
        state.gate.set()
        await runner.cleanup()


@dataclass
class Canary:
    """A TCP listener on 127.0.0.1 that counts the connections reaching it (and
    answers each with a 200, so that a delivery that does reach it succeeds)."""

    port: int = 0
    connections: int = 0


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    state = Canary()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


class StubResolver(AbstractResolver):
    """Answers every name with the next of `answers` (the last one repeats): DNS
    as an attacker would play it, all on 127.0.0.1."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        address = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": family,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def first_line(text: Any) -> str:
    assert isinstance(text, str)
    return text.splitlines()[0]
