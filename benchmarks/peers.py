"""asyncq side by side with peer job queues, on the same four workloads.

    python benchmarks/peers.py             # full: 3 runs per figure, under 20 minutes
    python benchmarks/peers.py --quick     # 1 run per figure, smaller N, about 3 minutes
    python benchmarks/peers.py --peers asyncq,huey   # a subset
    python benchmarks/peers.py --out DIR   # where peers-latest.{txt,md,png} go
                                           # (default: benchmarks/results)

The peers are installed from benchmarks/requirements-peers.txt into a venv of
their own, kept out of asyncq's dependencies:

    python3 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install -e . -r benchmarks/requirements-peers.txt
    /tmp/peers-venv/bin/python benchmarks/peers.py

Workloads (N is for the full run; --quick uses smaller ones):

- W1 drain: N no-op jobs enqueued (the peer's batch call where it has one),
  then the workers start; enqueue jobs/s, processing jobs/s, total time.
- W2 steady: 50 producer coroutines submit one job at a time while the workers
  run (a synchronous client is called through `asyncio.to_thread`); jobs/s and
  submit->handler-start latency p50/p99.
- W3 paced: N jobs limited to 100/s with the peer's own limiter where it has
  one ("none" otherwise: then it runs unlimited); achieved rate and the most
  handler starts in any 1-second window.
- W4 crash: N jobs enqueued, a worker process SIGKILLed once 40% have started,
  then a fresh worker process; every handler call appends the job id to a file
  with one O_APPEND write, and the file is compared with the submitted ids.

Fairness: every measurement is a fresh process on a fresh database (SQLite
file, PostgreSQL database or Redis db), the workers run in the producer's
process (asyncq's model), and processing time runs until the peer's own
backend reports no job left unfinished (buffered acks must have landed).
Each figure is the median of the runs with [min-max].
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import load_average, machine_info, remove_journal

CONCURRENCY = 50
PRODUCERS = 50
POLL_S = 0.002  # how often the harness looks whether a workload is done
RATE = 100.0  # W3 limit, jobs/s
CRASH_WORK_S = 0.005  # W4 handler time, so that jobs are in flight when the worker dies
KILL_AT = 0.4  # W4: SIGKILL once this fraction of the jobs has started
STALL_S = 8.0  # W4: the restarted worker gives up after this long without progress
LEASE_S = 2.0  # W4: asyncq lease / pgqueuer heartbeat timeout, so recovery fits the run
CHILD_LIMIT = 180.0
PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "asyncq_peers"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 9
TASK = "noop"
Figures = dict[str, float]


@dataclass(frozen=True)
class Sizes:
    runs: int
    drain: int
    steady: int
    paced: int
    crash: int


FULL = Sizes(runs=3, drain=10_000, steady=5_000, paced=1_000, crash=2_000)
QUICK = Sizes(runs=1, drain=2_000, steady=1_000, paced=300, crash=500)


# -- what every handler does --------------------------------------------------------


class Recorder:
    """Counts handler calls and their start times; safe from worker threads (GIL)."""

    def __init__(self, runs_file: str | None = None, work: float = 0.0) -> None:
        self.starts: list[float] = []
        self.latencies: list[float] = []
        self.work = work
        self.fd = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if runs_file else -1

    def record(self, i: int, t: float) -> None:
        now = time.perf_counter()
        self.starts.append(now)
        self.latencies.append(now - t)
        if self.fd >= 0:
            os.write(self.fd, b"%d\n" % i)

    async def run_async(self, i: int, t: float) -> None:
        self.record(i, t)
        if self.work:
            await asyncio.sleep(self.work)

    def run_sync(self, i: int, t: float) -> None:
        self.record(i, t)
        if self.work:
            time.sleep(self.work)

    @property
    def count(self) -> int:
        return len(self.starts)


# -- one adapter per queue, all with the same interface -----------------------------


class Adapter:
    """A queue under test. Subclasses fill in the class attributes and the methods."""

    name = ""
    backend = ""
    durability = ""
    delivery = ""
    concurrency = ""
    limiter = "none"
    modules: tuple[str, ...] = ()
    server: tuple[str, int] | None = None
    sync_client = False  # submit() blocks: producers call it through a thread
    worker: asyncio.Task[Any] | None = None  # the in-process worker, where it is a task

    def __init__(self, ctx: dict[str, Any], rec: Recorder, rate: float | None) -> None:
        self.ctx = ctx
        self.rec = rec
        self.rate = rate if self.limiter != "none" else None

    async def reset(self) -> None:
        """Make the backend fresh: a new file, database or Redis db."""

    async def open(self) -> None:
        """Connect and register the no-op task."""

    async def enqueue_many(self, ids: list[int]) -> None:
        """Enqueue `ids`: one `put` each; a peer with a batch call overrides this."""
        t = time.perf_counter()
        for i in ids:
            self.put(i, t)

    async def submit(self, i: int) -> None:
        """Submit one job, stamped with the time of the call."""
        self.put(i, time.perf_counter())

    def put(self, i: int, t: float) -> None:
        """A synchronous client's submit (`sync_client`), called from producer threads."""
        raise NotImplementedError

    async def start(self) -> None:
        """Start the workers in this process."""

    async def stop(self) -> None:
        """Stop the workers."""

    async def remaining(self) -> int:
        """Jobs the backend does not yet report finished."""
        raise NotImplementedError

    async def close(self) -> None:
        pass

    @classmethod
    def versions(cls) -> str:
        return ", ".join(f"{m} {metadata.version(m)}" for m in cls.modules)


class SqliteFileAdapter(Adapter):
    """A peer whose whole state is one SQLite file (and its -wal, -shm)."""

    async def reset(self) -> None:
        remove_journal(self.ctx["path"])


