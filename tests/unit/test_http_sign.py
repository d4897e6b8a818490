"""Signing and message ids, against the standard library's HMAC: every key length
(longer than a block is hashed first), empty and large bodies, rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sys

import pytest

from asyncq._http._request import new_webhook_id
from asyncq._http._sign import signature, signature_headers


def expected(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@pytest.mark.parametrize("key_size", [16, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("body_size", [0, 75, 2048, 100_000])
def test_a_signature_is_hmac_sha256_of_id_timestamp_and_body(key_size: int, body_size: int) -> None:
    key = bytes((7 * i + key_size) % 256 for i in range(key_size))
    body = bytes(i % 251 for i in range(body_size))
    for _ in range(2):  # the second from the keyed state the first left cached
        assert signature([key], "msg_a", "1700000000", body) == expected(
            key, "msg_a", "1700000000", body
        )


def test_rotation_signs_with_every_key_newest_first() -> None:
    new, old = b"n" * 32, b"o" * 24
    headers = signature_headers([new, old], "msg_b", 1700000001, b"{}")
    assert headers["webhook-id"] == "msg_b"
    assert headers["webhook-timestamp"] == "1700000001"
    assert headers["webhook-signature"] == " ".join(
        expected(key, "msg_b", "1700000001", b"{}") for key in (new, old)
    )


def test_webhook_ids_are_unique_and_a_forked_child_draws_its_own() -> None:
    ids = {new_webhook_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(i.startswith("msg_") and len(i) == 28 and "." not in i for i in ids)
    if sys.platform == "win32" or not hasattr(os, "fork"):
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        try:
            os.write(write, new_webhook_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = new_webhook_id()
    assert child.startswith("msg_")
    assert child not in ids
    assert child[:20] != mine[:20]  # another random prefix, not only another count
