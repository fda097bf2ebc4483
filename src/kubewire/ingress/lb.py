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

Ports without a nodePort (spec.allocateLoadBalancerNodePorts: false) are forwarded container-native,
as GKE's NEG load balancers and AWS's NLB with IP targets do: LB-IP:port is DNATed straight to the
Service's ready endpoints (pod IP:port from its EndpointSlices), spread per connection, client
address kept. Health there is the endpoints' readiness (no probing): a frontend with no ready
endpoint resets as one with no healthy node does. Terminating endpoints are not used, even serving
ones when none is ready: those providers deregister a target as its pod starts terminating (and
drain it), so what is "ready" in the slice is what they send new connections to. The edge routes the
pod CIDR for that (kubewire.northsouth.cloudlb), and the forward chain lets only DNATed connections
reach pod addresses: the internet still cannot address a pod directly.
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
class Endpoint:
    """A ready pod address of a container-native frontend."""

    ip: str
    port: int
    name: str = ""  # namespace/pod from the endpoint's targetRef (the rule's comment)

    @property
    def token(self) -> str:
        return self.ip.replace(".", "-")


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
    health_port: int  # healthCheckNodePort (Local), the NodePort (Cluster, TCP) or kube-proxy's 10256; 0: none
    source_ranges: tuple[str, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()  # container-native (no nodePort): the ready endpoints

    @property
    def direct(self) -> bool:
        """Container-native: straight to the pods, not through a NodePort."""
        return not self.node_port

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


def wants_endpoints(services: list[dict]) -> bool:
    """Whether some port has no nodePort, so that frontends() needs the EndpointSlices."""
    return any(not p.get("nodePort") for s in services if is_load_balancer(s)
               for p in (s.get("spec") or {}).get("ports") or [])


def slices_by_service(slices: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for sl in slices:
        m = _meta(sl)
        svc = (m.get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            out.setdefault((m.get("namespace") or "default", svc), []).append(sl)
    return out


def ready_endpoints(slices: list[dict], port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    """The ready IPv4 endpoints of one Service port: from every slice, the port of the same name and
    protocol (a named targetPort can resolve to a different number per slice). Ready is nil or true
    (the API's reading; kube-proxy's too); not ready, and terminating ones, are left out."""
    out: dict[tuple[str, int], str] = {}
    for sl in slices:
        if sl.get("addressType", "IPv4") != "IPv4":
            continue
        for p in sl.get("ports") or []:
            if (p.get("name") or "") != port_name or str(p.get("protocol") or "TCP").lower() != protocol \
                    or not isinstance(p.get("port"), int) or not 0 < p["port"] < 65536:
                continue
            for ep in sl.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is False:
                    continue
                ref = ep.get("targetRef") or {}
                name = f"{ref.get('namespace') or ''}/{ref['name']}" if ref.get("name") else ""
                name = "".join(c for c in name if c.isalnum() or c in "./-")  # it goes into a quoted comment
                for a in ep.get("addresses") or []:
                    try:
                        ip = str(ipaddress.IPv4Address(a))
                    except ValueError:
                        continue
                    out.setdefault((ip, p["port"]), name)
    return tuple(Endpoint(ip, port, name) for (ip, port), name in
                 sorted(out.items(), key=lambda kv: (ipaddress.IPv4Address(kv[0][0]), kv[0][1])))


def frontends(services: list[dict], ips: dict[tuple[str, str], str],
              slices: list[dict] | None = None) -> tuple[list[Frontend], list[str]]:
    """The frontends of the Services that have an address. `slices` (the EndpointSlices) are needed
    only for ports without a nodePort (see wants_endpoints)."""
    out: list[Frontend] = []
    problems: list[str] = []
    by_service: dict[tuple[str, str], list[dict]] | None = None
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
            if not port.get("nodePort"):  # container-native: straight to the ready endpoints
                if by_service is None:
                    by_service = slices_by_service(slices or [])
                name = str(port.get("name") or "")
                out.append(Frontend(ips[k], int(port["port"]), proto, k, name, 0, local, 0, ranges,
                                    ready_endpoints(by_service.get(k, []), name, proto)))
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


def render(fronts: list[Frontend], nodes: list[Node], healthy: Callable[[str, int], bool],
           pod_cidrs: tuple[str, ...] = ()) -> str:
    """The nft payload: the table deleted and written again in one transaction (atomic: a
    connection never sees half a ruleset; established ones keep their conntrack entries).
    With pod_cidrs (the edge routes them, for container-native frontends), forwarded traffic to
    those addresses passes only when a frontend DNATed it."""
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
    if pod_cidrs:
        cidrs = ", ".join(pod_cidrs)
        lines += ["\tchain filter-forward {", "\t\ttype filter hook forward priority filter; policy accept;",
                  f"\t\tip daddr {{ {cidrs} }} ct status dnat accept",
                  f'\t\tip daddr {{ {cidrs} }} counter drop comment "pod addresses: only through a load balancer frontend"',
                  "\t}"]
    lines += ["\tchain nat-prerouting {", "\t\ttype nat hook prerouting priority dstnat; policy accept;"]
    if fronts:
        elems = ", ".join(f"{f.ip} . {f.protocol} . {f.port} : goto {f.chain}" for f in fronts)
        lines.append(f"\t\tip daddr . meta l4proto . th dport vmap {{ {elems} }}")
    lines.append("\t}")
    targets: dict[str, tuple[str, str, str]] = {}  # chain -> (protocol, DNAT target, comment)
    for f in fronts:
        if f.direct:
            dests = [(f"ep-{e.token}-{f.protocol}-{e.port}", f"{e.ip}:{e.port}", e.name or e.ip) for e in f.endpoints]
            none = "no ready endpoint"
        else:
            dests = [(f"to-{n.token}-{f.protocol}-{f.node_port}", f"{n.ip}:{f.node_port}", n.name)
                     for n in nodes if healthy(n.ip, f.health_port)]
            none = "no healthy node"
        name = f"{f.service[0]}/{f.service[1]}" + (f":{f.port_name}" if f.port_name else "")
        lines.append(f"\tchain {f.chain} {{")
        if not dests:
            verdict = "reject with tcp reset" if f.protocol == "tcp" else "reject"
            lines.append(f'\t\tmeta l4proto {f.protocol} counter {verdict} comment "{name}: {none}"')
        else:
            for chain, to, comment in dests:
                targets.setdefault(chain, (f.protocol, to, comment))
            if len(dests) == 1:
                lines.append(f"\t\tgoto {dests[0][0]}")
            else:
                elems = ", ".join(f"{i} : goto {d[0]}" for i, d in enumerate(dests))
                lines.append(f"\t\tnumgen random mod {len(dests)} vmap {{ {elems} }}")
        lines.append("\t}")
    for chain, (proto, to, comment) in sorted(targets.items()):
        lines += [f"\tchain {chain} {{",
                  f'\t\tmeta l4proto {proto} counter dnat to {to} comment "{comment}"',
                  "\t}"]
    lines.append("}")
    return "\n".join(lines) + "\n"
