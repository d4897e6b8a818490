"""The README's FastAPI and aiohttp snippets (asyncq.contrib) run as written, against a
real journal, with each framework's own test client, twice (a fresh event loop each time)."""

from __future__ import annotations

import asyncio
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncq import JobState, Queue

ROOT = Path(__file__).resolve().parents[2]


def readme_block(marker: str) -> str:
    """The python block of the README that contains `marker`."""
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL) if marker in b]
    assert len(blocks) == 1, marker
    return blocks[0]


@pytest.fixture
def jobs_module(tmp_path: Path) -> Iterator[types.ModuleType]:
    """`myapp.jobs`, as the snippets import it: a queue on a real file and one task."""
    module = types.ModuleType("myapp.jobs")
    queue = Queue(tmp_path / "outbound.db", concurrency=4)
    calls: list[dict[str, Any]] = []

    @queue.task(name="post_deal", destination="crm")
    async def post_deal(url: str, deal: dict[str, Any]) -> int:
        calls.append(deal)
        return 200

    module.queue, module.post_deal, module.calls = queue, post_deal, calls  # type: ignore[attr-defined]
    package = types.ModuleType("myapp")
    package.jobs = module  # type: ignore[attr-defined]
    sys.modules["myapp"], sys.modules["myapp.jobs"] = package, module
    try:
        yield module
    finally:
        del sys.modules["myapp"], sys.modules["myapp.jobs"]


def run_snippet(marker: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "snippet"}
    exec(compile(readme_block(marker), f"README:{marker}", "exec"), namespace)
    return namespace


async def finished(queue: Queue, job_id: int) -> JobState:
    async with Queue(queue.path, concurrency=0) as reader:
        return (await reader.get(job_id)).state


def test_the_fastapi_snippet_runs_with_its_test_client_twice(
    jobs_module: types.ModuleType,
) -> None:
    from fastapi.testclient import TestClient

    app = run_snippet("FastAPI(lifespan=lifespan(queue))")["app"]
    for deal_id in (1, 2):  # each TestClient runs the app in a new event loop
        with TestClient(app) as client:
            answer = client.post(f"/deals/{deal_id}/won")
            assert answer.status_code == 202
            job_id = answer.json()["job"]
            assert client.portal.call(_wait, jobs_module.queue, job_id) == 200
    assert jobs_module.calls == [{"id": 1}, {"id": 2}]
    assert asyncio.run(finished(jobs_module.queue, job_id)) is JobState.SUCCEEDED


async def _wait(queue: Queue, job_id: int) -> Any:
    from asyncq import Job

    return await Job(queue, job_id).result(timeout=10)


def test_the_aiohttp_snippet_runs_with_its_test_client_twice(
    jobs_module: types.ModuleType,
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    app_of = run_snippet("setup(app, queue)")

    async def serve(deal_id: int) -> Any:
        async with TestClient(TestServer(app_of["app"])) as client:
            answer = await client.post(f"/deals/{deal_id}/won")
            assert answer.status == 202
            job_id = (await answer.json())["job"]
            return await _wait(jobs_module.queue, job_id)

    for deal_id in (1, 2):
        app_of = run_snippet("setup(app, queue)")  # an app serves once
        assert asyncio.run(serve(deal_id)) == 200
    assert jobs_module.calls == [{"id": 1}, {"id": 2}]
