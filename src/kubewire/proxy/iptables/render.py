"""The iptables-mode kube-proxy planner: cluster state in, iptables-restore payload out.

This follows upstream's syncProxyRules (pkg/proxy/iptables/proxier.go) line by line in what it
writes and in which order, so that the payload is the one the real kube-proxy feeds to
`iptables-restore --noflush --counters` on a full sync. Two things upstream leaves to chance are
fixed here: services are visited in ServicePortName order (upstream walks a Go map) and merged
endpoint lists keep the sorted endpoint order.

The work is split so that a partial sync can reuse it: `plan_service_port` returns one service
port's rules, separated into what upstream always rewrites (filter rules, KUBE-SERVICES and
KUBE-NODEPORTS jumps) and what it may skip when the service did not change (its own chains).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256 as _sha256
from itertools import chain as _chain
from itertools import compress, repeat
from operator import attrgetter, is_, is_not

from kubewire.proxy.model import (
    Endpoint,
    IPFamily,
    KubeProxyConfig,
    ServicePort,
    ServicePortName,
    build_endpoints_map,
    build_service_map,
    parse_cidr_sloppy,
    parse_ip_sloppy,
)
from kubewire.proxy.topology import categorize_endpoints

KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's chain; kube-proxy keeps its own copy of the rule

SVC_PREFIX = "KUBE-SVC-"
SVL_PREFIX = "KUBE-SVL-"
FW_PREFIX = "KUBE-FW-"
EXT_PREFIX = "KUBE-EXT-"
SEP_PREFIX = "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, SEP_PREFIX, FW_PREFIX, EXT_PREFIX)

NFACCT_CT_STATE_INVALID = "ct_state_invalid_dropped_pkts"
NFACCT_LOCALHOST_NODEPORTS = "localhost_nps_accepted_pkts"

# Above this many endpoints upstream drops per-endpoint comments to keep the payload small.
LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000

NODEPORTS_LAST_COMMENT = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'


# ---------------------------------------------------------------------------------------------
# Chain names
# ---------------------------------------------------------------------------------------------


_B32_PAIRS = tuple(a + b for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _hash16(text: str) -> str:
    # iptables chain names are limited to 28 characters: sha256, base32, first 16 characters.
    # 16 base32 characters are exactly the first 10 bytes (80 bits), encoded here 10 bits at a
    # time (base64.b32encode is pure Python and was a third of a full render).
    v = int.from_bytes(_sha256(text.encode()).digest()[:10], "big")
    p = _B32_PAIRS
    return (p[v >> 70] + p[(v >> 60) & 1023] + p[(v >> 50) & 1023] + p[(v >> 40) & 1023]
            + p[(v >> 30) & 1023] + p[(v >> 20) & 1023] + p[(v >> 10) & 1023] + p[v & 1023])  # fmt: skip


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """The 16-character hash shared by a service port's SVC/SVL/EXT/FW chains."""
    return _hash16(service_port_name + protocol.lower())


def service_chain_name(service_port_name: str | ServicePortName, protocol: str) -> str:
    """KUBE-SVC-*: dispatches to the endpoints under Cluster traffic policy."""
    return SVC_PREFIX + port_proto_hash(str(service_port_name), protocol)


def service_local_chain_name(service_port_name: str | ServicePortName, protocol: str) -> str:
    """KUBE-SVL-*: dispatches to the node-local endpoints under Local traffic policy."""
    return SVL_PREFIX + port_proto_hash(str(service_port_name), protocol)


def service_firewall_chain_name(service_port_name: str | ServicePortName, protocol: str) -> str:
    """KUBE-FW-*: loadBalancerSourceRanges filtering."""
    return FW_PREFIX + port_proto_hash(str(service_port_name), protocol)


def service_external_chain_name(service_port_name: str | ServicePortName, protocol: str) -> str:
    """KUBE-EXT-*: entry for NodePort/externalIP/LB traffic, before the traffic policy applies."""
    return EXT_PREFIX + port_proto_hash(str(service_port_name), protocol)


