"""Built-in HTTP delivery against a real aiohttp server on 127.0.0.1: every row of
the classification table, Retry-After in both forms, timeouts, a receiver that
closes mid-response, a slow receiver, the result and the dead letter's error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import quote

import pytest

from asyncq import (
    Http,
    HttpResponse,
    Job,
    JobDead,
    JobState,
    Queue,
    Retry,
    Verdict,
    classify_response,
)
from asyncq.testing import ManualClock, run_until_idle

from .conftest import Receiver, closed_port, first_line

MakeQueue = Callable[..., Queue]
LATER = 3600  # a failed delivery is retried this long after (so the test sees it pending)
LOCAL = Http(allow=["127.0.0.1"])  # the receiver's address, allowed past the guard


@pytest.fixture
async def queue(make_queue: MakeQueue) -> AsyncIterator[Queue]:
    queue = make_queue(concurrency=4)
    queue.destination("hooks", http=LOCAL, retry=Retry(schedule=[LATER]))
    async with queue:
        yield queue


async def deliver_once(queue: Queue, url: str, **options: object) -> int:
    job = await queue.submit_http("hooks", url, json={"deal": 42}, **options)  # type: ignore[arg-type]
    await run_until_idle(queue)
    return job.id


SUCCESS = [200, 201, 202, 204, 299]
RETRIED = [300, 301, 302, 303, 307, 308, 408, 425, 429, 500, 502, 503, 504, 599]
PERMANENT = [400, 401, 403, 404, 405, 409, 413, 422, 451]


@pytest.mark.parametrize("code", SUCCESS)
async def test_2xx_is_a_success_whose_result_records_the_answer(
    queue: Queue, receiver: Receiver, code: int
) -> None:
    job_id = await deliver_once(queue, receiver.url(f"/status/{code}"))
    info = await queue.get(job_id)
    assert info.state is JobState.SUCCEEDED
    assert info.result["status"] == code
    assert info.result["body"] == ("" if code == 204 else f"answer {code}")
    assert 0 < info.result["latency"] < 5
    assert receiver.seen[0].body == b'{"deal":42}'
    assert receiver.seen[0].headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("code", RETRIED)
async def test_retried_answers_go_by_the_destinations_policy(
    queue: Queue, receiver: Receiver, clock: ManualClock, code: int
) -> None:
    target = receiver.url("/hook")
    job_id = await deliver_once(queue, receiver.url(f"/status/{code}?location={quote(target)}"))
    info = await queue.get(job_id)
    assert (info.state, info.attempts, info.run_at) == (JobState.PENDING, 1, clock.now() + LATER)
    assert first_line(info.last_error).startswith(f"HttpStatusError: HTTP {code} ")
    assert f"from POST {receiver.url('/status/')}" in first_line(info.last_error)
    assert first_line(info.last_error).endswith(f": answer {code}")
    assert receiver.paths() == [f"/status/{code}"]  # a redirect is never followed


@pytest.mark.parametrize("code", PERMANENT)
async def test_other_4xx_are_dead_letters_at_once(
    queue: Queue, receiver: Receiver, code: int
) -> None:
    job_id = await deliver_once(queue, receiver.url(f"/status/{code}"))
    (dead,) = await queue.dead_letters("hooks")
    assert (dead.id, dead.attempts) == (job_id, 1)
    assert first_line(dead.last_error).startswith(f"HttpRejected: HTTP {code} ")
    assert first_line(dead.last_error).endswith(f": answer {code}")
    with pytest.raises(JobDead, match=f"HTTP {code} .*: answer {code}"):
        await Job(queue, job_id).result(timeout=5)


async def test_410_is_permanent_and_may_pause_the_destination(
    make_queue: MakeQueue, receiver: Receiver
) -> None:
    queue = make_queue()
    queue.destination("kept", http=LOCAL)
    queue.destination("paused", http=Http(allow=["127.0.0.1"], pause_on_gone=True))
    async with queue:
        kept = await queue.submit_http("kept", receiver.url("/status/410"))
        paused = await queue.submit_http("paused", receiver.url("/status/410"))
        await run_until_idle(queue)
        for job in (kept, paused):
            assert (await queue.get(job.id)).state is JobState.DEAD
        stats = await queue.stats()
        assert not stats.destinations["kept"].paused
        assert stats.destinations["paused"].paused
        # Paused: the next delivery waits in the journal.
        waiting = await queue.submit_http("paused", receiver.url("/hook"))
        await run_until_idle(queue)
        assert (await queue.get(waiting.id)).state is JobState.PENDING
        assert receiver.paths() == ["/status/410", "/status/410"]


@pytest.mark.parametrize("code", [429, 503])
async def test_retry_after_in_seconds_holds_the_destination(
    queue: Queue, receiver: Receiver, clock: ManualClock, code: int
) -> None:
    job_id = await deliver_once(queue, receiver.url(f"/status/{code}?retry_after=120"))
    info = await queue.get(job_id)
    assert (info.state, info.attempts, info.snoozes) == (JobState.PENDING, 0, 1)  # no attempt used
    assert info.run_at == clock.now() + 120
    assert first_line(info.last_error).startswith(f"HttpRetryAfter: HTTP {code} ")
    assert first_line(info.last_error).endswith(f": answer {code} (Retry-After: 120 s)")
    stats = await queue.stats()
    assert stats.destinations["hooks"].held_until == clock.now() + 120


async def test_retry_after_as_an_http_date(
    queue: Queue, receiver: Receiver, clock: ManualClock
) -> None:
    date = format_datetime(datetime.fromtimestamp(clock.now() + 90, UTC), usegmt=True)
    job_id = await deliver_once(queue, receiver.url(f"/status/429?retry_after={quote(date)}"))
    info = await queue.get(job_id)
    assert info.run_at == clock.now() + 90
    assert "(Retry-After: 90 s)" in first_line(info.last_error)


async def test_retry_after_is_clamped(
    make_queue: MakeQueue, receiver: Receiver, clock: ManualClock
) -> None:
    queue = make_queue()
    queue.destination("hooks", http=Http(allow=["127.0.0.1"], max_retry_after=600))
    async with queue:
        job_id = await deliver_once(queue, receiver.url("/status/503?retry_after=86400"))
        assert (await queue.get(job_id)).run_at == clock.now() + 600


async def test_a_classify_of_ones_own(make_queue: MakeQueue, receiver: Receiver) -> None:
    def conflicts_are_fine(response: HttpResponse) -> Verdict:
        if response.status == 409:
            return Verdict.SUCCESS  # the receiver has it already
        return classify_response(response)

    queue = make_queue()
    queue.destination("hooks", http=Http(allow=["127.0.0.1"], classify=conflicts_are_fine))
    async with queue:
        ok = await queue.submit_http("hooks", receiver.url("/status/409"))
        refused = await queue.submit_http("hooks", receiver.url("/status/404"))
        await run_until_idle(queue)
        assert (await queue.get(ok.id)).result["status"] == 409
        assert (await queue.get(refused.id)).state is JobState.DEAD


async def test_the_body_kept_is_an_excerpt(make_queue: MakeQueue, receiver: Receiver) -> None:
    queue = make_queue()
    queue.destination("hooks", http=Http(allow=["127.0.0.1"], excerpt=16))
    async with queue:
        job_id = await deliver_once(queue, receiver.url("/big"))
        assert (await queue.get(job_id)).result["body"] == "x" * 16


async def test_a_refused_connection_is_retried(queue: Queue, clock: ManualClock) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    job_id = await deliver_once(queue, url)
    info = await queue.get(job_id)
    assert (info.state, info.run_at) == (JobState.PENDING, clock.now() + LATER)
    assert first_line(info.last_error).startswith(f"HttpConnectionFailed: POST {url}: ")


@contextlib.asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[int]:
    """A server that reads a request, writes `answer` and closes the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it",  # closed mid-body
        b"",  # closed without a word
        b"HTTP/1.1 200 OK\r\nContent-Le",  # closed mid-headers
    ],
    ids=["mid-body", "no-answer", "mid-headers"],
)
async def test_a_receiver_that_closes_mid_response_is_retried(
    queue: Queue, clock: ManualClock, answer: bytes
) -> None:
    async with raw_server(answer) as port:
        job_id = await deliver_once(queue, f"http://127.0.0.1:{port}/hook")
    info = await queue.get(job_id)
    assert (info.state, info.run_at) == (JobState.PENDING, clock.now() + LATER)
    assert first_line(info.last_error).startswith("HttpConnectionFailed: POST ")


