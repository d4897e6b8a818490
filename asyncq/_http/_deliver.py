"""One HTTP delivery: guard, sign, send, read an excerpt, classify. Its outcome
is a result (`HttpResult`) or one of the errors of `_errors.py`, which the
worker pool turns into a retry, a `RetryAfter` hold or a dead letter."""

from __future__ import annotations

import asyncio
import functools
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
from ._session import HttpClients, import_aiohttp, refused_in
from ._sign import signature_headers
from ._ssrf import AddressPolicy, literal_address

if TYPE_CHECKING:
    import aiohttp


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
    headers: dict[str, str],
    body: bytes,
    webhook_id: str,
    on_gone: Callable[[], Awaitable[None]],
) -> HttpResult:
    """Send one request as `http` says, and classify the answer."""
    check_literal_host(http, url)
    sent = {**http.headers, **headers}
    if http.signs:
        try:
            keys = http.signing_keys()
        except LookupError as exc:
            raise RuntimeError(f"cannot sign the delivery: {exc}") from None
        sent.update(signature_headers(keys, webhook_id, int(clock.now()), body))
    client = clients.client(http)
    aiohttp = import_aiohttp()
    loop = asyncio.get_running_loop()
    started = loop.time()
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
        return {"status": status, "latency": round(loop.time() - started, 6), "body": body_text}
    response = HttpResponse(
        method=method,
        url=url,
        status=answer.status,
        reason=answer.reason or "",
        headers=answer.headers,
        body=excerpt,
        latency=loop.time() - started,
        received_at=clock.now(),
    )
    return await _judge(http, response, on_gone)


def check_literal_host(http: Http, url: str) -> None:
    """Refuse, before any connection, a URL whose host is an address the guard
    refuses, in whatever spelling (`http://0x7f.1/`, `http://[::ffff:10.0.0.1]/`)."""
    refused = _literal_refusal(http.addresses, url)
    if refused is not None:
        raise AddressRefused(*refused)


@functools.lru_cache(maxsize=4096)  # a few URLs per destination: one lookup per delivery
def _literal_refusal(policy: AddressPolicy, url: str) -> tuple[str, str, str] | None:
    host = urlsplit(url).hostname or ""
    address = literal_address(host)
    if address is not None:
        why = policy.refusal(address)
        if why is not None:
            return host, str(address), why
    return None


async def _read_excerpt(answer: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks = []
    size = 0
    while size < limit:
        chunk = await answer.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


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
