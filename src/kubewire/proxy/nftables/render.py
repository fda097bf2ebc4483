"""The nftables-mode kube-proxy planner: cluster state in, `nft -f` transactions out.

This follows upstream's syncProxyRules and setupNFTables (pkg/proxy/nftables/proxier.go, the mode
GA since 1.33) in what it writes and in which order, in the text form knftables gives `nft -f -`
(one command per line: "add chain ip kube-proxy ...", "flush chain ...", "add element ..."). The
reference is upstream's proxier_test.go (the version whose base chains are filter-prerouting-pre-dnat
and filter-output-pre-dnat at priority -110 and filter-input/forward/output at filter priority, and
whose service chains masquerade with "ip daddr VIP <not local> jump mark-for-masquerade"): its
expected dumps are the table after the transaction, its NumOperations() the transaction's size.

Two things upstream leaves to chance are fixed: Services are visited in namespace/name order, their
ports in ServicePortName order (upstream walks a Go map), and leftover set/map elements are deleted
in key order.

A sync is planned by `plan_sync`, which is pure: it takes what the previous sync left in the
kernel (`NftState`: the map/set elements written, the service chains and affinity sets that exist,
the chains waiting to be deleted) and returns the transactions plus the state after them.
 * a full sync (no state, or `changed=None`) rewrites the base chains, flushes the verdict maps
   and re-adds every element and every service's chains, as upstream does at start-up;
 * a partial sync (`changed` = the namespace/name of every Service whose ports or endpoints
   changed) flushes and rewrites only those services' chains and adds or deletes only the map
   elements whose value changed, as upstream does between full syncs. Services not in `changed`
   cost nothing to plan: their elements and chains are remembered per service.
Chains that fell out of use are flushed at once and deleted by a separate transaction at least a
second later (older kernels notice a chain is unreferenced only after a map element pointing at it
is gone for a while), exactly as upstream.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kubewire.proxy.iptables.render import node_params
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

TABLE = "kube-proxy"

# base chains
FILTER_PREROUTING_PRE_DNAT = "filter-prerouting-pre-dnat"
FILTER_OUTPUT_PRE_DNAT = "filter-output-pre-dnat"
FILTER_INPUT = "filter-input"
FILTER_FORWARD = "filter-forward"
FILTER_OUTPUT = "filter-output"
NAT_PREROUTING = "nat-prerouting"
NAT_OUTPUT = "nat-output"
NAT_POSTROUTING = "nat-postrouting"

# service dispatch
SERVICES = "services"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NODEPORT_IPS = "nodeport-ips"
CLUSTER_IPS = "cluster-ips"

# services without endpoints
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"

# unallocated ClusterIPs and undefined ports of ClusterIPs
CLUSTER_IPS_CHECK = "cluster-ips-check"

# loadBalancerSourceRanges
FIREWALL_IPS = "firewall-ips"
FIREWALL_CHECK = "firewall-check"

# masquerading
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"

SERVICE_PREFIX = "service-"
LOCAL_PREFIX = "local-"
EXTERNAL_PREFIX = "external-"
ENDPOINT_PREFIX = "endpoint-"
AFFINITY_PREFIX = "affinity-"
FIREWALL_PREFIX = "firewall-"

# knftables.NameLengthMax minus the longest prefix ("external-" etc. fit in 16).
NAME_LENGTH_MAX = 256
CHAIN_NAME_BASE_LENGTH_MAX = NAME_LENGTH_MAX - 16

# knftables writes named priorities as numbers ("dstnat-10" -> -110).
PRIORITY_DSTNAT = -100
PRIORITY_FILTER = 0
PRIORITY_SRCNAT = 100

# (name, type, hook, priority): filtering on pre-DNAT addresses runs before DNAT, the rest at
# filter priority, after DNAT.
BASE_CHAINS: tuple[tuple[str, str, str, int], ...] = (
    (FILTER_PREROUTING_PRE_DNAT, "filter", "prerouting", PRIORITY_DSTNAT - 10),
    (FILTER_OUTPUT_PRE_DNAT, "filter", "output", PRIORITY_DSTNAT - 10),
    (FILTER_INPUT, "filter", "input", PRIORITY_FILTER),
    (FILTER_FORWARD, "filter", "forward", PRIORITY_FILTER),
    (FILTER_OUTPUT, "filter", "output", PRIORITY_FILTER),
    (NAT_PREROUTING, "nat", "prerouting", PRIORITY_DSTNAT),
    (NAT_OUTPUT, "nat", "output", PRIORITY_DSTNAT),
    (NAT_POSTROUTING, "nat", "postrouting", PRIORITY_SRCNAT),
)

# (destination, source, extra match): the regular chains the base chains jump to.
JUMP_CHAINS: tuple[tuple[str, str, str], ...] = (
    (NODEPORT_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, FILTER_FORWARD, "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, FILTER_OUTPUT, "ct state new"),
    (FIREWALL_CHECK, FILTER_PREROUTING_PRE_DNAT, "ct state new"),
    (FIREWALL_CHECK, FILTER_OUTPUT_PRE_DNAT, "ct state new"),
    (SERVICES, NAT_OUTPUT, ""),
    (SERVICES, NAT_PREROUTING, ""),
    (MASQUERADING, NAT_POSTROUTING, ""),
    (CLUSTER_IPS_CHECK, FILTER_FORWARD, "ct state new"),
    (CLUSTER_IPS_CHECK, FILTER_OUTPUT, "ct state new"),
)

# The verdict maps and sets whose elements are tracked between syncs (upstream's
# nftElementStorage), in the order upstream resets and cleans them up.
CONTAINERS: tuple[tuple[str, str], ...] = (
    ("set", CLUSTER_IPS),
    ("map", SERVICE_IPS),
    ("map", FIREWALL_IPS),
    ("map", NO_ENDPOINT_SERVICES),
    ("map", NO_ENDPOINT_NODEPORTS),
    ("map", SERVICE_NODEPORTS),
)


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def hash_and_truncate(name: str) -> str:
    """Upstream's hashAndTruncate: 8 base32 characters of sha256(name), "-", name, cut to fit."""
    encoded = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    name = encoded[:8] + "-" + name
    if len(name) > CHAIN_NAME_BASE_LENGTH_MAX:
        name = name[: CHAIN_NAME_BASE_LENGTH_MAX - 3] + "..."
    return name