def endpoint_chain_name(service_port_name: str | ServicePortName, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-*: masquerades hairpin traffic and DNATs to `endpoint` ("ip:port")."""
    return SEP_PREFIX + _hash16(str(service_port_name) + protocol.lower() + endpoint)


def is_service_chain_name(chain: str) -> bool:
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


def chain_line(chain: str) -> str:
    return f":{chain} - [0:0]"


def compute_probability(n: int) -> str:
    """Go's fmt.Sprintf("%0.10f", 1.0/float64(n))."""
    return f"{1.0 / n:.10f}"


# ---------------------------------------------------------------------------------------------
# Per-node parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalDetector:
    """How "traffic from a local pod" is matched (upstream's LocalTrafficDetector)."""

    if_local: tuple[str, ...]
    if_not_local: tuple[str, ...]


@dataclass(frozen=True)
class NodeParams:
    """Everything about the node and configuration that shapes the rules, resolved once per sync."""

    ip_family: IPFamily
    node_name: str
    node_ip: str | None
    node_labels: Mapping[str, str]
    masquerade_mark: str
    masquerade_all: bool
    local_detector: LocalDetector | None
    localhost_nodeports: bool
    nodeport_match_all: bool
    nodeport_ips: tuple[str, ...]
    random_fully: bool
    nfacct_ct_state_invalid: bool
    nfacct_localhost_nodeports: bool
    tcp_be_liberal: bool
    prefer_same_node: bool

    @property
    def is_ipv6(self) -> bool:
        return self.ip_family == "IPv6"


def _first_cidr_of_family(cidrs: Iterable[str], family: IPFamily) -> str | None:
    for text in cidrs:
        cidr = parse_cidr_sloppy(text.strip()) if isinstance(text, str) else None
        if cidr is not None and (cidr.version == 6) == (family == "IPv6"):
            return str(cidr)
    return None


def local_detector_for(
    config: KubeProxyConfig, ip_family: IPFamily, node_pod_cidrs: Sequence[str] = ()
) -> LocalDetector | None:
    """cmd/kube-proxy's getLocalDetectors for one family; None is upstream's no-op detector."""
    mode = config.detect_local_mode or "ClusterCIDR"
    if mode in ("ClusterCIDR", "NodeCIDR"):
        source = config.cluster_cidrs if mode == "ClusterCIDR" else tuple(node_pod_cidrs)
        cidr = _first_cidr_of_family(source, ip_family)
        return LocalDetector(("-s", cidr), ("!", "-s", cidr)) if cidr else None
    if mode == "BridgeInterface" and config.bridge_interface:
        iface = config.bridge_interface
        return LocalDetector(("-i", iface), ("!", "-i", iface))
    if mode == "InterfaceNamePrefix" and config.interface_name_prefix:
        iface = config.interface_name_prefix + "+"
        return LocalDetector(("-i", iface), ("!", "-i", iface))
    return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _node_port_cidrs(
    config: KubeProxyConfig, ip_family: IPFamily, node_ips: Sequence[str]
) -> tuple[list[Network], bool, bool]:
    """NewNodePortAddresses for one family: (its CIDRs, matchAll, containsIPv4Loopback)."""
    strings = list(config.node_port_addresses)
    if strings == ["primary"]:
        # cmd/kube-proxy replaces "primary" by the node's primary IP of each family.
        strings = []
        for family, bits in (("IPv4", 32), ("IPv6", 128)):
            ip = _primary_ip(node_ips, family)
            if ip is not None and not ipaddress.ip_address(ip).is_loopback:
                strings.append(f"{ip}/{bits}")
    want_version = 4 if ip_family == "IPv4" else 6
    cidrs: list[Network] = []
    for text in strings:
        cidr = parse_cidr_sloppy(text)
        if cidr is not None and cidr.version == want_version:
            cidrs.append(cidr)
    if not cidrs:
        cidrs = [ipaddress.ip_network("0.0.0.0/0" if ip_family == "IPv4" else "::/0")]
    loopback = ipaddress.IPv4Address("127.0.0.0")
    contains_loopback = any(
        c.version == 4 and (c.network_address.is_loopback or loopback in c) for c in cidrs
    )
    for cidr in cidrs:
        if cidr.prefixlen == 0:
            # A zero CIDR matches every address; upstream ignores the others.
            return [cidr], True, contains_loopback
    return cidrs, False, contains_loopback


def _primary_ip(node_ips: Sequence[str], family: str) -> str | None:
    for text in node_ips:
        ip = parse_ip_sloppy(text)
        if ip is not None and (ip.version == 6) == (family == "IPv6"):
            return str(ip)
    return None


def node_params(
    config: KubeProxyConfig,
    node_name: str,
    node_ips: Sequence[str],
    node_labels: Mapping[str, str] | None = None,
    ip_family: IPFamily = "IPv4",
    node_pod_cidrs: Sequence[str] = (),
) -> NodeParams:
    """Resolve what NewProxier and cmd/kube-proxy derive from the configuration and the host.

    The node's interface addresses are taken to be its loopback addresses plus `node_ips`, which
    is what a kubewire node namespace has; they matter only when nodePortAddresses is set.
    """
    cidrs, match_all, contains_loopback = _node_port_cidrs(config, ip_family, node_ips)
    # The IPv6 proxier is always created with localhost NodePorts off; both turn it off when
    # nodePortAddresses excludes 127.0.0.0/8.
    localhost = config.localhost_nodeports and ip_family == "IPv4" and contains_loopback
    nodeport_ips: list[str] = []
    if not match_all:
        for text in ["127.0.0.1", "::1", *node_ips]:
            ip = parse_ip_sloppy(text)
            if ip is None or str(ip) in nodeport_ips:
                continue
            if any(ip.version == c.version and ip in c for c in cidrs):
                if ip.is_loopback and (ip_family == "IPv6" or not localhost):
                    continue  # upstream logs and skips unusable localhost NodePort addresses
                nodeport_ips.append(str(ip))
    return NodeParams(
        ip_family=ip_family,
        node_name=node_name,
        node_ip=_primary_ip(node_ips, ip_family),
        node_labels=dict(node_labels or {}),
        masquerade_mark=config.masquerade_mark,
        masquerade_all=config.masquerade_all,
        local_detector=local_detector_for(config, ip_family, node_pod_cidrs),
        localhost_nodeports=localhost,
        nodeport_match_all=match_all,
        nodeport_ips=tuple(nodeport_ips),
        random_fully=config.random_fully,
        nfacct_ct_state_invalid=config.nfacct_ct_state_invalid,
        nfacct_localhost_nodeports=config.nfacct_localhost_nodeports,
        tcp_be_liberal=config.tcp_be_liberal,
        prefer_same_node=config.prefer_same_traffic_distribution,
    )


# ---------------------------------------------------------------------------------------------
# One service port
# ---------------------------------------------------------------------------------------------


Words = str | Sequence["Words"]


def _line(*parts: Words) -> str:
    # upstream's LineBuffer.Write: words joined by single spaces; quoting is done by the caller.
    # Parts are words or (nested) sequences of words; this runs once per rule, so it is flat code.
    words: list[str] = []
    for part in parts:
        if isinstance(part, str):
            words.append(part)
            continue
        for sub in part:
            if isinstance(sub, str):
                words.append(sub)
            else:
                words.append(_line(*sub))
    return " ".join(words)


@dataclass
class ServicePortRules:
    """The lines one service port contributes to a sync, in upstream's write order.

    `filter_rules` and `nat_rules` (KUBE-SERVICES / KUBE-NODEPORTS jumps) are written on every
    sync; `nat_chains` and `nat_chain_rules` (the port's own chains) only when it changed.
    """

    filter_rules: list[str] = field(default_factory=list)
    nat_rules: list[str] = field(default_factory=list)
    nat_chains: list[str] = field(default_factory=list)
    nat_chain_rules: list[str] = field(default_factory=list)
    active_nat_chains: list[str] = field(default_factory=list)


def _service_to_endpoint_rules(
    out: list[str],
    name: str,
    svc: ServicePort,
    chain: str,
    endpoints: Sequence[Endpoint],
    large_cluster: bool,
    seps: Mapping[int, tuple[str, str]],
) -> None:
    """writeServiceToEndpointRules: affinity checks first, then the 1/n probability ladder.

    `seps` gives each endpoint's ("ip:port", KUBE-SEP- chain), by id() of the Endpoint. The rules are what _line would
    join, written as f-strings: this runs once per endpoint and is most of a full render."""
    if svc.session_affinity == "ClientIP":
        seconds = svc.sticky_max_age_seconds
        for ep in endpoints:
            text, sep = seps[id(ep)]
            comment = "" if large_cluster else f'-m comment --comment "{name} -> {text}" '
            out.append(f"-A {chain} {comment}-m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}")
    last = len(endpoints) - 1
    for i, ep in enumerate(endpoints):
        text, sep = seps[id(ep)]
        comment = "" if large_cluster else f'-m comment --comment "{name} -> {text}" '
        if i < last:
            out.append(
                f"-A {chain} {comment}-m statistic --mode random --probability {compute_probability(last + 1 - i)} -j {sep}"
            )
        else:
            out.append(f"-A {chain} {comment}-j {sep}")


def plan_service_port(
    svc: ServicePort,
    endpoints: Sequence[Endpoint],
    params: NodeParams,
    large_cluster: bool = False,
) -> ServicePortRules:
    """All rules and chains of one service port, as one iteration of upstream's sync loop."""
    rules = ServicePortRules()
    name = str(svc.key)
    proto = svc.protocol.lower()
    port = str(svc.port)
    mark_masq = KUBE_MARK_MASQ

    cat = categorize_endpoints(endpoints, svc, params.node_name, params.node_labels, params.prefer_same_node)
    has_endpoints = cat.has_any

    cluster_chain = service_chain_name(name, svc.protocol)
    uses_cluster_chain = bool(cat.cluster) and svc.uses_cluster_endpoints
    local_chain = service_local_chain_name(name, svc.protocol)
    uses_local_chain = bool(cat.local) and svc.uses_local_endpoints

    internal_chain = cluster_chain
    has_internal = has_endpoints
    if svc.internal_policy_local:
        internal_chain = local_chain
        has_internal = has_internal and bool(cat.local)

    external_policy_chain = cluster_chain
    has_external = has_endpoints
    if svc.external_policy_local:
        external_policy_chain = local_chain
        has_external = has_external and bool(cat.local)
    ext_chain = service_external_chain_name(name, svc.protocol)
    # The EXT chain exists whenever anything routes, for the local short-circuit rules.
    uses_ext_chain = has_endpoints and svc.externally_accessible

    lb_chain = ext_chain
    fw_chain = service_firewall_chain_name(name, svc.protocol)
    uses_fw_chain = has_endpoints and bool(svc.load_balancer_vips) and bool(svc.load_balancer_source_ranges)
    if uses_fw_chain:
        lb_chain = fw_chain

    internal_target = internal_comment = external_target = external_comment = ""
    if not has_endpoints:
        internal_target = external_target = "REJECT"
        internal_comment = external_comment = f'"{name} has no endpoints"'
    else:
        if not has_internal:
            internal_target, internal_comment = "DROP", f'"{name} has no local endpoints"'
        if not has_external:
            external_target, external_comment = "DROP", f'"{name} has no local endpoints"'

    filt = rules.filter_rules
    nat = rules.nat_rules
    match_proto = ("-m", proto, "-p", proto)

    # Capture the clusterIP.
    cluster_ip_match = (
        f'-m comment --comment "{name} cluster IP" -m {proto} -p {proto} -d {svc.cluster_ip} --dport {port}'
    )
    if has_internal:
        nat.append(f"-A {KUBE_SERVICES} {cluster_ip_match} -j {internal_chain}")
    else:
        filt.append(
            _line(
                "-A", KUBE_SERVICES, "-m", "comment", "--comment", internal_comment,
                match_proto, "-d", svc.cluster_ip, "--dport", port, "-j", internal_target,
            )
        )  # fmt: skip

    # Capture externalIPs.
    for ext_ip in svc.external_ips:
        if has_endpoints:
            nat.append(
                _line(
                    "-A", KUBE_SERVICES, "-m", "comment", "--comment", f'"{name} external IP"',
                    match_proto, "-d", ext_ip, "--dport", port, "-j", ext_chain,
                )
            )  # fmt: skip
        if not has_external:
            filt.append(
                _line(
                    "-A", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", external_comment,
                    match_proto, "-d", ext_ip, "--dport", port, "-j", external_target,
                )
            )  # fmt: skip

    # Capture load-balancer ingress.
    for lb_ip in svc.load_balancer_vips:
        if has_endpoints:
            nat.append(
                _line(
                    "-A", KUBE_SERVICES, "-m", "comment", "--comment", f'"{name} loadbalancer IP"',
                    match_proto, "-d", lb_ip, "--dport", port, "-j", lb_chain,
                )
            )  # fmt: skip
        if uses_fw_chain:
            filt.append(
                _line(
                    "-A", KUBE_PROXY_FIREWALL, "-m", "comment", "--comment",
                    f'"{name} traffic not accepted by {fw_chain}"',
                    match_proto, "-d", lb_ip, "--dport", port, "-j", "DROP",
                )
            )  # fmt: skip
    if not has_external:
        for lb_ip in svc.load_balancer_vips:
            filt.append(
                _line(
                    "-A", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", external_comment,
                    match_proto, "-d", lb_ip, "--dport", port, "-j", external_target,
                )
            )  # fmt: skip

    # Capture nodeports (not subject to loadBalancerSourceRanges, as upstream).
    if svc.node_port != 0:
        node_port = str(svc.node_port)
        if has_endpoints:
            if (
                params.localhost_nodeports
                and params.ip_family == "IPv4"
                and params.nfacct_localhost_nodeports
            ):
                nat.append(
                    _line(
                        "-A", KUBE_NODEPORTS, "-m", "comment", "--comment", name,
                        match_proto, "-d", "127.0.0.0/8", "--dport", node_port,
                        "-m", "nfacct", "--nfacct-name", NFACCT_LOCALHOST_NODEPORTS, "-j", ext_chain,
                    )
                )  # fmt: skip
            nat.append(
                _line(
                    "-A", KUBE_NODEPORTS, "-m", "comment", "--comment", name,
                    match_proto, "--dport", node_port, "-j", ext_chain,
                )
            )  # fmt: skip
        if not has_external:
            filt.append(
                _line(
                    "-A", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", external_comment,
                    "-m", "addrtype", "--dst-type", "LOCAL", match_proto, "--dport", node_port,
                    "-j", external_target,
                )
            )  # fmt: skip

    # The health check port is opened whether or not this node has local endpoints.
    if svc.health_check_node_port != 0:
        filt.append(
            _line(
                "-A", KUBE_NODEPORTS, "-m", "comment", "--comment", f'"{name} health check node port"',
                "-m", "tcp", "-p", "tcp", "--dport", str(svc.health_check_node_port), "-j", "ACCEPT",
            )
        )  # fmt: skip

    chains = rules.nat_chains
    chain_rules = rules.nat_chain_rules
    active = rules.active_nat_chains

    # Internal traffic: masquerade what does not come from a local pod (or everything).
    if has_internal:
        if params.masquerade_all:
            chain_rules.append(f"-A {internal_chain} {cluster_ip_match} -j {mark_masq}")
        elif params.local_detector is not None:
            not_local = " ".join(params.local_detector.if_not_local)
            chain_rules.append(f"-A {internal_chain} {cluster_ip_match} {not_local} -j {mark_masq}")

    # External traffic: everything NodePort/externalIP/LB-bound enters the EXT chain.
    if uses_ext_chain:
        chains.append(chain_line(ext_chain))
        active.append(ext_chain)
        if not svc.external_policy_local:
            chain_rules.append(
                _line(
                    "-A", ext_chain, "-m", "comment", "--comment",
                    f'"masquerade traffic for {name} external destinations"', "-j", mark_masq,
                )
            )  # fmt: skip
        else:
            if params.local_detector is not None:
                # Pods reaching an external IP behave as if they went out to the LB and back.
                chain_rules.append(
                    _line(
                        "-A", ext_chain, "-m", "comment", "--comment",
                        f'"pod traffic for {name} external destinations"',
                        params.local_detector.if_local, "-j", cluster_chain,
                    )
                )  # fmt: skip
            chain_rules.append(
                _line(
                    "-A", ext_chain, "-m", "comment", "--comment",
                    f'"masquerade LOCAL traffic for {name} external destinations"',
                    "-m", "addrtype", "--src-type", "LOCAL", "-j", mark_masq,
                )
            )  # fmt: skip
            chain_rules.append(
                _line(
                    "-A", ext_chain, "-m", "comment", "--comment",
                    f'"route LOCAL traffic for {name} external destinations"',
                    "-m", "addrtype", "--src-type", "LOCAL", "-j", cluster_chain,
                )
            )  # fmt: skip
        if has_external:
            chain_rules.append(_line("-A", ext_chain, "-j", external_policy_chain))

    # loadBalancerSourceRanges.
    if uses_fw_chain:
        chains.append(chain_line(fw_chain))
        active.append(fw_chain)
        head = ("-A", fw_chain, "-m", "comment", "--comment", f'"{name} loadbalancer IP"')
        allow_from_node = False
        node_ip = parse_ip_sloppy(params.node_ip) if params.node_ip else None
        for cidr_text in svc.load_balancer_source_ranges:
            chain_rules.append(_line(head, "-s", cidr_text, "-j", ext_chain))
            cidr = parse_cidr_sloppy(cidr_text)
            if (
                node_ip is not None
                and cidr is not None
                and node_ip.version == cidr.version
                and node_ip in cidr
            ):
                allow_from_node = True
        if allow_from_node:
            # A node reaching its own VIP loops back with the VIP as source; let that through.
            for lb_ip in svc.load_balancer_vips:
                chain_rules.append(_line(head, "-s", lb_ip, "-j", ext_chain))
        chain_rules.append(
            _line(
                "-A", fw_chain, "-m", "comment", "--comment",
                f'"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL"',
            )
        )  # fmt: skip

    # Each endpoint's "ip:port" and KUBE-SEP- chain, hashed once (the merged list holds them all).
    # (by identity: the lists hold the same objects, and hashing a frozen dataclass is slow).
    seps: dict[int, tuple[str, str]] = {}
    for ep in (*cat.all_reachable, *cat.cluster, *cat.local):
        if id(ep) not in seps:
            text = str(ep)
            seps[id(ep)] = (text, SEP_PREFIX + _hash16(name + proto + text))

    if uses_cluster_chain:
        chains.append(chain_line(cluster_chain))
        active.append(cluster_chain)
        _service_to_endpoint_rules(chain_rules, name, svc, cluster_chain, cat.cluster, large_cluster, seps)

    if uses_local_chain:
        chains.append(chain_line(local_chain))
        active.append(local_chain)
        _service_to_endpoint_rules(chain_rules, name, svc, local_chain, cat.local, large_cluster, seps)

    comment = "" if large_cluster else f"-m comment --comment {name} "
    affinity = svc.session_affinity == "ClientIP"
    for ep in cat.all_reachable:
        text, sep = seps[id(ep)]
        chains.append(f":{sep} - [0:0]")
        active.append(sep)
        # Hairpin: a pod reaching itself through the service must be masqueraded.
        chain_rules.append(f"-A {sep} {comment}-s {ep.ip} -j {mark_masq}")
        recent = f"-m recent --name {sep} --set " if affinity else ""
        chain_rules.append(f"-A {sep} {comment}{recent}-m {proto} -p {proto} -j DNAT --to-destination {text}")

    return rules


# ---------------------------------------------------------------------------------------------
# The whole payload
# ---------------------------------------------------------------------------------------------


@dataclass
class Payload:
    """A rendered sync, kept in pieces so callers can count or diff them.

    `nat_base` holds the rules of the nat base chains (NAT_BASE_CHAINS) as written in this sync,
    and `nat_other` (partial syncs only) the other nat lines (service chains' rules, deletions),
    so that trim_unchanged can drop unchanged base chains without scanning every rule."""

    filter_chains: list[str]
    filter_rules: list[str]
    nat_chains: list[str]
    nat_rules: list[str]
    active_nat_chains: set[str]
    nat_base: dict[str, list[str]] | None = None
    nat_other: list[str] | None = None

    def text(self) -> str:
        lines = [
            "*filter",
            *self.filter_chains,
            *self.filter_rules,
            "COMMIT",
            "*nat",
            *self.nat_chains,
            *self.nat_rules,
            "COMMIT",
        ]
        return "\n".join(lines) + "\n"


@dataclass
class _Rendered:
    """One service port as last rendered, and what it was rendered from."""

    svc: ServicePort
    endpoints: Sequence[Endpoint]
    rules: ServicePortRules
    services_jumps: list[str]  # its rules in KUBE-SERVICES, in order
    nodeports_jumps: list[str]  # and in KUBE-NODEPORTS


class RenderCache:
    """What plan_full rendered for each service port, for the next sync to reuse.

    An entry is reused only while its ServicePort and its endpoint list are the very same objects
    as last time (identity, not equality: kube-proxy's incremental maps hand out new objects for
    what changed and keep the others) and the node parameters and the large-cluster switch did
    not change. A sync after one endpoint change then renders one service port instead of all of
    them, and its payload is still exactly what rendering everything gives."""

    def __init__(self) -> None:
        self.params: NodeParams | None = None
        self.large: bool | None = None
        self.keys: list[ServicePortName] = []  # write order
        self.slots: list[_Rendered | None] = []  # what was rendered for keys[i]
        self.index: dict[ServicePortName, int] = {}  # position in keys

    @property
    def entries(self) -> dict[ServicePortName, _Rendered]:
        return {k: e for k, e in zip(self.keys, self.slots, strict=True) if e is not None}

    def _lookup(self, service_map: Mapping[ServicePortName, ServicePort]) -> list[ServicePort]:
        """The ServicePorts in write order; the keys are sorted again only when the set of service
        ports changed (then one of the old keys is missing, or the count differs)."""
        if len(service_map) == len(self.keys):
            try:
                return list(map(service_map.__getitem__, self.keys))
            except KeyError:
                pass
        kept = self.entries
        self.keys = _write_order(service_map)
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.slots = [kept.get(k) for k in self.keys]
        return list(map(service_map.__getitem__, self.keys))

    def _prepare(self, params: NodeParams, large: bool) -> None:
        if params != self.params or large != self.large:
            self.slots = [None] * len(self.keys)
            self.params, self.large = params, large


_SVC = attrgetter("svc")
_ENDPOINTS = attrgetter("endpoints")
_FILTER_RULES = attrgetter("filter_rules")
_NAT_RULES = attrgetter("nat_rules")
_ACTIVE = attrgetter("active_nat_chains")
_SERVICES_JUMPS = attrgetter("services_jumps")
_NODEPORTS_JUMPS = attrgetter("nodeports_jumps")


_EMPTY = _Rendered(None, None, ServicePortRules(), [], [])  # type: ignore[arg-type]


def _write_order(service_map: Mapping[ServicePortName, ServicePort]) -> list[ServicePortName]:
    return sorted(service_map, key=lambda k: (str(k), k.protocol))


def _render(
    svc: ServicePort, endpoints: Sequence[Endpoint], params: NodeParams, large: bool
) -> _Rendered:
    rules = plan_service_port(svc, endpoints, params, large)
    services_prefix = f"-A {KUBE_SERVICES} "
    services = [r for r in rules.nat_rules if r.startswith(services_prefix)]
    nodeports = [r for r in rules.nat_rules if not r.startswith(services_prefix)]
    return _Rendered(svc, endpoints, rules, services, nodeports)


def is_large_cluster(
    service_map: Mapping[ServicePortName, ServicePort],
    endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
) -> bool:
    total = sum(len(endpoints_map.get(key, ())) for key in service_map)
    return total > LARGE_CLUSTER_ENDPOINTS_THRESHOLD


def plan_full(
    service_map: Mapping[ServicePortName, ServicePort],
    endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
    params: NodeParams,
    existing_nat_chains: Iterable[str] = (),
    changed: set[ServicePortName] | None = None,
    cache: RenderCache | None = None,
) -> Payload:
    """A full sync from already-built maps. `existing_nat_chains` (from iptables-save) lets the
    payload delete service chains that are no longer used, as upstream does.

    With `changed` (a partial sync, as upstream since 1.26): the chains of service ports not in it
    are left out, since `iptables-restore --noflush` leaves unmentioned chains alone; KUBE-SERVICES,
    KUBE-NODEPORTS and the filter table are still written whole. With `cache`, service ports whose
    ServicePort and endpoint list are the objects rendered last time are not rendered again (see
    RenderCache); the payload is the same with or without it."""
    mark = params.masquerade_mark
    filter_chains = [
        chain_line(c)
        for c in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL)
    ]
    nat_chains = [chain_line(c) for c in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)]
    filter_rules: list[str] = []
    masquerade = [
        "-A",
        KUBE_POSTROUTING,
        "-m",
        "comment",
        "--comment",
        '"kubernetes service traffic requiring SNAT"',
        "-j",
        "MASQUERADE",
    ]
    if params.random_fully:
        masquerade.append("--random-fully")
    postrouting = [
        _line("-A", KUBE_POSTROUTING, "-m", "mark", "!", "--mark", f"{mark}/{mark}", "-j", "RETURN"),
        # Clear the mark so a packet re-traversing the stack is not masqueraded twice.
        _line("-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", mark),
        _line(masquerade),
    ]
    mark_masq_rules = [_line("-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", mark)]
    nat_rules = [*postrouting, *mark_masq_rules]
    if not params.is_ipv6 and params.localhost_nodeports:
        # route_localnet opens 127.0.0.0/8 to the network (issue 90259); this closes it again.
        filter_chains.append(chain_line(KUBE_FIREWALL))
        filter_rules.append(
            _line(
                "-A", KUBE_FIREWALL, "-m", "comment", "--comment", '"block incoming localnet connections"',
                "-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8",
                "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP",
            )
        )  # fmt: skip

    if cache is None:
        cache = RenderCache()
    # These walks are the whole cost of a partial sync at 10k Services: kept in C (map, chain).
    svcs = cache._lookup(service_map)
    keys = cache.keys
    endpoint_lists = list(map(endpoints_map.get, keys, repeat((), len(keys))))
    # is_large_cluster, from the lists at hand
    large = sum(map(len, endpoint_lists)) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
    cache._prepare(params, large)
    slots = cache.slots
    # which slots to render again: empty, or rendered from other objects (compared in C)
    stale = set(compress(range(len(slots)), map(is_, slots, repeat(None))))
    filled = [_EMPTY if done is None else done for done in slots]
    stale.update(compress(range(len(slots)), map(is_not, map(_SVC, filled), svcs)))
    stale.update(compress(range(len(slots)), map(is_not, map(_ENDPOINTS, filled), endpoint_lists)))
    for i in stale:
        slots[i] = _render(svcs[i], endpoint_lists[i], params, large)
    rendered = [done.rules for done in slots]  # type: ignore[union-attr]
    filter_rules.extend(_chain.from_iterable(map(_FILTER_RULES, rendered)))
    services_rules = list(_chain.from_iterable(map(_SERVICES_JUMPS, slots)))
    nodeports_rules = list(_chain.from_iterable(map(_NODEPORTS_JUMPS, slots)))
    active: set[str] = set().union(*map(_ACTIVE, rendered))
    other: list[str] = []  # the nat lines of the service ports' own chains, and deletions
    if changed is None:
        for svc_rules in rendered:
            nat_rules.extend(svc_rules.nat_rules)
            nat_chains.extend(svc_rules.nat_chains)
            nat_rules.extend(svc_rules.nat_chain_rules)
    else:
        nat_rules.extend(_chain.from_iterable(map(_NAT_RULES, rendered)))
        for i in sorted(cache.index[k] for k in changed if k in cache.index):
            nat_chains.extend(rendered[i].nat_chains)
            other.extend(rendered[i].nat_chain_rules)
        nat_rules.extend(other)

    for chain in sorted(set(existing_nat_chains) - active):
        if is_service_chain_name(chain):
            # A chain line flushes it; -X then removes it.
            nat_chains.append(chain_line(chain))
            nat_rules.append(f"-X {chain}")
            other.append(f"-X {chain}")

    # Tail-call to KUBE-NODEPORTS; must stay after every service portal rule.
    if params.nodeport_match_all:
        destinations: list[str] = ["-m", "addrtype", "--dst-type", "LOCAL"]
        if params.is_ipv6:
            destinations += ["!", "-d", "::1/128"]
        elif not params.localhost_nodeports:
            destinations += ["!", "-d", "127.0.0.0/8"]
        tail = [_line("-A", KUBE_SERVICES, "-m", "comment", "--comment", NODEPORTS_LAST_COMMENT, destinations,
                      "-j", KUBE_NODEPORTS)]  # fmt: skip
    else:
        tail = [
            _line("-A", KUBE_SERVICES, "-m", "comment", "--comment", NODEPORTS_LAST_COMMENT, "-d", ip,
                  "-j", KUBE_NODEPORTS)
            for ip in params.nodeport_ips
        ]  # fmt: skip
    nat_rules.extend(tail)
    services_rules.extend(tail)
    nat_base = {
        KUBE_SERVICES: services_rules,
        KUBE_NODEPORTS: nodeports_rules,
        KUBE_POSTROUTING: postrouting,
        KUBE_MARK_MASQ: mark_masq_rules,
    }

    if not params.tcp_be_liberal:
        # INVALID packets would otherwise reach pods un-DNATed and get reset (issue 74839).
        nfacct = (
            ("-m", "nfacct", "--nfacct-name", NFACCT_CT_STATE_INVALID)
            if params.nfacct_ct_state_invalid
            else ()
        )
        filter_rules.append(
            _line("-A", KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", nfacct, "-j", "DROP")
        )
    filter_rules.append(
        _line(
            "-A", KUBE_FORWARD, "-m", "comment", "--comment", '"kubernetes forwarding rules"',
            "-m", "mark", "--mark", f"{mark}/{mark}", "-j", "ACCEPT",
        )
    )  # fmt: skip
    filter_rules.append(
        _line(
            "-A", KUBE_FORWARD, "-m", "comment", "--comment", '"kubernetes forwarding conntrack rule"',
            "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT",
        )
    )  # fmt: skip
    return Payload(filter_chains, filter_rules, nat_chains, nat_rules, active, nat_base,
                   other if changed is not None else None)  # fmt: skip


def render_full(
    services: list[dict],
    slices: list[dict],
    config: KubeProxyConfig,
    node_name: str,
    node_ips: list[str],
    node_labels: dict | None = None,
    *,
    ip_family: IPFamily = "IPv4",
    node_pod_cidrs: Sequence[str] = (),
    existing_nat_chains: Iterable[str] = (),
) -> str:
    """The iptables-restore payload (filter and nat) of a full sync on `node_name`.

    Pure: the same inputs always give the same bytes. `node_pod_cidrs` matters only with
    detectLocalMode NodeCIDR; `existing_nat_chains` only to delete stale chains.
    """
    params = node_params(config, node_name, node_ips, node_labels, ip_family, node_pod_cidrs)
    service_map = build_service_map(services, ip_family)
    endpoints_map = build_endpoints_map(slices, node_name, ip_family, config.prefer_same_traffic_distribution)
    return plan_full(service_map, endpoints_map, params, existing_nat_chains).text()


@dataclass(frozen=True)
class JumpRule:
    """A rule kube-proxy keeps outside the restore payload (iptables -I, run on full syncs)."""

    table: str
    chain: str
    args: tuple[str, ...]


def jump_rules() -> list[JumpRule]:
    """Upstream's iptablesJumpChains + kubelet's KUBE-FIREWALL jumps, prepended with `-I`.

    Arguments are exec arguments (no shell quoting). The applier must also create the empty
    KUBE-PROXY-CANARY chain in mangle, nat and filter, which upstream watches to detect flushes.
    """
    new = ("-m", "conntrack", "--ctstate", "NEW")

    def jump(table: str, chain: str, target: str, comment: str, extra: tuple[str, ...] = ()) -> JumpRule:
        args = extra + (("-m", "comment", "--comment", comment) if comment else ()) + ("-j", target)
        return JumpRule(table, chain, args)

    return [
        jump("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", new),
        jump(
            "filter", "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", new
        ),
        jump("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports"),
        jump("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", new),
        jump("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", new),
        jump("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
        jump("filter", "INPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", new),
        jump("filter", "OUTPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", new),
        jump("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", new),
        jump("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
        jump("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
        jump("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
        jump("filter", "INPUT", KUBE_FIREWALL, ""),
        jump("filter", "OUTPUT", KUBE_FIREWALL, ""),
    ]


def replace_tables(saved: dict[str, str], payload: Payload) -> str:
    """A full sync as one flushing iptables-restore (no --noflush) of the filter and nat tables.

    iptables-nft-restore --noflush is super-linear in the size of what it loads (measured here:
    3,000 Services × 5 endpoints took 15.7 s with --noflush, 1.2 s without); kube-proxy's chains
    are rewritten whole on a full sync anyway. What others put in these tables (the jumps from the
    built-in chains, ip-masq-agent, NodeLocal DNSCache's rules) is carried over from `saved`
    (iptables-save output per table), and every KUBE-* chain comes from the payload alone.
    """
    out: list[str] = []
    ours = {"filter": (payload.filter_chains, payload.filter_rules), "nat": (payload.nat_chains, payload.nat_rules)}
    for table in ("filter", "nat"):
        chains, rules = ours[table]
        kept_chains: list[str] = []
        kept_rules: list[str] = []
        for line in saved.get(table, "").splitlines():
            if line.startswith(":"):
                name = line[1:].split()[0]
                if not name.startswith("KUBE-"):
                    kept_chains.append(line.rsplit(" ", 1)[0] + " [0:0]")
            elif line.startswith("-A ") and not line.split()[1].startswith("KUBE-"):
                kept_rules.append(line)
        deleted = {r[3:] for r in rules if r.startswith("-X ")}
        rule_lines = [r for r in rules if not r.startswith("-X ")]
        chain_lines = [c for c in chains if c[1:].split()[0] not in deleted]
        out += [f"*{table}", *kept_chains, ":KUBE-PROXY-CANARY - [0:0]", *chain_lines, *kept_rules, *rule_lines, "COMMIT"]
    return "\n".join(out) + "\n"


NAT_BASE_CHAINS = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)


def trim_unchanged(payload: Payload, previous: Payload | None) -> str:
    """A partial sync's text without what did not change since the last sync: the nat base chains
    whose rules are the same, and the filter table if all of it is the same. With --noflush an
    undeclared chain (or table) is left as it is, and rewriting a KUBE-SERVICES of 10k rules is
    most of what a one-endpoint change costs in iptables-nft; the rules in the kernel stay exactly
    what a full rewrite would give."""
    if previous is None:
        return payload.text()
    now, before = _base_rules(payload), _base_rules(previous)
    same = {c for c in NAT_BASE_CHAINS if now[c] == before[c]}
    nat_chains = [c for c in payload.nat_chains if c[1:].split(" ", 1)[0] not in same]
    if payload.nat_other is not None and payload.nat_base is not None:
        nat_rules = [r for c in NAT_BASE_CHAINS if c not in same for r in now[c]] + payload.nat_other
    else:
        nat_rules = [r for r in payload.nat_rules if not (r.startswith("-A ") and r.split(" ", 2)[1] in same)]
    lines: list[str] = []
    if payload.filter_chains != previous.filter_chains or payload.filter_rules != previous.filter_rules:
        lines += ["*filter", *payload.filter_chains, *payload.filter_rules, "COMMIT"]
    lines += ["*nat", *nat_chains, *nat_rules, "COMMIT"]
    return "\n".join(lines) + "\n"


def _base_rules(p: Payload) -> dict[str, list[str]]:
    if p.nat_base is not None:
        return p.nat_base
    out: dict[str, list[str]] = {c: [] for c in NAT_BASE_CHAINS}
    for r in p.nat_rules:
        parts = r.split(" ", 2)
        if parts[0] == "-A" and parts[1] in out:
            out[parts[1]].append(r)
    return out
