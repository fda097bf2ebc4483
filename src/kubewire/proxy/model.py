"""kube-proxy's view of the cluster: service ports, endpoints and its own configuration.

These mirror what upstream kube-proxy derives from the API (pkg/proxy/serviceport.go,
servicechangetracker.go, endpointslicecache.go, apis/config/v1alpha1). Input is plain dicts as
loaded from YAML and may be something an API server would reject: we apply the API server's
defaulting (which kube-proxy always sees applied), render what kube-proxy would render and skip
what kube-proxy skips, so that planners built on this see exactly what the real proxier sees.
A missing metadata.namespace means "default", as `kubectl apply -f` would make it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubewire.api.addresses import canonical_ip, parse_cidr_sloppy, parse_ip_sloppy
from kubewire.controllers.types import Cursor, Snapshot

IPFamily = Literal["IPv4", "IPv6"]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# kube-proxy's informers list neither Services nor EndpointSlices carrying these labels: one
# that names another proxy, and the slices of headless Services (cmd/kube-proxy, its selector
# "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless").
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"


def seen_by_kube_proxy(meta: Mapping[str, Any]) -> bool:
    """Whether kube-proxy's label selector lets an object with this metadata through."""
    labels = meta.get("labels")
    return not (labels.__class__ is dict and labels and (SERVICE_PROXY_NAME_LABEL in labels or HEADLESS_LABEL in labels))
ZONE_LABEL = "topology.kubernetes.io/zone"
DEFAULT_AFFINITY_TIMEOUT = 10800  # API server default for sessionAffinityConfig.clientIP.timeoutSeconds