class AsyncqAdapter(SqliteFileAdapter):
    name = "asyncq"
    backend = "SQLite file"
    durability = "WAL, synchronous=NORMAL: survives kill -9, not power loss"
    delivery = "at-least-once (lease)"
    concurrency = "Queue(concurrency=50)"
    limiter = "destination Rate(100, per=1, burst=1)"
    modules = ("asyncq",)

    async def open(self) -> None:
        from asyncq import Queue, Rate

        self.queue = Queue(self.ctx["path"], concurrency=CONCURRENCY, lease=LEASE_S)
        if self.rate:
            self.queue.destination("api", rate=Rate(self.rate, per=1, burst=1))
        rec = self.rec

        @self.queue.task(name=TASK, destination="api")
        async def noop(i: int, t: float) -> None:
            await rec.run_async(i, t)

        self.task = noop
        self.producer = Queue(self.ctx["path"], concurrency=0)
        self.producer.task(name=TASK, destination="api")(_stub)
        await self.producer.__aenter__()

    async def enqueue_many(self, ids: list[int]) -> None:
        t = time.perf_counter()
        await self.producer.submit_many(TASK, [{"i": i, "t": t} for i in ids])

    async def submit(self, i: int) -> None:
        await self.target.submit(TASK, i=i, t=time.perf_counter())

    @property
    def target(self) -> Any:
        return self.queue if self.started else self.producer

    started = False

    async def start(self) -> None:
        await self.queue.__aenter__()
        self.started = True

    async def stop(self) -> None:
        if self.started:
            await self.queue.__aexit__(None, None, None)
            self.started = False

    async def remaining(self) -> int:
        stats = await self.target.stats()
        # Claimed jobs count too: a killed worker's prefetch, held until its lease ends.
        return sum(d.pending + d.claimed + d.running for d in stats.destinations.values())

    async def close(self) -> None:
        await self.producer.__aexit__(None, None, None)


async def _stub(i: int, t: float) -> None:
    """The producer-side registration of asyncq's task (a producer runs nothing)."""


class HueyAdapter(SqliteFileAdapter):
    name = "huey"
    backend = "SQLite file (SqliteHuey)"
    durability = "WAL, synchronous=FULL (SQLite default): fsync per commit"
    delivery = "at-most-once: a job is deleted when taken"
    concurrency = "consumer workers=50, threads; poll 10-100 ms (default 0.1-10 s)"
    modules = ("huey",)
    sync_client = True

    async def open(self) -> None:
        from huey import SqliteHuey

        self.huey = SqliteHuey(filename=self.ctx["path"], results=False)
        rec = self.rec

        @self.huey.task(name=TASK)
        def noop(i: int, t: float) -> None:
            rec.run_sync(i, t)

        self.task = noop

    def put(self, i: int, t: float) -> None:
        self.task(i, t)

    async def start(self) -> None:
        self.consumer = self.huey.create_consumer(
            workers=CONCURRENCY,
            worker_type="thread",
            periodic=False,
            initial_delay=0.01,
            backoff=1.15,
            max_delay=0.1,
        )
        self.consumer.start()

    async def stop(self) -> None:
        self.consumer.stop(graceful=True)

    async def remaining(self) -> int:
        return int(self.huey.pending_count())


class ThreadWorkers:
    """`CONCURRENCY` threads that run `step` until stopped (for libraries without workers)."""

    def __init__(self, step: Callable[[], bool]) -> None:
        self.step = step
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(CONCURRENCY)]

    def loop(self) -> None:
        while not self.stopping.is_set():
            if not self.step():
                time.sleep(0.01)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()


class PersistQueueAdapter(Adapter):
    name = "persist-queue"
    backend = "SQLite file (SQLiteAckQueue)"
    durability = "WAL, synchronous=FULL (SQLite default), auto_commit: fsync per commit"
    delivery = "at-least-once (unacked resumed at open)"
    concurrency = "50 threads sharing one queue object (no knob)"
    modules = ("persist-queue",)
    sync_client = True

    async def reset(self) -> None:
        import shutil

        shutil.rmtree(self.ctx["path"], ignore_errors=True)

    async def open(self) -> None:
        from persistqueue import SQLiteAckQueue

        self.queue = SQLiteAckQueue(self.ctx["path"], multithreading=True, auto_commit=True)

    def put(self, i: int, t: float) -> None:
        self.queue.put((i, t))

    def step(self) -> bool:
        from persistqueue import Empty

        try:
            item = self.queue.get(block=False)
        except Empty:
            return False
        self.rec.run_sync(*item)
        self.queue.ack(item)
        return True

    async def start(self) -> None:
        self.workers = ThreadWorkers(self.step)
        self.workers.start()

    async def stop(self) -> None:
        self.workers.stop()

    async def remaining(self) -> int:
        return int(self.queue.ready_count() + self.queue.unack_count())


class LitequeueAdapter(SqliteFileAdapter):
    name = "litequeue"
    backend = "SQLite file"
    durability = "WAL, synchronous=NORMAL: survives kill -9, not power loss"
    delivery = "taken jobs stay LOCKED until the app calls retry()"
    concurrency = "50 threads sharing one LiteQueue, poll 10 ms (no workers)"
    modules = ("litequeue",)
    sync_client = True

    async def open(self) -> None:
        from litequeue import LiteQueue

        self.queue = LiteQueue(self.ctx["path"])
        self.lock = threading.Lock()  # one sqlite3 connection: one statement at a time

    def put(self, i: int, t: float) -> None:
        with self.lock:
            self.queue.put(json.dumps([i, t]))

    def step(self) -> bool:
        with self.lock:
            message = self.queue.pop()
        if message is None:
            return False
        self.rec.run_sync(*json.loads(message.data))
        with self.lock:
            self.queue.done(message.message_id)
        return True

    async def start(self) -> None:
        self.workers = ThreadWorkers(self.step)
        self.workers.start()

    async def stop(self) -> None:
        self.workers.stop()

    async def remaining(self) -> int:
        with self.lock:
            return int(self.queue.qsize())


