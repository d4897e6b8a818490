"""The address guard: which addresses an HTTP delivery may connect to.

Pure functions on `ipaddress` values, no I/O. The connection code asks
`refusal(address)` about every address a name resolves to, and again about the
address of every socket it connects (`_session.py`), so what is checked is what
is connected to: a DNS answer that changes between a check and the connect
cannot slip through.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_net = ipaddress.ip_network

# Checked in this order: the first that holds names the refusal. Anything else
# that is not a global address (documentation, benchmarking, protocol ranges) is
# refused too, as "not a public address".
_REFUSED: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    (
        "a cloud metadata address",
        (
            _net("169.254.169.254/32"),  # AWS, GCP, Azure, OpenStack, DigitalOcean ...
            _net("169.254.170.2/32"),  # AWS ECS task metadata
            _net("100.100.100.200/32"),  # Alibaba Cloud
            _net("168.63.129.16/32"),  # Azure WireServer (a public address!)
            _net("fd00:ec2::254/128"),  # AWS over IPv6
        ),
    ),
    ("an unspecified address", (_net("0.0.0.0/8"), _net("::/128"))),
    ("a loopback address", (_net("127.0.0.0/8"), _net("::1/128"))),
    (
        "a private address",
        (_net("10.0.0.0/8"), _net("172.16.0.0/12"), _net("192.168.0.0/16"), _net("fc00::/7")),
    ),
    ("a link-local address", (_net("169.254.0.0/16"), _net("fe80::/10"))),
    ("a shared (CGNAT) address", (_net("100.64.0.0/10"),)),
    ("a multicast address", (_net("224.0.0.0/4"), _net("ff00::/8"))),
    ("a broadcast address", (_net("255.255.255.255/32"),)),
    ("a reserved address", (_net("240.0.0.0/4"), _net("fec0::/10"))),
)

_NAT64 = (_net("64:ff9b::/96"), _net("64:ff9b:1::/48"))
_SIX_TO_FOUR = _net("2002::/16")
_COMPATIBLE = _net("::/96")


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses may be connected to: public ones, plus `allow` (networks);
    everything when `allow_private`."""

    allow_private: bool = False
    allow: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be connected to, or None if it may."""
        if self.allow_private:
            return None
        inner = embedded_ipv4(address)
        for candidate in (address, inner):
            if candidate is not None and any(
                candidate.version == net.version and candidate in net for net in self.allow
            ):
                return None
        for checked in (address,) if inner is None else (inner, address):
            reason = _category(checked)
            if reason is not None:
                if checked is inner:
                    return f"{reason} ({inner} inside {address})"
                return reason
        return None


def parse_networks(networks: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """`["10.1.0.0/16", "127.0.0.1"]` as networks; `ValueError` naming a bad one."""
    parsed = []
    for network in networks:
        try:
            parsed.append(ipaddress.ip_network(network, strict=False))
        except ValueError as exc:
            raise ValueError(f"Http(allow=...): {network!r} is not a network: {exc}") from None
    return tuple(parsed)


def _category(address: IPAddress) -> str | None:
    for reason, networks in _REFUSED:
        for net in networks:
            if address.version == net.version and address in net:
                return reason
    if not address.is_global:
        return "not a public address"
    return None


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if it is one of the forms that
    reach an IPv4 host: IPv4-mapped (`::ffff:10.0.0.1`), IPv4-compatible
    (`::10.0.0.1`), NAT64 (`64:ff9b::10.0.0.1`) and 6to4 (`2002:0a00:0001::`)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    value = int(address)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if any(address in net for net in _NAT64):
        return low32
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    if address in _COMPATIBLE and value > 1:  # not :: or ::1
        return low32
    return None


_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a host written in any of the IPv4 spellings that `inet_aton`
    and browsers accept stands for: `127.1`, `0x7f.0.0.1`, `0177.0.0.1`,
    `2130706433`, `0x7f000001`. None if `host` is not such a spelling (a name)."""
    if host.endswith("."):
        host = host[:-1]
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.fullmatch(p) for p in parts):
        return None
    values = []
    for part in parts:
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for index, value in enumerate(head):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


@functools.lru_cache(maxsize=4096)  # a few hosts, each parsed once, not per delivery
def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names literally (`[::1]`, `10.0.0.1`, `0x7f.1`),
    or None if it is a name to resolve."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    bare = bare.split("%", 1)[0]  # an IPv6 zone (fe80::1%eth0) is not part of the address
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return loose_ipv4(bare)
