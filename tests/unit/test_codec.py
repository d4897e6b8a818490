"""The JSON codec: what is refused at submit, and what is stored safely."""

from __future__ import annotations

import enum
import json
import os
from typing import Any

import pytest

from asyncq import PayloadError
from asyncq._codec import encode_payload, encode_payloads, encode_result, storable_text

LIMIT = 10_000


class Colour(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"name": "\udcff"}, "lone surrogate"),
        ({"name": os.fsdecode(b"caf\xe9")}, "lone surrogate"),
        ({"deep": [{"x": "ok"}, {"y": "\ud800"}]}, "lone surrogate"),
        ({"point": (1, 2)}, r"payload\['point'\] is a tuple"),
        ({"deep": [1, {"b": (3,)}]}, r"payload\['deep'\]\[1\]\['b'\] is a tuple"),
        ({"counts": {1: "one"}}, r"payload\['counts'\] has the key 1"),
        ({"x": float("nan")}, "not JSON-serialisable"),
        ({"x": float("inf")}, "not JSON-serialisable"),
        ({"x": {1, 2}}, "not JSON-serialisable"),
        ({"x": b"bytes"}, "not JSON-serialisable"),
    ],
)
def test_what_json_cannot_hold_faithfully_is_refused(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        encode_payload("t", payload, LIMIT)
    with pytest.raises(PayloadError, match=f"payload 1: .*{reason}"):
        encode_payloads("t", [{"fine": 1}, payload], LIMIT)


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "café 😀 \u2028", "n": 1, "f": 0.5, "b": True, "none": None},
        {"nested": {"list": [1, "two", [3.0]], "map": {"k": {"k": []}}}},
        {"colour": Colour.RED, "big": 2**70},
    ],
)
def test_what_round_trips_is_stored_as_compact_json(payload: dict[str, Any]) -> None:
    text = encode_payload("t", payload, LIMIT)
    assert json.loads(text) == payload
    assert text.encode()  # valid UTF-8
    assert json.loads(encode_payloads("t", [payload, payload], LIMIT)) == [payload, payload]


def test_a_payload_over_the_limit_is_refused_by_its_utf8_size() -> None:
    with pytest.raises(PayloadError, match="over the 10-byte limit"):
        encode_payload("t", {"x": "é" * 3}, 10)  # 9 characters, 12 bytes


def test_results_with_lone_surrogates_are_kept_as_escapes() -> None:
    text = encode_result({"name": "\udcff", "pair": (1, 2)})
    assert text.isascii()
    assert json.loads(text) == {"name": "\udcff", "pair": [1, 2]}


def test_a_result_json_cannot_hold_is_stored_as_its_repr() -> None:
    assert json.loads(encode_result({1, 2})) == {"unserialisable_result": "{1, 2}"}


def test_storable_text_escapes_lone_surrogates_only() -> None:
    assert storable_text("plain é 😀") == "plain é 😀"
    assert storable_text("bad \udcff end") == "bad \\udcff end"
    assert storable_text("bad \udcff end").encode()
