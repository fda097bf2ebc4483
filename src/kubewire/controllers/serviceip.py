"""Service status, as a real cluster shows it before any load balancer exists.

Allocation of ClusterIPs and node ports happens when a Service is stored
(kubewire.api.allocation.prepare_service), not here. What is left for a controller is the status
every Service carries on a real API server: Go serialises the empty LoadBalancerStatus, so
`kubectl get svc -o yaml` always shows `status: {loadBalancer: {}}`, and a Service that stops being
a LoadBalancer loses its ingress. The load-balancer allocator (north-south issue) fills ingress in.
"""

from __future__ import annotations

import copy

from kubewire.controllers.types import Op, Since, Snapshot, key_of


def reconcile_services(snap: Snapshot, since: Since | None = None) -> list[Op]:
    """Status writes for Services whose status is not what the API server would hold. With a Since
    (the control loop's), only the Services written since the last pass are looked at."""
    changed = since.changed(snap) if since is not None else None
    if changed is None:
        services = snap.list("Service")
    else:
        services = [o for k in sorted(changed) if k[0] == "Service" and (o := snap.objects.get(k)) is not None]
    ops: list[Op] = []
    for svc in services:
        status = svc.get("status") if isinstance(svc.get("status"), dict) else {}
        lb = status.get("loadBalancer")
        if isinstance(lb, dict) and not (lb and (svc.get("spec") or {}).get("type") != "LoadBalancer"):
            continue  # as the API server holds it (a dict status with a loadBalancer entry)
        want = copy.deepcopy(status)
        want["loadBalancer"] = {}
        ops.append(Op("status", {**svc, "status": want}))
    if since is not None:
        since.done(snap, (key_of(op.obj) for op in ops))
    return ops
