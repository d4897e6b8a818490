import json
from typing import Any

import pytest

from asyncq import PayloadError, Queue
from asyncq._codec import encode_payload, encode_payloads, encode_result


def test_payloads_are_compact_json_or_a_clear_error() -> None:
    assert encode_payload("t", {"a": [1, "é"]}, 100) == '{"a":[1,"é"]}'
    with pytest.raises(PayloadError, match=r"cannot submit 't': payload is not JSON-serialisable"):
        encode_payload("t", {"a": b"bytes"}, 100)
    with pytest.raises(PayloadError, match="over the 10-byte limit"):
        encode_payload("t", {"a": "long text"}, 10)
    with pytest.raises(PayloadError, match="over the 10-byte limit"):
        encode_payload("t", {"a": "ééé"}, 10)  # 3 characters, 6 bytes in UTF-8


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"text": 'é "q" \\ \n \u2028 \U0001f600 \x00', "n": None, "b": [True, False]},
        {"floats": [1.5, -0.0, 1e100, 2.5e-300, 0.1 + 0.2], "big": 2**100, "neg": -7},
        {"nested": {"a": [[], {}, [{"b": [1, [2, [3]]]}]]}, "list": [1, 2]},
        {1: "int key", "x": 3.0},
    ],
)
def test_the_encoder_writes_what_json_dumps_writes(payload: dict[Any, Any]) -> None:
    expected = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert encode_payload("t", payload, 10_000) == expected
    assert encode_payloads("t", [payload, payload], 10_000) == f"[{expected},{expected}]"
    assert encode_result(payload) == expected


def test_circular_or_too_deep_payloads_are_refused_clearly() -> None:
    circular: dict[str, Any] = {}
    circular["self"] = circular
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for payload in ({"a": circular}, {"a": deep}):
        with pytest.raises(PayloadError, match="not JSON-serialisable"):
            encode_payload("t", payload, 10_000)
        with pytest.raises(PayloadError, match=r"payload 1: .*not JSON-serialisable"):
            encode_payloads("t", [{}, payload], 10_000)
    assert "unserialisable_result" in encode_result(circular)
    assert "unserialisable_result" in encode_result(deep)


def test_a_result_json_cannot_hold_is_stored_as_its_repr() -> None:
    assert encode_result({"ok": 1}) == '{"ok":1}'
    assert "unserialisable_result" in encode_result(object())


def test_task_names_default_to_module_and_qualname() -> None:
    queue = Queue(":memory:")

    @queue.task
    async def send() -> None:
        pass

    @queue.task(name="emails.send", destination="esp", timeout=5)
    async def named() -> None:
        pass

    assert send.name.startswith(f"{__name__}.")
    assert (named.name, named.destination, named.timeout) == ("emails.send", "esp", 5)


def test_handlers_must_be_async_and_take_named_arguments() -> None:
    queue = Queue(":memory:")

    def sync_handler() -> None:
        pass

    async def variadic(*args: Any) -> None:
        pass

    with pytest.raises(TypeError, match="async def"):
        queue.task(sync_handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\*args"):
        queue.task(variadic)


def test_one_name_cannot_mean_two_handlers() -> None:
    queue = Queue(":memory:")

    async def one() -> None:
        pass

    async def two() -> None:
        pass

    queue.task(name="x")(one)
    with pytest.raises(ValueError, match="already registered"):
        queue.task(name="x")(two)


def test_arguments_are_checked_against_the_handler_at_submit() -> None:
    queue = Queue(":memory:")

    @queue.task
    async def post(url: str, body: dict[str, Any] | None = None) -> None:
        pass

    assert post.payload_from_call(("u",), {}) == {"url": "u"}
    assert post.payload_from_call((), {"url": "u", "body": {}}) == {"url": "u", "body": {}}
    with pytest.raises(PayloadError, match="missing"):
        post.payload_from_call((), {})
    with pytest.raises(PayloadError, match="do not match"):
        post.payload_from_call(("u", {}, "extra"), {})
