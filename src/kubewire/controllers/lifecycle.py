"""Garbage collection and namespace deletion, as kube-controller-manager does them."""

from __future__ import annotations

from kubewire.controllers.types import Op, Snapshot

NAMESPACED_SKIP = {"Namespace", "Node"}


def collect_garbage(snap: Snapshot) -> list[Op]:
    """Background cascading deletion: a dependent whose owners are all gone is deleted."""
    uids = {o["metadata"].get("uid") for o in snap.objects.values()}
    ops = []
    for o in snap.objects.values():
        refs = o["metadata"].get("ownerReferences") or []
        if refs and not any(r.get("uid") in uids for r in refs) and "deletionTimestamp" not in o["metadata"]:
            ops.append(Op("delete", o))
    return ops


def finish_namespaces(snap: Snapshot) -> list[Op]:
    """A terminating namespace: delete what it holds, then itself once it is empty."""
    ops = []
    for ns in snap.list("Namespace"):
        if "deletionTimestamp" not in ns["metadata"]:
            continue
        name = ns["metadata"]["name"]
        contents = [o for (k, n, _), o in snap.objects.items() if n == name and k not in NAMESPACED_SKIP]
        if not contents:
            ops.append(Op("delete", ns))
            continue
        if ns.get("status", {}).get("phase") != "Terminating":
            ops.append(Op("status", {**ns, "status": {"phase": "Terminating"}}))
        ops += [Op("delete", o) for o in contents if "deletionTimestamp" not in o["metadata"]]
    return ops
