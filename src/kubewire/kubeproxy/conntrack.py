"""Which conntrack entries go stale when endpoints change, as upstream decides (pkg/proxy's
detectStaleConntrackEntries, deleteStaleServiceConntrackEntries and
deleteStaleEndpointConntrackEntries, kube-proxy 1.26-1.30; later releases dump the whole table and
compare, to the same effect for these cases).

UDP has no connection to reset: an entry pointing at a removed endpoint keeps sending traffic
there, and an entry created while a Service had no endpoints keeps the REJECT. Pure: returns the
`conntrack -D` filters to run, with upstream's flags (ClearEntriesForIP, ClearEntriesForPort,
ClearEntriesForNAT, ClearEntriesForPortNAT).
"""

from __future__ import annotations

from collections.abc import Mapping

from kubewire.proxy.model import Endpoint, ServicePort, ServicePortName


def _vips(svc: ServicePort) -> list[str]:
    return [ip for ip in (svc.cluster_ip, *svc.external_ips, *svc.load_balancer_vips) if ip]


def _same(a: Endpoint, b: Endpoint) -> bool:
    """Upstream's BaseEndpointInfo.Equal: ip:port, locality and readiness."""
    return a.ip == b.ip and a.port == b.port and a.is_local == b.is_local and a.ready == b.ready


def stale_filters(old_svcs: Mapping[ServicePortName, ServicePort], old_eps: Mapping[ServicePortName, list[Endpoint]],
                  new_svcs: Mapping[ServicePortName, ServicePort], new_eps: Mapping[ServicePortName, list[Endpoint]]) -> list[list[str]]:
    """conntrack -D argument lists, given both maps' entries before and after for the service
    ports that changed: flows of deleted UDP Services; of UDP service ports that went from no
    serving endpoint to some (their entries hold the rejection); and flows DNATed to an endpoint
    that served and is gone or changed."""
    service_ips: set[str] = set()
    node_ports: set[int] = set()
    for name, svc in old_svcs.items():  # DeletedUDPClusterIPs
        if name.protocol == "UDP" and name not in new_svcs and svc.cluster_ip:
            service_ips.add(svc.cluster_ip)
    nat: list[list[str]] = []
    for name, svc in new_svcs.items():
        if name.protocol != "UDP":
            continue
        before, after = old_eps.get(name, []), new_eps.get(name, [])
        if any(e.serving for e in after) and not any(e.serving for e in before):  # newly active
            service_ips.update(_vips(svc))
            if svc.node_port:
                node_ports.add(svc.node_port)
        for ep in before:  # DeletedUDPEndpoints: served before, no equal endpoint now
            if not ep.serving or any(_same(ep, e) for e in after):
                continue
            if svc.node_port:
                nat.append(["-p", "udp", "--dport", str(svc.node_port), "--dst-nat", ep.ip])
            nat += [["--orig-dst", vip, "--dst-nat", ep.ip, "-p", "udp"] for vip in _vips(svc)]
    out = [["--orig-dst", ip, "-p", "udp"] for ip in sorted(service_ips)]
    out += [["-p", "udp", "--dport", str(port)] for port in sorted(node_ports)]
    return out + nat
