"""What an HTTP answer means for the job: the documented classification table.

| answer                                   | verdict                                      |
|------------------------------------------|----------------------------------------------|
| 2xx                                      | success: the result records it               |
| 429 or 503 with a valid `Retry-After`    | `RetryAfter` (seconds or HTTP date, clamped) |
| 408, 425, 429, 5xx                       | retry, under the destination's policy        |
| 3xx (redirects are never followed)       | retry, under the destination's policy        |
| 410 Gone                                 | permanent (dead letter; may pause, option)   |
| other 4xx                                | permanent (dead letter)                      |
| anything else (1xx, >= 600)              | retry                                        |

Connection errors and timeouts are retried under the policy (`_deliver.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum


class Verdict(StrEnum):
    """What an HTTP answer means for the job (`Http(classify=...)` returns one)."""

    #: Delivered: the job succeeded.
    SUCCESS = "success"
    #: Failed; retried under the destination's retry policy (counts for its circuit).
    RETRY = "retry"
    #: Not before the answer's `Retry-After` (the whole destination is held back);
    #: without a usable `Retry-After`, the same as RETRY.
    RETRY_AFTER = "retry_after"
    #: Refused for good: straight to the dead letters.
    PERMANENT = "permanent"
    #: 410 Gone: permanent, and with `Http(pause_on_gone=True)` the destination pauses.
    GONE = "gone"


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    """An answer, as `classify` sees it. `body` holds the first `Http(excerpt=)`
    bytes; `latency` is seconds from sending to the excerpt read; `received_at`
    seconds since the epoch, on the queue's clock."""

    method: str
    url: str
    status: int
    reason: str
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)
    body: bytes
    latency: float
    received_at: float

    def retry_after(self) -> float | None:
        """Seconds the `Retry-After` header asks for (whole seconds or an HTTP date,
        never negative), or None without a usable one."""
        return parse_retry_after(self.headers.get("Retry-After"), self.received_at)

    def excerpt(self) -> str:
        """The body excerpt as text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")


def classify_response(response: HttpResponse) -> Verdict:
    """The default classification (the table above)."""
    status = response.status
    if 200 <= status < 300:
        return Verdict.SUCCESS
    if status in (429, 503) and response.retry_after() is not None:
        return Verdict.RETRY_AFTER
    if status == 410:
        return Verdict.GONE
    if 400 <= status < 500 and status not in (408, 425, 429):
        return Verdict.PERMANENT
    return Verdict.RETRY


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After: 120` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT` as
    seconds from `now` (0 for a date in the past); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000", RFC 5322's "no zone": HTTP dates are in GMT
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None