def family_of(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> IPFamily:
    return "IPv4" if addr.version == 4 else "IPv6"


def join_host_port(ip: str, port: int) -> str:
    """net.JoinHostPort: the endpoint string kube-proxy hashes and DNATs to."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _as_int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return default


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ServicePortName:
    """Key of one service port, as upstream's proxy.ServicePortName (protocol is part of the key)."""

    namespace: str
    name: str
    port: str
    protocol: str = "TCP"

    def __post_init__(self) -> None:
        # The dataclass's own hash of the field tuple, computed once and up front: a sync looks
        # every service port up in several maps, tens of thousands of times at 10k Services, and
        # a plain attribute read is the cheapest __hash__ (no lazy path to try first).
        object.__setattr__(self, "_hash", hash((self.namespace, self.name, self.port, self.protocol)))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        # Upstream's String(): "ns/name:port", or "ns/name" for an unnamed port. It is both the
        # comment text and the hash input, so it must match byte for byte.
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, seen by a proxier of one IP family (fields already filtered)."""

    namespace: str
    name: str
    port_name: str
    protocol: str
    type: str
    cluster_ips: tuple[str, ...]
    cluster_ip: str  # the clusterIP of this proxier's family, canonical form
    port: int
    node_port: int
    external_ips: tuple[str, ...] = ()
    load_balancer_vips: tuple[str, ...] = ()
    load_balancer_source_ranges: tuple[str, ...] = ()  # canonical CIDRs of this family
    session_affinity: str = "None"
    sticky_max_age_seconds: int = 0
    external_traffic_policy: str = ""
    internal_traffic_policy: str = "Cluster"
    health_check_node_port: int = 0
    ip_family: IPFamily = "IPv4"
    # apiservice.ExternalPolicyLocal: eTP=Local counts only for externally accessible *types*
    # (LoadBalancer, NodePort, or ClusterIP with externalIPs of any family), so it is resolved
    # from the whole spec when the port is built.
    external_policy_local: bool = False

    @property
    def key(self) -> ServicePortName:
        return ServicePortName(self.namespace, self.name, self.port_name, self.protocol)

    @property
    def internal_policy_local(self) -> bool:
        return self.internal_traffic_policy == "Local"

    @property
    def externally_accessible(self) -> bool:
        return self.node_port != 0 or bool(self.load_balancer_vips) or bool(self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        # eTP=Local still needs Cluster endpoints, for the short-circuit of pod->external traffic.
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (self.external_policy_local and self.externally_accessible)


def _is_service_ip_set(spec: Mapping[str, Any]) -> bool:
    cluster_ip = spec.get("clusterIP")
    return isinstance(cluster_ip, str) and cluster_ip not in ("", "None")


def _cluster_ip_by_family(spec: Mapping[str, Any], family: IPFamily, cluster_ips: tuple[str, ...]) -> str:
    """proxyutil.GetClusterIPByFamily, with the API server's clusterIPs defaulting applied.
    `cluster_ips`: spec.clusterIPs, its strings."""
    cluster_ip = spec.get("clusterIP") if isinstance(spec.get("clusterIP"), str) else ""
    if not cluster_ips and cluster_ip:
        cluster_ips = (cluster_ip,)
    raw_families = spec.get("ipFamilies")
    families = [f for f in raw_families if isinstance(f, str)] if isinstance(raw_families, list) else []
    if not families:
        if not cluster_ip or cluster_ip == "None":
            return ""
        # only text with a colon can be IPv6 (an IPv4-mapped one counts as IPv4)
        parsed = parse_ip_sloppy(cluster_ip) if ":" in cluster_ip else None
        is_v6 = parsed is not None and parsed.version == 6
        return cluster_ip if is_v6 == (family == "IPv6") else ""
    for idx, fam in enumerate(families):
        if fam == family and idx < len(cluster_ips):
            return cluster_ips[idx]
    return ""


def _is_vip_mode(ingress: Mapping[str, Any]) -> bool:
    # LoadBalancerIPMode is GA (1.32): "Proxy"-mode ingress IPs get no rules.
    mode = ingress.get("ipMode")
    return mode is None or mode == "VIP"


def service_ports(service: Mapping[str, Any], ip_family: IPFamily = "IPv4") -> list[ServicePort]:
    """The ServicePorts one proxier of `ip_family` builds from a Service ([] if it skips it)."""
    meta = _as_dict(service.get("metadata"))
    spec = _as_dict(service.get("spec"))
    namespace = meta.get("namespace") or "default"
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return []
    # proxyutil.ShouldSkipService: headless or ExternalName services are not proxied.
    svc_type = spec.get("type") or "ClusterIP"
    if not _is_service_ip_set(spec) or svc_type == "ExternalName":
        return []
    raw = spec.get("clusterIPs")
    cluster_ips = tuple([ip for ip in raw if isinstance(ip, str)]) if isinstance(raw, list) else ()
    cluster_ip_text = _cluster_ip_by_family(spec, ip_family, cluster_ips)
    if not cluster_ip_text:
        return []
    # An unparsable clusterIP is printed by Go as "<nil>"; we keep the text so the breakage shows.
    cluster_ip_str = canonical_ip(cluster_ip_text) or "<nil>"
    if not cluster_ips:
        cluster_ips = (spec["clusterIP"],)  # a string: _is_service_ip_set

    # The optional lists are absent from most Services: each is looked at only when present.
    raw = spec.get("externalIPs")
    spec_external_ips = tuple([ip for ip in raw if isinstance(ip, str)]) if isinstance(raw, list) else ()
    external_ips: list[str] = []
    for text in spec_external_ips:
        ip = parse_ip_sloppy(text)
        if ip is not None and family_of(ip) == ip_family:
            external_ips.append(str(ip))

    source_ranges: list[str] = []
    raw = spec.get("loadBalancerSourceRanges")
    if raw:
        for text in _as_list(raw):
            # Validation historically allowed whitespace padding; upstream trims it.
            cidr = parse_cidr_sloppy(text.strip()) if isinstance(text, str) else None
            if cidr is not None and family_of(cidr) == ip_family:
                source_ranges.append(str(cidr))

    vips: list[str] = []
    status = service.get("status")
    if status:
        for ingress in _as_list(_as_dict(_as_dict(status).get("loadBalancer")).get("ingress")):
            ingress = _as_dict(ingress)
            if not ingress.get("ip") or not _is_vip_mode(ingress):
                continue
            ip = parse_ip_sloppy(ingress.get("ip"))
            if ip is not None and family_of(ip) == ip_family:
                vips.append(str(ip))

    affinity = spec.get("sessionAffinity") or "None"
    sticky = 0
    if affinity == "ClientIP":
        client_ip = _as_dict(_as_dict(spec.get("sessionAffinityConfig")).get("clientIP"))
        sticky = _as_int(client_ip.get("timeoutSeconds"), DEFAULT_AFFINITY_TIMEOUT)

    etp = spec.get("externalTrafficPolicy") or ""
    if not etp and svc_type in ("NodePort", "LoadBalancer"):
        etp = "Cluster"
    itp = spec.get("internalTrafficPolicy") or "Cluster"
    accessible_type = svc_type in ("LoadBalancer", "NodePort") or (
        svc_type == "ClusterIP" and bool(spec_external_ips)
    )
    needs_health_check = svc_type == "LoadBalancer" and accessible_type and etp == "Local"
    health_check_node_port = _as_int(spec.get("healthCheckNodePort")) if needs_health_check else 0
    external_policy_local = accessible_type and etp == "Local"
    external_ips_t, vips_t, source_ranges_t = tuple(external_ips), tuple(vips), tuple(source_ranges)

    out: list[ServicePort] = []
    for raw_port in _as_list(spec.get("ports")):
        port = _as_dict(raw_port)
        out.append(
            ServicePort(
                namespace=namespace,
                name=name,
                port_name=port.get("name") or "",
                protocol=port.get("protocol") or "TCP",
                type=svc_type,
                cluster_ips=cluster_ips,
                cluster_ip=cluster_ip_str,
                port=_as_int(port.get("port")),
                node_port=_as_int(port.get("nodePort")),
                external_ips=external_ips_t,
                load_balancer_vips=vips_t,
                load_balancer_source_ranges=source_ranges_t,
                session_affinity=affinity,
                sticky_max_age_seconds=sticky,
                external_traffic_policy=etp,
                internal_traffic_policy=itp,
                health_check_node_port=health_check_node_port,
                ip_family=ip_family,
                external_policy_local=external_policy_local,
            )
        )
    return out


def build_service_map(
    services: Iterable[Mapping[str, Any]], ip_family: IPFamily = "IPv4"
) -> dict[ServicePortName, ServicePort]:
    """Upstream's ServicePortMap for one IP family: every proxied port of every Service.

    Non-Service documents are ignored, and Services kube-proxy does not watch (seen_by_kube_proxy).
    A later Service with the same namespace/name replaces an
    earlier one, as the informer cache would.
    """
    by_name: dict[tuple[str, str], Mapping[str, Any]] = {}
    for obj in services:
        if obj.__class__ is not dict and not isinstance(obj, Mapping):  # (the ABC check is slow)
            continue
        if obj.get("kind", "Service") != "Service":
            continue
        meta = _as_dict(obj.get("metadata"))
        by_name[(meta.get("namespace") or "default", str(meta.get("name")))] = obj
    out: dict[ServicePortName, ServicePort] = {}
    for obj in by_name.values():
        if not seen_by_kube_proxy(_as_dict(obj.get("metadata"))):
            continue
        for sp in service_ports(obj, ip_family):
            out[sp.key] = sp
    return out


# ---------------------------------------------------------------------------------------------
# Endpoints
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of one service port (upstream's BaseEndpointInfo)."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None
    zone: str | None = None
    zone_hints: frozenset[str] = frozenset()
    node_hints: frozenset[str] = frozenset()
    is_local: bool = False

    def __str__(self) -> str:
        return join_host_port(self.ip, self.port)


_NO_HINTS: frozenset[str] = frozenset()


def _endpoint_fields(raw: Mapping[str, Any], node_name: str, prefer_same_node: bool) -> tuple | None:
    """An Endpoint's fields but its port, in order (ip, then ready...is_local); None: skipped.
    Parsed once per EndpointSlice whatever the number of its ports."""
    addresses = raw.get("addresses")
    if not addresses or not isinstance(addresses, list):
        return None
    ip = canonical_ip(addresses[0])
    if ip is None:
        # Upstream would DNAT to "<nil>" and fail the whole restore; skipping keeps the node usable.
        return None
    conditions = raw.get("conditions")
    if conditions.__class__ is not dict:
        conditions = _as_dict(conditions)
    ready = conditions.get("ready")
    serving = conditions.get("serving")
    terminating = conditions.get("terminating")
    ep_node = raw.get("nodeName")
    if ep_node is not None and not isinstance(ep_node, str):
        ep_node = None
    zone = raw.get("zone")
    if zone is not None and not isinstance(zone, str):
        zone = None
    hints = raw.get("hints")
    zone_hints = node_hints = _NO_HINTS
    if isinstance(hints, dict):
        zone_hints = frozenset(
            z["name"]
            for z in _as_list(hints.get("forZones"))
            if isinstance(z, dict) and isinstance(z.get("name"), str)
        )
        node_hints = frozenset(
            n["name"]
            for n in _as_list(hints.get("forNodes"))
            if isinstance(n, dict) and isinstance(n.get("name"), str)
        )
    return (
        ip,
        ready is None or bool(ready),
        serving is None or bool(serving),
        terminating is not None and bool(terminating),
        ep_node,
        zone,
        zone_hints,
        node_hints if prefer_same_node else _NO_HINTS,
        bool(node_name) and ep_node == node_name,
    )


def build_endpoints_map(
    slices: Iterable[Mapping[str, Any]],
    node_name: str = "",
    ip_family: IPFamily = "IPv4",
    prefer_same_node: bool = True,
) -> dict[ServicePortName, list[Endpoint]]:
    """Upstream's EndpointsMap for one IP family: endpoints per service port, sorted by "ip:port".

    Skipped as upstream skips them: slices of another address type, without the
    kubernetes.io/service-name label or not watched (seen_by_kube_proxy), ports without a number, endpoints without addresses.
    Duplicates across slices collapse to one, preferring a non-terminating copy.
    """
    by_key: dict[tuple[str, str], Mapping[str, Any]] = {}
    for obj in slices:
        if obj.__class__ is not dict and not isinstance(obj, Mapping):  # (the ABC check is slow)
            continue
        if obj.get("kind", "EndpointSlice") != "EndpointSlice":
            continue
        meta = _as_dict(obj.get("metadata"))
        by_key[(meta.get("namespace") or "default", str(meta.get("name") or ""))] = obj

    sets: dict[ServicePortName, dict[str, Endpoint]] = {}
    # Upstream walks a map of slices (random order); slice-name order makes duplicates deterministic.
    for (namespace, slice_name), obj in sorted(by_key.items()):
        if obj.get("addressType") != ip_family:
            continue
        meta = _as_dict(obj.get("metadata"))
        if not seen_by_kube_proxy(meta):
            continue
        service_name = _as_dict(meta.get("labels")).get(SERVICE_NAME_LABEL)
        if not isinstance(service_name, str) or not service_name or not slice_name:
            continue
        parsed: list[tuple] | None = None
        for raw_port in _as_list(obj.get("ports")):
            port = _as_dict(raw_port)
            number = _as_int(port.get("port"))
            if number == 0:
                continue
            key = ServicePortName(namespace, service_name, port.get("name") or "", port.get("protocol") or "TCP")
            endpoint_set = sets.get(key)
            if endpoint_set is None:
                endpoint_set = sets[key] = {}
            if parsed is None:
                parsed = []
                for raw in _as_list(obj.get("endpoints")):
                    fields = _endpoint_fields(_as_dict(raw), node_name, prefer_same_node)
                    if fields is not None:
                        parsed.append(fields)
            suffix = f":{number}"
            for ip, ready, serving, terminating, ep_node, zone, zone_hints, node_hints, is_local in parsed:
                text = f"[{ip}]{suffix}" if ":" in ip else ip + suffix  # join_host_port
                if not terminating or text not in endpoint_set:
                    endpoint_set[text] = Endpoint(
                        ip, number, ready, serving, terminating, ep_node, zone, zone_hints, node_hints, is_local
                    )
    return {key: [eps[text] for text in sorted(eps)] for key, eps in sets.items() if eps}


# ---------------------------------------------------------------------------------------------
# KubeProxyConfiguration
# ---------------------------------------------------------------------------------------------

DetectLocalMode = Literal["ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"]


@dataclass(frozen=True)
class KubeProxyConfig:
    """The settings that shape the iptables payload, with upstream's defaults.

    `random_fully` and `nfacct` describe the host rather than configuration: real kube-proxy adds
    --random-fully when iptables supports it and nfacct matches when the counters could be created,
    which is the case on any current kernel and iptables, hence the defaults.
    """

    cluster_cidr: str = ""  # comma-separated, as v1alpha1's clusterCIDR
    masquerade_all: bool = False
    masquerade_bit: int = 14
    localhost_nodeports: bool = True
    node_port_addresses: tuple[str, ...] = ()
    detect_local_mode: DetectLocalMode | str = "ClusterCIDR"
    bridge_interface: str = ""
    interface_name_prefix: str = ""
    random_fully: bool = True
    nfacct_ct_state_invalid: bool = True
    nfacct_localhost_nodeports: bool = True
    tcp_be_liberal: bool = False
    prefer_same_traffic_distribution: bool = True  # feature gate, beta and on since 1.34

    @property
    def cluster_cidrs(self) -> tuple[str, ...]:
        return tuple(self.cluster_cidr.split(",")) if self.cluster_cidr else ()

    @property
    def masquerade_mark(self) -> str:
        # Go's fmt.Sprintf("%#08x", 1<<bit) pads the digits, not the "0x": 14 -> "0x00004000".
        return "0x" + format(1 << self.masquerade_bit, "08x")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> KubeProxyConfig:
        """Parse a kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration (unknown fields ignored)."""
        doc = _as_dict(doc)
        iptables = _as_dict(doc.get("iptables"))
        nftables = _as_dict(doc.get("nftables"))
        detect_local = _as_dict(doc.get("detectLocal"))
        conntrack = _as_dict(doc.get("conntrack"))
        gates = _as_dict(doc.get("featureGates"))
        mode = doc.get("mode") or ""
        # v1alpha1 conversion takes masqueradeAll from the section of the configured mode.
        masq_section = nftables if mode == "nftables" else iptables
        cluster_cidr = doc.get("clusterCIDR") if isinstance(doc.get("clusterCIDR"), str) else ""
        if not cluster_cidr:  # v1alpha2 spelling
            cluster_cidr = ",".join(
                c for c in _as_list(detect_local.get("clusterCIDRs")) if isinstance(c, str)
            )
        localhost = iptables.get("localhostNodePorts")
        return cls(
            cluster_cidr=cluster_cidr,
            masquerade_all=bool(masq_section.get("masqueradeAll", False)),
            masquerade_bit=_as_int(iptables.get("masqueradeBit"), 14),
            localhost_nodeports=True if localhost is None else bool(localhost),
            node_port_addresses=tuple(
                a for a in _as_list(doc.get("nodePortAddresses")) if isinstance(a, str)
            ),
            detect_local_mode=(doc.get("detectLocalMode") or "ClusterCIDR"),
            bridge_interface=detect_local.get("bridgeInterface") or "",
            interface_name_prefix=detect_local.get("interfaceNamePrefix") or "",
            tcp_be_liberal=bool(conntrack.get("tcpBeLiberal", False)),
            prefer_same_traffic_distribution=bool(gates.get("PreferSameTrafficDistribution", True)),
        )


def parse_kube_proxy_config(doc: Mapping[str, Any] | None) -> KubeProxyConfig:
    return KubeProxyConfig.from_dict(doc)


# ---------------------------------------------------------------------------------------------
# Keeping the maps up to date object by object
# ---------------------------------------------------------------------------------------------

NamespacedName = tuple[str, str]
_ABSENT = object()


def _version(obj: Mapping[str, Any]) -> object:
    """What says an object changed: its resourceVersion, or (objects that have none, as in tests
    and `proxy render` input) its whole content."""
    meta = obj.get("metadata")
    rv = meta.get("resourceVersion") if meta.__class__ is dict else None
    if rv is not None:
        return rv
    return json.dumps(obj, sort_keys=True, default=str)


class ProxyMaps:
    """kube-proxy's service and endpoints maps for one node and IP family, kept up to date object
    by object, as upstream's ServiceChangeTracker and EndpointsChangeTracker do.

    Building both maps from every object costs about a second at 10k Services; `update` parses
    again only the Services and EndpointSlices whose resourceVersion changed (EndpointSlices per
    Service, since duplicates collapse across a Service's slices) and says which Services changed.
    The maps equal build_service_map / build_endpoints_map over all the objects; entries of
    Services that did not change keep their objects (a RenderCache relies on that)."""

    def __init__(self, node_name: str, ip_family: IPFamily = "IPv4", prefer_same_node: bool = True) -> None:
        self.node_name = node_name
        self.ip_family: IPFamily = ip_family
        self.prefer_same_node = prefer_same_node
        self.service_map: dict[ServicePortName, ServicePort] = {}
        self.endpoints_map: dict[ServicePortName, list[Endpoint]] = {}
        self._svc_keys: dict[NamespacedName, list[ServicePortName]] = {}
        # by the keys update was given (see _nsn)
        self._svc_version: dict[tuple, object] = {}
        self._slice_version: dict[tuple, object] = {}
        self._slice_service: dict[tuple, str] = {}  # slice -> its Service's name
        self._slices: dict[NamespacedName, dict[str, Mapping[str, Any]]] = {}  # service -> slice name -> slice
        self._eps_keys: dict[NamespacedName, list[ServicePortName]] = {}
        self._interned: dict[ServicePortName, ServicePortName] = {}
        self._cursor: Cursor | None = None  # the snapshot sync saw last

    def update(
        self,
        services: Iterable[Mapping[str, Any]] | Mapping[NamespacedName, Mapping[str, Any]],
        slices: Iterable[Mapping[str, Any]] | Mapping[NamespacedName, Mapping[str, Any]],
    ) -> tuple[set[NamespacedName], dict[ServicePortName, ServicePort], dict[ServicePortName, list[Endpoint]]]:
        """Take the current Services and EndpointSlices (all of them: lists of objects, or dicts
        by (namespace, name) or by (kind, namespace, name) as a Snapshot indexes them). Returns the
        Services whose ports or endpoints changed, and for those the entries both maps held
        before (what stale conntrack cleanup compares with)."""
        # Every object is visited: versions are gathered by comprehensions and compared as whole
        # dicts first, so a sync where nothing of a kind changed costs little.
        svc_objs, slice_objs = _by_name(services), _by_name(slices)
        svc_new, svc_gone, self._svc_version = self._diff(svc_objs, self._svc_version)
        slice_new, slice_gone, self._slice_version = self._diff(slice_objs, self._slice_version)
        return self._apply(svc_new, svc_gone, slice_new, slice_gone)

    def apply_changes(
        self,
        services: Mapping[NamespacedName, Mapping[str, Any] | None],
        slices: Mapping[NamespacedName, Mapping[str, Any] | None],
    ) -> tuple[set[NamespacedName], dict[ServicePortName, ServicePort], dict[ServicePortName, list[Endpoint]]]:
        """As update, given only what changed since the last call (None: deleted), as
        Snapshot.changes reports it: costs what changed, whatever the number of objects."""
        svc_new, svc_gone = self._delta(services, self._svc_version)
        slice_new, slice_gone = self._delta(slices, self._slice_version)
        return self._apply(svc_new, svc_gone, slice_new, slice_gone)

    @staticmethod
    def _diff(objs: Mapping[Any, Mapping[str, Any]], previous: dict[tuple, object]) -> tuple[dict, list, dict]:
        """Objects whose version differs from `previous`, keys gone, and the versions now."""
        versions = _versions(objs)
        if versions == previous:
            return {}, [], previous
        new = {k: objs[k] for k, v in versions.items() if previous.get(k, _ABSENT) != v}
        return new, list(previous.keys() - versions.keys()), versions

    @staticmethod
    def _delta(changes: Mapping[Any, Mapping[str, Any] | None], previous: dict[tuple, object]) -> tuple[dict, list]:
        """Objects whose version differs from `previous`, and keys gone; `previous` updated."""
        new: dict = {}
        gone: list = []
        for k, o in changes.items():
            if o is None:
                if previous.pop(k, _ABSENT) is not _ABSENT:
                    gone.append(k)
                continue
            v = _version(o)
            if previous.get(k, _ABSENT) != v:
                previous[k] = v
                new[k] = o
        return new, gone

    def _apply(
        self, svc_new: Mapping[Any, Mapping[str, Any]], svc_gone: Iterable[Any],
        slice_new: Mapping[Any, Mapping[str, Any]], slice_gone: Iterable[Any],
    ) -> tuple[set[NamespacedName], dict[ServicePortName, ServicePort], dict[ServicePortName, list[Endpoint]]]:  # fmt: skip
        changed: set[NamespacedName] = set()
        svcs_before: dict[NamespacedName, dict] = {}  # what the maps held for the Services touched
        eps_before: dict[NamespacedName, dict] = {}
        interned = self._interned

        def replace(table: dict, keys: dict, nsn: NamespacedName, new: dict, old_out: dict) -> None:
            # Both maps share one key object per service port, so lookups of one map's keys in
            # the other are identity hits (no dataclass __eq__).
            new = {interned.setdefault(k, k): v for k, v in new.items()}
            before = {k: table[k] for k in keys.get(nsn, ())}
            if before != new:
                changed.add(nsn)
            old_out.setdefault(nsn, before)
            for k in before:
                del table[k]
            table.update(new)
            if new:
                keys[nsn] = list(new)
            else:
                keys.pop(nsn, None)

        # Parsed in one call, then split per Service: a first sync parses thousands at once.
        parsed: dict[NamespacedName, dict] = {_nsn(key): {} for key in svc_new}
        for k, sp in build_service_map(svc_new.values(), self.ip_family).items():
            parsed.setdefault((k.namespace, k.name), {})[k] = sp
        for nsn, new in parsed.items():
            replace(self.service_map, self._svc_keys, nsn, new, svcs_before)
        for key in svc_gone:
            replace(self.service_map, self._svc_keys, _nsn(key), {}, svcs_before)

        dirty: set[NamespacedName] = set()
        owner = self._slice_service
        for key, obj in slice_new.items():
            ns, name = _nsn(key)
            before = owner.pop(key, None)
            if before is not None:
                dirty.add((ns, before))
                self._slices.get((ns, before), {}).pop(name, None)
            labels = _as_dict(_as_dict(obj.get("metadata")).get("labels"))
            service = labels.get(SERVICE_NAME_LABEL)
            if isinstance(service, str):
                owner[key] = service
                dirty.add((ns, service))
                self._slices.setdefault((ns, service), {})[name] = obj
        for key in slice_gone:
            before = owner.pop(key, None)
            if before is not None:
                ns, name = _nsn(key)
                dirty.add((ns, before))
                self._slices.get((ns, before), {}).pop(name, None)
        if len(interned) > 2 * (len(self.service_map) + len(self.endpoints_map)) + 1000:
            live = self.service_map.keys() | self.endpoints_map.keys()
            self._interned = interned = {k: v for k, v in interned.items() if k in live}
        group: list[Mapping[str, Any]] = []
        for nsn in dirty:
            objs = self._slices.get(nsn)
            if objs:
                group.extend(objs.values())
            else:
                self._slices.pop(nsn, None)
        per_service: dict[NamespacedName, dict] = {nsn: {} for nsn in dirty}
        if group:
            for k, eps in build_endpoints_map(group, self.node_name, self.ip_family, self.prefer_same_node).items():
                per_service.setdefault((k.namespace, k.name), {})[k] = eps
        for nsn, new in per_service.items():
            replace(self.endpoints_map, self._eps_keys, nsn, new, eps_before)
        # both maps' old entries for every changed Service, whichever of its objects changed
        old_svcs: dict[ServicePortName, ServicePort] = {}
        old_eps: dict[ServicePortName, list[Endpoint]] = {}
        for nsn in changed:
            before = svcs_before.get(nsn)
            old_svcs.update(before if before is not None else
                            {k: self.service_map[k] for k in self._svc_keys.get(nsn, ())})  # fmt: skip
            before = eps_before.get(nsn)
            old_eps.update(before if before is not None else
                           {k: self.endpoints_map[k] for k in self._eps_keys.get(nsn, ())})  # fmt: skip
        return changed, old_svcs, old_eps

    def sync(
        self, snap: Snapshot,
    ) -> tuple[set[NamespacedName], dict[ServicePortName, ServicePort], dict[ServicePortName, list[Endpoint]]]:  # fmt: skip
        """update from a Snapshot: only what its change log says changed since the snapshot seen
        last, when it can say (one SnapshotCache's snapshots); else every object compared."""
        delta = snap.changes(self._cursor, ("Service", "EndpointSlice"))
        self._cursor = None  # unknown until this update is done
        if delta is None:
            out = self.update(snap.index("Service"), snap.index("EndpointSlice"))
        else:
            out = self.apply_changes(delta["Service"], delta["EndpointSlice"])
        self._cursor = snap.cursor
        return out

    def sync_in_parts(self, snap: Snapshot, parts: int) -> Iterator[set[NamespacedName]]:
        """A first sync (the maps empty) in `parts` steps of about as many Services each (in
        name order), every Service with its EndpointSlices (slices of no listed Service go with
        the last): yields the Services each step added, once the maps hold them, so that a caller
        can plan and apply one part while the next is parsed. At the end the maps are as after
        sync(snap); a sync that stops early leaves them to start over (the next sync reads all)."""
        if not self.empty:
            raise RuntimeError("ProxyMaps.sync_in_parts is for a first sync (the maps must be empty)")
        self._cursor = None
        services, slices = snap.index("Service"), snap.index("EndpointSlice")
        names = sorted(services)
        bounds = [len(names) * i // parts for i in range(parts + 1)]
        part_of: dict[NamespacedName, int] = {}
        for i in range(parts):
            for key in names[bounds[i] : bounds[i + 1]]:
                part_of[_nsn(key)] = i
        slice_parts: list[dict] = [{} for _ in range(parts)]
        last = parts - 1
        for key, obj in slices.items():
            meta = obj.get("metadata")
            labels = meta.get("labels") if meta.__class__ is dict else None
            service = labels.get(SERVICE_NAME_LABEL) if labels.__class__ is dict else None
            slice_parts[part_of.get((_nsn(key)[0], service), last)][key] = obj
        for i in range(parts):
            changed, _, _ = self.apply_changes({k: services[k] for k in names[bounds[i] : bounds[i + 1]]},
                                               slice_parts[i])  # fmt: skip
            yield changed
        self._cursor = snap.cursor

    @property
    def empty(self) -> bool:
        """Nothing given yet (sync_in_parts is for these maps only)."""
        return not self._svc_version and not self._slice_version

    @property
    def service_count(self) -> int:
        """How many Service objects the maps were given (with or without ports)."""
        return len(self._svc_version)

    @property
    def ports_by_service(self) -> Mapping[NamespacedName, list[ServicePortName]]:
        """The keys of service_map per Service."""
        return self._svc_keys

    def slices_of(self, nsn: NamespacedName) -> list[Mapping[str, Any]]:
        """The EndpointSlices of one Service, as last given to update."""
        return list(self._slices.get(nsn, {}).values())

    def ports_of(self, names: Iterable[NamespacedName]) -> set[ServicePortName]:
        """The service port keys of these Services, in either map."""
        out: set[ServicePortName] = set()
        for nsn in names:
            out.update(self._svc_keys.get(nsn, ()))
            out.update(self._eps_keys.get(nsn, ()))
        return out


def _versions(objs: Mapping[Any, Mapping[str, Any]]) -> dict[Any, object]:
    """_version of every object, the common case (a resourceVersion) without a call per object."""
    out = {
        k: (meta.get("resourceVersion") if (meta := o.get("metadata")).__class__ is dict else None)
        for k, o in objs.items()
    }
    if None in out.values():
        for k, v in out.items():
            if v is None:
                out[k] = _version(objs[k])
    return out


def _nsn(key: tuple) -> NamespacedName:
    """(namespace, name) of a key of update's dicts."""
    return (key[-2] or "default", key[-1])


def _by_name(
    objs: Iterable[Mapping[str, Any]] | Mapping[NamespacedName, Mapping[str, Any]],
) -> Mapping[NamespacedName, Mapping[str, Any]]:
    if isinstance(objs, Mapping):
        return objs
    out: dict[NamespacedName, Mapping[str, Any]] = {}
    for obj in objs:
        meta = _as_dict(obj.get("metadata"))
        out[(meta.get("namespace") or "default", str(meta.get("name") or ""))] = obj
    return out
