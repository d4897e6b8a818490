"""The address guard at work: refused URLs are dead-lettered with a clear error
and no connection reaches the canary listening on 127.0.0.1. Every form here
that would reach a host if the guard failed reaches 127.0.0.1 and nothing else;
the private, link-local and metadata forms are tested on the check itself
(tests/unit/test_http_guard.py), or through a resolver stub that answers 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from asyncq import AddressRefused, Http, JobState, Queue, Retry
from asyncq._http._session import GuardRefused, _guarded_socket
from asyncq._http._ssrf import AddressPolicy
from asyncq.testing import run_until_idle

from .conftest import Canary, StubResolver, first_line

MakeQueue = Callable[..., Queue]

# Hosts that stand for 127.0.0.1 (or 0.0.0.0, which Linux connects to 127.0.0.1).
LOOPBACK_FORMS = [
    "127.0.0.1",
    "127.1",
    "0x7f.1",
    "0x7f000001",
    "0177.0.0.1",
    "2130706433",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "0.0.0.0",
    "0",
    "[::1]",
    "localhost",
]


async def dead_error(queue: Queue, job_id: int) -> str:
    info = await queue.get(job_id)
    assert info.state is JobState.DEAD, info
    return first_line(info.last_error)


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
async def test_loopback_in_any_spelling_is_refused_without_a_connection(
    make_queue: MakeQueue, canary: Canary, host: str
) -> None:
    queue = make_queue()
    queue.destination("*", retry=Retry(schedule=[60]))  # refused at once all the same
    async with queue:
        job = await queue.submit_http("hooks", f"http://{host}:{canary.port}/hook", json={})
        await run_until_idle(queue)
        error = await dead_error(queue, job.id)
    assert error.startswith("AddressRefused: refused to connect to ")
    assert "SSRF protection" in error
    assert canary.connections == 0


@pytest.mark.parametrize(
    "name",
    ["metadata.google.internal", "instance-data.ec2.internal", "intranet.example", "evil.test"],
)
async def test_a_name_that_resolves_to_a_refused_address_is_refused(
    make_queue: MakeQueue, canary: Canary, name: str
) -> None:
    resolver = StubResolver("127.0.0.1")  # what an attacker's DNS would answer
    queue = make_queue()
    queue.destination("hooks", http=Http(resolver=resolver))
    async with queue:
        job = await queue.submit_http("hooks", f"http://{name}:{canary.port}/", json={})
        await run_until_idle(queue)
        error = await dead_error(queue, job.id)
    assert error.startswith(
        f"AddressRefused: refused to connect to 127.0.0.1 (for {name!r}): a loopback address."
    )
    assert resolver.asked == [name]
    assert canary.connections == 0


async def test_an_answer_that_changes_between_check_and_connect_is_still_refused(
    make_queue: MakeQueue, canary: Canary
) -> None:
    # DNS rebinding: the first answer is allowed, every later one is not. The guard
    # judges the very answer that is connected to, so whatever the answer becomes,
    # it is judged again: never a check of one answer and a connect to another.
    resolver = StubResolver("127.0.0.1", "0.0.0.0")
    queue = make_queue(concurrency=1)
    http = Http(allow=["127.0.0.1"], resolver=resolver, dns_cache=0)
    queue.destination("hooks", http=http)
    async with queue:
        first = await queue.submit_http("hooks", f"http://rebind.test:{canary.port}/", json={})
        assert (await first.result(timeout=10))["body"] == "canary"
        assert canary.connections == 1
        later = [
            await queue.submit_http("hooks", f"http://rebind.test:{canary.port}/", json={})
            for _ in range(3)
        ]
        await run_until_idle(queue)
        for job in later:
            error = await dead_error(queue, job.id)
            assert error.startswith(
                "AddressRefused: refused to connect to 0.0.0.0 (for 'rebind.test'): "
                "an unspecified address."
            )
    assert resolver.asked == ["rebind.test"] * 4  # resolved for every connection
    assert canary.connections == 1  # only the allowed answer was ever connected to


async def test_allowed_explicitly_it_connects(make_queue: MakeQueue, canary: Canary) -> None:
    queue = make_queue()
    queue.destination("private", http=Http(allow_private=True))
    queue.destination("listed", http=Http(allow=["127.0.0.0/30"]))
    async with queue:
        for destination in ("private", "listed"):
            job = await queue.submit_http(destination, f"http://127.0.0.1:{canary.port}/")
            assert (await job.result(timeout=10))["status"] == 200
    assert canary.connections == 2


def test_every_socket_is_checked_before_it_connects() -> None:
    # The last line of defence: a host written as an address skips the resolver,
    # so the socket factory judges the address every socket is about to connect to.
    open_socket = _guarded_socket(AddressPolicy())
    for address in ("127.0.0.1", "169.254.169.254", "10.0.0.1"):
        info = (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 80))
        with pytest.raises(GuardRefused) as caught:
            open_socket(info)  # raises before a socket exists: nothing is sent
        assert isinstance(caught.value.refused, AddressRefused)
    mapped = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:127.0.0.1", 80, 0, 0))
    with pytest.raises(GuardRefused):
        open_socket(mapped)
    public = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))
    with open_socket(public) as sock:  # made, not connected
        assert sock.family == socket.AF_INET