async def test_a_slow_receiver_frees_the_worker_at_the_timeout(
    make_queue: MakeQueue, receiver: Receiver, clock: ManualClock
) -> None:
    queue = make_queue(concurrency=1)  # one worker: the second job needs the slot back
    queue.destination("hooks", http=Http(allow=["127.0.0.1"], timeout=0.2), retry=Retry([LATER]))
    async with queue:
        slow = await queue.submit_http("hooks", receiver.url("/slow"))
        fast = await queue.submit_http("hooks", receiver.url("/hook"))
        assert (await fast.result(timeout=10))["status"] == 204
        info = await queue.get(slow.id)
        assert (info.state, info.run_at) == (JobState.PENDING, clock.now() + LATER)
        assert first_line(info.last_error) == (
            f"HttpTimeout: POST {receiver.url('/slow')}: no answer within 0.2 s"
        )
        assert not receiver.release.is_set()  # the receiver never answered


async def test_connections_cap_the_calls_in_flight(
    make_queue: MakeQueue, receiver: Receiver
) -> None:
    queue = make_queue(concurrency=16)
    queue.destination("hooks", http=Http(allow=["127.0.0.1"], connections=2))
    two, three = receiver.arrivals[2], receiver.arrivals[3] = asyncio.Event(), asyncio.Event()
    async with queue:
        jobs = [await queue.submit_http("hooks", receiver.url("/gated")) for _ in range(6)]
        await asyncio.wait_for(two.wait(), timeout=10)
        # Room for a third call, if the cap let one through: it would come at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(three.wait(), timeout=0.2)
        assert not three.is_set()
        receiver.gate.set()
        for job in jobs:
            assert (await job.result(timeout=10))["body"] == "through"
    assert receiver.most_in_flight == 2