def service_port_chain_base(key: ServicePortName) -> str:
    """ "HASH-namespace/name/protocol/port", e.g. "ULMVA6XW-ns1/svc1/tcp/p80"."""
    return hash_and_truncate(f"{key.namespace}/{key.name}/{key.protocol.lower()}/{key.port}")


def endpoint_chain_base(key: ServicePortName, endpoint: str) -> str:
    """ "HASH-namespace/name/protocol/port__ip/port"; the colons of IPv6 become dots."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]").replace(":", ".")
    return hash_and_truncate(f"{key.namespace}/{key.name}/{key.protocol.lower()}/{key.port}__{host}/{port}")


def is_service_chain_name(chain: str) -> bool:
    """Service and endpoint chains are the only ones with a "/" in their name."""
    return "/" in chain


def is_affinity_set_name(name: str) -> bool:
    return name.startswith(AFFINITY_PREFIX)


# ---------------------------------------------------------------------------------------------
# Transactions, written as knftables writes them
# ---------------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    # Go's %q for the ASCII text kube-proxy puts in comments.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Tx:
    """One `nft -f` transaction: a list of commands, one per line, atomic as a whole."""

    def __init__(self, family: str = "ip", table: str = TABLE) -> None:
        self.family = family
        self.table = table
        self.lines: list[str] = []
        self._where = f"{family} {table}"

    def __len__(self) -> int:
        """The number of operations (upstream's Transaction.NumOperations)."""
        return len(self.lines)

    def text(self) -> str:
        return "".join(self.lines)

    def extend(self, other: Tx) -> None:
        self.lines.extend(other.lines)

    def add_table(self, comment: str) -> None:
        self.lines.append(f"add table {self._where} {{ comment {_quote(comment)} ; }}\n")

    def add_chain(
        self, name: str, base: tuple[str, str, int] | None = None, comment: str | None = None
    ) -> None:
        line = f"add chain {self._where} {name}"
        if base is not None or comment is not None:
            line += " {"
            if base is not None:
                line += f" type {base[0]} hook {base[1]} priority {base[2]} ;"
            if comment is not None:
                line += f" comment {_quote(comment)} ;"
            line += " }"
        self.lines.append(line + "\n")

    def flush_chain(self, name: str) -> None:
        self.lines.append(f"flush chain {self._where} {name}\n")

    def delete_chain(self, name: str) -> None:
        self.lines.append(f"delete chain {self._where} {name}\n")

    def add_rule(self, chain: str, rule: str, comment: str | None = None) -> None:
        tail = f" comment {_quote(comment)}" if comment is not None else ""
        self.lines.append(f"add rule {self._where} {chain} {rule}{tail}\n")

    def add_set(
        self,
        name: str,
        type_: str,
        flags: Sequence[str] = (),
        timeout: int | None = None,
        comment: str | None = None,
        kind: str = "set",
    ) -> None:
        line = f"add {kind} {self._where} {name} {{ type {type_} ;"
        if flags:
            line += f" flags {','.join(flags)} ;"
        if timeout is not None:
            line += f" timeout {timeout}s ;"
        if comment is not None:
            line += f" comment {_quote(comment)} ;"
        self.lines.append(line + " }\n")

    def add_map(self, name: str, type_: str, comment: str | None = None) -> None:
        self.add_set(name, type_, comment=comment, kind="map")

    def flush_container(self, kind: str, name: str) -> None:
        self.lines.append(f"flush {kind} {self._where} {name}\n")

    def delete_container(self, kind: str, name: str) -> None:
        self.lines.append(f"delete {kind} {self._where} {name}\n")

    def add_element(self, container: str, key: str, value: str = "", comment: str | None = None) -> None:
        line = f"add element {self._where} {container} {{ {key}"
        if comment is not None:
            line += f" comment {_quote(comment)}"
        if value:
            line += f" : {value}"
        self.lines.append(line + " }\n")

    def delete_element(self, container: str, key: str) -> None:
        self.lines.append(f"delete element {self._where} {container} {{ {key} }}\n")


# ---------------------------------------------------------------------------------------------
# Per-node parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NftParams:
    """What NewProxier and cmd/kube-proxy derive from the configuration and the node."""

    ip_family: IPFamily
    node_name: str
    node_ip: str | None
    node_labels: Mapping[str, str]
    masquerade_mark: str
    masquerade_all: bool
    # (IfLocalNFT, IfNotLocalNFT), or None for upstream's no-op detector
    local_detector: tuple[str, str] | None
    nodeport_match_all: bool
    nodeport_ips: tuple[str, ...]
    service_cidrs: tuple[str, ...]
    prefer_same_node: bool = True

    @property
    def ipx(self) -> str:
        return "ip6" if self.ip_family == "IPv6" else "ip"

    @property
    def addr_type(self) -> str:
        return "ipv6_addr" if self.ip_family == "IPv6" else "ipv4_addr"

    @property
    def no_localhost(self) -> str:
        return "ip6 daddr != ::1" if self.ip_family == "IPv6" else "ip daddr != 127.0.0.0/8"


def _first_cidr_of_family(cidrs: Iterable[str], family: IPFamily) -> str | None:
    for text in cidrs:
        cidr = parse_cidr_sloppy(text.strip()) if isinstance(text, str) else None
        if cidr is not None and (cidr.version == 6) == (family == "IPv6"):
            return str(cidr)
    return None


def local_detector_nft(
    config: KubeProxyConfig, ip_family: IPFamily, node_pod_cidrs: Sequence[str] = ()
) -> tuple[str, str] | None:
    """The nftables forms of cmd/kube-proxy's local traffic detector for one family."""
    mode = config.detect_local_mode or "ClusterCIDR"
    if mode in ("ClusterCIDR", "NodeCIDR"):
        source = config.cluster_cidrs if mode == "ClusterCIDR" else tuple(node_pod_cidrs)
        cidr = _first_cidr_of_family(source, ip_family)
        if cidr is None:
            return None
        ipx = "ip6" if ":" in cidr else "ip"
        return f"{ipx} saddr {cidr}", f"{ipx} saddr != {cidr}"
    if mode == "BridgeInterface" and config.bridge_interface:
        return f"iif {config.bridge_interface}", f"iif != {config.bridge_interface}"
    if mode == "InterfaceNamePrefix" and config.interface_name_prefix:
        prefix = config.interface_name_prefix + "*"
        return f"iif {prefix}", f"iif != {prefix}"
    return None


def service_cidrs_of_family(cidrs: Iterable[str], ip_family: IPFamily) -> tuple[str, ...]:
    """OnServiceCIDRsChanged: the CIDRs of this proxier's family, as given (duplicates dropped)."""
    out: list[str] = []
    for text in cidrs:
        cidr = parse_cidr_sloppy(text) if isinstance(text, str) else None
        if cidr is None or (cidr.version == 6) != (ip_family == "IPv6") or text in out:
            continue
        out.append(text)
    return tuple(out)


def service_cidrs_from_objects(objects: Iterable[Mapping]) -> list[str]:
    """spec.cidrs of networking.k8s.io/v1 ServiceCIDR objects (what kube-proxy watches)."""
    out: list[str] = []
    for obj in objects:
        if not isinstance(obj, Mapping) or obj.get("kind", "ServiceCIDR") != "ServiceCIDR":
            continue
        spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
        for cidr in spec.get("cidrs") or []:
            if isinstance(cidr, str) and cidr not in out:
                out.append(cidr)
    return out


def nft_params(
    config: KubeProxyConfig,
    node_name: str,
    node_ips: Sequence[str],
    node_labels: Mapping[str, str] | None = None,
    ip_family: IPFamily = "IPv4",
    node_pod_cidrs: Sequence[str] = (),
    service_cidrs: Sequence[str] = (),
) -> NftParams:
    """Resolve the node parameters of an nftables proxier.

    In nftables mode an unset nodePortAddresses means "primary" (cmd/kube-proxy), and localhost
    NodePorts are not supported: loopback addresses are dropped from nodeport-ips, as upstream
    logs and drops them.
    """
    addresses = config.node_port_addresses or ("primary",)
    base = node_params(
        dataclasses.replace(config, node_port_addresses=tuple(addresses), localhost_nodeports=False),
        node_name,
        node_ips,
        node_labels,
        ip_family,
        node_pod_cidrs,
    )
    nodeport_ips = tuple(ip for ip in base.nodeport_ips if not ipaddress.ip_address(ip).is_loopback)
    return NftParams(
        ip_family=ip_family,
        node_name=node_name,
        node_ip=base.node_ip,
        node_labels=dict(node_labels or {}),
        masquerade_mark=config.masquerade_mark,
        masquerade_all=config.masquerade_all,
        local_detector=local_detector_nft(config, ip_family, node_pod_cidrs),
        nodeport_match_all=base.nodeport_match_all,
        nodeport_ips=nodeport_ips,
        service_cidrs=service_cidrs_of_family(service_cidrs, ip_family),
        prefer_same_node=config.prefer_same_traffic_distribution,
    )


# ---------------------------------------------------------------------------------------------
# The static part of the table (setupNFTables)
# ---------------------------------------------------------------------------------------------


def write_setup(tx: Tx, params: NftParams, first: bool, flush_containers: bool = True) -> None:
    """setupNFTables: the table, base chains, helper chains, sets and maps; then every tracked
    set and map is flushed (a full sync re-adds all elements)."""
    ipx, addr = params.ipx, params.addr_type
    mark = params.masquerade_mark
    tx.add_table("rules for kube-proxy")
    if first:
        # Once per process: add+delete so that base chains of an older layout (other
        # priorities) are recreated instead of failing the transaction.
        for name, _type, _hook, _prio in BASE_CHAINS:
            tx.add_chain(name)
            tx.delete_chain(name)
    for name, type_, hook, prio in BASE_CHAINS:
        tx.add_chain(name, (type_, hook, prio))
        tx.flush_chain(name)

    created: set[str] = set()

    def ensure(chain: str) -> None:
        if chain not in created:
            created.add(chain)
            tx.add_chain(chain)
            tx.flush_chain(chain)

    for dst, src, extra in JUMP_CHAINS:
        ensure(dst)
        tx.add_rule(src, f"{extra} jump {dst}" if extra else f"jump {dst}")
    for chain in (SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ):
        ensure(chain)

    tx.add_rule(MARK_MASQ, f"mark set mark or {mark}")
    tx.add_rule(MASQUERADING, f"mark and {mark} == 0 return")
    tx.add_rule(MASQUERADING, f"mark set mark xor {mark}")
    tx.add_rule(MASQUERADING, "masquerade fully-random")

    tx.add_set(CLUSTER_IPS, addr, comment="Active ClusterIPs")
    tx.add_rule(CLUSTER_IPS_CHECK, f"{ipx} daddr @{CLUSTER_IPS} reject",
                comment="Reject traffic to invalid ports of ClusterIPs")  # fmt: skip
    if params.service_cidrs:
        tx.add_rule(CLUSTER_IPS_CHECK, f"{ipx} daddr {{ {','.join(params.service_cidrs)} }} drop",
                    comment="Drop traffic to unallocated ClusterIPs")  # fmt: skip

    tx.add_set(NODEPORT_IPS, addr, comment="IPs that accept NodePort traffic")
    if params.nodeport_match_all:
        tx.delete_container("set", NODEPORT_IPS)
    else:
        tx.flush_container("set", NODEPORT_IPS)
        for ip in params.nodeport_ips:
            tx.add_element(NODEPORT_IPS, ip)

    tx.add_map(NO_ENDPOINT_SERVICES, f"{addr} . inet_proto . inet_service : verdict",
               comment="vmap to drop or reject packets to services with no endpoints")  # fmt: skip
    tx.add_map(NO_ENDPOINT_NODEPORTS, "inet_proto . inet_service : verdict",
               comment="vmap to drop or reject packets to service nodeports with no endpoints")  # fmt: skip
    tx.add_chain(REJECT_CHAIN, comment="helper for @no-endpoint-services / @no-endpoint-nodeports")
    tx.flush_chain(REJECT_CHAIN)
    tx.add_rule(REJECT_CHAIN, "reject")
    tx.add_rule(SERVICE_ENDPOINTS_CHECK,
                f"{ipx} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}")  # fmt: skip
    if params.nodeport_match_all:
        tx.add_rule(NODEPORT_ENDPOINTS_CHECK,
                    f"{params.no_localhost} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}")  # fmt: skip
    else:
        tx.add_rule(NODEPORT_ENDPOINTS_CHECK,
                    f"{ipx} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}")  # fmt: skip

    tx.add_map(FIREWALL_IPS, f"{addr} . inet_proto . inet_service : verdict",
               comment="destinations that are subject to LoadBalancerSourceRanges")  # fmt: skip
    ensure(FIREWALL_CHECK)
    tx.add_rule(FIREWALL_CHECK, f"{ipx} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}")

    tx.add_map(SERVICE_IPS, f"{addr} . inet_proto . inet_service : verdict",
               comment="ClusterIP, ExternalIP and LoadBalancer IP traffic")  # fmt: skip
    tx.add_map(SERVICE_NODEPORTS, "inet_proto . inet_service : verdict", comment="NodePort traffic")
    tx.add_rule(SERVICES, f"{ipx} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}")
    if params.nodeport_match_all:
        tx.add_rule(SERVICES,
                    f"fib daddr type local {params.no_localhost} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")  # fmt: skip
    else:
        tx.add_rule(SERVICES,
                    f"{ipx} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")  # fmt: skip

    if flush_containers:
        for kind, name in CONTAINERS:
            tx.flush_container(kind, name)


# ---------------------------------------------------------------------------------------------
# One service port
# ---------------------------------------------------------------------------------------------

# An operation of one service port, in upstream's write order:
#   ("chain", name)                          ensureChain (skipped for unchanged services)
#   ("elem", container, key, value, comment) an element, diffed against what was written
#   ("rule", chain, rule, comment)           a rule of one of its chains
#   ("set", name, addr_type, timeout)        an affinity set
Op = tuple


@dataclass
class ServicePortPlan:
    ops: list[Op] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)  # every chain it uses (created or kept)
    affinity_sets: list[str] = field(default_factory=list)
    elements: list[tuple[str, str, str]] = field(default_factory=list)  # (container, key, value)

    def chain(self, name: str) -> None:
        if name not in self.chains:
            self.chains.append(name)
            self.ops.append(("chain", name))

    def elem(self, container: str, key: str, value: str = "", comment: str | None = None) -> None:
        self.elements.append((container, key, value))
        self.ops.append(("elem", container, key, value, comment))

    def rule(self, chain: str, rule: str, comment: str | None = None) -> None:
        self.ops.append(("rule", chain, rule, comment))


def plan_service_port(svc: ServicePort, endpoints: Sequence[Endpoint], params: NftParams) -> ServicePortPlan:
    """One iteration of upstream's sync loop for one service port."""
    plan = ServicePortPlan()
    ipx = params.ipx
    key = svc.key
    name = str(key)
    proto = svc.protocol.lower()
    port = str(svc.port)
    base = service_port_chain_base(key)
    cluster_chain = SERVICE_PREFIX + base
    local_chain = LOCAL_PREFIX + base
    external_chain = EXTERNAL_PREFIX + base
    fw_chain = FIREWALL_PREFIX + base

    cat = categorize_endpoints(endpoints, svc, params.node_name, params.node_labels, params.prefer_same_node)
    has_endpoints = cat.has_any
    affinity = svc.session_affinity == "ClientIP"

    ep_chains: dict[str, tuple[str, str]] = {}
    for ep in cat.all_reachable:
        ep_base = endpoint_chain_base(key, str(ep))
        ep_chains[str(ep)] = (ENDPOINT_PREFIX + ep_base, AFFINITY_PREFIX + ep_base)
        plan.chain(ENDPOINT_PREFIX + ep_base)
        if affinity:
            plan.affinity_sets.append(AFFINITY_PREFIX + ep_base)

    uses_cluster_chain = bool(cat.cluster) and svc.uses_cluster_endpoints
    if uses_cluster_chain:
        plan.chain(cluster_chain)
    uses_local_chain = bool(cat.local) and svc.uses_local_endpoints
    if uses_local_chain:
        plan.chain(local_chain)

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

    uses_external_chain = has_endpoints and svc.externally_accessible
    if uses_external_chain:
        plan.chain(external_chain)

    if not has_endpoints:
        internal_verdict = external_verdict = f"goto {REJECT_CHAIN}"
    else:
        internal_verdict = "" if has_internal else "drop"
        external_verdict = "" if has_external else "drop"

    # The clusterIP.
    plan.elem(CLUSTER_IPS, svc.cluster_ip)
    vip_key = f"{svc.cluster_ip} . {proto} . {port}"
    if has_internal:
        plan.elem(SERVICE_IPS, vip_key, f"goto {internal_chain}")
    else:
        plan.elem(NO_ENDPOINT_SERVICES, vip_key, internal_verdict, name)

    # externalIPs.
    for ext_ip in svc.external_ips:
        ext_key = f"{ext_ip} . {proto} . {port}"
        if has_endpoints:
            plan.elem(SERVICE_IPS, ext_key, f"goto {external_chain}")
        if not has_external:
            plan.elem(NO_ENDPOINT_SERVICES, ext_key, external_verdict, name)

    uses_fw_chain = bool(svc.load_balancer_vips) and bool(svc.load_balancer_source_ranges)
    if uses_fw_chain:
        plan.chain(fw_chain)

    # Load-balancer ingress IPs.
    for lb_ip in svc.load_balancer_vips:
        lb_key = f"{lb_ip} . {proto} . {port}"
        if has_endpoints:
            plan.elem(SERVICE_IPS, lb_key, f"goto {external_chain}")
        if uses_fw_chain:
            plan.elem(FIREWALL_IPS, lb_key, f"goto {fw_chain}")
    if not has_external:
        for lb_ip in svc.load_balancer_vips:
            plan.elem(NO_ENDPOINT_SERVICES, f"{lb_ip} . {proto} . {port}", external_verdict, name)

    # NodePorts (not subject to loadBalancerSourceRanges, as upstream).
    if svc.node_port != 0:
        np_key = f"{proto} . {svc.node_port}"
        if has_endpoints:
            plan.elem(SERVICE_NODEPORTS, np_key, f"goto {external_chain}")
        if not has_external:
            plan.elem(NO_ENDPOINT_NODEPORTS, np_key, external_verdict, name)

    # Internal traffic: masquerade what does not come from a local pod (or everything).
    if has_internal:
        if params.masquerade_all:
            plan.rule(internal_chain, f"{ipx} daddr {svc.cluster_ip} jump {MARK_MASQ}")
        elif params.local_detector is not None:
            plan.rule(
                internal_chain, f"{ipx} daddr {svc.cluster_ip} {params.local_detector[1]} jump {MARK_MASQ}"
            )

    # External traffic enters the external chain, which then applies the traffic policy.
    if uses_external_chain:
        if not svc.external_policy_local:
            plan.rule(external_chain, f"jump {MARK_MASQ}")
        else:
            if params.local_detector is not None:
                plan.rule(external_chain, f"{params.local_detector[0]} goto {cluster_chain}",
                          "short-circuit pod traffic")  # fmt: skip
            plan.rule(external_chain, f"fib saddr type local jump {MARK_MASQ}", "masquerade local traffic")
            plan.rule(
                external_chain, f"fib saddr type local goto {cluster_chain}", "short-circuit local traffic"
            )
        if has_external:
            plan.rule(external_chain, f"goto {external_policy_chain}")

    if uses_fw_chain:
        sources: list[str] = []
        allow_from_node = False
        node_ip = parse_ip_sloppy(params.node_ip) if params.node_ip else None
        for cidr_text in svc.load_balancer_source_ranges:
            sources.append(cidr_text)
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
            sources.extend(svc.load_balancer_vips)
        plan.rule(fw_chain, f"{ipx} saddr != {{ {' , '.join(sources)} }} drop")

    if affinity:
        for ep in cat.all_reachable:
            plan.ops.append(("set", ep_chains[str(ep)][1], params.addr_type, svc.sticky_max_age_seconds))

    if uses_cluster_chain:
        _service_to_endpoint_rules(plan, svc, cluster_chain, cat.cluster, ep_chains, ipx)
    if uses_local_chain:
        _service_to_endpoint_rules(plan, svc, local_chain, cat.local, ep_chains, ipx)

    for ep in cat.all_reachable:
        ep_chain, aff_set = ep_chains[str(ep)]
        # Hairpin: a pod reaching itself through the service must be masqueraded.
        plan.rule(ep_chain, f"{ipx} saddr {ep.ip} jump {MARK_MASQ}")
        if affinity:
            plan.rule(ep_chain, f"update @{aff_set} {{ {ipx} saddr }}")
        plan.rule(ep_chain, f"meta l4proto {proto} dnat to {ep}")
    return plan


def _service_to_endpoint_rules(
    plan: ServicePortPlan,
    svc: ServicePort,
    chain: str,
    endpoints: Sequence[Endpoint],
    ep_chains: Mapping[str, tuple[str, str]],
    ipx: str,
) -> None:
    """writeServiceToEndpointRules: affinity lookups first, then one numgen verdict map."""
    if svc.session_affinity == "ClientIP":
        for ep in endpoints:
            ep_chain, aff_set = ep_chains[str(ep)]
            plan.rule(chain, f"{ipx} saddr @{aff_set} goto {ep_chain}")
    elements = " , ".join(f"{i} : goto {ep_chains[str(ep)][0]}" for i, ep in enumerate(endpoints))
    plan.rule(chain, f"numgen random mod {len(endpoints)} vmap {{ {elements} }}")


# ---------------------------------------------------------------------------------------------
# A whole sync
# ---------------------------------------------------------------------------------------------

NamespacedName = tuple[str, str]


@dataclass(frozen=True)
class ServiceRecord:
    """What one Service (all its ports) has in the kernel after a sync."""

    chains: frozenset[str]
    affinity_sets: frozenset[str]
    elements: tuple[tuple[str, str, str], ...]  # (container, key, value)
    digest: str = ""  # of its chains' content (what a rewrite would write)


@dataclass
class NftState:
    """What the table holds after a sync (upstream keeps the same in its nftElementStorages and
    reads the chain and set lists back from nft)."""

    flushed: bool = False  # the one-time add+delete of the base chains is done
    elements: dict[str, dict[str, str]] = field(default_factory=lambda: {n: {} for _, n in CONTAINERS})
    refs: dict[tuple[str, str], int] = field(default_factory=dict)  # (container, key) -> services
    records: dict[NamespacedName, ServiceRecord] = field(default_factory=dict)
    chains: set[str] = field(default_factory=set)  # service/endpoint chains present in the table
    affinity_sets: set[str] = field(default_factory=set)
    stale_chains: dict[str, float] = field(default_factory=dict)  # chain -> when it went stale

    def copy(self) -> NftState:
        return NftState(
            flushed=self.flushed,
            elements={k: dict(v) for k, v in self.elements.items()},
            refs=dict(self.refs),
            records=dict(self.records),
            chains=set(self.chains),
            affinity_sets=set(self.affinity_sets),
            stale_chains=dict(self.stale_chains),
        )


@dataclass
class SyncPlan:
    """The transactions of one sync, to run in order, and the table after them.

    Unchunked, `txs` holds one transaction, as upstream writes it. Chunked, each transaction holds
    whole Services (a Service's chains, rules and elements change together, atomically); the first
    also holds the static setup and the last the clean-up of what is no longer used."""

    cleanup: Tx  # deletes chains stale for more than a second (upstream runs it separately, first)
    txs: list[Tx]
    state: NftState  # the table after all of them
    full: bool
    services: int  # service ports planned (written) in this sync

    @property
    def tx(self) -> Tx:
        """All of the sync's transactions as one."""
        if len(self.txs) == 1:
            return self.txs[0]
        merged = Tx(self.txs[0].family)
        for tx in self.txs:
            merged.extend(tx)
        return merged

    @property
    def operations(self) -> int:
        return sum(len(tx) for tx in self.txs)

    def text(self) -> str:
        return self.cleanup.text() + "".join(tx.text() for tx in self.txs)


def _key_order(k: ServicePortName) -> tuple:
    return (str(k), k.protocol)


def plan_sync(
    service_map: Mapping[ServicePortName, ServicePort],
    endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
    params: NftParams,
    state: NftState | None = None,
    changed: Iterable[NamespacedName] | None = None,
    now: float = 0.0,
    *,
    chunk: int | None = None,
    flush_containers: bool = True,
    rewrite_unchanged: bool = True,
    in_place: bool = False,
) -> SyncPlan:
    """Plan a sync. `state=None` plans the first sync of a kube-proxy on a node whose table is
    empty; `changed=None` a full sync; otherwise a partial sync of the named Services, whose cost
    does not depend on how many other Services there are.

    Departures from upstream, all off by default, exist for speed (see kubeproxy/nftables.py for
    the measurements): `chunk=N` cuts the sync into transactions of at most N Services each;
    `flush_containers=False` makes a full sync diff the verdict maps against `state` instead of
    flushing and refilling them (so Services keep working while it runs);
    `rewrite_unchanged=False` makes it leave alone the chains of a Service whose chains would be
    rewritten with exactly what they hold (the table ends the same, without the kernel's cost of
    recreating them); `in_place=True` updates `state` itself instead of a copy (for a caller that
    drops the state when the transactions fail)."""
    prev = state if state is not None else NftState()
    new = prev if in_place else prev.copy()
    # What the loop below needs from before the update.
    prev_records = dict(prev.records) if in_place else prev.records
    prev_affinity = set(prev.affinity_sets)
    family = params.ipx
    cleanup = Tx(family)
    tx = Tx(family)
    txs = [tx]
    full = state is None or changed is None
    changed_set = set(changed or ())

    # Chains stale for more than a second are deleted in a transaction of their own.
    for chain in sorted(new.stale_chains):
        if new.stale_chains[chain] < now - 1.0:
            cleanup.delete_chain(chain)
            del new.stale_chains[chain]
            new.chains.discard(chain)

    by_service: dict[NamespacedName, list[ServicePortName]] = {}
    for k in service_map:
        nsn = (k.namespace, k.name)
        if full or nsn in changed_set:
            by_service.setdefault(nsn, []).append(k)

    leftovers: set[tuple[str, str]] = set()
    # Chains and affinity sets that may have fallen out of use (all, on a full sync).
    candidates: set[str] = set(new.stale_chains)
    old_sets: set[str] = set()
    if full:
        write_setup(tx, params, first=not new.flushed, flush_containers=flush_containers)
        new.flushed = True
        if flush_containers:
            new.elements = {n: {} for _, n in CONTAINERS}
        else:
            leftovers = {(c, k) for c, elements in new.elements.items() for k in elements}
        new.refs = {}
        new.records = {}
        todo = sorted(by_service)
        candidates = set(new.chains)
        old_sets = set(prev_affinity)
    else:
        todo = sorted(changed_set)

    created: set[str] = set()
    written = 0
    in_chunk = 0
    for nsn in todo:
        old = prev_records.get(nsn)
        if not full and old is not None:
            del new.records[nsn]
            candidates |= old.chains
            old_sets |= old.affinity_sets
            for container, key, _value in old.elements:
                ref = (container, key)
                new.refs[ref] -= 1
                if new.refs[ref] == 0:
                    del new.refs[ref]
                    leftovers.add(ref)
        ports = sorted(by_service.get(nsn, ()), key=_key_order)
        if not ports:
            continue
        if chunk is not None and in_chunk >= chunk:
            tx = Tx(family)
            txs.append(tx)
            in_chunk = 0
        in_chunk += 1
        chains: set[str] = set()
        sets: set[str] = set()
        elements: list[tuple[str, str, str]] = []
        plans = [plan_service_port(service_map[k], endpoints_map.get(k, ()), params) for k in ports]
        digest = _digest(plans)
        keep = (
            not rewrite_unchanged
            and old is not None
            and old.digest == digest
            and old.chains <= new.chains
            and old.affinity_sets <= prev_affinity
        )
        for plan in plans:
            written += 0 if keep else 1
            _emit(tx, plan, new, created, elements_only=keep)
            chains.update(plan.chains)
            sets.update(plan.affinity_sets)
            elements.extend(plan.elements)
        for container, key, _value in elements:
            ref = (container, key)
            new.refs[ref] = new.refs.get(ref, 0) + 1
            leftovers.discard(ref)
        new.records[nsn] = ServiceRecord(frozenset(chains), frozenset(sets), tuple(elements), digest)
        new.chains |= chains
        new.affinity_sets |= sets
        candidates -= chains
        for chain in chains:
            new.stale_chains.pop(chain, None)
        old_sets -= sets

    # Chains no longer used are flushed now (again, if already stale) and deleted a second later.
    # Service and endpoint chains are named after their Service, so only the candidates (the
    # chains of the Services planned now, and the stale ones) can have fallen out of use.
    if full:
        active: set[str] = set()
        for record in new.records.values():
            active |= record.chains
        candidates -= active
        for record in new.records.values():
            old_sets -= record.affinity_sets
    for chain in sorted(candidates):
        if is_service_chain_name(chain) and chain in new.chains:
            tx.flush_chain(chain)
            new.stale_chains[chain] = now
    # Affinity sets no longer used are deleted at once.
    for name in sorted(old_sets):
        if name in new.affinity_sets or full:
            tx.delete_container("set", name)
            new.affinity_sets.discard(name)

    # Elements no service produces any more.
    for _kind, container in CONTAINERS:
        for ref in sorted(r for r in leftovers if r[0] == container):
            if ref[1] in new.elements[container]:
                tx.delete_element(container, ref[1])
                del new.elements[container][ref[1]]
    return SyncPlan(cleanup, txs, new, full, written)


