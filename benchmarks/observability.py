"""What metrics and traces cost: throughput with nothing attached, with
`asyncq.contrib.prometheus`, and with `asyncq.contrib.otel`, in alternating runs.

    python benchmarks/observability.py                   # 5 rounds of every mode and workload
    python benchmarks/observability.py --rounds 3 --workloads noop http
    python benchmarks/observability.py --instructions    # CPU instructions per job (valgrind)

Modes: `off` (nothing attached), `prometheus` (`QueueMetrics` in its own registry,
refreshing the journal's figures every 5 s), `otel` (`QueueTracing` with the
OpenTelemetry SDK: a `TracerProvider` and a `BatchSpanProcessor` whose exporter
drops the spans, its queue large enough to drop none), `otel-10%` (the same, sampling a
tenth of the traces: `ParentBased(TraceIdRatioBased(0.1))`), and `otel-api`
(`QueueTracing` with the API alone, no SDK: no spans, only the trace context carried
by each job from the producer's span, a remote one here, to the handler).

Workloads, each on a fresh on-disk journal, `concurrency=64`:
- `noop`: `submit_many` of N no-op jobs into a running queue, time until all
  succeeded. The worst case: the job does nothing, so all the cost is overhead.
- `submits`: 200 producers, each awaiting `submit` of its share, one at a time,
  inside one span each (in the otel modes: each submit captures the context).
- `http`: N jobs, each a real HTTP POST (aiohttp, one shared session) to a server
  on 127.0.0.1 in another process: an outbound call, as asyncq's jobs are.

Every run is a fresh subprocess; the modes alternate within each round (and the
order reverses every other round), so drift on a shared machine hits all alike.
Each run gives jobs per second of wall-clock time and CPU microseconds per job
(the process's user and system time over the timed part, every thread): on a
machine shared with other work, the CPU time moves much less than the wall-clock
rate. Each run's figures are printed, then the medians and their change from `off`.

`--instructions` counts instead: each mode's workload under valgrind's callgrind,
with N jobs and with about N/10, every thread of the process; the difference divided by
the difference in jobs is CPU instructions per job, the same from run to run
(the http workload counts the client's side only: the receiver is another process).
Counted, `prometheus` refreshes the journal's figures once, at the start (in both runs:
it cancels out), not every 5 s: under valgrind a run lasts about 50 times longer, more
on a loaded machine, so refreshes every 5 s of the clock would be charged to 50 times
fewer jobs than in a real run, and the count would move with the load. A refresh costs
what `queue.stats()` does (about a million instructions, 90 us of CPU), every 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asyncq import Queue  # noqa: E402 - after the path: this checkout's asyncq
from asyncq.testing import run_until_idle  # noqa: E402

MODES = ("off", "prometheus", "otel", "otel-10%", "otel-api")
WORKLOADS = ("noop", "submits", "http")
SIZES = {"noop": 20_000, "submits": 10_000, "http": 4_000}
PRODUCERS = 200
CONCURRENCY = 64
CHILD_LIMIT = 300.0
# Set in the children that valgrind counts (see the module's docstring).
COUNTING = "ASYNCQ_OBSERVABILITY_COUNTING"


# -- in the child: one run -------------------------------------------------------


def instrument(queue: Queue, mode: str) -> Any:
    """Attach what `mode` names; the tracer for the producers' spans (or None)."""
    if mode == "prometheus":
        from prometheus_client import CollectorRegistry

        from asyncq.contrib.prometheus import QueueMetrics

        counting = os.environ.get(COUNTING) == "1"
        QueueMetrics(queue, registry=CollectorRegistry(), interval=3600.0 if counting else 5.0)
        return None
    if mode in ("otel", "otel-10%"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

        from asyncq.contrib.otel import QueueTracing

        class Dropped(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        sampler = ParentBased(TraceIdRatioBased(0.1)) if mode == "otel-10%" else ALWAYS_ON
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(Dropped(), max_queue_size=1 << 17))
        QueueTracing(queue, tracer_provider=provider)
        return provider.get_tracer("bench")
    if mode == "otel-api":
        from asyncq.contrib.otel import QueueTracing

        QueueTracing(queue)  # the API's own provider: no SDK, nothing recorded
        return Incoming()
    return None


class Incoming:
    """In the otel-api mode, the producers' span: a request that came in with a
    `traceparent` (without an SDK, its context is still carried by each job)."""

    def start_as_current_span(self, name: str) -> Any:
        import random

        from opentelemetry import trace

        ids = random.getrandbits(128), random.getrandbits(64)
        context = trace.SpanContext(*ids, is_remote=True, trace_flags=trace.TraceFlags(1))
        return trace.use_span(trace.NonRecordingSpan(context))


def cpu_seconds() -> float:
    """User and system time of this process so far, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_noop(path: str, mode: str, n: int) -> tuple[float, float]:
    done = asyncio.Event()
    count = 0
    queue = Queue(path, concurrency=CONCURRENCY)
    instrument(queue, mode)

    @queue.task(name="noop")
    async def noop(i: int) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async with queue:
        start, cpu = time.perf_counter(), cpu_seconds()
        await noop.submit_many([{"i": i} for i in range(n)])
        await done.wait()
        await run_until_idle(queue, timeout=CHILD_LIMIT)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        assert (await queue.stats()).succeeded == n
    return n / elapsed, cpu / n * 1e6


async def run_submits(path: str, mode: str, n: int) -> tuple[float, float]:
    done = asyncio.Event()
    count = 0
    queue = Queue(path, concurrency=CONCURRENCY)
    tracer = instrument(queue, mode)

    @queue.task(name="noop")
    async def noop(i: int) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async def producer(first: int, share: int) -> None:
        span = contextlib.nullcontext() if tracer is None else tracer.start_as_current_span("req")
        with span:
            for i in range(first, first + share):
                await noop.submit(i)

    share = n // PRODUCERS  # n is a multiple of PRODUCERS (see `report`)
    async with queue:
        start, cpu = time.perf_counter(), cpu_seconds()
        await asyncio.gather(*(producer(p * share, share) for p in range(PRODUCERS)))
        await done.wait()
        await run_until_idle(queue, timeout=CHILD_LIMIT)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        assert (await queue.stats()).succeeded == n
    return n / elapsed, cpu / n * 1e6


async def run_http(path: str, mode: str, n: int, port: int) -> tuple[float, float]:
    import aiohttp

    done = asyncio.Event()
    count = 0

    @contextlib.asynccontextmanager
    async def session(queue: Queue) -> AsyncIterator[dict[str, object]]:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as http:
            yield {"http": http}

    queue = Queue(path, concurrency=CONCURRENCY, lifespan=session)
    instrument(queue, mode)
    url = f"http://127.0.0.1:{port}/hooks"

    @queue.task(name="post")
    async def post(i: int) -> int:
        nonlocal count
        from asyncq import current_job

        http: aiohttp.ClientSession = current_job().state["http"]  # type: ignore[assignment]
        async with http.post(url, json={"i": i}) as answer:
            await answer.read()
            status = answer.status
        count += 1
        if count == n:
            done.set()
        return status

    async with queue:
        start, cpu = time.perf_counter(), cpu_seconds()
        await post.submit_many([{"i": i} for i in range(n)])
        await done.wait()
        await run_until_idle(queue, timeout=CHILD_LIMIT)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        assert (await queue.stats()).succeeded == n
    return n / elapsed, cpu / n * 1e6


def one(mode: str, workload: str, n: int, port: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="asyncq-obs-") as directory:
        path = os.path.join(directory, "journal.db")
        if workload == "noop":
            return asyncio.run(run_noop(path, mode, n))
        if workload == "submits":
            return asyncio.run(run_submits(path, mode, n))
        return asyncio.run(run_http(path, mode, n, port))


# -- the receiver of the http workload ------------------------------------------------


def serve(port: int) -> None:
    from aiohttp import web

    async def hooks(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks", hooks)
    print("serving", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the parent: alternate and report ---------------------------------------------------


def child(mode: str, workload: str, n: int, port: int) -> tuple[float, float]:
    command = [sys.executable, __file__, "--one", mode, workload, str(n), str(port)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_LIMIT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} {workload} failed:\n{out.stderr}")
    rate, cpu_us = json.loads(out.stdout.strip().splitlines()[-1])
    return float(rate), float(cpu_us)


def fewer(n: int) -> int:
    """The smaller run of `--instructions`: about a tenth, a multiple of PRODUCERS."""
    return max(PRODUCERS, n // 10) // PRODUCERS * PRODUCERS


def instructions(mode: str, workload: str, n: int, port: int) -> float:
    """CPU instructions per job, every thread (see the module's docstring)."""
    totals = []
    small = fewer(n)
    for jobs in (n, small):
        with tempfile.TemporaryDirectory(prefix="asyncq-obs-") as directory:
            out = Path(directory) / "callgrind.out"
            command = [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--one",
                mode,
                workload,
                str(jobs),
                str(port),
            ]
            environment = {**os.environ, COUNTING: "1"}
            subprocess.run(command, check=True, capture_output=True, timeout=3600, env=environment)
            total = 0
            for part in Path(directory).glob("callgrind.out-*"):
                found = re.search(r"^summary: (\d+)", part.read_text(), re.M)
                total += int(found[1]) if found else 0
            totals.append(total)
    return (totals[0] - totals[1]) / (n - small)


def machine() -> str:
    import sqlite3

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
        if names:
            cpu = names[0]
    return (
        f"{cpu}, {os.cpu_count()} cores, CPython {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def report(
    workloads: Sequence[str], modes: Sequence[str], rounds: int, scale: float, count: bool
) -> None:
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}")
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    how = "instructions counted" if count else f"{rounds} rounds, modes alternating"
    print(f"asyncq at {git.stdout.strip() or '?'}; {how}\n")
    port = free_port()
    server = None
    if "http" in workloads:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        server.stdout.readline()  # "serving"
        time.sleep(0.5)  # the listener binds after the line
    try:
        for workload in workloads:
            n = max(PRODUCERS, int(SIZES[workload] * scale)) // PRODUCERS * PRODUCERS
            if count:
                print(f"{workload} ({n:,} and {fewer(n):,} jobs): CPU instructions per job")
                counted = {}
                for mode in modes:
                    counted[mode] = instructions(mode, workload, n, port)
                    change = (counted[mode] / counted["off"] - 1) * 100
                    print(
                        f"  {mode:<10} {counted[mode]:>12,.0f} ({change:+.1f} % vs off)", flush=True
                    )
                print()
                continue
            runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
            print(f"{workload} ({n:,} jobs): jobs/s and CPU us/job per run, in the order run")
            for r in range(rounds):
                order = modes if r % 2 == 0 else tuple(reversed(modes))
                line = []
                for mode in order:
                    rate, cpu_us = child(mode, workload, n, port)
                    runs[mode].append((rate, cpu_us))
                    line.append(f"{mode} {rate:,.0f} {cpu_us:.1f}")
                print(f"  round {r + 1}: " + ", ".join(line), flush=True)
            base_rate = statistics.median(rate for rate, _ in runs["off"])
            base_cpu = statistics.median(cpu for _, cpu in runs["off"])
            for mode in modes:
                rate = statistics.median(r for r, _ in runs[mode])
                cpu = statistics.median(c for _, c in runs[mode])
                rate_change = (rate / base_rate - 1) * 100
                cpu_change = (cpu / base_cpu - 1) * 100
                print(
                    f"  median {mode:<10} {rate:>9,.0f} jobs/s ({rate_change:+5.1f} %)"
                    f"  {cpu:>7.1f} CPU us/job ({cpu_change:+5.1f} %)"
                )
            print()
    finally:
        if server is not None:
            server.terminate()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every N")
    parser.add_argument(
        "--instructions", action="store_true", help="count CPU instructions (valgrind)"
    )
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    elif args.one:
        mode, workload, n, port = args.one
        print(json.dumps(one(mode, workload, int(n), int(port))))
    else:
        modes = list(args.modes)
        if "off" not in modes:
            modes.insert(0, "off")
        report(args.workloads, modes, args.rounds, args.scale, args.instructions)


if __name__ == "__main__":
    main()
