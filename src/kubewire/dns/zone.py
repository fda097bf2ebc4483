"""A static authoritative zone: the emulated internet's public DNS.

The internet namespace needs a resolver for names outside the cluster (api.stripe.com served
by an echo server, later Ingress hosts and load balancer addresses). It answers A/AAAA from a
{name: [ips]} map and is authoritative for everything else, so a search-list walk ending at the
internet gets a clean NXDOMAIN with an SOA (negatively cacheable, RFC 2308) rather than a timeout.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from kubewire.dns.records import Answer

_IN = dns.rdataclass.IN


class StaticZone:
    """Authoritative answers from a fixed {name: [ip, ...]} map; every other name is NXDOMAIN.

    Names that exist only as ancestors of declared names (com., stripe.com.) are NODATA, as
    RFC 8020 requires for empty non-terminals.
    """

    def __init__(self, entries: Mapping[str, Sequence[str] | str], *, ttl: int = 300,
                 origin: str = ".", serial: int | None = None) -> None:
        self.ttl = ttl
        self.origin = dns.name.from_text(origin)
        self._records: dict[dns.name.Name, dict[int, list[str]]] = {}
        self._ancestors: set[dns.name.Name] = set()
        for raw_name, ips in entries.items():
            name = dns.name.from_text(raw_name).canonicalize()
            by_type = self._records.setdefault(name, {})
            for ip in [ips] if isinstance(ips, str) else ips:
                addr = ipaddress.ip_address(ip)
                by_type.setdefault(dns.rdatatype.A if addr.version == 4 else dns.rdatatype.AAAA, []).append(str(addr))
            parent = name
            while len(parent.labels) > 1:
                parent = parent.parent()
                self._ancestors.add(parent)
        self._soa = dns.rrset.RRset(self.origin, _IN, dns.rdatatype.SOA)
        self._soa.update_ttl(ttl)
        self._soa.add(SOA(_IN, dns.rdatatype.SOA, dns.name.from_text("ns.dns.", self.origin),
                          dns.name.from_text("hostmaster.", self.origin),
                          int(time.time()) & 0xFFFFFFFF if serial is None else serial, 7200, 1800, 86400, ttl))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> StaticZone:
        """The zone-file format: {name: [ips]}; an optional "$ttl" key sets the TTL."""
        ttl = int(doc.get("$ttl", 300))
        return cls({k: v for k, v in doc.items() if not k.startswith("$")}, ttl=ttl)

    def answer(self, qname: dns.name.Name, qtype: int) -> Answer | None:
        if not qname.is_subdomain(self.origin):
            return None
        key = qname.canonicalize()
        by_type = self._records.get(key)
        if by_type is None:
            if key in self._ancestors or key == self.origin:
                if qtype == dns.rdatatype.SOA and key == self.origin:
                    return Answer(dns.rcode.NOERROR, (self._soa,))
                return Answer(dns.rcode.NOERROR, authority=(self._soa,), soa=self._soa)
            return Answer(dns.rcode.NXDOMAIN, authority=(self._soa,), soa=self._soa)
        ips = by_type.get(qtype)
        if not ips:
            return Answer(dns.rcode.NOERROR, authority=(self._soa,), soa=self._soa)
        rrset = dns.rrset.RRset(qname, _IN, qtype)
        rrset.update_ttl(self.ttl)
        for ip in ips:
            rrset.add(A(_IN, qtype, ip) if qtype == dns.rdatatype.A else AAAA(_IN, qtype, ip))
        return Answer(dns.rcode.NOERROR, (rrset,), soa=self._soa)
