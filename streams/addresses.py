"""Which network addresses an image fetch may connect to (pure functions, no I/O).

Listing image URLs come from sellers, so the fetcher must never be pointed at the embedder's own
network: loopback, private ranges, link-local (cloud metadata lives at 169.254.169.254),
carrier-grade NAT, multicast, reserved and unspecified addresses are refused, in IPv4, IPv6 and
the IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4, Teredo).
"""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("100.100.100.200"),
    ipaddress.ip_address("fd00:ec2::254"),
}


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    # IPv4-compatible (deprecated ::a.b.c.d) addresses.
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_loopback(address: IPAddress) -> bool:
    inner = embedded_ipv4(address)
    return address.is_loopback or (inner is not None and inner.is_loopback)


def refusal(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` may not be fetched from, or None when it is a public unicast address."""
    if allow_loopback and _is_loopback(address):
        return None
    inner = embedded_ipv4(address)
    # An address that carries an IPv4 address is judged by it: that is where packets go.
    candidates: list[IPAddress] = [address] if inner is None else [inner]
    if isinstance(address, ipaddress.IPv6Address) and address in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    for candidate in candidates:
        if candidate in _METADATA:
            return "a cloud metadata address"
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_unspecified:
            return "the unspecified address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_multicast:
            return "a multicast address"
        if isinstance(candidate, ipaddress.IPv4Address) and candidate in _CGNAT:
            return "a carrier-grade NAT address"
        if candidate.is_private:
            return "a private address"
        if candidate.is_reserved or not candidate.is_global:
            return "a reserved or non-global address"
    return None


_NUMBER = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


def is_numeric_host(host: str) -> bool:
    """True when a host's last label is a number: URL parsers read it as an IPv4 address
    (``127.1``, ``2130706433``, ``0177.0.0.1``, ``0x7f.1``), whatever its form."""
    labels = host.rstrip(".").split(".")
    return bool(labels) and _NUMBER.match(labels[-1]) is not None


def parse_literal(host: str) -> IPAddress | None:
    """The address a URL host names literally (``10.0.0.1``, ``[::1]``), else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    text = text.split("%", 1)[0]  # an IPv6 zone id does not change the address
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
