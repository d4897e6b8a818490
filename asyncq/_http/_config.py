"""`Http`: how a destination's HTTP deliveries are made. Imports nothing from
aiohttp, so that `from asyncq import Http` works without the extra installed."""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._ssrf import AddressPolicy, IPNetwork, parse_networks

if TYPE_CHECKING:
    from ._classify import HttpResponse, Verdict

#: The prefix of a Standard Webhooks secret (`whsec_` + base64 of the key).
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Http:
    """How `submit_http` deliveries to one destination are made (seconds, bytes).

    - `timeout`: the whole request, connect to last byte read; `connect_timeout`
      the connection alone. A call past its timeout fails (retried by the
      destination's policy) and frees its worker at once.
    - `connections`: connections (calls in flight) to this destination at most;
      it caps the destination's `concurrency`, so no worker waits for one.
    - `signing_secret`: sign every delivery per Standard Webhooks, with one secret
      or several while one is rotated (`"whsec_..."`, base64 of the key; or the raw
      key as bytes). `signing_secret_env` names an environment variable holding
      them instead (space-separated), read when the first delivery is signed.
      Secrets live in the process only: never in the journal.
    - `allow_private`: turn the address guard off (loopback, private, link-local,
      CGNAT, metadata ... addresses are refused by default); `allow`: networks
      allowed in spite of it (`["10.1.0.0/16", "127.0.0.1"]`).
    - `classify(response) -> Verdict`: decide what an answer means (default:
      `classify_response`, the documented table). A `RetryAfter` verdict is clamped
      to `max_retry_after`.
    - `pause_on_gone`: a 410 Gone pauses the destination (in every process) as well
      as dead-lettering the job.
    - `excerpt`: bytes of the response body kept in the result or the error.
    - `headers`: sent with every delivery (a delivery's own headers win).
    - `resolver`: an `aiohttp.abc.AbstractResolver` to resolve names with
      (default: aiohttp's); its answers go through the guard all the same.
    - `dns_cache`: seconds a name's (guarded) addresses are kept; 0 turns it off.
    """

    timeout: float = 30.0
    connect_timeout: float = 10.0
    connections: int | None = None
    signing_secret: str | bytes | Sequence[str | bytes] | None = field(default=None, repr=False)
    signing_secret_env: str | None = None
    allow_private: bool = False
    allow: Sequence[str | IPNetwork] = ()
    classify: Callable[[HttpResponse], Verdict] | None = None
    max_retry_after: float = 3600.0
    pause_on_gone: bool = False
    excerpt: int = 1024
    headers: Mapping[str, str] = field(default_factory=dict)
    resolver: Any = None
    dns_cache: float = 10.0
    _keys: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _addresses: AddressPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("timeout", "connect_timeout", "max_retry_after"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ValueError(f"Http({name}=...) must be a finite number of seconds above 0")
        if not (isinstance(self.dns_cache, int | float) and 0 <= self.dns_cache < math.inf):
            raise ValueError("Http(dns_cache=...) must be a finite number of seconds >= 0")
        if self.connections is not None and (
            not isinstance(self.connections, int) or self.connections < 1
        ):
            raise ValueError("Http(connections=...) must be an int of at least 1")
        if not isinstance(self.excerpt, int) or not 0 <= self.excerpt <= 1_000_000:
            raise ValueError("Http(excerpt=...) must be an int of bytes, 0 to 1,000,000")
        if self.signing_secret is not None and self.signing_secret_env is not None:
            raise ValueError("give Http signing_secret or signing_secret_env, not both")
        if self.signing_secret_env is not None and not self.signing_secret_env:
            raise ValueError("Http(signing_secret_env=...) must name a variable")
        # Read-only: deliveries prepare their headers once per destination and request.
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))
        object.__setattr__(self, "allow", parse_networks(self.allow))
        keys = () if self.signing_secret is None else parse_secrets(self.signing_secret)
        object.__setattr__(self, "_keys", keys)
        allow: tuple[IPNetwork, ...] = self.allow  # type: ignore[assignment]
        object.__setattr__(self, "_addresses", AddressPolicy(self.allow_private, allow))

    @property
    def signs(self) -> bool:
        """Deliveries to this destination are signed."""
        return bool(self._keys) or self.signing_secret_env is not None

    def signing_keys(self) -> tuple[bytes, ...]:
        """The keys to sign with (the first is the newest). From the environment if
        so configured; `LookupError` naming the variable if it is not set."""
        if self.signing_secret_env is None:
            return self._keys
        value = os.environ.get(self.signing_secret_env, "").split()
        if not value:
            raise LookupError(
                f"the signing secret's environment variable {self.signing_secret_env} is not set"
            )
        return parse_secrets(value, source=f"${self.signing_secret_env}")

    @property
    def addresses(self) -> AddressPolicy:
        """The address guard's policy for this destination."""
        return self._addresses


def parse_secrets(
    secrets: str | bytes | Iterable[str | bytes], *, source: str = "Http(signing_secret=...)"
) -> tuple[bytes, ...]:
    """Standard Webhooks secrets as keys: `whsec_` + base64 (the prefix may be left
    out), or raw key bytes. `ValueError` that never shows the secret itself."""
    items = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    if not items:
        raise ValueError(f"{source}: no secret given")
    keys = []
    for index, item in enumerate(items):
        if isinstance(item, bytes):
            key = item
        elif isinstance(item, str):
            text = item.removeprefix(SECRET_PREFIX)
            try:
                key = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"{source}: secret {index + 1} is not base64 (expected whsec_ + base64)"
                ) from None
        else:
            raise TypeError(f"{source}: a secret is a str or bytes, not {type(item).__name__}")
        if len(key) < 16:
            raise ValueError(f"{source}: secret {index + 1} is shorter than 16 bytes")
        keys.append(key)
    return tuple(keys)
