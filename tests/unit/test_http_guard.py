"""The address guard, as a table: no packet is sent anywhere here. Every form a
URL's host can take is read as the address it stands for (`literal_address`),
then judged by the policy (`AddressPolicy.refusal`)."""

from __future__ import annotations

import ipaddress

import pytest

from asyncq._http._ssrf import AddressPolicy, embedded_ipv4, literal_address, parse_networks

GUARD = AddressPolicy()

# (host as written in a URL, the address it stands for, the refusal's words)
REFUSED = [
    ("127.0.0.1", "127.0.0.1", "loopback"),
    ("127.1", "127.0.0.1", "loopback"),  # short form
    ("127.0.1", "127.0.0.1", "loopback"),
    ("0x7f.1", "127.0.0.1", "loopback"),  # hex
    ("0x7F000001", "127.0.0.1", "loopback"),
    ("0177.0.0.1", "127.0.0.1", "loopback"),  # octal
    ("017700000001", "127.0.0.1", "loopback"),
    ("2130706433", "127.0.0.1", "loopback"),  # integer
    ("127.255.255.254", "127.255.255.254", "loopback"),
    ("[::1]", "::1", "loopback"),
    ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("[::ffff:7f00:1]", "::ffff:7f00:1", "loopback"),
    ("0.0.0.0", "0.0.0.0", "unspecified"),
    ("0", "0.0.0.0", "unspecified"),
    ("[::]", "::", "unspecified"),
    ("10.0.0.1", "10.0.0.1", "private"),
    ("012.0.0.1", "10.0.0.1", "private"),  # octal
    ("167772161", "10.0.0.1", "private"),  # integer
    ("172.16.0.1", "172.16.0.1", "private"),
    ("172.31.255.255", "172.31.255.255", "private"),
    ("192.168.1.1", "192.168.1.1", "private"),
    ("0xc0.0xa8.1.1", "192.168.1.1", "private"),
    ("[fd00::1]", "fd00::1", "private"),
    ("[::ffff:10.0.0.1]", "::ffff:10.0.0.1", "private"),
    ("[::ffff:192.168.0.1]", "::ffff:192.168.0.1", "private"),
    ("[64:ff9b::a00:1]", "64:ff9b::a00:1", "private"),  # NAT64 onto 10.0.0.1
    ("[2002:c0a8:101::1]", "2002:c0a8:101::1", "private"),  # 6to4 onto 192.168.1.1
    ("[::10.0.0.1]", "::10.0.0.1", "private"),  # IPv4-compatible
    ("169.254.169.254", "169.254.169.254", "metadata"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254", "metadata"),
    ("2852039166", "169.254.169.254", "metadata"),
    ("0251.0376.0251.0376", "169.254.169.254", "metadata"),
    ("169.254.43518", "169.254.169.254", "metadata"),
    ("[::ffff:169.254.169.254]", "::ffff:169.254.169.254", "metadata"),
    ("[fd00:ec2::254]", "fd00:ec2::254", "metadata"),
    ("169.254.170.2", "169.254.170.2", "metadata"),
    ("100.100.100.200", "100.100.100.200", "metadata"),
    ("168.63.129.16", "168.63.129.16", "metadata"),
    ("169.254.1.1", "169.254.1.1", "link-local"),
    ("[fe80::1]", "fe80::1", "link-local"),
    ("[fe80::1%25eth0]", "fe80::1", "link-local"),
    ("100.64.0.1", "100.64.0.1", "CGNAT"),
    ("100.127.255.254", "100.127.255.254", "CGNAT"),
    ("224.0.0.1", "224.0.0.1", "multicast"),
    ("239.255.255.250", "239.255.255.250", "multicast"),
    ("[ff02::1]", "ff02::1", "multicast"),
    ("255.255.255.255", "255.255.255.255", "broadcast"),
    ("240.0.0.1", "240.0.0.1", "reserved"),
    ("192.0.2.1", "192.0.2.1", "not a public address"),  # documentation
    ("198.18.0.1", "198.18.0.1", "not a public address"),  # benchmarking
    ("[2001:db8::1]", "2001:db8::1", "not a public address"),
]


def test_at_least_25_forms_are_refused() -> None:
    assert len(REFUSED) >= 25


@pytest.mark.parametrize(("host", "address", "words"), REFUSED)
def test_the_guard_refuses(host: str, address: str, words: str) -> None:
    parsed = literal_address(host.replace("%25", "%"))
    assert parsed == ipaddress.ip_address(address)
    why = GUARD.refusal(parsed)
    assert why is not None, host
    assert words in why, (host, why)


@pytest.mark.parametrize(
    "host",
    ["93.184.216.34", "8.8.8.8", "1.1.1.1", "[2606:4700:4700::1111]", "[2a00:1450:4001::200e]"],
)
def test_public_addresses_pass(host: str) -> None:
    parsed = literal_address(host)
    assert parsed is not None
    assert GUARD.refusal(parsed) is None


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "localhost",
        "127.0.0.1.nip.io",
        "1e100.net",
        "0x7f.example",
        "08.1",
        "1.2.3.4.5",
    ],
)
def test_names_are_names(host: str) -> None:
    assert literal_address(host) is None  # resolved, and the guard judges the answer


def test_an_out_of_range_spelling_is_not_an_address() -> None:
    assert literal_address("256.0.0.1") is None
    assert literal_address("1.2.65536") is None
    assert literal_address("4294967296") is None


def test_the_allow_list_opens_only_its_networks() -> None:
    policy = AddressPolicy(allow=parse_networks(["127.0.0.1", "10.1.0.0/16"]))
    allowed = ["127.0.0.1", "::ffff:127.0.0.1", "10.1.2.3"]
    refused = ["127.0.0.2", "10.2.0.1", "169.254.169.254", "::1", "0.0.0.0"]
    assert [policy.refusal(ipaddress.ip_address(a)) for a in allowed] == [None] * 3
    assert all(policy.refusal(ipaddress.ip_address(a)) for a in refused)


def test_allow_private_turns_the_guard_off() -> None:
    policy = AddressPolicy(allow_private=True)
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) is None


def test_an_embedded_address_is_named_in_the_refusal() -> None:
    why = GUARD.refusal(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert why == "a private address (10.0.0.1 inside ::ffff:a00:1)"
    assert embedded_ipv4(ipaddress.ip_address("2606:4700::1111")) is None


def test_a_bad_network_is_refused_at_declaration() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a network"):
        parse_networks(["10.0.0.0/33"])
