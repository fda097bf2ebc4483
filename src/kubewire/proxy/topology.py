"""Which endpoints a node's kube-proxy uses for a service port (upstream pkg/proxy/topology.go).

Kept separate from any datapath so that iptables, nftables and eBPF planners pick endpoints the
same way: Ready endpoints (filtered by topology hints when every ready endpoint carries them),
falling back to serving-terminating endpoints, independently for Cluster and Local policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubewire.proxy.model import ZONE_LABEL, Endpoint, ServicePort

PREFER_SAME_NODE = "PreferSameNode"
PREFER_SAME_ZONE = "PreferSameZone"


@dataclass(frozen=True)
class CategorizedEndpoints:
    """Result of categorize_endpoints; `has_any` may be true while `all_reachable` is empty."""

    cluster: list[Endpoint]
    local: list[Endpoint]
    all_reachable: list[Endpoint]
    has_any: bool

    def internal(self, svc: ServicePort) -> list[Endpoint]:
        """What traffic to the ClusterIP may use (upstream's internal policy chain)."""
        return self.local if svc.internal_policy_local else self.cluster

    def external(self, svc: ServicePort) -> list[Endpoint]:
        """What traffic from outside (NodePort, LoadBalancer, externalIPs) may use."""
        return self.local if svc.external_policy_local else self.cluster


def topology_mode(
    endpoints: Sequence[Endpoint], node_name: str, zone: str, prefer_same_node: bool = True
) -> str:
    """The topology mode from the ready endpoints' hints: "PreferSameNode", "PreferSameZone" or "".

    Hints are all-or-nothing: one ready endpoint without a hint disables them, and so does a set
    of hints that names neither this node nor its zone (else the node would get no endpoints).
    """
    has_for_node = False
    all_node_hints = True
    has_for_zone = False
    all_zone_hints = True
    for ep in endpoints:
        if not ep.ready:
            continue
        node_hints, zone_hints = ep.node_hints, ep.zone_hints
        if not node_hints:
            if not zone_hints:
                return ""  # neither kind of hint can apply (the common case: no hints at all)
            all_node_hints = False
        elif node_name in node_hints:
            has_for_node = True
        if not zone_hints:
            all_zone_hints = False
        elif zone in zone_hints:
            has_for_zone = True
    if prefer_same_node and all_node_hints and has_for_node:
        return PREFER_SAME_NODE
    if all_zone_hints and has_for_zone:
        return PREFER_SAME_ZONE
    return ""


def _available_for_topology(ep: Endpoint, mode: str, node_name: str, zone: str) -> bool:
    if mode == "":
        return True
    if mode == PREFER_SAME_NODE:
        return node_name in ep.node_hints
    if mode == PREFER_SAME_ZONE:
        return zone in ep.zone_hints
    return False


def categorize_endpoints(
    endpoints: Sequence[Endpoint],
    svc: ServicePort,
    node_name: str,
    node_labels: Mapping[str, str] | None = None,
    prefer_same_node: bool = True,
) -> CategorizedEndpoints:
    """Upstream's CategorizeEndpoints.

    Endpoints must be in the EndpointsMap order (sorted by "ip:port"); all three lists keep that
    order. (Upstream builds the merged list from a Go map, i.e. in random order, when topology or
    terminating fallback make the Cluster and Local lists diverge; sorted order is one of the
    orders it can produce.)
    """
    labels = node_labels or {}
    cluster: list[Endpoint] = []
    local: list[Endpoint] = []
    has_any = False
    mode = ""
    use_serving_terminating = False

    if svc.uses_cluster_endpoints:
        zone = labels.get(ZONE_LABEL, "")
        mode = topology_mode(endpoints, node_name, zone, prefer_same_node)
        if mode == "":
            cluster = [ep for ep in endpoints if ep.ready]
        else:
            cluster = [ep for ep in endpoints if ep.ready and _available_for_topology(ep, mode, node_name, zone)]
        if not cluster:
            # No ready endpoint anywhere (topology already fell back if it had to): use
            # serving-terminating ones so connections drain gracefully instead of failing.
            cluster = [ep for ep in endpoints if ep.serving and ep.terminating]
        has_any = bool(cluster)

    if not svc.uses_local_endpoints:
        return CategorizedEndpoints(cluster, [], cluster, has_any)

    has_local_ready = False
    has_local_serving_terminating = False
    for ep in endpoints:
        if ep.ready:
            has_any = True
            has_local_ready = has_local_ready or ep.is_local
        elif ep.serving and ep.terminating:
            has_any = True
            has_local_serving_terminating = has_local_serving_terminating or ep.is_local

    if has_local_ready:
        local = [ep for ep in endpoints if ep.is_local and ep.ready]
    elif has_local_serving_terminating:
        use_serving_terminating = True
        local = [ep for ep in endpoints if ep.is_local and ep.serving and ep.terminating]

    if not svc.uses_cluster_endpoints:
        return CategorizedEndpoints([], local, local, has_any)

    if mode == "" and not use_serving_terminating:
        # Cluster then holds every ready endpoint, a superset of the (ready) local ones.
        return CategorizedEndpoints(cluster, local, cluster, has_any)

    wanted = {str(ep) for ep in cluster} | {str(ep) for ep in local}
    merged = [ep for ep in endpoints if str(ep) in wanted]
    return CategorizedEndpoints(cluster, local, merged, has_any)
