"""Go's sloppy address parsing, one implementation for the API's validation and kube-proxy."""

from __future__ import annotations

import ipaddress

from kubewire.api import service
from kubewire.api.addresses import canonical_ip, parse_cidr_sloppy, parse_ip_sloppy
from kubewire.proxy import model


def test_one_parser_for_api_and_proxy() -> None:
    assert service.parse_ip is parse_ip_sloppy is model.parse_ip_sloppy
    assert service.parse_cidr is parse_cidr_sloppy is model.parse_cidr_sloppy


def test_sloppy_rules() -> None:
    # leading zeros, also in an embedded dotted quad; IPv4-mapped counts as IPv4 (Go's To4)
    assert parse_ip_sloppy("010.000.000.001") == ipaddress.IPv4Address("10.0.0.1")
    assert parse_ip_sloppy("::ffff:010.1.2.3") == ipaddress.IPv4Address("10.1.2.3")
    assert canonical_ip("010.0.0.1") == "10.0.0.1" and canonical_ip("10.0.0.1") == "10.0.0.1"
    assert parse_ip_sloppy("fe80::1%eth0") is None and parse_ip_sloppy("1.2.3") is None
    # host bits masked off; an IPv4-mapped CIDR of prefix 96 or more is the IPv4 network
    assert parse_cidr_sloppy("10.0.0.7/8") == ipaddress.IPv4Network("10.0.0.0/8")
    assert parse_cidr_sloppy("::ffff:10.0.0.0/104") == ipaddress.IPv4Network("10.0.0.0/8")
    assert parse_cidr_sloppy("2001:db8::1/64") == ipaddress.IPv6Network("2001:db8::/64")
    assert parse_cidr_sloppy("10.0.0.0/33") is None and parse_cidr_sloppy("10.0.0.0") is None