async def test_a_typed_task_of_ones_own_delivers_through_the_destination(
    make_queue: MakeQueue, receiver: Receiver
) -> None:
    queue = make_queue()
    secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    queue.destination("crm", http=Http(allow=["127.0.0.1"], signing_secret=secret))

    @queue.task(name="push_contact", destination="crm")
    async def push_contact(contact_id: int) -> int:
        contact = {"id": contact_id, "email": f"c{contact_id}@example.com"}  # made at run time
        answer = await queue.deliver_http(receiver.url("/hook"), json=contact)
        return answer["status"]

    async with queue:
        job = await push_contact.options(key="contact-7").submit(7)
        assert await job.result(timeout=10) == 204
    (seen,) = receiver.seen
    assert seen.body == b'{"id":7,"email":"c7@example.com"}'
    assert seen.headers["webhook-id"] == f"job_{job.id}"
    assert seen.headers["webhook-signature"].startswith("v1,")


async def test_deliver_http_outside_a_handler_says_so(queue: Queue) -> None:
    from asyncq import NotInJob

    with pytest.raises(NotInJob):
        await queue.deliver_http("https://example.com/")


async def test_methods_headers_and_bodies(queue: Queue, receiver: Receiver) -> None:
    await queue.submit_http(
        "hooks", receiver.url("/hook"), method="put", body=b"\x00\xffraw", headers={"X-A": "1"}
    )
    await queue.submit_http("hooks", receiver.url("/hook"), body="text é")
    await queue.submit_http("hooks", receiver.url("/hook"), method="GET")
    await run_until_idle(queue)
    seen = {s.method + str(len(s.body)): s for s in receiver.seen}
    raw, text, get = seen["PUT5"], seen["POST7"], seen["GET0"]
    assert (raw.body, raw.headers["X-A"]) == (b"\x00\xffraw", "1")
    assert raw.headers["Content-Type"] == "application/octet-stream"
    assert (text.body, text.headers["Content-Type"]) == (
        "text é".encode(),
        "text/plain; charset=utf-8",
    )
    assert get.body == b""