def pg_dsn(db: str = PG_DB) -> str:
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{db}"


async def fresh_pg_database() -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(pg_dsn("postgres"), autocommit=True) as conn:
        await conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {PG_DB}")


PG_DURABILITY = "PostgreSQL fsync=on, synchronous_commit=on: WAL flush per commit"


class ProcrastinateAdapter(Adapter):
    name = "procrastinate"
    backend = "PostgreSQL"
    durability = PG_DURABILITY
    delivery = "killed worker's jobs stay 'doing' until the app retries stalled jobs"
    concurrency = "worker concurrency=50, LISTEN/NOTIFY"
    modules = ("procrastinate", "psycopg")

    async def reset(self) -> None:
        await fresh_pg_database()
        await self.make_app()
        async with self.app.open_async():
            await self.app.schema_manager.apply_schema_async()

    async def make_app(self) -> None:
        import procrastinate

        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=pg_dsn()))
        rec = self.rec

        @self.app.task(name=TASK)
        async def noop(i: int, t: float) -> None:
            await rec.run_async(i, t)

        self.task = noop

    async def open(self) -> None:
        import psycopg

        await self.make_app()
        await self.app.open_async()
        self.conn = await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True)

    async def enqueue_many(self, ids: list[int]) -> None:
        t = time.perf_counter()
        await self.task.batch_defer_async(*({"i": i, "t": t} for i in ids))

    async def submit(self, i: int) -> None:
        await self.task.defer_async(i=i, t=time.perf_counter())

    async def start(self) -> None:
        self.worker = asyncio.create_task(
            self.app.run_worker_async(concurrency=CONCURRENCY, install_signal_handlers=False)
        )

    async def stop(self) -> None:
        self.worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.worker

    async def remaining(self) -> int:
        cursor = await self.conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        await self.conn.close()
        await self.app.close_async()


class PgqueuerAdapter(Adapter):
    name = "pgqueuer"
    backend = "PostgreSQL"
    durability = PG_DURABILITY
    delivery = (
        f"at-least-once: stale jobs re-picked (heartbeat_timeout={LEASE_S:g} s and "
        f"dequeue_timeout={LEASE_S:g} s; defaults 30 s)"
    )
    concurrency = "max_concurrent_tasks=50, batch_size=10, LISTEN/NOTIFY"
    modules = ("pgqueuer", "asyncpg")

    async def reset(self) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        await fresh_pg_database()
        conn = await asyncpg.connect(pg_dsn())
        await Queries(AsyncpgDriver(conn)).install()
        await conn.close()

    async def open(self) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries, QueueManager

        self.conn = await asyncpg.connect(pg_dsn())
        self.queries = Queries(AsyncpgDriver(self.conn))
        self.worker_conn = await asyncpg.connect(pg_dsn())
        self.manager = QueueManager(Queries(AsyncpgDriver(self.worker_conn)))
        rec = self.rec

        async def noop(job: Any) -> None:
            i, t = json.loads(job.payload)
            await rec.run_async(i, t)

        self.manager.entrypoint(TASK)(noop)

    async def enqueue_many(self, ids: list[int]) -> None:
        t = time.perf_counter()
        payloads = [json.dumps([i, t]).encode() for i in ids]
        await self.queries.enqueue([TASK] * len(ids), payloads, [0] * len(ids))

    async def submit(self, i: int) -> None:
        await self.queries.enqueue(TASK, json.dumps([i, time.perf_counter()]).encode())

    async def start(self) -> None:
        from datetime import timedelta

        self.worker = asyncio.create_task(
            self.manager.run(
                max_concurrent_tasks=CONCURRENCY,
                heartbeat_timeout=timedelta(seconds=LEASE_S),
                dequeue_timeout=timedelta(seconds=LEASE_S),
            )
        )

    async def stop(self) -> None:
        self.manager.shutdown.set()
        await asyncio.wait_for(self.worker, 30)

    async def remaining(self) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM pgqueuer"))

    async def close(self) -> None:
        await self.conn.close()
        if not self.worker_conn.is_closed():
            await self.worker_conn.close()


REDIS_DURABILITY = "this Redis: --save '' --appendonly no: NOT durable (memory only)"


async def flush_redis() -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    await client.flushdb()
    await client.aclose()


class ArqAdapter(Adapter):
    name = "arq"
    backend = "Redis"
    durability = REDIS_DURABILITY
    delivery = f"re-run after the in-progress key expires (job_timeout={LEASE_S:g} s + 10 s)"
    concurrency = f"max_jobs=50, poll_delay=0.01 s (default 0.5 s), job_timeout={LEASE_S:g} s"
    modules = ("arq", "redis")
    server = (REDIS_HOST, REDIS_PORT)

    async def reset(self) -> None:
        await flush_redis()

    async def open(self) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self.settings = RedisSettings(host=REDIS_HOST, port=REDIS_PORT, database=REDIS_DB)
        self.redis = await create_pool(self.settings)

    async def enqueue_many(self, ids: list[int]) -> None:
        t = time.perf_counter()
        for i in ids:
            await self.redis.enqueue_job(TASK, i, t)

    async def submit(self, i: int) -> None:
        await self.redis.enqueue_job(TASK, i, time.perf_counter())

    async def start(self) -> None:
        from arq.worker import Worker, func

        rec = self.rec

        async def noop(ctx: Any, i: int, t: float) -> None:
            await rec.run_async(i, t)

        self.arq_worker = Worker(
            functions=[func(noop, name=TASK)],
            redis_settings=self.settings,
            max_jobs=CONCURRENCY,
            poll_delay=0.01,
            handle_signals=False,
            job_timeout=LEASE_S,
        )
        self.worker = asyncio.create_task(self.arq_worker.async_run())

    async def stop(self) -> None:
        self.worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.worker
        await self.arq_worker.close()

    async def remaining(self) -> int:
        queued = await self.redis.zcard("arq:queue")
        running = len(await self.redis.keys("arq:in-progress:*"))
        return int(queued + running)

    async def close(self) -> None:
        await self.redis.aclose()


