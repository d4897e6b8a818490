"""asyncpg against psycopg 3 on the claim/ack path of a PostgreSQL journal.

Each driver, on one connection, drains the same table of pending jobs: claim a batch
(`UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`), then ack the
batch (`UPDATE ... FROM unnest(...)`), each its own transaction, until nothing is left;
and fills it with `INSERT ... SELECT FROM unnest(...)` batches. Figures are jobs per
second; the two drivers alternate, run by run, since the machine's load drifts.

    python benchmarks/pg_drivers.py                      # 5 runs per figure, about a minute
    python benchmarks/pg_drivers.py --quick              # 1 run per figure
    python benchmarks/pg_drivers.py --dsn postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = "asyncq_driver_bench"
TABLE = f"{SCHEMA}.jobs"

SETUP = [
    f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
    f"CREATE SCHEMA {SCHEMA}",
    f"""CREATE TABLE {TABLE} (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        task text NOT NULL, payload jsonb NOT NULL, destination text NOT NULL,
        priority integer NOT NULL DEFAULT 0, state text NOT NULL,
        run_at double precision NOT NULL, owner text, lease_until double precision,
        attempts integer NOT NULL DEFAULT 0, result jsonb, finished_at double precision)""",
    f"""CREATE INDEX jobs_ready ON {TABLE} (destination, priority DESC, run_at, id)
        WHERE state = 'pending'""",
]
INSERT = f"""
INSERT INTO {TABLE} (task, payload, destination, state, run_at)
SELECT 't', p::jsonb, 'default', 'pending', 0 FROM unnest($1::text[]) AS p
"""
CLAIM = f"""
UPDATE {TABLE} SET state = 'running', owner = $1, lease_until = $2, attempts = attempts + 1
WHERE id IN (
    SELECT id FROM {TABLE} WHERE state = 'pending' AND destination = 'default'
    ORDER BY priority DESC, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED
)
RETURNING id, task, payload::text, attempts
"""
ACK = f"""
UPDATE {TABLE} SET state = 'succeeded', result = o.result::jsonb, finished_at = $3,
       owner = NULL, lease_until = NULL
FROM unnest($1::bigint[], $2::text[]) AS o (id, result)
WHERE {TABLE}.id = o.id AND {TABLE}.owner = $4 AND {TABLE}.state = 'running'
"""


class Asyncpg:
    name = "asyncpg"

    async def connect(self, dsn: str) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(dsn)

    async def setup(self) -> None:
        for statement in SETUP:
            await self.conn.execute(statement)

    async def insert(self, payloads: list[str]) -> None:
        await self.conn.execute(INSERT, payloads)

    async def claim(self, limit: int) -> list[tuple[int, str]]:
        rows = await self.conn.fetch(CLAIM, "bench", time.time() + 30, limit)
        return [(row[0], row[2]) for row in rows]

    async def ack(self, ids: list[int]) -> None:
        await self.conn.execute(ACK, ids, ["null"] * len(ids), time.time(), "bench")

    async def close(self) -> None:
        await self.conn.close()


class Psycopg:
    name = "psycopg"

    async def connect(self, dsn: str) -> None:
        import psycopg

        # Statements are prepared server-side after 5 runs (psycopg's default threshold).
        self.conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    async def setup(self) -> None:
        for statement in SETUP:
            await self.conn.execute(statement)  # type: ignore[arg-type]

    @staticmethod
    def _sql(statement: str) -> Any:
        # psycopg takes %(name)s placeholders, asyncpg $n: the same text, renamed.
        for n in range(9, 0, -1):
            statement = statement.replace(f"${n}", f"%(p{n})s")
        return statement

    @staticmethod
    def _args(*values: object) -> dict[str, object]:
        return {f"p{n}": value for n, value in enumerate(values, 1)}

    async def insert(self, payloads: list[str]) -> None:
        await self.conn.execute(self._sql(INSERT), self._args(payloads), prepare=True)

    async def claim(self, limit: int) -> list[tuple[int, str]]:
        cursor = await self.conn.execute(
            self._sql(CLAIM), self._args("bench", time.time() + 30, limit), prepare=True
        )
        return [(row[0], row[2]) for row in await cursor.fetchall()]

    async def ack(self, ids: list[int]) -> None:
        await self.conn.execute(
            self._sql(ACK),
            self._args(ids, ["null"] * len(ids), time.time(), "bench"),
            prepare=True,
        )

    async def close(self) -> None:
        await self.conn.close()


Driver = Asyncpg | Psycopg


async def timed(fn: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def run(driver: Driver, jobs: int, batch: int) -> tuple[float, float]:
    """Insert then drain `jobs` jobs in batches of `batch`: (inserts/s, claims+acks/s)."""
    await driver.setup()
    payloads = [f'{{"i": {i}, "url": "https://example.test/hook"}}' for i in range(jobs)]

    async def fill() -> None:
        for start in range(0, jobs, batch):
            await driver.insert(payloads[start : start + batch])

    async def drain() -> None:
        done = 0
        while claimed := await driver.claim(batch):
            await driver.ack([job_id for job_id, _ in claimed])
            done += len(claimed)
        assert done == jobs, (done, jobs)

    fill_s = await timed(fill)
    drain_s = await timed(drain)
    return jobs / fill_s, jobs / drain_s


def machine() -> list[tuple[str, str]]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    one, five, _ = os.getloadavg()
    return [
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", f"{cpu}, {os.cpu_count()} logical cores (the server shares them)"),
        ("Python", platform.python_version()),
        (
            "drivers",
            f"asyncpg {metadata.version('asyncpg')}, psycopg {metadata.version('psycopg')}",
        ),
        ("load avg", f"{one:.2f} {five:.2f} (1/5 min)"),
    ]


async def main(dsn: str, runs: int, jobs: int, batches: Sequence[int]) -> None:
    drivers: list[Driver] = [Asyncpg(), Psycopg()]
    for driver in drivers:
        await driver.connect(dsn)
    try:
        first = drivers[0]
        server = await first.conn.fetchval("SHOW server_version")  # type: ignore[union-attr]
        print("PostgreSQL drivers on the claim/ack path")
        for name, value in [*machine(), ("server", f"PostgreSQL {server}")]:
            print(f"  {name + ':':<10} {value}")
        print(
            f"  {'settings:':<10} up to {jobs} jobs per run (2,000 batches at most), "
            f"{runs} run(s) per figure, one connection, each statement its own transaction"
        )
        print()
        print(f"{'batch':>6}  {'driver':<8}  {'insert jobs/s':>14}  {'claim+ack jobs/s':>17}")
        for size in batches:
            figures: dict[str, list[tuple[float, float]]] = {d.name: [] for d in drivers}
            for n in range(runs):
                order = drivers if n % 2 == 0 else drivers[::-1]
                for driver in order:
                    figures[driver.name].append(await run(driver, min(jobs, 2_000 * size), size))
            for driver in drivers:
                inserts = statistics.median(f[0] for f in figures[driver.name])
                drains = statistics.median(f[1] for f in figures[driver.name])
                print(f"{size:>6}  {driver.name:<8}  {inserts:>14,.0f}  {drains:>17,.0f}")
        await first.conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")  # type: ignore[union-attr]
    finally:
        for driver in drivers:
            await driver.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--quick", action="store_true", help="one run per figure, fewer jobs")
    parser.add_argument("--batches", default="1,10,100", help="batch sizes, comma-separated")
    args = parser.parse_args()
    runs, jobs = (1, 2_000) if args.quick else (5, 10_000)
    sizes = [int(size) for size in args.batches.split(",")]
    asyncio.run(main(args.dsn, runs, jobs, sizes))