async def test_one_pooled_session_per_queue_opened_and_closed_with_it(
    make_queue: MakeQueue, receiver: Receiver
) -> None:
    queue = make_queue(concurrency=1)
    queue.destination("a", http=LOCAL)
    queue.destination("b", http=Http(allow=["127.0.0.1"], timeout=5))  # same guard: same pool
    queue.destination("c", http=Http(allow_private=True))  # another guard: a pool of its own
    async with make_queue(concurrency=0) as producer:  # a producer opens no session
        await producer.submit_http("a", receiver.url("/hook"))
        assert producer._http_clients._sessions == {}
    async with queue:
        for destination in ("a", "b", "a", "b", "c"):
            job = await queue.submit_http(destination, receiver.url("/hook"))
            await job.result(timeout=10)
        sessions = list(queue._http_clients._sessions.values())
        assert len(sessions) == 2
        assert not any(s.closed for s in sessions)
    assert all(s.closed for s in sessions)
    assert queue._http_clients._sessions == {}
    ports = [s.client_port for s in receiver.seen]
    assert len(set(ports[:5])) == 1  # a and b shared one kept-alive connection
    assert ports[5] != ports[0]  # c came on a connection of its own pool


async def test_a_deliverys_headers_win_over_the_destinations_and_signing_over_both(
    make_queue: MakeQueue, receiver: Receiver
) -> None:
    from asyncq import SystemClock

    secret = "whsec_" + "c2lnbmluZyBrZXksIGF0IGxlYXN0IDE2IGJ5dGVz"
    queue = make_queue(clock=SystemClock())  # the receiver checks the timestamp
    headers = {"X-Dest": "d", "X-Both": "destination"}
    http = Http(allow=["127.0.0.1"], headers=headers, signing_secret=secret)
    queue.destination("hooks", http=http)
    async with queue:
        for _ in range(2):  # the second one from what the first prepared
            job = await queue.submit_http(
                "hooks",
                receiver.url("/hook"),
                json={"deal": 42},
                headers={"x-both": "own", "Webhook-Id": "forged"},
            )
            await job.result(timeout=10)
    from standardwebhooks import Webhook

    for seen in receiver.seen:
        named = [(k.lower(), v) for k, v in seen.headers.items()]
        assert ("x-dest", "d") in named
        assert [v for k, v in named if k == "x-both"] == ["own"]
        (webhook_id,) = [v for k, v in named if k == "webhook-id"]
        assert webhook_id.startswith("msg_")
        assert Webhook(secret).verify(seen.body, seen.headers) == {"deal": 42}
    assert len(receiver.seen) == 2


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("json_set(payload, '$.headers', json('{\"X A\": \"1\"}'))", "not a valid header name"),
        ("json_set(payload, '$.headers', json('{\"X-A\": [1]}'))", "must be a str"),
        ("json_set(payload, '$.headers', json('[1]'))", "headers must be a mapping"),
        ("json_set(payload, '$.method', 'GE T')", "the HTTP method must be a token"),
        ("json_set(payload, '$.url', 'ftp://127.0.0.1/')", "only http and https"),
    ],
)
async def test_a_request_changed_by_hand_in_the_journal_is_dead_lettered_unsent(
    make_queue: MakeQueue, receiver: Receiver, db_path: str, change: str, says: str
) -> None:
    import sqlite3

    producer = make_queue(concurrency=0)
    producer.destination("hooks", http=LOCAL)
    async with producer:
        good = await producer.submit_http("hooks", receiver.url("/hook"), json={"n": 1})
        bad = await producer.submit_http("hooks", receiver.url("/hook"), json={"n": 2})
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"UPDATE jobs SET payload = {change} WHERE id = ?", (bad.id,))
    conn.close()
    queue = make_queue(concurrency=1)
    queue.destination("hooks", http=LOCAL)
    async with queue:
        await run_until_idle(queue)
        dead, done = await queue.get(bad.id), await queue.get(good.id)
    assert done.state == JobState.SUCCEEDED
    assert dead.state == JobState.DEAD
    assert dead.last_error is not None
    assert "the job's request cannot be sent" in dead.last_error
    assert says in dead.last_error
    assert [s.body for s in receiver.seen] == [b'{"n":1}']
