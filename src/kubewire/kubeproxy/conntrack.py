"""Which conntrack entries go stale when endpoints change, as upstream decides (pkg/proxy/conntrack).

UDP has no connection to reset: an entry pointing at a removed endpoint keeps sending traffic
there, and an entry created while a Service had no endpoints keeps the REJECT. Pure: returns the
`conntrack -D` filters to run.
"""

from __future__ import annotations

from kubewire.proxy.model import Endpoint, ServicePort, ServicePortName


def udp_ports(service_map: dict[ServicePortName, ServicePort]) -> dict[ServicePortName, ServicePort]:
    return {k: v for k, v in service_map.items() if v.protocol == "UDP"}


def stale_filters(old_svcs: dict[ServicePortName, ServicePort], old_eps: dict[ServicePortName, list[Endpoint]],
                  new_svcs: dict[ServicePortName, ServicePort], new_eps: dict[ServicePortName, list[Endpoint]]) -> list[list[str]]:
    """conntrack -D argument lists: flows to endpoints that left a UDP service, and flows of UDP
    services that just got their first endpoint (their old entries hold the rejection)."""
    out: list[list[str]] = []
    for name, svc in udp_ports(new_svcs).items():
        vips = [svc.cluster_ip, *svc.external_ips, *svc.load_balancer_vips]
        before = {f"{e.ip}" for e in old_eps.get(name, []) if e.ready or e.serving}
        after = {f"{e.ip}" for e in new_eps.get(name, []) if e.ready or e.serving}
        for ip in sorted(before - after):
            for vip in vips:
                if vip:
                    out.append(["-p", "udp", "--orig-dst", vip, "--dport", str(svc.port), "--reply-src", ip])
            if svc.node_port:
                out.append(["-p", "udp", "--dport", str(svc.node_port), "--reply-src", ip])
        if not before and after:
            for vip in vips:
                if vip:
                    out.append(["-p", "udp", "--orig-dst", vip, "--dport", str(svc.port)])
            if svc.node_port:
                out.append(["-p", "udp", "--dport", str(svc.node_port)])
    for name, svc in udp_ports(old_svcs).items():
        if name not in new_svcs:
            for ip in sorted({e.ip for e in old_eps.get(name, [])}):
                out.append(["-p", "udp", "--orig-dst", svc.cluster_ip, "--dport", str(svc.port), "--reply-src", ip])
    return out