class SaqAdapter(Adapter):
    name = "saq-redis"
    backend = "Redis"
    durability = REDIS_DURABILITY
    delivery = "killed jobs swept after timeout (10 s) by a 60 s sweep; retries=1: aborted"
    concurrency = "Worker(concurrency=50)"
    modules = ("saq", "redis")
    server = (REDIS_HOST, REDIS_PORT)
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"

    async def reset(self) -> None:
        await flush_redis()

    async def open(self) -> None:
        from saq import Queue

        self.queue = Queue.from_url(self.url)
        await self.queue.connect()

    async def enqueue_many(self, ids: list[int]) -> None:
        t = time.perf_counter()
        for i in ids:
            await self.queue.enqueue(TASK, i=i, t=t)

    async def submit(self, i: int) -> None:
        await self.queue.enqueue(TASK, i=i, t=time.perf_counter())

    async def start(self) -> None:
        from saq import Worker

        rec = self.rec

        async def noop(ctx: Any, *, i: int, t: float) -> None:
            await rec.run_async(i, t)

        self.saq_worker = Worker(self.queue, functions=[(TASK, noop)], concurrency=CONCURRENCY)
        self.worker = asyncio.create_task(self.saq_worker.start())

    async def stop(self) -> None:
        await self.saq_worker.stop()
        self.worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.worker

    async def remaining(self) -> int:
        return int(await self.queue.count("incomplete"))

    async def close(self) -> None:
        await self.queue.disconnect()


class SaqPostgresAdapter(SaqAdapter):
    name = "saq-pg"
    backend = "PostgreSQL"
    durability = PG_DURABILITY
    modules = ("saq", "psycopg")
    server = (PG_HOST, PG_PORT)
    url = pg_dsn()

    async def reset(self) -> None:
        await fresh_pg_database()


class AsyncqPostgresAdapter(AsyncqAdapter):
    """asyncq's PostgreSQL journal, on the server and database the PostgreSQL peers use."""

    name = "asyncq-pg"
    backend = "PostgreSQL"
    durability = PG_DURABILITY
    delivery = "at-least-once (lease)"
    modules = ("asyncq", "asyncpg")

    def __init__(self, ctx: dict[str, Any], rec: Recorder, rate: float | None) -> None:
        super().__init__({**ctx, "path": pg_dsn()}, rec, rate)

    async def reset(self) -> None:
        await fresh_pg_database()


ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a
    for a in (
        AsyncqAdapter,
        AsyncqPostgresAdapter,
        HueyAdapter,
        PersistQueueAdapter,
        LitequeueAdapter,
        ProcrastinateAdapter,
        PgqueuerAdapter,
        ArqAdapter,
        SaqAdapter,
        SaqPostgresAdapter,
    )
}
for _a in (AsyncqPostgresAdapter, ProcrastinateAdapter, PgqueuerAdapter):
    _a.server = (PG_HOST, PG_PORT)
MODULE_IMPORTS = {"persist-queue": "persistqueue", "psycopg": "psycopg"}
NOT_RUN = {
    "celery": "skipped: not asyncio-native (sync tasks in separate prefork worker "
    "processes, so 'workers in the producer's process' cannot apply); its durable "
    "broker would be RabbitMQ (absent), the Redis here is not durable, and its "
    "SQLAlchemy transport is experimental",
}


# -- in the child process: one measurement ----------------------------------------


async def wait_done(adapter: Adapter, rec: Recorder, n: int) -> None:
    """Until every handler ran and the backend reports nothing unfinished."""
    # Both polls every 2 ms: a coarser poll adds up to its interval to every
    # figure, a visible part of a 10,000-job drain that takes 0.2 s.
    async with asyncio.timeout(CHILD_LIMIT - 20):
        while rec.count < n:
            check_worker(adapter)
            await asyncio.sleep(POLL_S)
        while await adapter.remaining() > 0:
            check_worker(adapter)
            await asyncio.sleep(POLL_S)


def check_worker(adapter: Adapter) -> None:
    """Raise the in-process worker's exception if it died (instead of waiting forever)."""
    if adapter.worker is not None and adapter.worker.done():
        adapter.worker.result()
        raise RuntimeError(f"{adapter.name} worker stopped early")


async def w1_drain(adapter: Adapter, rec: Recorder, n: int) -> Figures:
    await adapter.reset()
    await adapter.open()
    start = time.perf_counter()
    await adapter.enqueue_many(list(range(n)))
    enqueued = time.perf_counter()
    await adapter.start()
    await wait_done(adapter, rec, n)
    finished = time.perf_counter()
    await adapter.stop()
    await adapter.close()
    return {
        "enqueue_rate": n / (enqueued - start),
        "processing_rate": n / (finished - enqueued),
        "total_s": finished - start,
    }


async def w2_steady(adapter: Adapter, rec: Recorder, n: int) -> Figures:
    await adapter.reset()
    await adapter.open()
    await adapter.start()
    per_producer = n // PRODUCERS

    async def producer(first: int) -> None:
        for i in range(first, first + per_producer):
            if adapter.sync_client:
                await asyncio.to_thread(adapter.put, i, time.perf_counter())
            else:
                await adapter.submit(i)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for p in range(PRODUCERS):
            group.create_task(producer(p * per_producer))
    await wait_done(adapter, rec, per_producer * PRODUCERS)
    finished = time.perf_counter()
    await adapter.stop()
    await adapter.close()
    return {
        "rate": per_producer * PRODUCERS / (finished - start),
        "p50_ms": percentile(rec.latencies, 50) * 1e3,
        "p99_ms": percentile(rec.latencies, 99) * 1e3,
    }


