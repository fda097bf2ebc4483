"""The Endpoints controller, as upstream's (pkg/controller/endpoint): a v1 Endpoints per Service
with a selector, so that `get endpoints` and every client still reading the legacy API see what the
EndpointSlices say.

Upstream computes the subsets from the selected pods; here they are read from the Service's managed
EndpointSlices of its primary IP family, which the EndpointSlice controller derives from the same
pods by the same rules (ShouldPodBeInEndpoints, FindPort, ShouldSetHostname), so the result is the
same: a pod is listed unless it is terminating (publishNotReadyAddresses keeps it), under
`addresses` when ready (or publishNotReadyAddresses) and `notReadyAddresses` otherwise, with the
ports it resolves; subsets are repacked (one per distinct port set) and at most 1000 addresses are
kept (ready first, proportionally), the Endpoints then annotated over-capacity.

Differences, deliberate: subsets, addresses and ports come in a stable sorted order (upstream sorts
by a hash of each), no last-change-trigger-time annotation (the slices carry none either), and an
over-capacity Endpoints is written once, not again at every sync as upstream's comparison does.
Selector-less and ExternalName Services are left alone (their Endpoints are the user's, mirrored
into EndpointSlices by the mirroring controller); an Endpoints is deleted when its Service is (and, as upstream's start-up sweep, by a pass over everything
when its Service is gone).
"""

from __future__ import annotations

import math

from kubewire.api.endpoints import repacked
from kubewire.controllers.endpointslice import LABEL_HEADLESS, managed_owner
from kubewire.controllers.podutil import labels_of, meta
from kubewire.controllers.types import Key, NamespacedName, Op, Since, SliceOwners, Snapshot

ANNOTATION_OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"
ANNOTATION_LEADER = "control-plane.alpha.kubernetes.io/leader"
MAX_CAPACITY = 1000


class EndpointsMemo(Since, SliceOwners):
    """The change-log cursor, plus each Service's managed slices, so that a changed slice names
    the Service whose Endpoints to recompute and a pass reads only the slices it needs."""

    def __init__(self) -> None:
        Since.__init__(self)
        SliceOwners.__init__(self)


def reconcile_endpoints(snap: Snapshot, memo: EndpointsMemo | None = None, slice_ops: list[Op] = ()) -> list[Op]:  # type: ignore[assignment]
    """One sync of the Endpoints of every Service (with a memo: of the Services what changed
    concerns); no Ops when all are as they should be. `slice_ops`: the EndpointSlice writes of
    this same pass, read as if done, so that a readiness change reaches the Endpoints in the pass
    that writes the slices. An Endpoints is deleted when its Service's deletion is seen
    (upstream's syncService on a missing Service), so only with a memo."""
    overlay: dict[NamespacedName, dict | None] = {}
    for op in slice_ops:
        if op.obj.get("kind") == "EndpointSlice":
            overlay[_ns_name(op.obj)] = None if op.verb == "delete" else op.obj
    changed = memo.changed(snap) if memo is not None else None
    index = memo if memo is not None else EndpointsMemo()
    if memo is not None:
        memo.cursor = None  # a pass that stops midway makes the next one look at everything
    services = snap.index("Service")
    if changed is None:
        index.slice_owner, index.slices_of = {}, {}
        for key, es in {**snap.index("EndpointSlice"), **overlay}.items():
            index.track(key, managed_owner(es) if es is not None else None)
        todo: set[NamespacedName] = set(services)
        # checkLeftoverEndpoints: at start, an Endpoints whose Service is gone (no lock) goes too
        deleted: set[NamespacedName] = {
            key for key, ep in snap.index("Endpoints").items() if key not in services and not _is_lock(ep)
        }
    else:
        todo, deleted = _concerned(snap, changed, index)
        for key, es in overlay.items():
            after = managed_owner(es) if es is not None else None
            todo.update(k for k in (index.track(key, after), after) if k is not None)
    ops: list[Op] = []
    for key in sorted(todo | deleted):
        current = snap.get("Endpoints", *key)
        svc = services.get(key)
        if svc is None:
            if key in deleted and current is not None:
                ops.append(Op("delete", current))
            continue
        slices = [es for k in sorted(index.slices_of.get(key, ()))
                  if (es := overlay[k] if k in overlay else snap.get("EndpointSlice", *k))
                  and managed_owner(es) == key]  # a create of a taken name may have been refused  # fmt: skip
        op = sync_service(svc, slices, current)
        if op is not None:
            ops.append(op)
    if memo is not None:
        memo.done(snap, (("Service", *_ns_name(op.obj)) for op in ops))
    return ops


def _concerned(snap: Snapshot, changed: set[Key], memo: EndpointsMemo) -> tuple[set[NamespacedName], set[NamespacedName]]:
    """The Services whose Endpoints a change can concern, and the deleted ones among them."""
    todo: set[NamespacedName] = set()
    deleted: set[NamespacedName] = set()
    for kind, ns, name in changed:
        if kind in ("Service", "Endpoints"):
            todo.add((ns, name))
            if kind == "Service" and snap.get("Service", ns, name) is None:
                deleted.add((ns, name))
        elif kind == "EndpointSlice":
            es = snap.get("EndpointSlice", ns, name)
            after = managed_owner(es) if es is not None else None
            before = memo.track((ns, name), after)
            todo.update(k for k in (before, after) if k is not None)
    return todo, deleted


