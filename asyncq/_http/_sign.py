"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

`webhook-signature` holds `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body"))
for each key, space-separated: while a secret is rotated, receivers holding
either the old or the new one can verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence


def signature_headers(
    keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers that sign `body` as message `webhook_id` sent at
    `timestamp` (whole seconds since the epoch)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    # Not hmac.digest(): CPython's one-shot HMAC releases the GIL whatever the size,
    # and on the event loop's thread getting it back from a busy thread (the
    # journal's writer) took up to milliseconds a signature. The HMAC object keeps
    # the GIL for bodies under 2 KiB.
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }
