"""The SSRF guard's address rules (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from streams.addresses import parse_literal, refusal
from streams.errors import FetchError
from streams.fetch import check_url

REFUSED = [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "100.100.100.200", "224.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "::",
    "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::", "::127.0.0.1",
]  # fmt: skip
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("text", REFUSED)
def test_refuses_internal_addresses(text: str) -> None:
    assert refusal(ipaddress.ip_address(text)) is not None


@pytest.mark.parametrize("text", ALLOWED)
def test_allows_public_addresses(text: str) -> None:
    assert refusal(ipaddress.ip_address(text)) is None


def test_loopback_only_with_the_setting() -> None:
    for text in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert refusal(ipaddress.ip_address(text), allow_loopback=True) is None
    assert refusal(ipaddress.ip_address("10.0.0.1"), allow_loopback=True) is not None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/a.png", "bad_url"),
        ("file:///etc/passwd", "bad_url"),
        ("http://user:pw@example.com/a.png", "bad_url"),
        ("http://10.0.0.5/a.png", "forbidden_address"),
        ("http://[::1]:8080/a.png", "forbidden_address"),
        ("http://[::ffff:7f00:1]/a.png", "forbidden_address"),
        ("http://169.254.169.254/latest/meta-data", "forbidden_address"),
        ("http://example.com:99999/a.png", "bad_url"),
    ],
)
def test_check_url(url: str, reason: str) -> None:
    with pytest.raises(FetchError) as info:
        check_url(url, allow_loopback=False)
    assert info.value.reason == reason


def test_parse_literal() -> None:
    assert parse_literal("[fe80::1%eth0]") == ipaddress.ip_address("fe80::1")
    assert parse_literal("example.com") is None