async def w3_paced(adapter: Adapter, rec: Recorder, n: int) -> Figures:
    await adapter.reset()
    await adapter.open()
    await adapter.enqueue_many(list(range(n)))
    await adapter.start()
    await wait_done(adapter, rec, n)
    await adapter.stop()
    await adapter.close()
    starts = sorted(rec.starts)
    return {
        "rate": (n - 1) / (starts[-1] - starts[0]),
        "worst_window": float(worst_window(starts, 1.0)),
    }


def worst_window(starts: list[float], width: float) -> int:
    """The most starts in any window [t, t + width) over sorted `starts`."""
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while t - starts[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def w4_fill(adapter: Adapter, rec: Recorder, n: int) -> Figures:
    await adapter.reset()
    await adapter.open()
    await adapter.enqueue_many(list(range(n)))
    await adapter.close()
    return {}


async def w4_work(adapter: Adapter, rec: Recorder, n: int) -> Figures:
    """Work until the backend has nothing unfinished, or nothing happens for STALL_S."""
    await adapter.open()
    await adapter.start()
    last_count, last_change = -1, time.perf_counter()
    while True:
        left = await adapter.remaining()
        if left == 0:
            break
        if rec.count != last_count:
            last_count, last_change = rec.count, time.perf_counter()
        elif time.perf_counter() - last_change > STALL_S:
            break
        await asyncio.sleep(0.05)
    await adapter.stop()
    await adapter.close()
    return {"stuck": float(left)}


WORKLOADS = {
    "drain": w1_drain,
    "steady": w2_steady,
    "paced": w3_paced,
    "fill": w4_fill,
    "work": w4_work,
}


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def run_one(spec: str) -> None:
    """Child entry point: one workload on one peer; figures as one JSON line."""
    args = json.loads(spec)
    rec = Recorder(args.get("runs_file"), args.get("work", 0.0))
    adapter = ADAPTERS[args["peer"]](args, rec, RATE if args["workload"] == "paced" else None)
    try:
        figures = asyncio.run(WORKLOADS[args["workload"]](adapter, rec, args["n"]))
    except BaseException:  # noqa: BLE001 - printed, then this process exits with 1
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    print(json.dumps(figures), flush=True)
    os._exit(0)  # worker threads of the sync peers must not hold the exit


# -- in the parent process ------------------------------------------------------------


class ChildFailed(Exception):
    pass


def child_command(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, __file__, "--one", json.dumps(spec)]


def child(spec: dict[str, Any]) -> Figures:
    try:
        proc = subprocess.run(
            child_command(spec), capture_output=True, text=True, timeout=CHILD_LIMIT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ChildFailed(f"timed out after {CHILD_LIMIT:g} s") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise ChildFailed(f"exit {proc.returncode}: {last[:200]}")
    figures: Figures = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


def line_count(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def crash_run(peer: str, n: int, spec: dict[str, Any]) -> Figures:
    """W4: fill, start a worker, SIGKILL it mid-run, restart, compare runs with ids."""
    runs_file = Path(spec["path"] + ".runs")
    runs_file.unlink(missing_ok=True)
    child({**spec, "workload": "fill", "n": n})
    work = {**spec, "workload": "work", "n": n, "runs_file": str(runs_file), "work": CRASH_WORK_S}
    proc = subprocess.Popen(
        child_command(work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + CHILD_LIMIT
    while line_count(runs_file) < n * KILL_AT and proc.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = line_count(runs_file)
    restarted = child(work)
    ids = [int(x) for x in runs_file.read_text().split()]
    counts = collections.Counter(ids)
    runs_file.unlink(missing_ok=True)
    return {
        "lost": float(sum(1 for i in range(n) if counts[i] == 0)),
        "twice": float(sum(1 for c in counts.values() if c > 1)),
        "stuck": restarted["stuck"],
        "killed_after": float(killed_after),
    }


def unavailable(peer: str) -> str | None:
    """Why a peer cannot run here, or None."""
    cls = ADAPTERS[peer]
    for module in cls.modules:
        try:
            importlib.import_module(MODULE_IMPORTS.get(module, module))
        except ImportError as exc:
            return f"skipped: {module} not installed ({exc})"
    if cls.server:
        try:
            socket.create_connection(cls.server, timeout=1).close()
        except OSError as exc:
            return f"skipped: no server at {cls.server[0]}:{cls.server[1]} ({exc})"
    return None


WORKLOAD_ORDER = ("drain", "steady", "paced", "crash")
Results = dict[tuple[str, str], list[Figures]]
Errors = dict[tuple[str, str], str]


def run_all(peers: list[str], sizes: Sizes, directory: Path) -> tuple[Results, Errors]:
    """Every workload, `sizes.runs` times per peer, the peers interleaved within a run."""
    results: Results = {}
    errors: Errors = {}
    n_of = {"drain": sizes.drain, "steady": sizes.steady, "paced": sizes.paced}
    for workload in WORKLOAD_ORDER:
        for run in range(sizes.runs):
            for peer in peers:
                if (peer, workload) in errors:
                    continue
                path = str(directory / f"{peer}-{workload}-{run}.db")
                spec = {"peer": peer, "workload": workload, "path": path}
                try:
                    if workload == "crash":
                        figures = crash_run(peer, sizes.crash, spec)
                    else:
                        figures = child({**spec, "n": n_of[workload]})
                except (ChildFailed, OSError, ValueError) as exc:
                    errors[peer, workload] = f"failed: {exc}"
                    print(f"  {workload:<6} {peer:<14} run {run + 1}: FAILED {exc}", flush=True)
                    continue
                finally:
                    cleanup(path)
                results.setdefault((peer, workload), []).append(figures)
                shown = ", ".join(f"{k}={v:.4g}" for k, v in figures.items())
                print(f"  {workload:<6} {peer:<14} run {run + 1}: {shown}", flush=True)
    return results, errors


def cleanup(path: str) -> None:
    import shutil

    if Path(path).is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        remove_journal(path)


# -- the table, the chart, the markdown -------------------------------------------


@dataclass(frozen=True)
class Column:
    workload: str
    key: str
    label: str
    fmt: str


COLUMNS = (
    Column("drain", "enqueue_rate", "W1 enqueue/s", "{:,.0f}"),
    Column("drain", "processing_rate", "W1 process/s", "{:,.0f}"),
    Column("drain", "total_s", "W1 total s", "{:.2f}"),
    Column("steady", "rate", "W2 jobs/s", "{:,.0f}"),
    Column("steady", "p50_ms", "W2 p50 ms", "{:.1f}"),
    Column("steady", "p99_ms", "W2 p99 ms", "{:.1f}"),
    Column("paced", "rate", "W3 rate/s", "{:.1f}"),
    Column("paced", "worst_window", "W3 worst 1 s", "{:.0f}"),
    Column("crash", "lost", "W4 lost", "{:.0f}"),
    Column("crash", "twice", "W4 run twice", "{:.0f}"),
    Column("crash", "stuck", "W4 stuck", "{:.0f}"),
)
NOTES = (
    "W1/W2 jobs/s: median [min-max]; asyncq/peer: ratio of the medians (processing jobs/s).",
    "W3: the peers marked (no limiter) have none and run unlimited; 'worst 1 s' is the most",
    "    handler starts in any 1-second window, against the limit of 100.",
    "W4 lost: submitted ids that never ran; run twice: ids run more than once; stuck: jobs",
    "    the backend still held unfinished when the restarted worker had made no progress",
    f"    for {STALL_S:g} s (recoverable only as the delivery column says: after a longer",
    "    timeout, or by the app's own code). asyncq's re-runs are the jobs started but not yet",
    "    acknowledged at the kill: those in flight plus completions still in the group commit.",
)


def median(results: Results, peer: str, workload: str, key: str) -> float | None:
    runs = results.get((peer, workload))
    return statistics.median(r[key] for r in runs) if runs else None


def cell(results: Results, errors: Errors, peer: str, column: Column) -> str:
    runs = results.get((peer, column.workload))
    if not runs:
        return "skipped" if (peer, column.workload) not in errors else "failed"
    values = [r[column.key] for r in runs]
    text = column.fmt.format(statistics.median(values))
    if len(values) > 1 and min(values) != max(values):
        text += f" [{column.fmt.format(min(values))}-{column.fmt.format(max(values))}]"
    if column.workload == "paced" and ADAPTERS[peer].limiter == "none":
        text += " (no limiter)"
    return text


def render(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(t.ljust(w) for t, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def results_table(peers: list[str], results: Results, errors: Errors) -> list[list[str]]:
    rows = [["peer", *(c.label for c in COLUMNS), "W1 asyncq/peer", "W2 asyncq/peer"]]
    for peer in peers:
        row = [peer, *(cell(results, errors, peer, c) for c in COLUMNS)]
        for workload, key in (("drain", "processing_rate"), ("steady", "rate")):
            ours = median(results, "asyncq", workload, key)
            theirs = median(results, peer, workload, key)
            row.append(f"{ours / theirs:.1f}x" if ours and theirs else "-")
        rows.append(row)
    return rows


def settings_table(peers: list[str], skipped: dict[str, str]) -> list[list[str]]:
    rows = [["peer", "backend", "durability", "delivery", "concurrency", "W3 limiter"]]
    for peer in peers:
        a = ADAPTERS[peer]
        rows.append([peer, a.backend, a.durability, a.delivery, a.concurrency, a.limiter])
    return rows


def skipped_lines(skipped: dict[str, str]) -> list[str]:
    return [f"{peer}: {reason}" for peer, reason in skipped.items()]


def error_lines(errors: Errors) -> list[str]:
    return [f"  {peer} {workload}: {why}" for (peer, workload), why in errors.items()]


DURABLE_BACKENDS = ("SQLite", "PostgreSQL")
WHY_FAST = {
    "pgqueuer": "its PostgreSQL server works on the second core beside the Python process, "
    "and it dequeues in batches (batch_size=10) and buffers its status-log writes",
    "litequeue": "it has asyncq's durability (WAL, synchronous=NORMAL, no fsync), so both "
    "are bound by CPU per job; litequeue spends it in a few short autocommit statements, "
    "asyncq in asyncio plus its group-committed claim/ack",
    "huey": "an fsync costs only ~0.2 ms on this disk (see 'SQLite commit' above), so "
    "fsync per commit hardly slows it; on a slower disk the gap widens",
    "persist-queue": "an fsync costs only ~0.2 ms on this disk (see 'SQLite commit' above)",
}


def target_lines(peers: list[str], results: Results, sizes: Sizes) -> list[str]:
    lines = []
    durable = [
        p
        for p in peers
        if not p.startswith("asyncq") and ADAPTERS[p].backend.startswith(DURABLE_BACKENDS)
    ]
    for workload, key, label in (("drain", "processing_rate", "W1"), ("steady", "rate", "W2")):
        ours = median(results, "asyncq", workload, key)
        theirs = {p: median(results, p, workload, key) for p in durable}
        theirs = {p: v for p, v in theirs.items() if v}
        if not ours or not theirs:
            lines.append(f"{label}: target >= 10x fastest durable peer: not measured")
            continue
        best = max(theirs, key=lambda p: theirs[p])
        ratio = ours / theirs[best]
        verdict = "ok" if ratio >= 10 else "MISS"
        lines.append(
            f"{label}: asyncq {ours:,.0f} jobs/s = {ratio:.1f}x the fastest durable peer "
            f"({best}, {theirs[best]:,.0f} jobs/s); target >= 10x: {verdict}"
        )
        if ratio < 10:
            drain = median(results, "asyncq", "drain", "processing_rate") or 0.0
            lines.append(f"    bound: {bound(label, ours, best, theirs[best], drain)}")
    worst = median(results, "asyncq", "paced", "worst_window")
    if worst is not None:
        runs = results["asyncq", "paced"]
        top = max(r["worst_window"] for r in runs)
        verdict = "ok" if top <= RATE else "MISS"
        lines.append(
            f"W3: asyncq's worst 1-second window {top:.0f} jobs (median {worst:.0f}) "
            f"against the limit {RATE:.0f}/s; target never above: {verdict}"
        )
    lines += postgres_target_lines(results)
    if ("asyncq", "crash") in results:
        lost = max(r["lost"] for r in results["asyncq", "crash"])
        verdict = "ok" if lost == 0 else "MISS"
        lines.append(
            f"W4: asyncq lost {lost:.0f} of {sizes.crash:,} in its worst run; target 0: {verdict}"
        )
    return lines


def postgres_target_lines(results: Results) -> list[str]:
    """asyncq on PostgreSQL against pgqueuer on the same server (issue 13):
    W1 and W2 at least 4x, W4 nothing lost."""
    lines = []
    for workload, key, label in (("drain", "processing_rate", "W1"), ("steady", "rate", "W2")):
        ours = median(results, "asyncq-pg", workload, key)
        theirs = median(results, "pgqueuer", workload, key)
        if not ours or not theirs:
            continue
        verdict = "ok" if ours >= 4 * theirs else "MISS"
        lines.append(
            f"{label} on PostgreSQL: asyncq-pg {ours:,.0f} jobs/s = {ours / theirs:.1f}x "
            f"pgqueuer ({theirs:,.0f} jobs/s); target >= 4x: {verdict}"
        )
    if ("asyncq-pg", "crash") in results:
        lost = max(r["lost"] for r in results["asyncq-pg", "crash"])
        verdict = "ok" if lost == 0 else "MISS"
        lines.append(
            f"W4 on PostgreSQL: asyncq-pg lost {lost:.0f} in its worst run; target 0: {verdict}"
        )
    return lines


def bound(label: str, ours: float, best: str, theirs: float, drain: float) -> str:
    """What keeps asyncq under 10x `best`: the time per job it would need, and why."""
    need = 1e6 / (10 * theirs)
    text = (
        f"asyncq takes {1e6 / ours:.0f} us of wall time per job in one Python process"
        f"; 10x {best} needs {need:.0f} us"
    )
    if label == "W2" and 10 * theirs > drain:
        text += f", faster than asyncq's own W1 drain ({drain:,.0f} jobs/s, no submits)"
    why = WHY_FAST.get(best)
    return f"{text}; {best}: {why}" if why else text


def write_chart(peers: list[str], results: Results, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib not installed"
    others = [p for p in peers if p != "asyncq"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.38
    for k, (workload, key, label) in enumerate(
        (("drain", "processing_rate", "W1 drain: processing"), ("steady", "rate", "W2 steady"))
    ):
        ours = median(results, "asyncq", workload, key)
        ratios = []
        for p in others:
            theirs = median(results, p, workload, key)
            ratios.append(ours / theirs if ours and theirs else 0.0)
        xs = [x + (k - 0.5) * width for x in range(len(others))]
        bars = ax.bar(xs, ratios, width, label=label)
        ax.bar_label(bars, labels=[f"{r:.1f}x" if r else "n/a" for r in ratios], fontsize=7)
    ax.axhline(1, color="grey", linewidth=0.8)
    ax.axhline(10, color="red", linewidth=0.8, linestyle="--", label="10x target")
    ax.set_yscale("log")
    ax.set_xticks(range(len(others)), others, rotation=20)
    ax.set_ylabel("asyncq jobs/s / peer jobs/s (log)")
    ax.set_title("asyncq throughput relative to each peer (higher = asyncq faster)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


FAIR = {
    "huey": "huey runs plain sync functions in a thread, process or greenlet consumer, with "
    "periodic (cron) tasks, task locks and pipelines, on Redis as well as SQLite.",
    "persist-queue": "persist-queue works from plain threads with no event loop and offers "
    "file and MySQL back ends and FIFO/LIFO/unique-item queue variants.",
    "litequeue": "litequeue is a tiny dependency-free library that imposes no worker model "
    "and works from sync code: the app decides how and when messages are taken.",
    "procrastinate": "procrastinate lets a job be deferred inside the application's own "
    "PostgreSQL transaction, serves workers on many hosts, and has queueing locks, "
    "periodic tasks, abort and a Django integration.",
    "pgqueuer": "pgqueuer serves workers on many hosts from one PostgreSQL, with "
    "database-enforced per-entrypoint concurrency limits across all of them, cron "
    "schedules and a job statistics log.",
    "arq": "arq serves workers on many hosts through Redis, with stored job results, "
    "deferred and cron jobs.",
    "saq-redis": "SAQ serves workers on many hosts, with a web UI, cron jobs, job progress "
    "and abort.",
    "saq-pg": "SAQ on PostgreSQL gives workers on many hosts the same API as on Redis, "
    "with a web UI, cron jobs and abort.",
}


def markdown(
    command: str,
    peers: list[str],
    results: Results,
    errors: Errors,
    skipped: dict[str, str],
    sizes: Sizes,
    mode: str,
) -> str:
    def md(rows: list[list[str]]) -> list[str]:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        out.extend("| " + " | ".join(r) + " |" for r in rows[1:])
        return out

    lines = [
        f"**asyncq vs peer job queues** ({mode} run: W1 {sizes.drain:,} jobs, W2 "
        f"{sizes.steady:,}, W3 {sizes.paced:,} at {RATE:.0f}/s, W4 {sizes.crash:,}; "
        f"median of {sizes.runs} run(s) [min-max]; concurrency {CONCURRENCY})",
        "",
        *md(results_table(peers, results, errors)),
        "",
        *NOTES,
        "",
        *md(settings_table(peers, skipped)),
        "",
        *(f"- {line}" for line in skipped_lines(skipped)),
        "",
        *(f"- {line}" for line in target_lines(peers, results, sizes)),
        "",
        f"Command: `{command}`",
        "",
        "What each peer does that asyncq does not:",
        "",
        *(f"- **{p}**: {FAIR[p]}" for p in [*peers, *skipped] if p in FAIR),
        "- **celery** (not run): the broad ecosystem: canvas workflows, many brokers, "
        "beat, monitoring with Flower, workers on many hosts.",
    ]
    return "\n".join(lines) + "\n"


# -- the machine ---------------------------------------------------------------------


def server_versions() -> list[tuple[str, str]]:
    out = []
    try:
        proc = subprocess.run(
            [
                "psql",
                "-h",
                PG_HOST,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
                "SELECT version(); SHOW fsync; SHOW synchronous_commit",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        version, fsync, sync = proc.stdout.strip().splitlines()
        out.append(
            ("PostgreSQL", f"{version.split(' on ')[0]}; fsync={fsync}, synchronous_commit={sync}")
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        out.append(("PostgreSQL", f"not reachable at {PG_HOST}:{PG_PORT}"))
    try:
        import redis

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2)
        info = client.info("server")
        config = {**client.config_get("appendonly"), **client.config_get("save")}
        out.append(
            (
                "Redis",
                f"{info['redis_version']}; appendonly={config['appendonly']}, "
                f"save={config['save']!r}",
            )
        )
    except Exception as exc:  # noqa: BLE001 - any failure means: not reachable
        out.append(("Redis", f"not reachable at {REDIS_HOST}:{REDIS_PORT} ({type(exc).__name__})"))
    return out


def sqlite_commit_cost(directory: Path) -> tuple[str, str]:
    """SQLite's default synchronous level, and what a commit costs with it and with NORMAL."""
    path = directory / "probe.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    level = conn.execute("PRAGMA synchronous").fetchone()[0]
    conn.execute("CREATE TABLE t (x)")
    costs = []
    for mode in ("FULL", "NORMAL"):
        conn.execute(f"PRAGMA synchronous={mode}")
        start = time.perf_counter()
        for i in range(300):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
        costs.append(f"{mode} {(time.perf_counter() - start) / 300 * 1e3:.3f} ms")
    conn.close()
    remove_journal(path)
    return "SQLite commit", f"default synchronous={level} (2 = FULL); one-row commit: " + ", ".join(
        costs
    )


def peer_versions(peers: list[str]) -> str:
    return "; ".join(ADAPTERS[p].versions() for p in peers)


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run each, smaller N")
    parser.add_argument("--peers", help="comma-separated subset (asyncq is always run)")
    parser.add_argument("--dir", type=Path, help="directory for the SQLite files")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--one", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one)
        return
    sizes = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    wanted = args.peers.split(",") if args.peers else list(ADAPTERS)
    wanted = ["asyncq", *(p for p in wanted if p != "asyncq")]
    skipped = {p: why for p in wanted if (why := unavailable(p))}
    skipped.update(NOT_RUN)
    peers = [p for p in wanted if p not in skipped]
    command = "python benchmarks/peers.py" + (" --quick" if args.quick else "")
    if args.peers:
        command += f" --peers {args.peers}"
    header: list[str] = []
    with tempfile.TemporaryDirectory(prefix="asyncq-peers-", dir=args.dir) as tmp:
        directory = Path(tmp).resolve()
        header.append(f"asyncq vs peers ({mode}): {command}")
        facts = [*machine_info(directory), *server_versions(), sqlite_commit_cost(directory)]
        for name, value in facts:
            header.append(f"  {name + ':':<12} {value}")
        header.append(f"  {'peers:':<12} {peer_versions(peers)}")
        header.append(
            f"  {'settings:':<12} concurrency={CONCURRENCY}, {PRODUCERS} producers (W2), "
            f"W3 limit {RATE:.0f}/s, W4 handler {CRASH_WORK_S * 1e3:g} ms, kill at "
            f"{KILL_AT:.0%}, {sizes.runs} run(s) per figure"
        )
        print("\n".join(header) + "\n", flush=True)
        started = time.perf_counter()
        results, errors = run_all(peers, sizes, directory)
    elapsed = time.perf_counter() - started
    report = [
        *header,
        "",
        f"finished in {elapsed:.0f} s; load avg now {load_average()}",
        "",
        *render(results_table(peers, results, errors)),
        *NOTES,
        "",
        *render(settings_table(peers, skipped)),
        "",
        *skipped_lines(skipped),
        "",
        *target_lines(peers, results, sizes),
        *(["", "errors:", *error_lines(errors)] if errors else []),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    chart = write_chart(peers, results, args.out / "peers-latest.png")
    report.append(chart)
    print("\n".join(report[len(header) :]))
    (args.out / "peers-latest.txt").write_text("\n".join(report) + "\n")
    (args.out / "peers-latest.md").write_text(
        markdown(command, peers, results, errors, skipped, sizes, mode)
    )


if __name__ == "__main__":
    main()
