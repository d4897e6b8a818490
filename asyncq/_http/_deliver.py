"""One HTTP delivery: guard, sign, send, read an excerpt, classify. Its outcome
is a result (`HttpResult`) or one of the errors of `_errors.py`, which the
worker pool turns into a retry, a `RetryAfter` hold or a dead letter."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import urlsplit

from .._clock import Clock
from ._classify import HttpResponse, Verdict, classify_response
from ._config import Http
from ._errors import (
    AddressRefused,
    HttpConnectionFailed,
    HttpRejected,
    HttpRetryAfter,
    HttpStatusError,
    HttpTimeout,
)
from ._request import Headers
from ._session import HttpClients, import_aiohttp, refused_in
from ._sign import signature
from ._ssrf import AddressPolicy, literal_address

if TYPE_CHECKING:
    import aiohttp
    from multidict import CIMultiDict


class HttpResult(TypedDict):
    """What a delivery's job returns: the status, the latency (seconds, from
    sending to the excerpt read) and the first `Http(excerpt=)` bytes of the body."""

    status: int
    latency: float
    body: str


async def deliver(
    http: Http,
    clients: HttpClients,
    clock: Clock,
    *,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    webhook_id: str,
    on_gone: Callable[[], Awaitable[None]],
) -> HttpResult:
    """Send one request as `http` says, and classify the answer. `method`, `url`
    and `headers` are checked already (`checked_request`)."""
    prepared = _prepared(http, method, url, headers)
    if prepared.refusal is not None:
        raise AddressRefused(*prepared.refusal)
    sent = prepared.headers.copy()
    if http.signs:
        try:
            keys = http.signing_keys()
        except LookupError as exc:
            raise RuntimeError(f"cannot sign the delivery: {exc}") from None
        timestamp = str(int(clock.now()))
        # Set, not added: they replace a delivery's own header of the same name.
        sent["webhook-id"] = webhook_id
        sent["webhook-timestamp"] = timestamp
        sent["webhook-signature"] = signature(keys, webhook_id, timestamp, body)
    client = clients.client(http)
    aiohttp = import_aiohttp()
    # Not the loop's time: asyncio.get_running_loop() makes a getpid() system call
    # on Python 3.11, and a delivery made three of them already.
    started = time.perf_counter()
    try:
        async with client.session.request(
            method,
            url,
            data=body or None,
            headers=sent,
            allow_redirects=False,  # a redirect is how a request slips past the guard
            timeout=client.timeout,
        ) as answer:
            excerpt = await _read_excerpt(answer, http.excerpt)
            status = answer.status
    except TimeoutError:
        raise HttpTimeout(method, url, http.timeout) from None
    except aiohttp.InvalidURL as exc:
        raise HttpRejected(method, url, 0, "invalid URL", str(exc)) from None
    except (aiohttp.ClientError, OSError) as exc:
        refused = refused_in(exc)
        if refused is not None:
            raise refused from None
        raise HttpConnectionFailed(method, url, exc) from exc
    if http.classify is None and 200 <= status < 300:  # the common case, without a record
        body_text = excerpt.decode("utf-8", "replace") if excerpt else ""
        return {
            "status": status,
            "latency": round(time.perf_counter() - started, 6),
            "body": body_text,
        }
    response = HttpResponse(
        method=method,
        url=url,
        status=answer.status,
        reason=answer.reason or "",
        headers=answer.headers,
        body=excerpt,
        latency=time.perf_counter() - started,
        received_at=clock.now(),
    )
    return await _judge(http, response, on_gone)


class _Prepared:
    """What every delivery of one request to one destination shares: the headers
    before signing (the destination's, then the delivery's, which win), and the
    guard's refusal of a host written as an address (None: not refused here)."""

    __slots__ = ("headers", "refusal")

    def __init__(self, headers: CIMultiDict[str], refusal: tuple[str, str, str] | None) -> None:
        self.headers = headers
        self.refusal = refusal


@functools.lru_cache(maxsize=4096)  # a few requests per destination: one lookup per delivery
def _prepared(http: Http, method: str, url: str, headers: Headers) -> _Prepared:
    import_aiohttp()  # the error that names the extra, if it is missing
    from multidict import CIMultiDict  # aiohttp's: passed as is, aiohttp copies it once

    sent: CIMultiDict[str] = CIMultiDict()
    # Set one by one: a name set again, in any case, replaces the earlier value.
    for name, value in (*http.headers.items(), *headers):
        sent[name] = value
    return _Prepared(sent, _literal_refusal(http.addresses, url))


def _literal_refusal(policy: AddressPolicy, url: str) -> tuple[str, str, str] | None:
    host = urlsplit(url).hostname or ""
    address = literal_address(host)
    if address is not None:
        why = policy.refusal(address)
        if why is not None:
            return host, str(address), why
    return None


async def _read_excerpt(answer: aiohttp.ClientResponse, limit: int) -> bytes:
    content = answer.content
    chunks = []
    size = 0
    while size < limit and not content.at_eof():  # a body read whole needs no second read
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _judge(
    http: Http, response: HttpResponse, on_gone: Callable[[], Awaitable[None]]
) -> HttpResult:
    verdict = (http.classify or classify_response)(response)
    facts: tuple[Any, ...] = (
        response.method,
        response.url,
        response.status,
        response.reason,
        response.excerpt(),
    )
    if verdict == Verdict.SUCCESS:
        return {
            "status": response.status,
            "latency": round(response.latency, 6),
            "body": response.excerpt(),
        }
    if verdict == Verdict.RETRY_AFTER:
        seconds = response.retry_after()
        if seconds is not None:
            method, url, status, reason, excerpt = facts
            raise HttpRetryAfter(
                method, url, status, reason, excerpt, min(seconds, http.max_retry_after)
            )
    elif verdict == Verdict.PERMANENT:
        raise HttpRejected(*facts)
    elif verdict == Verdict.GONE:
        if http.pause_on_gone:
            await on_gone()
        raise HttpRejected(*facts)
    elif verdict != Verdict.RETRY:
        raise TypeError(f"Http(classify=...) returned {verdict!r}, not a Verdict")
    raise HttpStatusError(*facts)
