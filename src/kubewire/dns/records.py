"""Cluster DNS records exactly as CoreDNS's kubernetes plugin answers them.

Pure: Services, EndpointSlices and Pods (plain Kubernetes-shaped dicts) in, DNS answers out. The
structure follows coredns/coredns plugin/kubernetes (handler.go ServeDNS, kubernetes.go
Services/Records/findServices/findPods, parse.go parseRequest, reverse.go, ns.go) and the generic
record builders of plugin/backend_lookup.go, because the Kubernetes DNS specification leaves the
negative answers open and clients depend on what CoreDNS actually does: a musl resolver stops
walking its search list at a NODATA, so "NXDOMAIN or NODATA" must match CoreDNS name for name.

Deliberately reproduced CoreDNS quirks (each one observable with `dig` against a real cluster):
- `ns.svc.<zone>`, `svc.<zone>`, `pod.<zone>` and the apex are NODATA for A, but TXT there is NXDOMAIN;
- a headless Service with no ready endpoint is NXDOMAIN (the specification says so too);
- `_port._proto.svc...` also answers A/AAAA (the port filter applies), and SRV without the
  `_port._proto` prefix lists every port;
- any ready endpoint of any Service answers `<a-b-c-d>.svc.ns.svc.<zone>`, headless or not;
- SOA below the apex is always NODATA, never NXDOMAIN; AXFR/IXFR are REFUSED;
- names in the reverse zones fall through (the usual `fallthrough in-addr.arpa ip6.arpa`), i.e.
  `answer()` returns None and the server forwards them.
What the plugin resolves through its Upstream (the target of an ExternalName CNAME outside the
cluster zone) is returned as `Answer.chase` for the server to resolve, since this module is pure.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

DNS_SCHEMA_VERSION = "1.1.0"
DEFAULT_TTL = 5  # CoreDNS kubernetes plugin's defaultTTL
DNS_VERSION_TTL = 28800
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# Namespaces every cluster has; used when the caller does not list Namespace objects.
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

PodsMode = Literal["disabled", "insecure", "verified"]

_IN = dns.rdataclass.IN
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_CNAME = dns.rdatatype.CNAME
_TXT = dns.rdatatype.TXT
_SRV = dns.rdatatype.SRV
_PTR = dns.rdatatype.PTR
_NS = dns.rdatatype.NS
_SOA = dns.rdatatype.SOA
_MX = dns.rdatatype.MX
_AXFR = dns.rdatatype.AXFR
_IXFR = dns.rdatatype.IXFR

_REVERSE_SUFFIXES = (("in-addr", "arpa"), ("ip6", "arpa"))


@dataclass(frozen=True)
class Chase:
    """An out-of-zone CNAME target the server must resolve (CoreDNS's Upstream.Lookup).

    The server appends the target's answer records after `Answer.answer`; if the lookup fails
    outright, CoreDNS drops the CNAME too, which leaves a NODATA built from `Answer.soa`.
    """

    target: dns.name.Name
    rdtype: int


@dataclass(frozen=True)
class Answer:
    """A complete authoritative reply for one question (flags: aa, and rd echoed; never ra)."""

    rcode: int
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    authoritative: bool = True
    chase: Chase | None = None
    soa: dns.rrset.RRset | None = field(default=None, compare=False)


# (owner, type, ttl, rdata): one record as the plugin's builders produce it, in answer order.
_Record = tuple[dns.name.Name, int, int, dns.rdata.Rdata]


class _NameError(Exception):
    """errNoItems / errNsNotExposed / errInvalidRequest: the plugin's NXDOMAIN signal."""


# ---------------------------------------------------------------------------------------------
# The plugin's stripped-down objects (plugin/kubernetes/object), built from API dicts.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Port:
    name: str
    port: int
    protocol: str


_NO_PORTS = (_Port("", -1, ""),)  # the plugin's sentinel for objects without ports


@dataclass(frozen=True, slots=True)
class _Service:
    name: str
    namespace: str
    type: str
    cluster_ips: tuple[str, ...]
    external_name: str
    ports: tuple[_Port, ...]

    @property
    def headless(self) -> bool:
        return self.cluster_ips[0] == "None"


@dataclass(frozen=True, slots=True)
class _Address:
    ip: str
    hostname: str  # endpointHostname(): explicit hostname, or the IP with dashes


@dataclass(frozen=True, slots=True)
class _Endpoints:
    service: str
    namespace: str
    addresses: tuple[_Address, ...]
    ports: tuple[_Port, ...]


@dataclass(frozen=True, slots=True)
class _Item:
    """msg.Service: one candidate record before the per-type builders shape it."""

    host: str
    ttl: int
    port: int = 0
    target: dns.name.Name | None = None  # msg.Domain(Key): SRV/NS target, extra A owner
    text: str = ""


@dataclass(frozen=True, slots=True)
class _Request:
    """parse.go's recordRequest."""

    port: str = ""
    protocol: str = ""
    endpoint: str = ""
    service: str = ""
    namespace: str = ""
    pod_or_svc: str = ""


@dataclass(frozen=True, slots=True)
class _Query:
    qname: dns.name.Name  # as asked (case kept, as state.QName())
    labels: tuple[str, ...]  # lower-cased labels without the root (state.Name())
    zone: dns.name.Name  # the matched zone with the query's case (state.Zone)
    base: tuple[str, ...]  # labels left of the zone (dnsutil.TrimZone)
    rdtype: int


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _namespace(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("namespace") or "default")


def _ports(raw: Any) -> tuple[_Port, ...]:
    ports = []
    for p in raw or ():
        if not isinstance(p, Mapping):
            continue
        number = p.get("port")
        # API server defaulting: protocol TCP; a slice port without a number is "all ports" (-1).
        ports.append(_Port(str(p.get("name") or ""), int(number) if number is not None else -1,
                           str(p.get("protocol") or "TCP")))
    return tuple(ports) or _NO_PORTS


def _canonical_ip(text: str) -> str | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@functools.lru_cache(maxsize=65536)
def _host_type(host: str) -> int:
    """msg.Service.HostType(): A, AAAA or (not an IP) CNAME."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return _CNAME
    if isinstance(addr, ipaddress.IPv4Address) or addr.ipv4_mapped is not None:
        return _A
    return _AAAA


def _address_rdata(host: str, rdtype: int) -> dns.rdata.Rdata:
    if rdtype == _A:
        return A(_IN, _A, _canonical_ip(host) or host)
    return AAAA(_IN, _AAAA, host)


def endpoint_hostname(ip: str, hostname: str = "") -> str:
    """endpointHostname(): the explicit hostname, else the IP with '.'/':' replaced by '-'."""
    if hostname:
        return hostname
    if "." in ip:
        return ip.replace(".", "-")
    if ":" in ip:
        name = ip.replace(":", "-")
        return name + "0" if name.endswith("-") else name
    return ""


def reverse_zones(cidr: str) -> list[str]:
    """The reverse zones CoreDNS derives from a CIDR zone argument (e.g. 10.96.0.0/12).

    CoreDNS splits a network on the reverse-tree boundary (octets for IPv4, nibbles for IPv6)
    and serves each piece as its own zone: 10.96.0.0/12 becomes 96..111.10.in-addr.arpa.
    """
    net = ipaddress.ip_network(cidr, strict=False)
    step = 8 if net.version == 4 else 4
    prefix = -(-net.prefixlen // step) * step
    subnets = [net] if prefix == net.prefixlen else list(net.subnets(new_prefix=prefix))
    zones = []
    for sub in subnets:
        keep = sub.prefixlen // step
        labels = sub.network_address.reverse_pointer.split(".")
        zones.append(".".join(labels[len(labels) - 2 - keep:]) + ".")
    return zones


def _extract_address_from_reverse(labels: tuple[str, ...]) -> str:
    """dnsutil.ExtractAddressFromReverse over lower-cased labels; '' when not a full address."""
    if labels[-2:] == ("in-addr", "arpa"):
        parts = list(reversed(labels[:-2]))
        if len(parts) != 4:
            return ""
        try:
            return str(ipaddress.IPv4Address(".".join(parts)))
        except ValueError:
            return ""
    if labels[-2:] == ("ip6", "arpa"):
        nibbles = list(reversed(labels[:-2]))
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return ""
        text = ":".join("".join(nibbles[i:i + 4]) for i in range(0, 32, 4))
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            return ""
    return ""


def _name(labels: Iterable[str], zone: dns.name.Name) -> dns.name.Name:
    return dns.name.Name(tuple(label.encode() for label in labels) + zone.labels)


def _fqdn(host: str) -> dns.name.Name:
    return dns.name.from_text(host if host.endswith(".") else host + ".")


# ---------------------------------------------------------------------------------------------


class ClusterRecords:
    """An immutable snapshot of the cluster's DNS data, answering as CoreDNS's kubernetes plugin.

    Built once per change of the API objects; `answer()` is called per distinct question, and the
    server caches the rendered wire form per (name, type) for the life of the snapshot.
    """

    def __init__(
        self,
        services: Iterable[Mapping[str, Any]] = (),
        endpointslices: Iterable[Mapping[str, Any]] = (),
        pods: Iterable[Mapping[str, Any]] = (),
        *,
        domain: str = "cluster.local",
        ttl: int = DEFAULT_TTL,
        pods_mode: PodsMode = "insecure",
        namespaces: Iterable[str] | None = None,
        reverse: Sequence[str] = ("in-addr.arpa", "ip6.arpa"),
        fallthrough: Sequence[str] = ("in-addr.arpa", "ip6.arpa"),
        local_ips: Sequence[str] = (),
        endpoint_pod_names: bool = False,
        serial: int | None = None,
    ) -> None:
        """`reverse` lists reverse zones or CIDRs (expanded like CoreDNS); `fallthrough` the zones
        whose NXDOMAIN is not ours to give; `local_ips` the DNS server pod's own addresses, from
        which CoreDNS derives its NS records; `namespaces` defaults to every namespace the objects
        mention plus the built-in ones (CoreDNS checks Namespace objects)."""
        if pods_mode not in ("disabled", "insecure", "verified"):
            raise ValueError(f"pods_mode must be disabled, insecure or verified, not {pods_mode!r}")
        self.domain = domain.strip(".").lower()
        self.ttl = int(ttl)
        self.pods_mode: PodsMode = pods_mode
        self.serial = int(time.time()) & 0xFFFFFFFF if serial is None else int(serial)
        self.endpoint_pod_names = endpoint_pod_names
        self._primary = dns.name.from_text(self.domain + ".")

        zones: list[tuple[str, ...]] = [tuple(self.domain.split("."))]
        for z in reverse:
            for text in reverse_zones(z) if "/" in z else [z]:
                zones.append(tuple(text.strip(".").lower().split(".")))
        # plugin.Zones.Matches picks the longest zone containing the name.
        self._zones = sorted(set(zones), key=len, reverse=True)
        self._fallthrough = [tuple(z.strip(".").lower().split(".")) for z in fallthrough]
        self._local_ips = [ip for ip in (_canonical_ip(x) for x in local_ips) if ip]

        services = [s for s in services if isinstance(s, Mapping)]
        self._publish_not_ready = {
            (str(_meta(s).get("name") or "").lower(), _namespace(s).lower())
            for s in services if (s.get("spec") or {}).get("publishNotReadyAddresses")
        }
        self._svc_index: dict[tuple[str, str], _Service] = {}
        self._svc_by_ip: dict[str, list[_Service]] = {}
        seen_ns: set[str] = set(BUILTIN_NAMESPACES)
        for obj in services:
            svc = self._to_service(obj)
            if svc is None:
                continue
            seen_ns.add(svc.namespace)
            self._svc_index[(svc.name.lower(), svc.namespace.lower())] = svc
            for ip in svc.cluster_ips:
                canon = _canonical_ip(ip)
                if canon:
                    self._svc_by_ip.setdefault(canon, []).append(svc)

        self._endpoints: dict[tuple[str, str], list[_Endpoints]] = {}
        self._ep_by_ip: dict[str, list[_Endpoints]] = {}
        for obj in endpointslices:
            eps = self._to_endpoints(obj)
            if eps is None:
                continue
            seen_ns.add(eps.namespace)
            self._endpoints.setdefault((eps.service.lower(), eps.namespace.lower()), []).append(eps)
            for addr in eps.addresses:
                canon = _canonical_ip(addr.ip)
                if canon and eps not in self._ep_by_ip.get(canon, ()):
                    self._ep_by_ip.setdefault(canon, []).append(eps)

        self._pod_ips: dict[str, list[str]] = {}  # ip -> namespaces, for pods verified
        for pod in pods:
            if not isinstance(pod, Mapping):
                continue
            ns = _namespace(pod)
            seen_ns.add(ns)
            if _meta(pod).get("deletionTimestamp"):
                continue  # CoreDNS drops terminating pods from its pod cache
            status = pod.get("status") or {}
            ips = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, Mapping)]
            ips = ips or [status.get("podIP")]
            for ip in ips:
                canon = _canonical_ip(ip) if isinstance(ip, str) else None
                if canon:
                    self._pod_ips.setdefault(canon, []).append(ns.lower())

        self._namespaces = {n.lower() for n in (seen_ns if namespaces is None else namespaces)}

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ClusterRecords:
        """The records-file format: {"services": [...], "endpointslices": [...], "pods": [...],
        "domain", "ttl", "pods_mode", "namespaces", "reverse", "fallthrough", "local_ips", "serial"}."""
        kwargs: dict[str, Any] = {}
        for key in ("domain", "ttl", "pods_mode", "serial", "endpoint_pod_names"):
            if doc.get(key) is not None:
                kwargs[key] = doc[key]
        for key in ("reverse", "fallthrough", "local_ips"):
            if doc.get(key) is not None:
                kwargs[key] = tuple(doc[key])
        if doc.get("namespaces") is not None:
            kwargs["namespaces"] = [
                n if isinstance(n, str) else _meta(n).get("name", "") for n in doc["namespaces"]
            ]
        return cls(doc.get("services") or (), doc.get("endpointslices") or (), doc.get("pods") or (),
                   **kwargs)

    @staticmethod
    def _to_service(obj: Mapping[str, Any]) -> _Service | None:
        if not isinstance(obj, Mapping) or obj.get("kind", "Service") != "Service":
            return None
        name = _meta(obj).get("name")
        if not name:
            return None
        spec = obj.get("spec") or {}
        svc_type = str(spec.get("type") or "ClusterIP")
        ips = tuple(str(ip) for ip in spec.get("clusterIPs") or () if ip)
        if not ips:
            ips = (str(spec.get("clusterIP") or ""),)
        if svc_type != "ExternalName" and not ips[0]:
            return None  # not allocated yet: nothing to publish
        return _Service(str(name), _namespace(obj), svc_type, ips, str(spec.get("externalName") or ""),
                        _ports(spec.get("ports")))

    def _to_endpoints(self, obj: Mapping[str, Any]) -> _Endpoints | None:
        """object.EndpointSliceToEndpoints: ready (or unknown-readiness) endpoints only."""
        if not isinstance(obj, Mapping) or obj.get("kind", "EndpointSlice") != "EndpointSlice":
            return None
        if obj.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
            return None
        meta = _meta(obj)
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return None
        ns = _namespace(obj)
        # The EndpointSlice controller already marks every endpoint ready for
        # publishNotReadyAddresses; honouring the flag here too keeps hand-written slices right.
        publish_all = (str(service).lower(), ns.lower()) in self._publish_not_ready
        addresses = []
        for ep in obj.get("endpoints") or ():
            if not isinstance(ep, Mapping):
                continue
            ready = (ep.get("conditions") or {}).get("ready")
            if not (ready is None or ready or publish_all):
                continue
            hostname = str(ep.get("hostname") or "")
            if not hostname and self.endpoint_pod_names:
                ref = str((ep.get("targetRef") or {}).get("name") or "")
                hostname = ref if len(ref) < 64 else ""
            for ip in ep.get("addresses") or ():
                addresses.append(_Address(str(ip), endpoint_hostname(str(ip), hostname)))
        return _Endpoints(str(service), ns, tuple(addresses), _ports(obj.get("ports")))

    # -- queries ----------------------------------------------------------------------------

    def zone_of(self, qname: dns.name.Name) -> dns.name.Name | None:
        """The zone (lower case) this snapshot is authoritative for that contains qname."""
        labels = tuple(label.decode("latin-1").lower() for label in qname.labels[:-1])
        zone = self._match_zone(labels)
        return None if zone is None else dns.name.from_text(".".join(zone) + ".")

    def _match_zone(self, labels: tuple[str, ...]) -> tuple[str, ...] | None:
        for zone in self._zones:
            if len(zone) <= len(labels) and labels[len(labels) - len(zone):] == zone:
                return zone
        return None

    def answer(self, qname: dns.name.Name, qtype: int) -> Answer | None:
        """The reply CoreDNS gives for (qname, IN, qtype), or None when the name is not ours
        (outside every zone, or a fall-through NXDOMAIN): the server forwards those."""
        labels = tuple(label.decode("latin-1").lower() for label in qname.labels[:-1])
        zone_labels = self._match_zone(labels)
        if zone_labels is None:
            return None
        n = len(zone_labels)
        zone = dns.name.Name(qname.labels[len(qname.labels) - 1 - n:])
        q = _Query(qname, labels, zone, labels[: len(labels) - n], qtype)
        soa = self._soa(zone)
        records: list[_Record] = []
        extra: list[_Record] = []
        chase: Chase | None = None
        try:
            if qtype in (_A, _AAAA):
                records, chase = self._address(q, qtype, [])
            elif qtype == _TXT:
                records = self._txt(q)
            elif qtype == _CNAME:
                records = self._cname(q)
            elif qtype == _PTR:
                records = self._ptr(q)
            elif qtype == _MX:
                self._services(q, qtype)  # the plugin never sets Mail: existence only
            elif qtype == _SRV:
                records, extra = self._srv(q)
            elif qtype == _SOA:
                if q.base == ():
                    records = [(zone, _SOA, soa.ttl, soa[0])]
            elif qtype in (_AXFR, _IXFR):
                return Answer(dns.rcode.REFUSED, authoritative=False)
            elif qtype == _NS and q.base == ():
                records, extra = self._ns(q)
            else:
                # Do a fake A lookup, so we can distinguish between NODATA and NXDOMAIN.
                self._address(_Query(qname, labels, zone, q.base, _A), _A, [])
        except _NameError:
            if any(labels[len(labels) - len(z):] == z for z in self._fallthrough if len(z) <= len(labels)):
                return None
            return Answer(dns.rcode.NXDOMAIN, authority=(soa,), soa=soa)
        if not records:
            return Answer(dns.rcode.NOERROR, authority=(soa,), soa=soa)
        return Answer(dns.rcode.NOERROR, _rrsets(records), (), _rrsets(extra),
                      chase=chase, soa=soa)

    # -- plugin.SOA / NS ---------------------------------------------------------------------

    def _soa(self, zone: dns.name.Name) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(zone, _IN, _SOA)
        rrset.update_ttl(min(self.ttl, 300))
        rrset.add(SOA(_IN, _SOA, _name(("ns", "dns"), zone), _name(("hostmaster",), zone),
                      self.serial, 7200, 1800, 86400, self.ttl))
        return rrset

    def _ns_addrs(self, zone: dns.name.Name) -> list[tuple[dns.name.Name, str]]:
        """ns.go nsAddrs: the Service(s) fronting this server's own pod IPs, else those IPs."""
        found = False
        out: list[tuple[dns.name.Name, str]] = []
        for local in self._local_ips:
            for eps in self._ep_by_ip.get(local, ()):
                found = True
                svc = self._svc_index.get((eps.service.lower(), eps.namespace.lower()))
                if svc is None:
                    continue
                svc_labels = (svc.name, svc.namespace, "svc")
                if svc.headless:
                    for addr in eps.addresses:
                        out.append((_name((addr.hostname, *svc_labels), zone), addr.ip))
                else:
                    out.extend((_name(svc_labels, zone), ip) for ip in svc.cluster_ips)
        if not found:
            out = [(_name(("ns", "dns"), zone), ip) for ip in self._local_ips]
        return out

    def _ns(self, q: _Query) -> tuple[list[_Record], list[_Record]]:
        records: list[_Record] = []
        extra: list[_Record] = []
        seen: set[dns.name.Name] = set()
        for target, ip in self._ns_addrs(q.zone):
            kind = _host_type(ip)
            extra.append((target, kind, self.ttl, _address_rdata(ip, kind)))
            if target not in seen:
                seen.add(target)
                records.append((q.qname, _NS, self.ttl, NS(_IN, _NS, target)))
        return records, extra

    # -- Kubernetes.Services / Records --------------------------------------------------------

    def _services(self, q: _Query, qtype: int) -> list[_Item]:
        if qtype == _TXT:
            if q.base == ("dns-version",):
                return [_Item("", DNS_VERSION_TTL, text=DNS_SCHEMA_VERSION)]
            try:
                found = self._records(q)
            except _NameError:
                found = []
            if found:
                return []  # the name exists with other types: NODATA
            raise _NameError
        if q.base == ("ns", "dns"):  # isDefaultNS
            return [_Item(ip, self.ttl, target=target) for target, ip in self._ns_addrs(q.zone)
                    if _host_type(ip) == qtype]
        items = self._records(q)
        if qtype == _SRV:  # SRV for external services is not implemented in CoreDNS
            items = [i for i in items if _host_type(i.host) != _CNAME]
        return items

    def _parse(self, base: tuple[str, ...]) -> _Request:
        """parse.go parseRequest (no multicluster, no zonal)."""
        if base in ((), ("svc",), ("pod",)):
            return _Request()
        segs = list(base)
        pod_or_svc = segs.pop()
        if pod_or_svc not in ("svc", "pod"):
            raise _NameError
        if not segs:
            return _Request(pod_or_svc=pod_or_svc)
        namespace = segs.pop()
        if not segs:
            return _Request(namespace=namespace, pod_or_svc=pod_or_svc)
        service = segs.pop()
        if len(segs) == 0:
            return _Request(service=service, namespace=namespace, pod_or_svc=pod_or_svc)
        if len(segs) == 1:
            return _Request(endpoint=segs[0], service=service, namespace=namespace, pod_or_svc=pod_or_svc)
        if len(segs) == 2:
            return _Request(port=segs[0].removeprefix("_"), protocol=segs[1].removeprefix("_"),
                            service=service, namespace=namespace, pod_or_svc=pod_or_svc)
        raise _NameError  # too long

    def _records(self, q: _Query) -> list[_Item]:
        r = self._parse(q.base)
        if not r.pod_or_svc:
            return []
        if q.labels[-2:] in _REVERSE_SUFFIXES:
            raise _NameError
        if r.namespace not in self._namespaces:
            raise _NameError
        if r.pod_or_svc == "pod":
            return self._find_pods(r, q)
        return self._find_services(r, q)

    def _find_pods(self, r: _Request, q: _Query) -> list[_Item]:
        if self.pods_mode == "disabled":
            raise _NameError
        podname = r.service
        if not podname:
            return []  # the namespace exists: NODATA
        if podname.count("-") == 3 and "--" not in podname:
            ip = podname.replace("-", ".")
        else:
            ip = podname.replace("-", ":")
        canon = _canonical_ip(ip)
        if canon is None:
            raise _NameError
        item = _Item(ip, self.ttl, target=_name((podname, r.namespace, "pod"), q.zone))
        if self.pods_mode == "insecure":
            return [item]
        if r.namespace in self._pod_ips.get(canon, ()):
            return [item]
        raise _NameError

    def _find_services(self, r: _Request, q: _Query) -> list[_Item]:
        if not r.service:
            return []  # the namespace exists: NODATA
        svc = self._svc_index.get((r.service, r.namespace))
        if svc is None:
            raise _NameError
        found = False
        items: list[_Item] = []
        svc_labels = (svc.name, svc.namespace, "svc")
        if svc.type == "ExternalName":
            if r.endpoint or r.port or r.protocol:
                raise _NameError
            if _host_type(svc.external_name) == _CNAME:
                return [_Item(svc.external_name, self.ttl, target=_name(svc_labels, q.zone))]
            raise _NameError
        if svc.headless or r.endpoint:
            for eps in self._endpoints.get((r.service, r.namespace), ()):
                for addr in eps.addresses:
                    if r.endpoint and r.endpoint != addr.hostname.lower():
                        continue
                    for p in eps.ports:
                        if not _match_port(r, p):
                            continue
                        found = True
                        items.append(_Item(addr.ip, self.ttl, p.port,
                                           _name((addr.hostname, *svc_labels), q.zone)))
        else:
            for p in svc.ports:
                if not _match_port(r, p):
                    continue
                found = True
                items.extend(_Item(ip, self.ttl, p.port, _name(svc_labels, q.zone)) for ip in svc.cluster_ips)
        if not found:
            raise _NameError
        return items

    # -- plugin.A/AAAA/TXT/CNAME/PTR/SRV ------------------------------------------------------

    def _address(self, q: _Query, qtype: int, previous: list[_Record]) -> tuple[list[_Record], Chase | None]:
        records: list[_Record] = []
        chase: Chase | None = None
        seen: set[str] = set()
        for item in self._services(q, qtype):
            kind = _host_type(item.host)
            if kind == _CNAME:
                target = _fqdn(item.host)
                if target.is_subdomain(q.qname):
                    continue  # x CNAME x is a direct loop
                if len(previous) > 7:
                    continue
                if any(rd.target == target for _, t, _, rd in previous if t == _CNAME):
                    continue
                cname = (q.qname, _CNAME, item.ttl, CNAME(_IN, _CNAME, target))
                if target.is_subdomain(q.zone):
                    labels = tuple(label.decode("latin-1").lower() for label in target.labels[:-1])
                    n = len(q.zone.labels) - 1
                    sub = _Query(target, labels, q.zone, labels[: len(labels) - n], qtype)
                    try:
                        nxt, sub_chase = self._address(sub, qtype, [*previous, cname])
                    except _NameError:
                        continue
                    if nxt:
                        records += [cname, *nxt]
                        chase = chase or sub_chase
                    continue
                records.append(cname)
                chase = chase or Chase(target, qtype)
            elif kind == qtype and item.host not in seen:
                seen.add(item.host)
                records.append((q.qname, qtype, item.ttl, _address_rdata(item.host, qtype)))
        return records, chase

    def _txt(self, q: _Query) -> list[_Record]:
        return [(q.qname, _TXT, i.ttl, TXT(_IN, _TXT, [i.text.encode()])) for i in self._services(q, _TXT)
                if i.text]

    def _cname(self, q: _Query) -> list[_Record]:
        items = self._services(q, _CNAME)
        if items and _host_type(items[0].host) == _CNAME:
            return [(q.qname, _CNAME, items[0].ttl, CNAME(_IN, _CNAME, _fqdn(items[0].host)))]
        return []

    def _ptr(self, q: _Query) -> list[_Record]:
        ip = _extract_address_from_reverse(q.labels)
        if not ip:
            self._records(q)
            return []
        targets: list[dns.name.Name] = []
        services = self._svc_by_ip.get(ip)
        if services:
            svc = services[0]
            targets.append(_name((svc.name, svc.namespace, "svc"), self._primary))
        else:
            for eps in self._ep_by_ip.get(ip, ()):
                for addr in eps.addresses:
                    if _canonical_ip(addr.ip) == ip:
                        targets.append(_name((addr.hostname, eps.service, eps.namespace, "svc"), self._primary))
        if not targets:
            raise _NameError
        return [(q.qname, _PTR, self.ttl, PTR(_IN, _PTR, t)) for t in dict.fromkeys(targets)]

    def _srv(self, q: _Query) -> tuple[list[_Record], list[_Record]]:
        items = self._services(q, _SRV)
        total = 100 * len(items)  # every item has priority 0 and weight 0 (counted as 100)
        records: list[_Record] = []
        extra: list[_Record] = []
        dup: set[tuple[Any, ...]] = set()
        for item in items:
            if item.port == -1:
                continue  # the plugin's "no ports" sentinel
            weight = max(1, math.floor(100.0 / total * 100))
            kind = _host_type(item.host)
            if kind not in (_A, _AAAA) or item.target is None:
                continue
            key = (item.target, item.port)
            if key not in dup:
                dup.add(key)
                records.append((q.qname, _SRV, item.ttl, SRV(_IN, _SRV, 0, weight, item.port & 0xFFFF, item.target)))
            addr_key = (item.target, "addr", item.host)
            if addr_key not in dup:
                dup.add(addr_key)
                extra.append((item.target, kind, item.ttl, _address_rdata(item.host, kind)))
        return records, extra


def _match_port(r: _Request, p: _Port) -> bool:
    """matchPortAndProtocol: the request's empty port/protocol match anything."""
    return (not r.port or r.port == p.name.lower()) and (not r.protocol or r.protocol == p.protocol.lower())


def _rrsets(records: list[_Record]) -> tuple[dns.rrset.RRset, ...]:
    """Group consecutive records of one owner and type into RRsets, keeping CoreDNS's order."""
    out: list[dns.rrset.RRset] = []
    for owner, rdtype, ttl, rdata in records:
        if not out or out[-1].rdtype != rdtype or out[-1].name != owner:
            out.append(dns.rrset.RRset(owner, _IN, rdtype))
            out[-1].update_ttl(ttl)
        out[-1].add(rdata)
    return tuple(out)
