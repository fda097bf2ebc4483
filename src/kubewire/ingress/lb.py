"""The cloud load balancer's planner: LoadBalancer IPs from a pool, and the forwarding rules of the
cloud-lb namespace (one nftables table, replaced in one transaction).

What a network load balancer in front of a cluster does (AWS NLB / GCP network LB / MetalLB-style
allocation): every Service of type LoadBalancer (without a loadBalancerClass: those belong to another
controller) gets an address of the pool, published in status.loadBalancer.ingress; traffic to
LB-IP:port is spread per connection over the healthy nodes, DNATed to the Service's NodePort on
them. The client address is kept (no SNAT): the node's reply goes back through the fabric, which
routes the public network via cloud-lb, where conntrack undoes the DNAT. Health, as AWS's network
load balancer checks it: externalTrafficPolicy Local -> HTTP GET /healthz on the Service's
healthCheckNodePort (kube-proxy answers 200 only where a ready endpoint is local); Cluster -> a TCP
connect to the traffic port, the NodePort itself (GCP asks kube-proxy's /healthz on :10256 instead,
which kubewire uses for UDP ports, where a connect proves nothing).
loadBalancerSourceRanges (or the older service.beta.kubernetes.io/load-balancer-source-ranges
annotation) are enforced here, at the edge, before any address translation.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_POOL = "203.0.113.0/24"
TABLE = "kubewire-lb"
SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
KUBE_PROXY_HEALTHZ_PORT = 10256


def _meta(o: dict) -> dict:
    return o.get("metadata") or {}


def key_of(svc: dict) -> tuple[str, str]:
    return (_meta(svc).get("namespace") or "default", _meta(svc)["name"])


def is_load_balancer(svc: dict) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass") \
        and "deletionTimestamp" not in _meta(svc)


def current_ips(svc: dict) -> list[str]:
    ing = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ing if isinstance(i, dict) and i.get("ip")]


def allocate(services: list[dict], pool: str = DEFAULT_POOL) -> tuple[dict[tuple[str, str], str], list[str]]:
    """Service -> address. Sticky (an address a Service already has stays its own); a requested
    spec.loadBalancerIP is honoured when it is in the pool and free; otherwise the lowest free
    address, oldest Service first. Returns the allocation and problems (pool exhausted, ...)."""
    net = ipaddress.IPv4Network(pool, strict=False)
    lbs = sorted((s for s in services if is_load_balancer(s)),
                 key=lambda s: (_meta(s).get("creationTimestamp") or "", *key_of(s)))
    taken: dict[str, tuple[str, str]] = {}
    out: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    for s in lbs:  # keep what is already published
        for ip in current_ips(s):
            if ipaddress.IPv4Address(ip) in net and ip not in taken and key_of(s) not in out:
                taken[ip], out[key_of(s)] = key_of(s), ip
    for s in lbs:  # then requested addresses, before any dynamic allocation can take them
        k = key_of(s)
        want = (s.get("spec") or {}).get("loadBalancerIP")
        if k in out or not want:
            continue
        try:
            ok = ipaddress.IPv4Address(want) in net and want not in taken
        except ValueError:
            ok = False
        if ok:
            taken[want], out[k] = k, want
        else:
            problems.append(f"service {k[0]}/{k[1]}: loadBalancerIP {want} is not a free address of {pool}")
    for s in lbs:
        k = key_of(s)
        if k in out or (s.get("spec") or {}).get("loadBalancerIP"):
            continue
        ip = next((str(h) for h in net.hosts() if str(h) not in taken), None)
        if ip is None:
            problems.append(f"service {k[0]}/{k[1]}: no free address left in {pool}")
            continue
        taken[ip], out[k] = k, ip
    return out, problems


def status_for(ip: str | None) -> dict:
    return {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]} if ip else {}}


@dataclass(frozen=True)
class Frontend:
    """One LB-IP:port/protocol and where it goes."""

    ip: str
    port: int
    protocol: str  # tcp | udp
    service: tuple[str, str]
    port_name: str
    node_port: int
    local: bool  # externalTrafficPolicy Local
    health_port: int  # healthCheckNodePort (Local), the NodePort (Cluster, TCP) or kube-proxy's 10256
    source_ranges: tuple[str, ...] = ()

    @property
    def health_check(self) -> str:
        """http (GET /healthz must answer 2xx/3xx) or tcp (a connect must succeed)."""
        return "tcp" if not self.local and self.protocol == "tcp" else "http"

    @property
    def chain(self) -> str:
        return f"svc-{self.service[0]}-{self.service[1]}-{self.protocol}-{self.port}"

    @property
    def health_path(self) -> str:
        return "/healthz"


def source_ranges(svc: dict) -> tuple[tuple[str, ...], list[str]]:
    spec = svc.get("spec") or {}
    raw = spec.get("loadBalancerSourceRanges")
    if not raw:
        text = (_meta(svc).get("annotations") or {}).get(SOURCE_RANGES_ANNOTATION, "")
        raw = [r.strip() for r in text.split(",") if r.strip()]
    nets, problems = [], []
    for r in raw or []:
        try:
            n = ipaddress.ip_network(str(r).strip(), strict=False)
        except ValueError:
            problems.append(f"service {key_of(svc)[0]}/{key_of(svc)[1]}: source range {r!r} is not a CIDR; ignored")
            continue
        if n.version == 4:
            nets.append(n)
    return tuple(str(n) for n in ipaddress.collapse_addresses(nets)), problems


def frontends(services: list[dict], ips: dict[tuple[str, str], str]) -> tuple[list[Frontend], list[str]]:
    out: list[Frontend] = []
    problems: list[str] = []
    for s in services:
        k = key_of(s)
        if k not in ips or not is_load_balancer(s):
            continue
        spec = s.get("spec") or {}
        local = spec.get("externalTrafficPolicy") == "Local"
        ranges, p = source_ranges(s)
        problems += p
        for port in spec.get("ports") or []:
            proto = str(port.get("protocol") or "TCP").lower()
            if proto not in ("tcp", "udp"):
                problems.append(f"service {k[0]}/{k[1]}: {proto.upper()} port {port.get('port')} is not load balanced")
                continue
            if not port.get("nodePort"):
                problems.append(f"service {k[0]}/{k[1]}: port {port.get('port')} has no nodePort "
                                f"(allocateLoadBalancerNodePorts: false); nothing to forward to")
                continue
            if local:
                hc = int(spec.get("healthCheckNodePort") or 0)
            else:
                hc = int(port["nodePort"]) if proto == "tcp" else KUBE_PROXY_HEALTHZ_PORT
            out.append(Frontend(ips[k], int(port["port"]), proto, k, str(port.get("name") or ""),
                                int(port["nodePort"]), local, hc, ranges))
    out.sort(key=lambda f: (ipaddress.IPv4Address(f.ip), f.protocol, f.port))
    return out, problems


@dataclass(frozen=True)
class Node:
    name: str
    ip: str

    @property
    def token(self) -> str:
        return "".join(c if c.isalnum() or c == "-" else "-" for c in self.name)


def health_targets(fronts: list[Frontend], nodes: list[Node]) -> list[tuple[str, int, str]]:
    """(node IP, port, http|tcp) the load balancer must probe."""
    return sorted({(n.ip, f.health_port, f.health_check) for f in fronts for n in nodes if f.health_port},
                  key=lambda t: (ipaddress.IPv4Address(t[0]), t[1], t[2]))


def render(fronts: list[Frontend], nodes: list[Node], healthy: Callable[[str, int], bool]) -> str:
    """The nft payload: the table deleted and written again in one transaction (atomic: a
    connection never sees half a ruleset; established ones keep their conntrack entries)."""
    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    filt = [f for f in fronts if f.source_ranges]
    lines += ["\tchain filter-prerouting {", "\t\ttype filter hook prerouting priority mangle; policy accept;"]
    if filt:
        elems = ", ".join(f"{f.ip} . {f.protocol} . {f.port} : jump fw-{f.chain}" for f in filt)
        lines.append(f"\t\tip daddr . meta l4proto . th dport vmap {{ {elems} }}")
    lines.append("\t}")
    for f in filt:
        lines += [f"\tchain fw-{f.chain} {{",
                  f"\t\tip saddr {{ {', '.join(f.source_ranges)} }} return",
                  f'\t\tcounter drop comment "{f.service[0]}/{f.service[1]}: source not in loadBalancerSourceRanges"',
                  "\t}"]
    lines += ["\tchain nat-prerouting {", "\t\ttype nat hook prerouting priority dstnat; policy accept;"]
    if fronts:
        elems = ", ".join(f"{f.ip} . {f.protocol} . {f.port} : goto {f.chain}" for f in fronts)
        lines.append(f"\t\tip daddr . meta l4proto . th dport vmap {{ {elems} }}")
    lines.append("\t}")
    targets: dict[str, tuple[Node, Frontend]] = {}
    for f in fronts:
        up = [n for n in nodes if healthy(n.ip, f.health_port)]
        name = f"{f.service[0]}/{f.service[1]}" + (f":{f.port_name}" if f.port_name else "")
        lines.append(f"\tchain {f.chain} {{")
        if not up:
            verdict = "reject with tcp reset" if f.protocol == "tcp" else "reject"
            lines.append(f'\t\tmeta l4proto {f.protocol} counter {verdict} comment "{name}: no healthy node"')
        else:
            for n in up:
                targets.setdefault(f"to-{n.token}-{f.protocol}-{f.node_port}", (n, f))
            if len(up) == 1:
                lines.append(f"\t\tgoto to-{up[0].token}-{f.protocol}-{f.node_port}")
            else:
                elems = ", ".join(f"{i} : goto to-{n.token}-{f.protocol}-{f.node_port}" for i, n in enumerate(up))
                lines.append(f"\t\tnumgen random mod {len(up)} vmap {{ {elems} }}")
        lines.append("\t}")
    for chain, (n, f) in sorted(targets.items()):
        lines += [f"\tchain {chain} {{",
                  f'\t\tmeta l4proto {f.protocol} counter dnat to {n.ip}:{f.node_port} comment "{n.name}"',
                  "\t}"]
    lines.append("}")
    return "\n".join(lines) + "\n"
