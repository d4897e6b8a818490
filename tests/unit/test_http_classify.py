"""The classification table and Retry-After, as pure functions (no loop)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from asyncq import HttpResponse, Verdict, classify_response
from asyncq._http import parse_retry_after

NOW = 1_800_000_000.0


def answer(status: int, **headers: str) -> HttpResponse:
    return HttpResponse(
        method="POST",
        url="https://example.com/hook",
        status=status,
        reason="",
        headers=CIMultiDictProxy(CIMultiDict(headers)),
        body=b"",
        latency=0.01,
        received_at=NOW,
    )


@pytest.mark.parametrize(
    ("status", "headers", "verdict"),
    [
        (200, {}, Verdict.SUCCESS),
        (201, {}, Verdict.SUCCESS),
        (204, {}, Verdict.SUCCESS),
        (299, {}, Verdict.SUCCESS),
        (301, {"Location": "http://169.254.169.254/"}, Verdict.RETRY),
        (302, {}, Verdict.RETRY),
        (307, {}, Verdict.RETRY),
        (400, {}, Verdict.PERMANENT),
        (401, {}, Verdict.PERMANENT),
        (403, {}, Verdict.PERMANENT),
        (404, {}, Verdict.PERMANENT),
        (408, {}, Verdict.RETRY),
        (410, {}, Verdict.GONE),
        (422, {}, Verdict.PERMANENT),
        (425, {}, Verdict.RETRY),
        (429, {}, Verdict.RETRY),
        (429, {"Retry-After": "30"}, Verdict.RETRY_AFTER),
        (429, {"retry-after": "soon"}, Verdict.RETRY),  # unreadable: a plain retry
        (500, {}, Verdict.RETRY),
        (502, {}, Verdict.RETRY),
        (503, {}, Verdict.RETRY),
        (503, {"Retry-After": "Fri, 15 Jan 2027 08:00:00 GMT"}, Verdict.RETRY_AFTER),
        (504, {"Retry-After": "30"}, Verdict.RETRY),  # only 429 and 503 ask for a pause
        (599, {}, Verdict.RETRY),
        (600, {}, Verdict.RETRY),
    ],
)
def test_the_table(status: int, headers: dict[str, str], verdict: Verdict) -> None:
    assert classify_response(answer(status, **headers)) is verdict


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 0 ", NOW) == 0.0
    when = datetime.fromtimestamp(NOW + 90, UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == 90.0
    past = datetime.fromtimestamp(NOW - 90, UTC)
    assert parse_retry_after(format_datetime(past, usegmt=True), NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "-5", "1.5", "soon", "Fri, 99 Foo 2027 25:00:00 GMT"])
def test_an_unreadable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None
