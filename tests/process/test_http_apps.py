"""The example web apps, run for real: FastAPI under uvicorn, aiohttp under its own
server, each a subprocess on 127.0.0.1. A POST answers 202 at once and ends with
the receiver holding a verified, signed webhook; a refused one shows on the
dead-letter endpoint; SIGTERM to the app loses no job. Both deployments: workers
inside the web process, and `uvicorn --workers 2` producers with a separate
`asyncq worker` on the same journal."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from .conftest import REPO_ROOT, journal_states, wait_until

pytestmark = pytest.mark.process

SECRET = "whsec_" + base64.b64encode(b"example app's secret, 32 bytes.").decode()
NO_SUCH_DEAL = 13  # the receiver answers 404 for it


@dataclass
class SignedReceiver:
    """Verifies every webhook with `standardwebhooks`; records the deals it took."""

    url: str = ""
    verified: list[int] = field(default_factory=list)
    unverified: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # held while not set
    held: asyncio.Event = field(default_factory=asyncio.Event)  # a webhook is being held

    async def hooks(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = Webhook(SECRET).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.unverified += 1
            return web.Response(status=401, text="bad signature")
        if event["deal"] == NO_SUCH_DEAL:
            return web.Response(status=404, text="no such deal")
        if not self.gate.is_set():
            self.held.set()
            await self.gate.wait()
        self.verified.append(event["deal"])
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[SignedReceiver]:
    state = SignedReceiver()
    state.gate.set()
    app = web.Application()
    app.router.add_post("/hooks", state.hooks)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks"
    try:
        yield state
    finally:
        state.gate.set()
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Processes:
    """The app's processes; always ended (see the fixture)."""

    tmp: Path
    receiver: SignedReceiver
    port: int = field(default_factory=free_port)
    started: list[tuple[asyncio.subprocess.Process, Path]] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)  # pids stopped on purpose

    @property
    def journal(self) -> Path:
        return self.tmp / "outbound.db"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *args: str, concurrency: int = 16) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env.update(
            ASYNCQ_JOURNAL=str(self.journal),
            ASYNCQ_CONCURRENCY=str(concurrency),
            WEBHOOK_URL=self.receiver.url,
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_ALLOW="127.0.0.1",
            PORT=str(self.port),
        )
        output = self.tmp / f"process-{len(self.started)}.out"
        with output.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *args, cwd=REPO_ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=out,
            )  # fmt: skip
        self.started.append((proc, output))
        return proc

    async def start_app(self, kind: str, *, concurrency: int = 16, workers: int = 1) -> None:
        if kind == "fastapi":
            args = ["-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1"]
            args += ["--port", str(self.port), "--workers", str(workers)]
        else:
            args = ["examples/aiohttp_app.py"]
        await self.start(*args, concurrency=concurrency)
        await self.wait_ready()

    async def wait_ready(self) -> None:
        async def answers() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{self.base}/dead-letters") as answer,
                ):
                    return answer.status == 200
            return False

        await self.wait(answers, "the app to answer")

    async def wait(self, condition: Any, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + 60
        await wait_until(condition, deadline=deadline, what=what, check=self.check_alive,
                         explain=self.describe)  # fmt: skip

    def check_alive(self) -> None:
        for proc, output in self.started:
            if proc.returncode is not None and proc.pid not in self.ended:
                pytest.fail(f"exited {proc.returncode}:\n{output.read_text()}")

    def describe(self) -> str:
        lines = [f"journal: {journal_states(self.journal)}"]
        lines += [f"receiver verified {sorted(self.receiver.verified)}"]
        for proc, output in self.started:
            lines += [
                f"pid {proc.pid} ({proc.returncode}):",
                *output.read_text().splitlines()[-20:],
            ]
        return "\n".join(lines)

    async def refuses_connections(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return True
        writer.close()
        return False

    async def post(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.post(f"{self.base}{path}") as answer:
            return answer.status, await answer.json()

    async def get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base}{path}") as answer:
            return await answer.json()

    async def terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM, and check that the process stopped gracefully."""
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await self.stopped(proc)

    async def stopped(self, proc: asyncio.subprocess.Process) -> None:
        self.ended.add(proc.pid)
        status = await proc.wait()
        output = {p.pid: o for p, o in self.started}[proc.pid].read_text()
        if "Uvicorn running on" in output:
            # uvicorn re-raises the signal once it has shut down gracefully (its
            # supervisor of --workers exits 0); every server process shut down.
            assert status in (0, -signal.SIGTERM), output
            servers = output.count("Started server process")
            assert output.count("Application shutdown complete") == servers, output
        else:
            assert status == 0, output

    async def close(self) -> None:
        for proc, _ in self.started:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()


@pytest.fixture
async def processes(tmp_path: Path, receiver: SignedReceiver) -> AsyncIterator[Processes]:
    running = Processes(tmp_path, receiver)
    try:
        yield running
    finally:
        await running.close()


@pytest.mark.parametrize("kind", ["fastapi", "aiohttp"])
async def test_a_post_ends_as_a_verified_signed_webhook_and_a_refusal_as_a_dead_letter(
    processes: Processes, receiver: SignedReceiver, kind: str
) -> None:
    await processes.start_app(kind)
    status, answer = await processes.post("/deals/1/won")
    assert status == 202
    assert isinstance(answer["job"], int)
    await processes.wait(lambda: receiver.verified == [1], "the signed webhook")
    status, _ = await processes.post(f"/deals/{NO_SUCH_DEAL}/won")
    assert status == 202

    async def dead_letter_shown() -> bool:
        return bool(await processes.get("/dead-letters"))

    await processes.wait(dead_letter_shown, "the dead letter")
    (dead,) = await processes.get("/dead-letters")
    assert dead["destination"] == "partner"
    assert dead["error"].startswith("HttpRejected: HTTP 404 Not Found from POST ")
    assert dead["error"].endswith(": no such deal")
    assert receiver.unverified == 0
    (proc, _) = processes.started[0]
    await processes.terminate(proc)


@pytest.mark.parametrize("kind", ["fastapi", "aiohttp"])
async def test_sigterm_to_the_app_loses_no_job(
    processes: Processes, receiver: SignedReceiver, kind: str
) -> None:
    receiver.gate.clear()  # the receiver holds the first webhooks: the app is mid-delivery
    await processes.start_app(kind, concurrency=4)
    deals = list(range(100, 120))
    for deal in deals:
        status, _ = await processes.post(f"/deals/{deal}/won")
        assert status == 202
    await asyncio.wait_for(receiver.held.wait(), timeout=30)
    proc, _ = processes.started[0]
    proc.send_signal(signal.SIGTERM)
    # Both servers close their listening socket before they stop the queue: open the
    # gate only then, so the app cannot deliver everything before it sees the signal
    # (uvicorn looks at its exit flag every 0.1 s).
    await processes.wait(processes.refuses_connections, "the app to stop listening")
    receiver.gate.set()  # the webhooks in flight finish; the rest stay in the journal
    async with asyncio.timeout(30):
        await processes.stopped(proc)
    states = journal_states(processes.journal)
    assert sum(states.values()) == len(deals)
    assert set(states) <= {"succeeded", "pending"}, states  # nothing lost, nothing stuck
    assert states.get("pending", 0) > 0  # SIGTERM came before the last was delivered
    await processes.start_app(kind)  # the next start delivers the rest
    await processes.wait(lambda: set(receiver.verified) == set(deals), "every webhook")
    assert receiver.unverified == 0


async def test_uvicorn_workers_as_producers_and_a_separate_asyncq_worker(
    processes: Processes, receiver: SignedReceiver
) -> None:
    await processes.start_app("fastapi", concurrency=0, workers=2)  # they only submit
    worker = await processes.start("-m", "asyncq.cli", "worker", "examples.fastapi_app:queue")
    deals = list(range(200, 212))
    answers = await asyncio.gather(*(processes.post(f"/deals/{d}/won") for d in deals))
    assert [status for status, _ in answers] == [202] * len(deals)
    # Only the worker process runs jobs: every delivery came from it.
    await processes.wait(lambda: sorted(receiver.verified) == deals, "every webhook")
    assert receiver.unverified == 0
    await processes.terminate(worker)
    app, _ = processes.started[0]
    await processes.terminate(app)
    assert journal_states(processes.journal) == {"succeeded": len(deals)}
