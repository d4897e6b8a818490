"""The JSON codec: payloads, results and errors as text the journal can store."""

from __future__ import annotations

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
# What a value JSON cannot hold raises while encoding.
_UNENCODABLE = (TypeError, ValueError, RecursionError)


def encode_payload(task: str, payload: dict[str, Any], max_bytes: int) -> str:
    """The payload as compact JSON text, or `PayloadError` naming the task and the reason."""
    try:
        text = _encode_json(payload)
    except _UNENCODABLE as exc:
        raise PayloadError(task, f"payload is not JSON-serialisable ({exc})") from None
    # A character is at most 4 bytes in UTF-8: only long texts need encoding to be measured.
    if len(text) * 4 > max_bytes and (size := len(text.encode())) > max_bytes:
        raise PayloadError(task, f"payload is {size} bytes, over the {max_bytes}-byte limit")
    return text


def encode_payloads(task: str, payloads: Sequence[dict[str, Any]], max_bytes: int) -> str:
    """Many payloads as the JSON text of one array, or `PayloadError` for the first bad one.

    Sizes are not checked here: the journal checks each element's size as it inserts.
    """
    try:
        return _encode_json(payloads if isinstance(payloads, list | tuple) else list(payloads))
    except _UNENCODABLE as whole:
        for index, payload in enumerate(payloads):  # find the one to name
            try:
                encode_payload(task, payload, max_bytes)
            except PayloadError as exc:
                raise PayloadError(task, f"payload {index}: {exc.reason}") from None
        raise PayloadError(task, f"payloads are not JSON-serialisable ({whole})") from None


def encode_result(value: Any) -> str:
    """A handler's return value as JSON text (a value JSON cannot hold is stored as its repr)."""
    if value is None:  # most calls return nothing: skip the encoder
        return "null"
    try:
        return _encode_json(value)
    except _UNENCODABLE:
        # reprlib: bounded in depth and length, so even a self-nesting value has one.
        return json.dumps({"unserialisable_result": reprlib.repr(value)})
