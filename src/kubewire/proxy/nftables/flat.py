"""An optional flat layout for kube-proxy's nftables mode: the same Services, without per-Service
chains or sets, so that a full sync and an endpoint change cost little at scale.

Upstream's layout (render.py) gives every Service and endpoint a chain and every Service an
anonymous `numgen ... vmap` set. On this kernel that makes a full load super-linear (each new
anonymous set scans all the sets of the table) and every later transaction pay for the whole
table (nft lists all chains before it runs, the kernel revalidates every chain at commit). Here
the per-Service state is only elements of a fixed number of maps and sets:

* `endpoints`: destination . protocol . port . slot -> endpoint address . port, where the slot
  is drawn by `numgen random mod K`; one rule per distinct endpoint count K looks the
  destination up in set `k<K>` and DNATs through the map (`nodeport-endpoints` and `np-k<K>` the
  same for NodePorts, keyed on protocol . port);
* `cluster-endpoints` / `sc-k<K>`: the cluster-wide endpoints of external destinations whose
  traffic policy is Local, for the short-circuit of pod and node traffic (as upstream's
  "short-circuit pod traffic" / "short-circuit local traffic" rules);
* masquerading by set membership: `cluster-dests` (ClusterIP traffic not from a pod),
  `masq-dests` / `masq-nodeports` (external traffic under policy Cluster), `hairpin`
  (endpoint . endpoint: a pod reaching itself through its Service);
* upstream's own maps for the rest: `no-endpoint-services`, `no-endpoint-nodeports` (reject or
  drop), `cluster-ips` (reject unknown ports, drop unallocated ClusterIPs), and
  loadBalancerSourceRanges as one interval set `firewall-allow` of destination . source range.

Not carried (the agent refuses the layout for them): ClientIP session affinity.
An endpoint change is then a handful of element deletions and additions in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kubewire.proxy.model import Endpoint, ServicePort, ServicePortName
from kubewire.proxy.nftables.render import REJECT_CHAIN, NftParams, Tx, _quote
from kubewire.proxy.topology import categorize_endpoints

FLAT_TABLE = "kube-proxy-flat"
BATCH = 1000  # elements per "add element" command

STATIC_CONTAINERS: tuple[tuple[str, str, str], ...] = (
    # (kind, name, type or typeof clause); {addr} is ipv4_addr / ipv6_addr, {ipx} ip / ip6
    ("set", "cluster-ips", "type {addr} ;"),
    ("set", "nodeport-ips", "type {addr} ;"),
    ("set", "cluster-dests", "type {addr} . inet_proto . inet_service ;"),
    ("set", "masq-dests", "type {addr} . inet_proto . inet_service ;"),
    ("set", "local-dests", "type {addr} . inet_proto . inet_service ;"),
    ("set", "masq-nodeports", "type inet_proto . inet_service ;"),
    ("set", "local-nodeports", "type inet_proto . inet_service ;"),
    ("set", "hairpin", "type {addr} . {addr} ;"),
    ("set", "firewall-ips", "type {addr} . inet_proto . inet_service ;"),
    ("set", "firewall-allow", "type {addr} . inet_proto . inet_service . {addr} ; flags interval ;"),
    ("map", "no-endpoint-services", "type {addr} . inet_proto . inet_service : verdict ;"),
    ("map", "no-endpoint-nodeports", "type inet_proto . inet_service : verdict ;"),
    ("map", "endpoints",
     "typeof {ipx} daddr . meta l4proto . th dport . numgen random mod 1 : {ipx} daddr . th dport ;"),
    ("map", "cluster-endpoints",
     "typeof {ipx} daddr . meta l4proto . th dport . numgen random mod 1 : {ipx} daddr . th dport ;"),
    ("map", "nodeport-endpoints",
     "typeof meta l4proto . th dport . numgen random mod 1 : {ipx} daddr . th dport ;"),
)  # fmt: skip

# Families of per-K sets: prefix -> (key type, chain their rules go to, selection)
K_SETS = {
    "k": ("{addr} . inet_proto . inet_service", "services"),
    "sc-k": ("{addr} . inet_proto . inet_service", "short-circuit"),
    "np-k": ("inet_proto . inet_service", "nodeports"),
    "npsc-k": ("inet_proto . inet_service", "nodeport-short-circuit"),
}


class FlatUnsupported(ValueError):
    """A Service the flat layout cannot carry (ClientIP affinity)."""


@dataclass
class FlatState:
    elements: dict[str, dict[str, str]] = field(default_factory=dict)  # container -> key -> value
    k_sets: set[str] = field(default_factory=set)  # per-K sets (and their rules) present
    params: NftParams | None = None
    # per Service: its elements (container -> key -> value); refs: Services per (container, key)
    records: dict[tuple[str, str], dict[str, dict[str, str]]] = field(default_factory=dict)
    refs: dict[tuple[str, str], int] = field(default_factory=dict)


def _dest(ip: str, proto: str, port: int) -> str:
    return f"{ip} . {proto} . {port}"


def _add(out: dict[str, dict[str, str]], container: str, key: str, value: str = "") -> None:
    out.setdefault(container, {})[key] = value


def _select(out: dict, k_prefix: str, k_map: str, key: str, endpoints: Sequence[Endpoint]) -> None:
    _add(out, f"{k_prefix}{len(endpoints)}", key)
    for i, ep in enumerate(endpoints):
        _add(out, k_map, f"{key} . {i}", f"{_ep_addr(ep)} . {ep.port}")


def _ep_addr(ep: Endpoint) -> str:
    return ep.ip


def service_port_elements(
    key: ServicePortName, svc: ServicePort, endpoints: Sequence[Endpoint], params: NftParams, out: dict
) -> None:
    """The elements one service port contributes (into `out`: container -> key -> value)."""
    if svc.session_affinity == "ClientIP":
        raise FlatUnsupported(f"{key}: ClientIP session affinity needs the upstream layout")
    name = str(key)
    proto = svc.protocol.lower()
    cat = categorize_endpoints(endpoints, svc, params.node_name, params.node_labels, params.prefer_same_node)
    has_endpoints = cat.has_any
    internal = cat.local if svc.internal_policy_local else cat.cluster
    external = cat.local if svc.external_policy_local else cat.cluster
    reject = f"goto {REJECT_CHAIN}"
    comments = out.setdefault("_comments", {})
    for ep in cat.all_reachable:
        _add(out, "hairpin", f"{ep.ip} . {ep.ip}")

    _add(out, "cluster-ips", svc.cluster_ip)
    vip = _dest(svc.cluster_ip, proto, svc.port)
    if internal:
        _select(out, "k", "endpoints", vip, internal)
        _add(out, "cluster-dests", vip)
    else:
        _add(out, "no-endpoint-services", vip, reject if not has_endpoints else "drop")
        comments[f"no-endpoint-services|{vip}"] = name

    for ip in [*svc.external_ips, *svc.load_balancer_vips]:
        dest = _dest(ip, proto, svc.port)
        if has_endpoints:
            if svc.external_policy_local:
                _add(out, "local-dests", dest)
                if cat.cluster:
                    _select(out, "sc-k", "cluster-endpoints", dest, cat.cluster)
            else:
                _add(out, "masq-dests", dest)
        if external:
            _select(out, "k", "endpoints", dest, external)
        else:
            _add(out, "no-endpoint-services", dest, reject if not has_endpoints else "drop")
            comments[f"no-endpoint-services|{dest}"] = name
    if svc.load_balancer_vips and svc.load_balancer_source_ranges:
        allow = list(svc.load_balancer_source_ranges)
        if params.node_ip and any(_contains(c, params.node_ip) for c in allow):
            allow += svc.load_balancer_vips
        for ip in svc.load_balancer_vips:
            dest = _dest(ip, proto, svc.port)
            _add(out, "firewall-ips", dest)
            for source in allow:
                _add(out, "firewall-allow", f"{dest} . {source}")

    if svc.node_port:
        np_key = f"{proto} . {svc.node_port}"
        if has_endpoints:
            if svc.external_policy_local:
                _add(out, "local-nodeports", np_key)
                if cat.cluster:
                    _select(out, "npsc-k", "nodeport-cluster-endpoints", np_key, cat.cluster)
            else:
                _add(out, "masq-nodeports", np_key)
        if external:
            _select(out, "np-k", "nodeport-endpoints", np_key, external)
        else:
            _add(out, "no-endpoint-nodeports", np_key, reject if not has_endpoints else "drop")
            comments[f"no-endpoint-nodeports|{np_key}"] = name


def flat_elements(
    service_map: Mapping[ServicePortName, ServicePort],
    endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
    params: NftParams,
) -> dict[str, dict[str, str]]:
    """Every element of every map and set, for the Services given."""
    out: dict[str, dict[str, str]] = {}
    for key in sorted(service_map, key=lambda k: (str(k), k.protocol)):
        service_port_elements(key, service_map[key], endpoints_map.get(key, ()), params, out)
    if not params.nodeport_match_all:
        for ip in params.nodeport_ips:
            _add(out, "nodeport-ips", ip)
    return out


def _contains(cidr: str, ip: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _setup(tx: Tx, params: NftParams, k_sets: Sequence[str]) -> None:
    """The static part: table, chains, rules, containers; then the per-K sets and their rules."""
    ipx, addr, mark = params.ipx, params.addr_type, params.masquerade_mark
    w = f"{ipx} {FLAT_TABLE}"
    lines = tx.lines
    lines.append(f"add table {w} {{ comment {_quote('rules for kube-proxy, flat layout')} ; }}\n")
    lines.append(f"delete table {w}\n")  # always from scratch: the table is small without elements
    lines.append(f"add table {w} {{ comment {_quote('rules for kube-proxy, flat layout')} ; }}\n")
    for kind, name, spec in STATIC_CONTAINERS + (
        ("map", "nodeport-cluster-endpoints",
         "typeof meta l4proto . th dport . numgen random mod 1 : {ipx} daddr . th dport ;"),
    ):  # fmt: skip
        lines.append(f"add {kind} {w} {name} {{ {spec.format(addr=addr, ipx=ipx)} }}\n")
    base = (
        ("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
        ("filter-output-pre-dnat", "filter", "output", -110),
        ("filter-input", "filter", "input", 0),
        ("filter-forward", "filter", "forward", 0),
        ("filter-output", "filter", "output", 0),
        ("nat-prerouting", "nat", "prerouting", -100),
        ("nat-output", "nat", "output", -100),
        ("nat-postrouting", "nat", "postrouting", 100),
    )
    for name, type_, hook, prio in base:
        lines.append(f"add chain {w} {name} {{ type {type_} hook {hook} priority {prio} ; }}\n")
    for name in ("services", "short-circuit", "nodeports", "nodeport-short-circuit", "masquerading",
                 "mark-for-masquerade", "service-endpoints-check", "nodeport-endpoints-check",
                 "cluster-ips-check", "firewall-check", REJECT_CHAIN):  # fmt: skip
        lines.append(f"add chain {w} {name}\n")

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
        rule("services", f"{dst} @cluster-dests jump mark-for-masquerade")
    elif params.local_detector is not None:
        rule("services", f"{dst} @cluster-dests {params.local_detector[1]} jump mark-for-masquerade")
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
    for name in k_sets:
        _add_k_set(tx, params, name)


def _add_k_set(tx: Tx, params: NftParams, name: str) -> None:
    ipx, addr = params.ipx, params.addr_type
    w = f"{ipx} {FLAT_TABLE}"
    prefix = name.rstrip("0123456789")
    k = int(name[len(prefix) :])
    key_type, chain = K_SETS[prefix]
    tx.lines.append(f"add set {w} {name} {{ type {key_type.format(addr=addr)} ; }}\n")
    dst = (
        f"{ipx} daddr . meta l4proto . th dport" if not prefix.startswith("np") else "meta l4proto . th dport"
    )
    target = {"k": "endpoints", "sc-k": "cluster-endpoints", "np-k": "nodeport-endpoints",
              "npsc-k": "nodeport-cluster-endpoints"}[prefix]  # fmt: skip
    tx.lines.append(
        f"add rule {w} {chain} {dst} @{name} dnat {ipx} to {dst} . numgen random mod {k} map @{target}\n"
    )


def _write_elements(tx: Tx, params: NftParams, container: str, verb: str, items: list[str]) -> None:
    w = f"{params.ipx} {FLAT_TABLE}"
    for i in range(0, len(items), BATCH):
        tx.lines.append(f"{verb} element {w} {container} {{ {', '.join(items[i : i + BATCH])} }}\n")


def _service_elements(
    ports: Sequence[ServicePortName],
    service_map: Mapping[ServicePortName, ServicePort],
    endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
    params: NftParams,
    comments: dict[str, str],
) -> dict[str, dict[str, str]]:
    out: dict = {}
    for key in sorted(ports, key=lambda k: (str(k), k.protocol)):
        service_port_elements(key, service_map[key], endpoints_map.get(key, ()), params, out)
    comments.update(out.pop("_comments", {}))
    return out


def plan_flat(
    service_map: Mapping[ServicePortName, ServicePort],
    endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
    params: NftParams,
    state: FlatState | None = None,
    changed: set[tuple[str, str]] | None = None,
) -> tuple[Tx, FlatState]:
    """One transaction taking the flat table from `state` to the Services given.

    `state=None` (or other node parameters) rebuilds the table from scratch; otherwise only the
    Services in `changed` (all, if None) are looked at and only their differences written.
    `state` is updated in place. Raises FlatUnsupported for a Service the layout cannot carry."""
    tx = Tx(params.ipx, FLAT_TABLE)
    fresh = state is None or state.params != params
    if fresh:
        state = FlatState(params=params)
    by_service: dict[tuple[str, str], list[ServicePortName]] = {}
    for k in service_map:
        nsn = (k.namespace, k.name)
        if fresh or changed is None or nsn in changed:
            by_service.setdefault(nsn, []).append(k)
    todo = set(by_service) if fresh or changed is None else set(changed)
    if not fresh and changed is None:
        todo |= set(state.records)

    comments: dict[str, str] = {}
    removed: dict[str, dict[str, str]] = {}  # container -> key -> old value (refs gone)
    touched: dict[str, dict[str, str]] = {}  # container -> key -> new value
    for nsn in sorted(todo):
        old = state.records.pop(nsn, {})
        new = _service_elements(by_service.get(nsn, ()), service_map, endpoints_map, params, comments)
        for container, items in old.items():
            for key in items:
                ref = (container, key)
                state.refs[ref] -= 1
                if not state.refs[ref]:
                    del state.refs[ref]
                    removed.setdefault(container, {})[key] = items[key]
        for container, items in new.items():
            for key, value in items.items():
                ref = (container, key)
                state.refs[ref] = state.refs.get(ref, 0) + 1
                touched.setdefault(container, {})[key] = value
        if new:
            state.records[nsn] = new
    if fresh:
        for ip in [] if params.nodeport_match_all else params.nodeport_ips:
            touched.setdefault("nodeport-ips", {})[ip] = ""

    k_sets = sorted(c for c in touched if c.rstrip("0123456789") in K_SETS and c[-1].isdigit())
    if fresh:
        _setup(tx, params, k_sets)
        state.k_sets = set(k_sets)
    else:
        for name in k_sets:
            if name not in state.k_sets:
                _add_k_set(tx, params, name)
                state.k_sets.add(name)

    # Deletions first (keys no Service has any more, keys whose value changes), then additions.
    adds: dict[str, list[str]] = {}
    for container in sorted(set(removed) | set(touched)):
        have = state.elements.setdefault(container, {})
        gone = [k for k in removed.get(container, {}) if k in have and (container, k) not in state.refs]
        changing = [k for k, v in touched.get(container, {}).items() if k in have and have[k] != v]
        if gone or changing:
            _write_elements(tx, params, container, "delete", gone + changing)
        for k in gone:
            del have[k]
        items = []
        for k, v in touched.get(container, {}).items():
            if have.get(k) == v:
                continue
            comment = comments.get(f"{container}|{k}")
            items.append(k + (f" comment {_quote(comment)}" if comment else "") + (f" : {v}" if v else ""))
            have[k] = v
        if items:
            adds[container] = items
    for container, items in adds.items():
        _write_elements(tx, params, container, "add", items)
    return tx, state
