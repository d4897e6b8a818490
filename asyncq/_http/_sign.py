"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

`webhook-signature` holds `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body"))
for each key, space-separated: while a secret is rotated, receivers holding
either the old or the new one can verify.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence


def signature_headers(
    keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three headers that sign `body` as message `webhook_id` sent at
    `timestamp` (whole seconds since the epoch)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode() for key in keys
    )
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }
