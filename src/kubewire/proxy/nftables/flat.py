"""An optional flat layout for kube-proxy's nftables mode: the same Services, without per-Service
chains or sets, so that a full sync and an endpoint change cost little at scale.

Upstream's layout (render.py) gives every Service and endpoint a chain and every Service an
anonymous `numgen ... vmap` set. On this kernel that makes a full load super-linear (each new
anonymous set scans all the sets of the table) and every later transaction pay for the whole
table (nft lists all chains before it runs, the kernel revalidates every chain at commit). Here
the per-Service state is only elements of a fixed number of maps and sets:

* `k<K>`, one map per distinct endpoint count K: destination . protocol . port . slot ->
  endpoint address . port; its one rule DNATs through it with the slot drawn by `numgen random
  mod K` (a destination with another K misses the map, and the rule does not match);
  `np-k<K>` the same for NodePorts, keyed on protocol . port;
* `sc-k<K>` / `npsc-k<K>`: the cluster-wide endpoints of external destinations and NodePorts
  whose traffic policy is Local, for the short-circuit of pod and node traffic (as upstream's
  "short-circuit pod traffic" / "short-circuit local traffic" rules);
* masquerading by set membership: traffic to a ClusterIP (`cluster-ips`) not from a pod,
  `masq-dests` / `masq-nodeports` (external traffic under policy Cluster), `hairpin`
  (endpoint . endpoint: a pod reaching itself through its Service);
* upstream's own maps for the rest: `no-endpoint-services`, `no-endpoint-nodeports` (reject or
  drop), `cluster-ips` (reject unknown ports, drop unallocated ClusterIPs), and
  loadBalancerSourceRanges as one interval set `firewall-allow` of destination . source range.

An endpoint change is then a handful of element deletions and additions in one transaction. A
new connection meets a fixed number of set look-ups, then one map look-up per distinct endpoint
count K until one hits: its cost does not grow with the number of Services.

nft 1.0.6 cannot add a rule that uses an existing `typeof ... : ip daddr . th dport` map (it
fails to rebuild the map's type from the kernel: "conflicting protocols specified: ip vs. th"),
so each `k<K>` map is created in the transaction that adds its rule, and the chains holding
those rules (services-dnat, short-circuit, nodeports, nodeport-short-circuit) are never flushed.

Departures from upstream's table, none visible to traffic:

* ClusterIP traffic not from a pod is marked for masquerading whatever its port (upstream marks
  it in the Service's chain, i.e. only for ports with endpoints): traffic to the other ports is
  rejected or dropped by the filter chains before it could be masqueraded.
* `hairpin` holds only endpoints whose traffic can reach this node's nat hooks with their own
  address: the local ones (nodeName is this node) and, when the node's pod CIDRs are given,
  endpoints without a nodeName inside them (all endpoints without a nodeName when not given).
  Upstream writes the hairpin rule into every endpoint chain, also of remote endpoints, whose
  packets go through their own node's kube-proxy.
* Services with ClientIP session affinity keep upstream's per-Service chains (service, external,
  local, endpoint chains and per-endpoint affinity sets, exactly as render.py plans them, minus
  the firewall chain: loadBalancerSourceRanges stay in the flat sets), reached through
  `service-ips` / `service-nodeports` verdict maps. Remembering a client needs a set per endpoint
  that outlives endpoint changes, which a flat map cannot give; only these Services pay for
  chains, so a full load stays linear as long as they are few.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kubewire.proxy.model import ZONE_LABEL, Endpoint, ServicePort, ServicePortName
from kubewire.proxy.nftables.render import (
    FIREWALL_PREFIX,
    REJECT_CHAIN,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    NftParams,
    Tx,
    _quote,
    plan_service_port,
    service_port_chain_base,
)
from kubewire.proxy.topology import categorize_endpoints

FLAT_TABLE = "kube-proxy-flat"
BATCH = 1000  # elements per "add element" command (bigger batches measured no faster)

STATIC_CONTAINERS: tuple[tuple[str, str, str], ...] = (
    # (kind, name, type or typeof clause); {addr} is ipv4_addr / ipv6_addr, {ipx} ip / ip6
    ("set", "cluster-ips", "type {addr} ;"),
    ("set", "nodeport-ips", "type {addr} ;"),
    ("set", "masq-dests", "type {addr} . inet_proto . inet_service ;"),
    ("set", "local-dests", "type {addr} . inet_proto . inet_service ;"),
    ("set", "masq-nodeports", "type inet_proto . inet_service ;"),
    ("set", "local-nodeports", "type inet_proto . inet_service ;"),
    ("set", "hairpin", "type {addr} . {addr} ;"),
    ("set", "firewall-ips", "type {addr} . inet_proto . inet_service ;"),
    ("set", "firewall-allow", "type {addr} . inet_proto . inet_service . {addr} ; flags interval ;"),
    ("map", "no-endpoint-services", "type {addr} . inet_proto . inet_service : verdict ;"),
    ("map", "no-endpoint-nodeports", "type inet_proto . inet_service : verdict ;"),
    ("map", SERVICE_IPS, "type {addr} . inet_proto . inet_service : verdict ;"),
    ("map", SERVICE_NODEPORTS, "type inet_proto . inet_service : verdict ;"),
)  # fmt: skip

BASE_CHAINS = (
    ("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
    ("filter-output-pre-dnat", "filter", "output", -110),
    ("filter-input", "filter", "input", 0),
    ("filter-forward", "filter", "forward", 0),
    ("filter-output", "filter", "output", 0),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
)
# Chains whose rules depend only on the node parameters (rewritten when those change), and the
# chains of the per-K rules (never flushed: see the module docstring).
CHAINS = ("services", "masquerading", "mark-for-masquerade", "service-endpoints-check",
          "nodeport-endpoints-check", "cluster-ips-check", "firewall-check", REJECT_CHAIN)  # fmt: skip
K_CHAINS = ("services-dnat", "short-circuit", "nodeports", "nodeport-short-circuit")

# Families of per-K maps: prefix -> (what the destination is, the chain of their rule)
K_MAPS = {
    "k": ("{ipx} daddr . meta l4proto . th dport", "services-dnat"),
    "sc-k": ("{ipx} daddr . meta l4proto . th dport", "short-circuit"),
    "np-k": ("meta l4proto . th dport", "nodeports"),
    "npsc-k": ("meta l4proto . th dport", "nodeport-short-circuit"),
}

NamespacedName = tuple[str, str]
Elements = dict[str, dict[str, str]]  # container -> key -> what follows the key ("", " : value", ...)


class FlatUnsupported(ValueError):
    """A Service the flat layout cannot carry (none left; kept for callers that catch it)."""


@dataclass
class Record:
    """What one Service (all its ports) contributes to the table."""

    inputs: tuple  # ((ServicePort, endpoints), ...): reused as long as these very objects come back
    elements: Elements
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)  # affinity Services: chain -> rule lines
    sets: dict[str, str] = field(default_factory=dict)  # affinity Services: set -> its "add set" line


@dataclass
class FlatState:
    """What the table holds after a sync."""

    params: NftParams | None = None
    pod_cidrs: tuple[str, ...] | None = None
    elements: Elements = field(default_factory=dict)  # container -> key -> suffix, as in the kernel
    refs: dict[str, Counter] = field(default_factory=dict)  # container -> key -> Services having it
    records: dict[NamespacedName, Record] = field(default_factory=dict)
    k_maps: set[str] = field(default_factory=set)  # per-K maps (and their rules) present
    chains: set[str] = field(default_factory=set)  # per-Service chains (affinity Services)
    sets: set[str] = field(default_factory=set)  # affinity sets
    written: int = 0  # Services recomputed by the last plan


# ---------------------------------------------------------------------------------------------
# One Service
# ---------------------------------------------------------------------------------------------


def _hairpin_filter(params: NftParams, pod_cidrs: Sequence[str] | None) -> Callable[[Sequence[Endpoint]], list[str]]:
    """The IPs of the endpoints (in their order) that can be the source of traffic this node
    DNATs (see the module docstring): one call per service port, not per endpoint."""
    if pod_cidrs is None:
        return lambda eps: [ep.ip for ep in eps if ep.is_local or ep.node_name is None]
    nets = []
    v4: list[tuple[int, int]] = []  # (network, mask) of the IPv4 CIDRs, for the common case
    for c in pod_cidrs:
        try:
            net = ipaddress.ip_network(c, strict=False)
        except ValueError:
            continue
        nets.append(net)
        if net.version == 4:
            v4.append((int(net.network_address), int(net.netmask)))
    aton, from_bytes = socket.inet_aton, int.from_bytes

    def inside(ip: str) -> bool:
        if ":" not in ip:
            try:
                n = from_bytes(aton(ip), "big")
            except OSError:
                return False
            for net, mask in v4:  # (a loop, not any() over a generator: this runs per endpoint)
                if n & mask == net:
                    break
            else:
                return False
            return True
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in nets if n.version == addr.version)

    return lambda eps: [ep.ip for ep in eps if ep.is_local or (ep.node_name is None and inside(ep.ip))]


def _contains(cidr: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _no_endpoints(key: ServicePortName, has_endpoints: bool) -> str:
    """The verdict of a destination without usable endpoints (reject, or drop when there are
    endpoints only for other traffic), after upstream's comment."""
    return f" comment {_quote(str(key))} : " + (f"goto {REJECT_CHAIN}" if not has_endpoints else "drop")


def _port_elements(
    key: ServicePortName,
    svc: ServicePort,
    endpoints: Sequence[Endpoint],
    params: NftParams,
    out: Elements,
    hairpin: Callable[[Sequence[Endpoint]], list[str]],
    affinity: bool,
) -> None:
    """The elements one service port contributes (into `out`). For a Service with affinity, only
    those of the filter chains: its NAT goes through upstream's chains (`_affinity_port`).
    Run for every Service of a full sync: the common case (a ClusterIP with endpoints) is
    written out inline."""

    def add(container: str, k: str, suffix: str = "") -> None:
        d = out.get(container)
        if d is None:
            d = out[container] = {}
        d[k] = suffix

    def select(prefix: str, dest: str, eps: Sequence[Endpoint]) -> None:
        m = f"{prefix}{len(eps)}"
        d = out.get(m)
        if d is None:
            d = out[m] = {}
        for i, ep in enumerate(eps):
            d[f"{dest} . {i}"] = f" : {ep.ip} . {ep.port}"

    proto = svc.protocol.lower()
    cat = categorize_endpoints(endpoints, svc, params.node_name, params.node_labels, params.prefer_same_node)
    has_endpoints = cat.has_any
    internal, external = cat.internal(svc), cat.external(svc)
    no_endpoints = ""  # computed when needed: most ports have endpoints
    ips = hairpin(cat.all_reachable)
    if ips:
        d = out.get("hairpin")
        if d is None:
            d = out["hairpin"] = {}
        for ip in ips:
            d[f"{ip} . {ip}"] = ""

    cluster_ip = svc.cluster_ip
    d = out.get("cluster-ips")
    if d is None:
        d = out["cluster-ips"] = {}
    d[cluster_ip] = ""
    vip = f"{cluster_ip} . {proto} . {svc.port}"
    if not internal:
        no_endpoints = _no_endpoints(key, has_endpoints)
        add("no-endpoint-services", vip, no_endpoints)
    elif not affinity:
        select("k", vip, internal)

    def from_outside(dest: str, local: str, short_circuit: str, masq: str, k: str) -> None:
        """A destination reached from outside the node (external IP, LB VIP, NodePort): its
        traffic-policy sets and its endpoint choice."""
        if has_endpoints:
            if svc.external_policy_local:
                add(local, dest)
                if cat.cluster:
                    select(short_circuit, dest, cat.cluster)
            else:
                add(masq, dest)
        if external:
            select(k, dest, external)

    if svc.external_ips or svc.load_balancer_vips:
        if not external and not no_endpoints:
            no_endpoints = _no_endpoints(key, has_endpoints)
        for ip in [*svc.external_ips, *svc.load_balancer_vips]:
            dest = f"{ip} . {proto} . {svc.port}"
            if not external:
                add("no-endpoint-services", dest, no_endpoints)
            if not affinity:
                from_outside(dest, "local-dests", "sc-k", "masq-dests", "k")
    if svc.load_balancer_vips and svc.load_balancer_source_ranges:
        allow = list(svc.load_balancer_source_ranges)
        if params.node_ip and any(_contains(c, params.node_ip) for c in allow):
            allow += svc.load_balancer_vips
        for ip in svc.load_balancer_vips:
            dest = f"{ip} . {proto} . {svc.port}"
            add("firewall-ips", dest)
            for source in allow:
                add("firewall-allow", f"{dest} . {source}")

    if svc.node_port:
        np_key = f"{proto} . {svc.node_port}"
        if not external:
            add("no-endpoint-nodeports", np_key, no_endpoints or _no_endpoints(key, has_endpoints))
        if not affinity:
            from_outside(np_key, "local-nodeports", "npsc-k", "masq-nodeports", "np-k")


def _affinity_port(
    svc: ServicePort, endpoints: Sequence[Endpoint], params: NftParams, out: Elements, record: Record
) -> None:
    """A Service with ClientIP affinity: upstream's chains, rules and affinity sets for its NAT,
    reached from `service-ips` / `service-nodeports` (its firewall stays in the flat sets)."""
    plan = plan_service_port(svc, endpoints, params)
    w = f"{params.ipx} {FLAT_TABLE}"
    fw_chain = FIREWALL_PREFIX + service_port_chain_base(svc.key)
    rules: dict[str, list[str]] = {c: [] for c in plan.chains if c != fw_chain}
    for op in plan.ops:
        if op[0] == "rule" and op[1] in rules:
            tail = f" comment {_quote(op[3])}" if op[3] is not None else ""
            rules[op[1]].append(f"add rule {w} {op[1]} {op[2]}{tail}\n")
        elif op[0] == "elem" and op[1] in (SERVICE_IPS, SERVICE_NODEPORTS):
            out.setdefault(op[1], {})[op[2]] = f" : {op[3]}"
        elif op[0] == "set":
            _, name, addr_type, timeout = op
            record.sets[name] = (
                f"add set {w} {name} {{ type {addr_type} ; flags dynamic,timeout ; timeout {timeout}s ; }}\n"
            )
    for chain, lines in rules.items():
        record.chains[chain] = tuple(lines)


def service_record(
    ports: Sequence[ServicePortName],
    inputs: tuple,
    params: NftParams,
    hairpin: Callable[[Sequence[Endpoint]], list[str]],
) -> Record:
    record = Record(inputs, {})
    for key, (svc, endpoints) in zip(ports, inputs, strict=True):
        affinity = svc.session_affinity == "ClientIP"
        _port_elements(key, svc, endpoints, params, record.elements, hairpin, affinity)
        if affinity:
            _affinity_port(svc, endpoints, params, record.elements, record)
    return record


def flat_elements(
    service_map: Mapping[ServicePortName, ServicePort],
    endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
    params: NftParams,
    pod_cidrs: Sequence[str] | None = None,
) -> Elements:
    """Every element of every map and set, for the Services given (without nodeport-ips)."""
    out: Elements = {}
    hairpin = _hairpin_filter(params, pod_cidrs)
    for key in sorted(service_map, key=_key_order):
        svc = service_map[key]
        for container, items in service_record([key], ((svc, endpoints_map.get(key, ())),), params,
                                               hairpin).elements.items():  # fmt: skip
            out.setdefault(container, {}).update(items)
    return out


def _key_order(k: ServicePortName) -> tuple:
    return (str(k), k.protocol)


# ---------------------------------------------------------------------------------------------
# The static part
# ---------------------------------------------------------------------------------------------


def _record_key(params: NftParams) -> tuple:
    """The node parameters a Service's elements and chains depend on (topology looks only at
    the node's zone label)."""
    return (params.ip_family, params.node_name, params.node_ip, params.node_labels.get(ZONE_LABEL, ""),
            params.prefer_same_node, params.local_detector, params.masquerade_all)  # fmt: skip


def _setup_key(params: NftParams) -> tuple:
    """The node parameters the static part (chains, rules, nodeport-ips) depends on."""
    return (params.ip_family, params.masquerade_mark, params.masquerade_all, params.local_detector,
            params.nodeport_match_all, params.nodeport_ips, params.service_cidrs)  # fmt: skip


def _setup(tx: Tx, params: NftParams, k_maps: Sequence[str], create: bool) -> None:
    """The static part. With `create`: the table (from scratch), its sets, maps and chains, their
    rules, and the per-K maps with their rules. Without: the rules that depend on the node
    parameters (their chains flushed first) and nodeport-ips."""
    ipx, addr, mark = params.ipx, params.addr_type, params.masquerade_mark
    w = f"{ipx} {FLAT_TABLE}"
    lines = tx.lines
    if create:
        comment = _quote("rules for kube-proxy, flat layout")
        lines.append(f"add table {w} {{ comment {comment} ; }}\n")
        lines.append(f"delete table {w}\n")  # always from scratch
        lines.append(f"add table {w} {{ comment {comment} ; }}\n")
        for kind, name, spec in STATIC_CONTAINERS:
            lines.append(f"add {kind} {w} {name} {{ {spec.format(addr=addr, ipx=ipx)} }}\n")
        for name, type_, hook, prio in BASE_CHAINS:
            lines.append(f"add chain {w} {name} {{ type {type_} hook {hook} priority {prio} ; }}\n")
        for name in CHAINS + K_CHAINS:
            lines.append(f"add chain {w} {name}\n")
    else:
        for name, *_ in BASE_CHAINS:
            lines.append(f"flush chain {w} {name}\n")
        for name in CHAINS:
            lines.append(f"flush chain {w} {name}\n")
        lines.append(f"flush set {w} nodeport-ips\n")

    def rule(chain: str, text: str) -> None:
        lines.append(f"add rule {w} {chain} {text}\n")

    dst = f"{ipx} daddr . meta l4proto . th dport"
    np_match = (
        f"fib daddr type local {params.no_localhost}"
        if params.nodeport_match_all
        else f"{ipx} daddr @nodeport-ips"
    )
    for chain, extra in (("filter-input", "nodeport-endpoints-check"), ("filter-input", "service-endpoints-check"),
                         ("filter-forward", "service-endpoints-check"), ("filter-output", "service-endpoints-check"),
                         ("filter-prerouting-pre-dnat", "firewall-check"), ("filter-output-pre-dnat", "firewall-check"),
                         ("filter-forward", "cluster-ips-check"), ("filter-output", "cluster-ips-check")):  # fmt: skip
        rule(chain, f"ct state new jump {extra}")
    rule("nat-prerouting", "jump services")
    rule("nat-output", "jump services")
    rule("nat-postrouting", "jump masquerading")
    rule("mark-for-masquerade", f"mark set mark or {mark}")
    rule("masquerading", f"{ipx} saddr . {ipx} daddr @hairpin jump mark-for-masquerade")
    rule("masquerading", f"mark and {mark} == 0 return")
    rule("masquerading", f"mark set mark xor {mark}")
    rule("masquerading", "masquerade fully-random")
    rule(REJECT_CHAIN, "reject")
    rule("service-endpoints-check", f"{dst} vmap @no-endpoint-services")
    rule("nodeport-endpoints-check", f"{np_match} meta l4proto . th dport vmap @no-endpoint-nodeports")
    rule("cluster-ips-check", f"{ipx} daddr @cluster-ips reject")
    if params.service_cidrs:
        rule("cluster-ips-check", f"{ipx} daddr {{ {','.join(params.service_cidrs)} }} drop")
    rule("firewall-check", f"{dst} @firewall-ips {dst} . {ipx} saddr != @firewall-allow drop")

    # Masquerade marks, before any DNAT.
    if params.masquerade_all:
        rule("services", f"{ipx} daddr @cluster-ips jump mark-for-masquerade")
    elif params.local_detector is not None:
        rule("services", f"{ipx} daddr @cluster-ips {params.local_detector[1]} jump mark-for-masquerade")
    rule("services", f"{dst} @masq-dests jump mark-for-masquerade")
    rule("services", f"{dst} @local-dests fib saddr type local jump mark-for-masquerade")
    if params.local_detector is not None:
        rule("services", f"{dst} @local-dests {params.local_detector[0]} jump short-circuit")
    rule("services", f"{dst} @local-dests fib saddr type local jump short-circuit")
    rule("services", f"{np_match} meta l4proto . th dport @masq-nodeports jump mark-for-masquerade")
    rule(
        "services",
        f"{np_match} meta l4proto . th dport @local-nodeports fib saddr type local jump mark-for-masquerade",
    )
    if params.local_detector is not None:
        rule("services", f"{np_match} meta l4proto . th dport @local-nodeports {params.local_detector[0]} "
                         "jump nodeport-short-circuit")  # fmt: skip
    rule("services", f"{np_match} meta l4proto . th dport @local-nodeports fib saddr type local "
                     "jump nodeport-short-circuit")  # fmt: skip
    rule("services", f"{np_match} jump nodeports")
    # Services with ClientIP affinity: upstream's verdict map into their own chains.
    rule("services", f"{dst} vmap @{SERVICE_IPS}")
    rule("services", "jump services-dnat")
    if not params.nodeport_match_all and params.nodeport_ips:
        lines.append(f"add element {w} nodeport-ips {{ {', '.join(params.nodeport_ips)} }}\n")
    if create:
        rule("nodeports", f"meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
        for name in k_maps:
            _k_map(tx, params, name)


def _k_map(tx: Tx, params: NftParams, name: str) -> None:
    """A per-K map and its rule (in one transaction: see the module docstring)."""
    ipx = params.ipx
    w = f"{ipx} {FLAT_TABLE}"
    prefix = name.rstrip("0123456789")
    k = int(name[len(prefix) :])
    dst, chain = K_MAPS[prefix]
    dst = dst.format(ipx=ipx)
    tx.lines.append(f"add map {w} {name} {{ typeof {dst} . numgen random mod 1 : {ipx} daddr . th dport ; }}\n")
    tx.lines.append(f"add rule {w} {chain} dnat {ipx} to {dst} . numgen random mod {k} map @{name}\n")


def _k_order(name: str) -> tuple:
    prefix = name.rstrip("0123456789")
    return (prefix, int(name[len(prefix) :]))


def _is_k_map(name: str) -> bool:
    return name[-1].isdigit() and name.rstrip("0123456789") in K_MAPS


def _write_elements(tx: Tx, w: str, container: str, verb: str, items: list[str]) -> None:
    for i in range(0, len(items), BATCH):
        tx.lines.append(f"{verb} element {w} {container} {{ {', '.join(items[i : i + BATCH])} }}\n")


# ---------------------------------------------------------------------------------------------
# A sync
# ---------------------------------------------------------------------------------------------


def _same_inputs(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x[0] is y[0] and x[1] is y[1] for x, y in zip(a, b, strict=True))


def plan_flat(
    service_map: Mapping[ServicePortName, ServicePort],
    endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
    params: NftParams,
    state: FlatState | None = None,
    changed: set[NamespacedName] | None = None,
    pod_cidrs: Sequence[str] | None = None,
    ports_of: Mapping[NamespacedName, Sequence[ServicePortName]] | None = None,
) -> tuple[Tx, FlatState]:
    """One transaction taking the flat table from `state` to the Services given.

    `state=None` (or another IP family) builds the table from scratch. Otherwise only
    differences are written: `changed` names the Services to look at (None: all of them; a
    Service whose ServicePort and endpoint-list objects are the very ones of the last sync is
    then skipped, so the values of both maps must not be mutated in place). Node parameters
    the static rules depend on rewrite those rules; those the Services depend on (node name,
    IP, zone...) make every Service recomputed, still sending only the element differences.
    `pod_cidrs`: this node's pod CIDRs (see `hairpin` in the module docstring). `ports_of`: the
    keys of `service_map` per Service, if the caller keeps them (saves a pass over the map in a
    partial sync). `state` is updated in place."""
    tx, adds, state = _plan(service_map, endpoints_map, params, state, changed, pod_cidrs, ports_of)
    w = f"{params.ipx} {FLAT_TABLE}"
    for container, items in adds:
        _write_elements(tx, w, container, "add", items)
    return tx, state


def _plan(
    service_map: Mapping[ServicePortName, ServicePort],
    endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
    params: NftParams,
    state: FlatState | None,
    changed: set[NamespacedName] | None,
    pod_cidrs: Sequence[str] | None,
    ports_of: Mapping[NamespacedName, Sequence[ServicePortName]] | None,
) -> tuple[Tx, list[tuple[str, list[str]]], FlatState]:
    """plan_flat, but the elements to add (container, items: key and suffix) left out of the
    transaction, for the caller to write."""
    w = f"{params.ipx} {FLAT_TABLE}"
    tx = Tx(params.ipx, FLAT_TABLE)
    pod_cidrs = tuple(pod_cidrs) if pod_cidrs is not None else None
    fresh = state is None or state.params is None or state.params.ip_family != params.ip_family
    if fresh:
        state = FlatState()
    rewrite_setup = not fresh and _setup_key(state.params) != _setup_key(params)
    reuse = not fresh and _record_key(state.params) == _record_key(params) and state.pod_cidrs == pod_cidrs
    if not reuse:
        changed = None
    state.params, state.pod_cidrs = params, pod_cidrs
    hairpin = _hairpin_filter(params, pod_cidrs)

    by_service: dict[NamespacedName, list[ServicePortName]] = {}
    if changed is None:
        for k in service_map:
            by_service.setdefault((k.namespace, k.name), []).append(k)
        todo = sorted(by_service.keys() | state.records.keys())
    else:
        if ports_of is not None:
            for nsn in changed:
                keys = ports_of.get(nsn)
                if keys:
                    by_service[nsn] = list(keys)
        else:
            for k in service_map:
                if (k.namespace, k.name) in changed:
                    by_service.setdefault((k.namespace, k.name), []).append(k)
        todo = sorted(changed)

    records, refs = state.records, state.refs
    get_endpoints = endpoints_map.get
    removed: dict[str, set[str]] = {}  # container -> keys a Service no longer has
    touched: Elements = {}  # container -> key -> suffix, from the Services recomputed
    added: dict[str, list[dict[str, str]]] = {}  # container -> the new records' elements in it
    old_chains: dict[str, tuple[str, ...]] = {}
    old_sets: set[str] = set()
    new_chains: dict[str, tuple[str, ...]] = {}
    new_sets: dict[str, str] = {}
    written = 0
    for nsn in todo:
        ports = by_service.get(nsn)
        old = records.get(nsn)
        if ports:
            if len(ports) > 1:
                ports.sort(key=_key_order)
            inputs = tuple([(service_map[k], get_endpoints(k, ())) for k in ports])
            if reuse and old is not None and _same_inputs(old.inputs, inputs):
                continue
            new = service_record(ports, inputs, params, hairpin)
            records[nsn] = new
        else:
            if old is None:
                continue
            new = None
            del records[nsn]
        written += 1
        if old is not None:
            for container, items in old.elements.items():
                r = refs[container]
                gone = removed.get(container)
                for k in items:
                    n = r[k] - 1
                    if n:
                        r[k] = n
                    else:
                        del r[k]
                        if gone is None:
                            gone = removed[container] = set()
                        gone.add(k)
            old_chains.update(old.chains)
            old_sets.update(old.sets)
        if new is not None:
            for container, items in new.elements.items():
                t = touched.get(container)
                if t is None:
                    touched[container] = dict(items)
                    added[container] = [items]
                else:
                    t.update(items)
                    added[container].append(items)
            new_chains.update(new.chains)
            new_sets.update(new.sets)

    # The new records' keys counted once per container, in C (after the old records' keys were
    # uncounted: a key moving from one Service to another is then in `removed` and in `refs`).
    for container, dicts in added.items():
        r = refs.get(container)
        if r is None:
            r = refs[container] = Counter()
        r.update(itertools.chain.from_iterable(dicts))

    k_new = sorted((c for c in touched if _is_k_map(c) and c not in state.k_maps), key=_k_order)
    if fresh:
        state.k_maps = set(k_new)
        _setup(tx, params, k_new, create=True)
        k_new = []
    elif rewrite_setup:
        _setup(tx, params, (), create=False)
    for name in k_new:
        _k_map(tx, params, name)
        state.k_maps.add(name)

    # Deletions first (keys no Service has any more, keys whose value changes), then the
    # per-Service chains, then additions.
    adds: list[tuple[str, list[str]]] = []
    for container in sorted(removed.keys() | touched.keys()):
        have = state.elements.get(container)
        if have is None:
            have = state.elements[container] = {}
        r = refs.get(container, {})
        dels = [k for k in removed.get(container, ()) if k not in r and k in have]
        t = touched.get(container, {})
        if not have:  # a new table or container: everything is an addition
            items = [k + suffix for k, suffix in t.items()]
            have.update(t)
        else:
            items = []
            for k, suffix in t.items():
                current = have.get(k)
                if current == suffix:
                    continue
                if current is not None:
                    dels.append(k)
                items.append(k + suffix)
                have[k] = suffix
        if dels:
            dels.sort()
            _write_elements(tx, w, container, "delete", dels)
        for k in removed.get(container, ()):
            if k not in r:
                have.pop(k, None)
        if items:
            adds.append((container, items))

    # Per-Service chains (affinity Services): the old ones flushed, the unused ones deleted,
    # the new ones (re)written.
    for chain in sorted(old_chains):
        tx.lines.append(f"flush chain {w} {chain}\n")
    for chain in sorted(old_chains.keys() - new_chains.keys()):
        tx.lines.append(f"delete chain {w} {chain}\n")
        state.chains.discard(chain)
    for name in sorted(old_sets - new_sets.keys()):
        tx.lines.append(f"delete set {w} {name}\n")
        state.sets.discard(name)
    for name, line in new_sets.items():
        if name not in state.sets:
            tx.lines.append(line)
            state.sets.add(name)
    for chain in new_chains:
        if chain not in state.chains:
            tx.lines.append(f"add chain {w} {chain}\n")
            state.chains.add(chain)
    for lines in new_chains.values():
        tx.lines.extend(lines)

    state.written = written
    return tx, adds, state
