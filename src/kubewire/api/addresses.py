"""Addresses with Go's (k8s.io/utils/net) "sloppy" parsing, shared by the API's validation and
kube-proxy's planners, so both read odd-but-accepted input (leading zeros, IPv4-mapped IPv6) the
same way: ParseIPSloppy and ParseCIDRSloppy, with IPv4-mapped addresses and CIDRs (prefix 96 or
more) counted as IPv4, as Go's To4() makes them wherever Kubernetes looks at families.

Not for cluster DNS: CoreDNS parses with the strict net.ParseIP (kubewire.dns.records).
"""

from __future__ import annotations

import ipaddress
import socket

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_ipv4_sloppy(text: str) -> ipaddress.IPv4Address | None:
    parts = text.split(".")
    if len(parts) != 4:
        return None
    octets = []
    for part in parts:
        if not part or not part.isascii() or not part.isdigit():
            return None
        value = int(part)
        if value > 255:
            return None
        octets.append(value)
    return ipaddress.IPv4Address(bytes(octets))


def parse_ip_sloppy(text: object) -> IP | None:
    """Parse an IP as Go's net.ParseIP of old did (leading zeros allowed); None if invalid.

    IPv4-mapped IPv6 addresses come back as IPv4, as Go's To4() makes them IPv4 everywhere
    kube-proxy looks at families or prints them.
    """
    if not isinstance(text, str) or not text:
        return None
    if ":" not in text:
        return _parse_ipv4_sloppy(text)
    if "%" in text:  # zones are not IPs to net.ParseIP
        return None
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        # An embedded dotted quad may carry leading zeros.
        head, _, tail = text.rpartition(":")
        v4 = _parse_ipv4_sloppy(tail) if "." in tail else None
        if v4 is None:
            return None
        try:
            addr = ipaddress.IPv6Address(f"{head}:{v4}")
        except ValueError:
            return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


_aton, _ntoa = socket.inet_aton, socket.inet_ntoa


def _canonical_ipv4(text: str) -> bool:
    """Whether text is already a canonical dotted quad (the common case, checked cheaply): what
    inet_ntoa prints (four decimal octets, no leading zeros) and reads back as the same text."""
    try:
        return _ntoa(_aton(text)) == text
    except (OSError, ValueError):  # not an address; an embedded NUL
        return False


def canonical_ip(text: object) -> str | None:
    """str(parse_ip_sloppy(text)), without building an address object when text is canonical."""
    if isinstance(text, str) and _canonical_ipv4(text):
        return text
    ip = parse_ip_sloppy(text)
    return str(ip) if ip is not None else None


def parse_cidr_sloppy(text: object) -> Network | None:
    """Parse a CIDR as net.ParseCIDR does (host bits masked off, leading zeros allowed)."""
    if not isinstance(text, str) or "/" not in text:
        return None
    addr_text, _, prefix_text = text.partition("/")
    if not prefix_text.isascii() or not prefix_text.isdigit():
        return None
    if ":" in addr_text:
        try:
            v6 = ipaddress.IPv6Address(addr_text)
        except ValueError:
            return None
        prefix = int(prefix_text)
        if prefix > 128:
            return None
        if v6.ipv4_mapped is not None and prefix >= 96:
            return ipaddress.IPv4Network((v6.ipv4_mapped, prefix - 96), strict=False)
        return ipaddress.IPv6Network((v6, prefix), strict=False)
    v4 = _parse_ipv4_sloppy(addr_text)
    prefix = int(prefix_text)
    if v4 is None or prefix > 32:
        return None
    return ipaddress.IPv4Network((v4, prefix), strict=False)