def _digest(plans: Sequence[ServicePortPlan]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for plan in plans:
        for op in plan.ops:
            if op[0] != "elem":
                h.update(repr(op).encode())
    return h.hexdigest()


def _emit(
    tx: Tx, plan: ServicePortPlan, state: NftState, created: set[str], elements_only: bool = False
) -> None:
    """Write one service port's operations, diffing its elements against the state."""
    for op in plan.ops:
        kind = op[0]
        if elements_only and kind != "elem":
            continue
        if kind == "chain":
            if op[1] not in created:
                created.add(op[1])
                tx.add_chain(op[1])
                tx.flush_chain(op[1])
        elif kind == "elem":
            _, container, key, value, comment = op
            current = state.elements[container].get(key)
            if current is None:
                tx.add_element(container, key, value, comment)
            elif current != value:
                tx.delete_element(container, key)
                tx.add_element(container, key, value, comment)
            state.elements[container][key] = value
        elif kind == "rule":
            _, chain, rule, comment = op
            tx.add_rule(chain, rule, comment)
        elif kind == "set":
            _, name, addr_type, timeout = op
            tx.add_set(name, addr_type, flags=("dynamic", "timeout"), timeout=timeout)


# ---------------------------------------------------------------------------------------------
# From manifests
# ---------------------------------------------------------------------------------------------


def changed_services(
    old_services: Mapping[ServicePortName, ServicePort],
    old_endpoints: Mapping[ServicePortName, Sequence[Endpoint]],
    new_services: Mapping[ServicePortName, ServicePort],
    new_endpoints: Mapping[ServicePortName, Sequence[Endpoint]],
) -> set[NamespacedName]:
    """Upstream's UpdatedServices: every Service one of whose ports or endpoints changed."""
    out: set[NamespacedName] = set()
    for k in set(old_services) | set(new_services):
        if old_services.get(k) != new_services.get(k):
            out.add((k.namespace, k.name))
    for k in set(old_endpoints) | set(new_endpoints):
        if list(old_endpoints.get(k, ())) != list(new_endpoints.get(k, ())):
            out.add((k.namespace, k.name))
    return out


def render_full(
    services: list[dict],
    slices: list[dict],
    config: KubeProxyConfig,
    node_name: str,
    node_ips: list[str],
    node_labels: dict | None = None,
    *,
    ip_family: IPFamily = "IPv4",
    service_cidrs: Sequence[str] = (),
    node_pod_cidrs: Sequence[str] = (),
) -> str:
    """The `nft -f` input of the first full sync of kube-proxy on `node_name` (empty table).

    Pure: the same inputs always give the same bytes. ServiceCIDR objects among `services` add
    their spec.cidrs to `service_cidrs`.
    """
    cidrs = list(service_cidrs) + service_cidrs_from_objects(
        o for o in services if o.get("kind") == "ServiceCIDR"
    )
    params = nft_params(config, node_name, node_ips, node_labels, ip_family, node_pod_cidrs, cidrs)
    service_map = build_service_map(services, ip_family)
    endpoints_map = build_endpoints_map(slices, node_name, ip_family, config.prefer_same_traffic_distribution)
    return plan_sync(service_map, endpoints_map, params).tx.text()