def _ns_name(obj: dict) -> NamespacedName:
    return (meta(obj).get("namespace", "") or "", meta(obj)["name"])


def _is_lock(ep: dict) -> bool:
    return ANNOTATION_LEADER in (meta(ep).get("annotations") or {})


def primary_family(svc: dict) -> str:
    """podToEndpointAddressForService's family: ipFamilies[0], else the clusterIP's, else IPv4."""
    spec = svc.get("spec") or {}
    families = spec.get("ipFamilies") or []
    if families:
        return families[0]
    cluster_ip = spec.get("clusterIP") or ""
    return "IPv6" if cluster_ip not in ("", "None") and ":" in cluster_ip else "IPv4"


def sync_service(svc: dict, slices: list[dict], current: dict | None) -> Op | None:
    """The write that makes the Service's Endpoints `current` (None: absent) what its slices say."""
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName" or spec.get("selector") is None:
        return None
    subsets = subsets_from_slices(svc, slices)
    truncated = truncate(subsets)
    labels = dict(labels_of(svc))
    if (spec.get("clusterIP") or "") in ("", "None"):
        labels[LABEL_HEADLESS] = ""
    else:
        labels.pop(LABEL_HEADLESS, None)
    m = meta(svc)
    if current is None:
        annotations = {ANNOTATION_OVER_CAPACITY: "truncated"} if truncated else {}
        new_meta: dict = {"name": m["name"], "namespace": m.get("namespace", "default"), "labels": labels}
        if annotations:
            new_meta["annotations"] = annotations
        return Op("create", {"apiVersion": "v1", "kind": "Endpoints", "metadata": new_meta, "subsets": subsets})
    annotations = dict(meta(current).get("annotations") or {})
    if truncated:
        annotations[ANNOTATION_OVER_CAPACITY] = "truncated"
    else:
        annotations.pop(ANNOTATION_OVER_CAPACITY, None)
    cur_meta = meta(current)
    if (
        (current.get("subsets") or []) == subsets
        and (cur_meta.get("labels") or {}) == labels
        and (cur_meta.get("annotations") or {}) == annotations
    ):
        return None
    new_meta = {**cur_meta, "labels": labels}
    if annotations:
        new_meta["annotations"] = annotations
    else:
        new_meta.pop("annotations", None)
    return Op("update", {**current, "metadata": new_meta, "subsets": subsets})


def subsets_from_slices(svc: dict, slices: list[dict]) -> list[dict]:
    """The subsets for the endpoints of the Service's slices of its primary family: one per
    endpoint, as addEndpointSubset makes them, then repacked (RepackSubsets)."""
    spec = svc.get("spec") or {}
    family = primary_family(svc)
    headless_without_ports = not spec.get("ports") and spec.get("clusterIP") == "None"
    tolerate = bool(spec.get("publishNotReadyAddresses"))
    raw: list[dict] = []
    for es in slices:
        if es.get("addressType") != family:
            continue
        ports = [p for p in es.get("ports") or [] if p.get("port") is not None]
        if not ports and not headless_without_ports:
            continue
        for ep in es.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            if cond.get("terminating") and not tolerate:
                continue  # ShouldPodBeInEndpoints
            addrs = ep.get("addresses") or []
            if not addrs:
                continue
            field = "notReadyAddresses" if cond.get("ready") is False else "addresses"
            raw.append({field: [_address(ep, addrs[0])], "ports": ports})
    return repacked(raw)


def _address(ep: dict, ip: str) -> dict:
    out: dict = {"ip": ip}
    if ep.get("hostname"):
        out["hostname"] = ep["hostname"]
    if ep.get("nodeName"):
        out["nodeName"] = ep["nodeName"]
    ref = ep.get("targetRef")
    if ref:
        out["targetRef"] = {k: ref[k] for k in ("kind", "namespace", "name", "uid") if ref.get(k)}
    return out


def truncate(subsets: list[dict]) -> bool:
    """truncateEndpoints: at most MAX_CAPACITY addresses, ready ones first, each subset keeping its
    share (rounded up, the last ones get what is left); True when something was dropped."""
    total_ready = sum(len(s.get("addresses", [])) for s in subsets)
    total_not_ready = sum(len(s.get("notReadyAddresses", [])) for s in subsets)
    if total_ready + total_not_ready <= MAX_CAPACITY:
        return False
    truncate_ready = total_ready > MAX_CAPACITY
    limit = MAX_CAPACITY if truncate_ready else MAX_CAPACITY - total_ready
    total = total_ready if truncate_ready else total_not_ready
    can_add = limit
    for s in subsets:
        field = "addresses" if truncate_ready else "notReadyAddresses"
        n = len(s.get(field, []))
        take = min(math.ceil(n / total * limit), can_add)
        if n > take:
            s[field] = s[field][:take]
        if not s.get(field):
            s.pop(field, None)
        if truncate_ready:
            s.pop("notReadyAddresses", None)
        can_add -= len(s.get(field, []))
    # a subset left with no address at all is not valid API (upstream would write it, and fail)
    subsets[:] = [s for s in subsets if s.get("addresses") or s.get("notReadyAddresses")]
    return True
