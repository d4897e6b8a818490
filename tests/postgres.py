"""The PostgreSQL server the tests use, and a fresh schema per test.

The server is `ASYNCQ_TEST_POSTGRES` (a `postgresql://` connection string), by
default the local one (`postgresql://postgres@127.0.0.1:5432/test`). Tests that
need it skip, with the reason, where it cannot be reached or asyncpg is not
installed; `.ci/run` sets ASYNCQ_REQUIRE_POSTGRES=1, which turns that skip into a
failure, since CI runs where the server is.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import cache

import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_dsn() -> str:
    return os.environ.get("ASYNCQ_TEST_POSTGRES", DEFAULT_DSN)


@cache
def _unreachable_reason() -> str | None:
    """Why the tests cannot use the server (None: they can). Asked once per run."""
    try:
        import asyncpg
    except ModuleNotFoundError:
        return "asyncpg is not installed (pip install -e '.[dev]')"

    async def probe() -> None:
        conn = await asyncpg.connect(postgres_dsn(), timeout=3)
        await conn.close()

    try:
        # In a thread of its own: the caller may be inside a running event loop.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, probe()).result()
    except Exception as exc:  # noqa: BLE001 - any failure is the reason to skip
        return f"PostgreSQL at {postgres_dsn()} cannot be reached ({type(exc).__name__}: {exc})"
    return None


def postgres_dsn_or_skip() -> str:
    """The test server's connection string, or a skip (a failure under
    ASYNCQ_REQUIRE_POSTGRES=1) saying why it cannot be used."""
    reason = _unreachable_reason()
    if reason is not None:
        if os.environ.get("ASYNCQ_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"ASYNCQ_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return postgres_dsn()


@asynccontextmanager
async def fresh_schema(dsn: str) -> AsyncIterator[str]:
    """A connection string naming a new, empty schema, dropped afterwards."""
    import asyncpg

    schema = f"asyncq_test_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in dsn else "?"
    try:
        yield f"{dsn}{separator}schema={schema}"
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
