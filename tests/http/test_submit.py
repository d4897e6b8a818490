"""What `submit_http` refuses at once, with nothing written; and `asyncq[http]`
as an extra: `from asyncq import Http` works without aiohttp."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from asyncq import Http, PayloadError, Queue

MakeQueue = Callable[..., Queue]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "is a file: URL"),
        ("ftp://example.com/hook", "is a ftp: URL"),
        ("gopher://example.com:70/", "is a gopher: URL"),
        ("javascript:alert(1)", "is a javascript: URL"),
        ("//example.com/hook", "is not an absolute URL"),
        ("example.com/hook", "is not an absolute URL"),
        ("http://", "has no host"),
        ("http:///hook", "has no host"),
        ("http://exa mple.com/", "a space or a control character"),
        ("http://example.com/\r\nX-Injected: 1", "a space or a control character"),
        ("http://[::1/", "malformed"),
        ("http://example.com:99999/", "malformed"),
        ("http://example.com:0/", "port is 0"),
        ("http://a..b/", "not a valid name or address"),
        ("http://exa<mple.com/", "not a valid name or address"),
        ("http://" + "a" * 64 + ".com/", "not a valid name or address"),
        ("https://example.com/" + "x" * 9000, "longer than 8,192 characters"),
    ],
)
async def test_a_bad_url_is_refused_at_submit_and_nothing_is_written(
    make_queue: MakeQueue, url: str, message: str
) -> None:
    async with make_queue() as queue:
        with pytest.raises(ValueError, match=message):
            await queue.submit_http("hooks", url, json={})
        assert (await queue.stats()).destinations == {}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"method": "PO ST"}, ValueError, "HTTP method must be a token"),
        ({"method": ""}, ValueError, "HTTP method must be a token"),
        ({"headers": {"X-A": "1\r\nX-B: 2"}}, ValueError, "without CR, LF or NUL"),
        ({"headers": {"X A": "1"}}, ValueError, "not a valid header name"),
        ({"headers": {"X-A": 1}}, ValueError, "must be a str"),
        ({"headers": [("X-A", "1")]}, TypeError, "headers must be a mapping"),
        ({"json": {}, "body": "x"}, TypeError, "json= or body=, not both"),
        ({"json": float("nan")}, PayloadError, "cannot be sent as JSON"),
        ({"json": {"a": object()}}, PayloadError, "cannot be sent as JSON"),
        ({"body": 42}, TypeError, "body= must be str or bytes"),
        ({"body": "\udcff"}, PayloadError, "surrogate"),
        ({"delay": -1}, ValueError, "delay"),
        ({"key": ""}, ValueError, "key"),
    ],
)
async def test_bad_options_are_refused_at_submit_and_nothing_is_written(
    make_queue: MakeQueue, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    async with make_queue() as queue:
        with pytest.raises(error, match=message):
            await queue.submit_http("hooks", "https://example.com/hook", **options)
        with pytest.raises(ValueError, match="destination"):
            await queue.submit_http("", "https://example.com/hook")
        assert (await queue.stats()).destinations == {}


async def test_a_good_submit_is_one_durable_job(make_queue: MakeQueue) -> None:
    async with make_queue(concurrency=0) as queue:  # a producer: nothing is sent
        job = await queue.submit_http(
            "crm", "https://crm.example/hooks?x=1", json={"deal": 42}, key="deal-42", delay=60
        )
        again = await queue.submit_http("crm", "https://crm.example/hooks?x=1", key="deal-42")
        assert (again.id, again.created) == (job.id, False)
        info = await queue.get(job.id)
    assert (info.task, info.destination, info.key) == ("asyncq.http", "crm", "deal-42")
    assert info.payload is not None
    assert info.payload["body"] == '{"deal":42}'
    assert info.payload["headers"] == {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": 0}, "timeout"),
        ({"connect_timeout": float("inf")}, "connect_timeout"),
        ({"connections": 0}, "connections"),
        ({"excerpt": -1}, "excerpt"),
        ({"dns_cache": -1}, "dns_cache"),
        ({"allow": ["not a network"]}, "not a network"),
        ({"signing_secret": "whsec_" + "A" * 24, "signing_secret_env": "X"}, "not both"),
    ],
)
def test_a_bad_http_config_is_refused_at_declaration(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Http(**options)


def test_a_destinations_headers_are_copied_and_read_only() -> None:
    given = {"X-A": "1"}
    http = Http(headers=given)
    given["X-A"] = "2"  # the caller's dict is not the destination's
    assert dict(http.headers) == {"X-A": "1"}
    with pytest.raises(TypeError):
        http.headers["X-A"] = "3"  # type: ignore[index]


def test_connections_cap_the_destinations_concurrency(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.destination("a", concurrency=8, http=Http(connections=2))
    queue.destination("b", http=Http(connections=3))
    queue.destination("c", concurrency=1, http=Http(connections=3))
    policies = queue._destinations
    assert [policies.policy_for(n).concurrency for n in "abc"] == [2, 3, 1]


def test_without_aiohttp_http_imports_and_a_delivery_names_the_extra(tmp_path: Any) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["aiohttp"] = None  # as if it were not installed
        from asyncq import Http, Queue, Retry
        queue = Queue({str(tmp_path / "jobs.db")!r})
        queue.destination("crm", http=Http(signing_secret="whsec_" + "A" * 24), retry=Retry.never())

        async def main():
            async with queue:
                job = await queue.submit_http("crm", "https://crm.example/hooks", json={{}})
                try:
                    await job.result(timeout=10)
                except Exception as exc:
                    print(exc)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "HttpExtraMissing: HTTP delivery needs aiohttp: pip install 'asyncq[http]'" in (
        done.stdout
    )
