"""Which IP addresses a tool may connect to: the private-address rule, pure.

:func:`classify` says why an address is not a public one (``loopback``, ``private``,
``link-local``, ``cloud metadata``, ...) or None when it is. An IPv6 address that carries an
IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``,
Teredo) is judged by the IPv4 address too, so ``::ffff:127.0.0.1`` is loopback however it
is written. :func:`canonical` turns an IPv4-mapped address into its IPv4 address, which is
what a tool connects to. Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA: Final = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
"""The cloud metadata services' addresses: refused even with ``allow_private``, unless a
network of ``allowed_networks`` holds them."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def canonical(address: IPAddress) -> IPAddress:
    """``address``, but an IPv4-mapped IPv6 address as its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, Teredo client), if
    any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _own_class(address: IPAddress) -> str | None:
    if address in METADATA:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally routable"
    return None


def classify(address: IPAddress) -> str | None:
    """Why ``address`` is not a public address (``loopback``, ``private``, ``link-local``,
    ``a cloud metadata address``, ``unspecified``, ``multicast``, ``reserved``, ``not
    globally routable``), or None when it is one. An IPv6 address carrying an IPv4 address
    is judged by that too (the reason then says so); an IPv4-mapped one is judged as the
    IPv4 address it is, which is what a connection to it reaches."""
    mapped = canonical(address)
    if mapped is not address:
        reason = _own_class(mapped)
        return None if reason is None else f"{reason} ({address} is {mapped})"
    inner = embedded_ipv4(address)
    if inner is not None:
        reason = _own_class(inner)
        if reason is not None:
            return f"{reason} ({address} carries {inner})"
    return _own_class(address)


def is_metadata(address: IPAddress) -> bool:
    """Whether ``address`` is (or carries) a cloud metadata service's address."""
    inner = embedded_ipv4(address)
    return address in METADATA or (inner is not None and inner in METADATA)


def in_networks(address: IPAddress, networks: tuple[Network, ...]) -> bool:
    """Whether ``address`` (or, for an IPv4-mapped one, its IPv4 address) is in one of
    ``networks``."""
    forms = {address, canonical(address)}
    return any(
        form.version == network.version and form in network
        for form in forms
        for network in networks
    )
