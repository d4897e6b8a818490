"""An HTTP delivery as a job's payload: checked at submit, before anything is
written, and encoded so that every attempt sends the very same bytes (a
signature covers them)."""

from __future__ import annotations

import base64
import functools
import itertools
import json as jsonlib
import os
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .._errors import PayloadError
from ._ssrf import literal_address

#: The name of the built-in delivery task, in every queue.
HTTP_TASK = "asyncq.http"

MAX_URL_CHARS = 8192
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_NOT_IN_URL = re.compile(r"[\x00-\x20\x7f]")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")


# One encoder for every submit: json.dumps with options builds one per call.
_encode_json = jsonlib.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


class _Missing:
    """No `json=` given (None is a JSON value: `null`)."""


MISSING: Any = _Missing()


def check_url(url: object) -> str:
    """`url` if it is an absolute http(s) URL that can be sent, else `ValueError`
    (`TypeError` if it is not a str) that says why."""
    if not isinstance(url, str):
        raise TypeError(f"the URL must be a str, not {type(url).__name__}")
    return _check_url(url)


@functools.lru_cache(maxsize=4096)  # a delivery's URL is checked again when it runs
def _check_url(url: str) -> str:
    shown = url if len(url) <= 200 else url[:200] + "..."
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"the URL is longer than {MAX_URL_CHARS:,} characters: {shown!r}")
    if _NOT_IN_URL.search(url):
        raise ValueError(f"the URL holds a space or a control character: {shown!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"the URL is malformed ({exc}): {shown!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        what = f"a {scheme}: URL" if scheme else "not an absolute URL"
        raise ValueError(f"only http and https URLs can be delivered; {shown!r} is {what}")
    host = parts.hostname
    if not host:
        raise ValueError(f"the URL has no host: {shown!r}")
    if port == 0:
        raise ValueError(f"the URL's port is 0: {shown!r}")
    if literal_address(host) is None and not _valid_name(host):
        raise ValueError(f"the URL's host is not a valid name or address: {shown!r}")
    return url


def _valid_name(host: str) -> bool:
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.removesuffix(".").split(".")
    return len(ascii_host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def check_method(method: object) -> str:
    if not isinstance(method, str) or not _TOKEN.fullmatch(method):
        raise ValueError(f"the HTTP method must be a token such as 'POST', not {method!r}")
    return method.upper()


def check_headers(headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, not {type(headers).__name__}")
    checked = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise ValueError(
                f"header {name!r}: the value must be a str without CR, LF or NUL, not {value!r}"
            )
        checked[name] = value
    return checked


def delivery_payload(
    url: object,
    *,
    method: object = "POST",
    json: Any = MISSING,
    body: str | bytes | None = None,
    headers: object = None,
) -> dict[str, Any]:
    """The payload of a built-in delivery job: checked, with its body encoded once
    (JSON compactly; bytes as base64) and its own Standard Webhooks message id."""
    checked_url = check_url(url)
    checked_method = check_method(method)
    sent = check_headers(headers)
    named = {name.lower() for name in sent}
    text: str | None
    if json is not MISSING:
        if body is not None:
            raise TypeError("give submit_http json= or body=, not both")
        try:
            text = _encode_json(json)
        except (TypeError, ValueError) as exc:
            raise PayloadError(HTTP_TASK, f"json= cannot be sent as JSON ({exc})") from None
        if "content-type" not in named:
            sent["Content-Type"] = "application/json"
        encoded = False
    elif isinstance(body, bytes):
        text, encoded = base64.b64encode(body).decode("ascii"), True
        if "content-type" not in named:
            sent["Content-Type"] = "application/octet-stream"
    elif isinstance(body, str):
        text, encoded = body, False
        if "content-type" not in named:
            sent["Content-Type"] = "text/plain; charset=utf-8"
    elif body is None:
        text, encoded = None, False
    else:
        raise TypeError(f"body= must be str or bytes, not {type(body).__name__}")
    return {
        "url": checked_url,
        "method": checked_method,
        "headers": sent,
        "body": text,
        "base64": encoded,
        # Stable across every attempt and redrive of the job, unique across journals:
        # receivers use it to tell a retry from a new message.
        "webhook_id": new_webhook_id(),
    }


Headers = tuple[tuple[str, str], ...]


def checked_request(method: object, url: object, headers: object) -> tuple[str, str, Headers]:
    """A stored delivery's method, URL and headers, checked again when it runs (a
    row changed by hand in the journal is not checked at submit): `ValueError` or
    `TypeError` as at submit. A request seen before is not checked twice."""
    if type(method) is str and type(url) is str and type(headers) is dict:
        try:
            return _checked_request(method, url, tuple(headers.items()))
        except TypeError:  # a value that cannot be hashed: said by the checks below
            pass
    return check_method(method), check_url(url), tuple(check_headers(headers).items())


@functools.lru_cache(maxsize=4096)  # a few kinds of request per destination
def _checked_request(method: str, url: str, headers: Headers) -> tuple[str, str, Headers]:
    return check_method(method), check_url(url), tuple(check_headers(dict(headers)).items())


def new_webhook_id() -> str:
    """A Standard Webhooks message id unique across processes and journals: `msg_`,
    16 random characters drawn once per process (again after a fork), and a count
    (8 hex digits, more past 4 billion).
    (`secrets.token_urlsafe` per id reads the OS's random source each time, a
    system call that releases the GIL: on a loop beside the journal's busy thread,
    getting it back took longer than the rest of a submit.)"""
    return f"msg_{_ids.prefix}{next(_ids.counter):08x}"


class _Ids:
    """The random prefix (96 bits) and the counter of this process's ids."""

    prefix: str
    counter: itertools.count[int]

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_urlsafe(12)
        self.counter = itertools.count()


_ids = _Ids()
if hasattr(os, "register_at_fork"):  # a forked child draws its own prefix
    os.register_at_fork(after_in_child=_ids.reset)


def body_bytes(body: str | None, encoded: bool) -> bytes:
    """The bytes a payload's body stands for."""
    if body is None:
        return b""
    return base64.b64decode(body) if encoded else body.encode("utf-8")
