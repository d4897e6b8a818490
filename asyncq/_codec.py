"""The JSON codec: payloads, results and errors as text the journal can store."""

from __future__ import annotations

import itertools
import json
import reprlib
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import PayloadError

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024


def _compact_json_encoder() -> Callable[[Any], str]:
    """What `json.dumps(value, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False)` returns, built once.

    `JSONEncoder.encode` builds its C encoder anew on every call, half the cost of
    encoding a small payload; this builds it once (falling back to `encode` where
    there is no C accelerator). Without a circular-reference check, a circular
    value fails as a `RecursionError`, as a too deeply nested one always did.
    """
    encoder = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    c_encode = make(
        None, encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    return encode


_encode_json = _compact_json_encoder()
#: Compact JSON text of a value that JSON can hold (see `_compact_json_encoder`):
#: for rows the journal builds itself.
encode_json = _encode_json
# What a value JSON cannot hold raises while encoding.
_UNENCODABLE = (TypeError, ValueError, RecursionError)


# The types JSON gives back as they went in. Anything else either fails to encode
# or comes back changed (a tuple as a list, an int key as a str): refused.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _unfaithful(value: Any, where: str) -> str | None:
    """Where `value` holds something that would not come back from JSON as it went
    in, and what; None if it round-trips. Only containers are walked."""
    kind = type(value)
    if kind is dict or isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r}, which is not a string"
            if type(item) not in _SCALARS and (found := _unfaithful(item, f"{where}[{key!r}]")):
                return found
        return None
    if kind is list or isinstance(value, list):
        for index, item in enumerate(value):
            if type(item) not in _SCALARS and (found := _unfaithful(item, f"{where}[{index}]")):
                return found
        return None
    if isinstance(value, tuple):
        return f"{where} is a tuple, which JSON would give back as a list: pass a list"
    if isinstance(value, str | int | float | bool):  # enums and other subclasses
        return None
    return None  # the encoder refuses it, with its own reason


def _surrogate_reason(text: str) -> str:
    index = next(i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff")
    return (
        f"holds a lone surrogate ({text[index]!r}), which is not text: decode such "
        "bytes with errors='replace', or send them as base64"
    )


def encode_payload(task: str, payload: dict[str, Any], max_bytes: int) -> str:
    """The payload as compact JSON text, or `PayloadError` naming the task and the reason.

    Refused: what JSON cannot hold (NaN, sets, objects), what it would not give back
    as it went in (tuples, non-string keys), lone surrogates (`"\\udcff"`, as
    `os.fsdecode` makes of undecodable bytes), and payloads over `max_bytes`.
    """
    try:
        text = _encode_json(payload)
    except _UNENCODABLE as exc:
        raise PayloadError(task, f"payload is not JSON-serialisable ({exc})") from None
    # The types of the top-level values, checked in C; anything else is looked into.
    if not _SCALARS.issuperset(map(type, payload.values())) and (
        found := _unfaithful(payload, "payload")
    ):
        raise PayloadError(task, found)
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode())
        except UnicodeEncodeError:
            raise PayloadError(task, f"payload {_surrogate_reason(text)}") from None
    if size > max_bytes:
        raise PayloadError(task, f"payload is {size} bytes, over the {max_bytes}-byte limit")
    return text


def encode_payloads(task: str, payloads: Sequence[dict[str, Any]], max_bytes: int) -> str:
    """Many payloads as the JSON text of one array, or `PayloadError` for the first bad one.

    Sizes are not checked here: the journal checks each element's size as it inserts.
    """
    try:
        text = _encode_json(payloads if isinstance(payloads, list | tuple) else list(payloads))
    except _UNENCODABLE as whole:
        _name_the_bad_one(task, payloads, max_bytes)
        raise PayloadError(task, f"payloads are not JSON-serialisable ({whole})") from None
    # The types of every top-level value, iterated in C: a Python loop over them
    # cost 2 % of a no-op job. Anything nested is checked one payload at a time.
    values = itertools.chain.from_iterable(map(dict.values, payloads))
    faithful = _SCALARS.issuperset(map(type, values))
    if not faithful or not is_utf8(text):
        _name_the_bad_one(task, payloads, max_bytes)
    return text


def _name_the_bad_one(task: str, payloads: Sequence[dict[str, Any]], max_bytes: int) -> None:
    """Raise the `PayloadError` of the first payload that `encode_payload` refuses."""
    for index, payload in enumerate(payloads):
        try:
            encode_payload(task, payload, max_bytes)
        except PayloadError as exc:
            raise PayloadError(task, f"payload {index}: {exc.reason}") from None


def is_utf8(text: str) -> bool:
    """False if `text` holds a lone surrogate (it would not encode as UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def encode_result(value: Any) -> str:
    """A handler's return value as JSON text. A value JSON cannot hold is stored as
    its repr; lone surrogates are kept as JSON escapes, so the text is valid UTF-8."""
    if value is None:  # most calls return nothing: skip the encoder
        return "null"
    try:
        text = _encode_json(value)
    except _UNENCODABLE:
        # reprlib: bounded in depth and length, so even a self-nesting value has one.
        return json.dumps({"unserialisable_result": reprlib.repr(value)})
    return text if is_utf8(text) else json.dumps(value, allow_nan=False)


def storable_text(text: str) -> str:
    """`text` with any lone surrogate written as a backslash escape (valid UTF-8)."""
    if is_utf8(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode()
