"""The EndpointSlice mirroring controller, level-triggered, as upstream's
(pkg/controller/endpointslicemirroring: endpointslicemirroring_controller.go, reconciler.go,
reconciler_helpers.go, utils.go).

Endpoints written by hand (or by anything but the Endpoints controller) are copied into
EndpointSlices, so that consumers reading only slices (kube-proxy, DNS) see them. An Endpoints is
mirrored when a Service of the same name exists without a selector, the Endpoints lacks the
skip-mirror label and is no leader-election lock; otherwise its mirrored slices are deleted.

The subsets are first repacked into their canonical form (RepackSubsets: addresses deduplicated by
IP and target UID, not-ready trumping ready, one subset per distinct set of addresses), then each
subset gives one slice per address family, keyed by its ports and address type, holding at most
`max_endpoints_per_subset` (1000) addresses of it, ready ones first; invalid IPs are skipped. The
first existing slice of a key is updated (its endpoints, labels and annotations rewritten as a whole)
when anything differs, extra ones are deleted, and a slice to create reuses the name of one of the
same address type about to be deleted.

Differences, deliberate: slice names are not random but a hash of the Endpoints (the name generator's
shape, `<name>-` and 5 characters), every choice is made in a stable order (upstream iterates Go maps
and sorts by hashes), an update whose content is already stored is not written, and no events are
recorded (upstream warns on invalid IPs and on addresses beyond the limit).
"""

from __future__ import annotations

import copy
import hashlib
import json

from kubewire.api.addresses import parse_ip_sloppy
from kubewire.api.endpoints import port_tuple, repack_subsets
from kubewire.api.names import name_is_dns_subdomain
from kubewire.controllers.endpointslice import LABEL_MANAGED_BY, LABEL_SERVICE_NAME
from kubewire.controllers.podutil import labels_of, meta
from kubewire.controllers.replicaset import ALPHANUMS, MAX_NAME_LENGTH, RANDOM_LENGTH
from kubewire.controllers.types import (
    Key,
    NamespacedName,
    Op,
    Since,
    SliceNames,
    SliceOwners,
    Snapshot,
    controller_ref,
)

CONTROLLER_NAME = "endpointslicemirroring-controller.k8s.io"
LABEL_SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"
# resourcelock.LeaderElectionRecordAnnotationKey: an Endpoints used as a lock is never mirrored
ANNOTATION_LEADER = "control-plane.alpha.kubernetes.io/leader"
ANNOTATION_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
ANNOTATION_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_ENDPOINTS_PER_SUBSET = 1000  # --mirroring-max-endpoints-per-subset
_DROPPED_ANNOTATIONS = (ANNOTATION_TRIGGER_TIME, ANNOTATION_LAST_APPLIED)
_RESERVED_LABELS = (LABEL_MANAGED_BY, LABEL_SERVICE_NAME)
_ADDRESS_TYPES = ("IPv4", "IPv6")

PortKey = str  # a set of ports, in any order
SliceKey = tuple[str, PortKey]  # (address type, ports)


class MirroringMemo(Since, SliceOwners):
    """The change-log cursor, plus the Endpoints each mirrored slice belongs to, so that a deleted or
    relabelled slice still names the Endpoints to look at again. Keep one per control loop; a plain
    Since also works, but then a pass scans every slice, and any slice written since the last pass
    (which may have been another Endpoints' before) makes it look at every Endpoints."""

    def __init__(self) -> None:
        Since.__init__(self)
        SliceOwners.__init__(self)

    def rebuild(self, snap: Snapshot) -> None:
        self.slice_owner, self.slices_of = {}, {}
        for key, es in snap.index("EndpointSlice").items():
            self.track(key, mirrored_for(es))


def mirrored_for(es: dict) -> NamespacedName | None:
    """The Endpoints a slice was mirrored for (endpointSlicesMirroredForService's label selector)."""
    labels = labels_of(es)
    name = labels.get(LABEL_SERVICE_NAME)
    if labels.get(LABEL_MANAGED_BY) != CONTROLLER_NAME or not name:
        return None  # an empty service-name names no Endpoints (endpointsControllerKey)
    return (meta(es).get("namespace", "") or "", name)


def mirror_endpoints(
    snap: Snapshot, memo: Since | None = None, max_endpoints_per_subset: int = MAX_ENDPOINTS_PER_SUBSET
) -> list[Op]:
    """One sync of every Endpoints' mirrored EndpointSlices; no Ops when all are as they should be.
    With a memo (the control loop's; best a MirroringMemo), only the Endpoints that what changed
    since its last pass concerns are looked at, and the Ops are those of a pass over every one."""
    if memo is None:
        return _full_pass(snap, max_endpoints_per_subset, None)
    changed = memo.changed(snap)
    memo.cursor = None  # a pass that stops midway leaves the memo half-updated: the next one rebuilds it
    tracking = memo if isinstance(memo, MirroringMemo) else None
    if changed is None:
        if tracking is not None:
            tracking.rebuild(snap)
        ops, pending = _full_pass_pending(snap, max_endpoints_per_subset, tracking)
        memo.done(snap, pending)
        return ops

    dirty: set[NamespacedName] = set()
    for kind, ns, name in changed:
        if kind in ("Endpoints", "Service"):
            dirty.add((ns, name))
        elif kind == "EndpointSlice":
            if tracking is None:  # whose it was (deleted, relabelled) is unknown: look at everything
                ops, pending = _full_pass_pending(snap, max_endpoints_per_subset, None)
                memo.done(snap, pending)
                return ops
            es = snap.get("EndpointSlice", ns, name)
            owner = mirrored_for(es) if es is not None else None
            before = tracking.track((ns, name), owner)
            dirty.update(k for k in (before, owner) if k is not None)
    mirrored = _SliceIndex(snap, tracking)
    ops, pending = _sync_all(snap, sorted(dirty), mirrored, max_endpoints_per_subset)
    memo.done(snap, pending)
    return ops


def _full_pass(snap: Snapshot, max_per_subset: int, tracking: MirroringMemo | None) -> list[Op]:
    return _full_pass_pending(snap, max_per_subset, tracking)[0]


def _full_pass_pending(
    snap: Snapshot, max_per_subset: int, tracking: MirroringMemo | None
) -> tuple[list[Op], list[Key]]:
    mirrored = _SliceIndex(snap, tracking)
    names = set(snap.index("Endpoints")) | mirrored.owners()
    return _sync_all(snap, sorted(names), mirrored, max_per_subset)


def _sync_all(
    snap: Snapshot, names: list[NamespacedName], mirrored: _SliceIndex, max_per_subset: int
) -> tuple[list[Op], list[Key]]:
    ops: list[Op] = []
    pending: list[Key] = []
    taken: dict[str, SliceNames] = {}
    for ns, name in names:
        endpoints = snap.get("Endpoints", ns, name)
        existing = mirrored.of((ns, name))
        if endpoints is None or not _should_mirror(endpoints, snap.get("Service", ns, name)):
            written = [Op("delete", es) for es in existing]  # deleteMirroredSlices
        else:
            names_in_ns = taken.setdefault(ns, SliceNames(snap, ns))
            written = _Reconciler(endpoints, max_per_subset, names_in_ns).run(existing)
        if written:
            ops += written
            pending.append(("Endpoints", ns, name))
    return ops, pending


def _should_mirror(endpoints: dict, service: dict | None) -> bool:
    """shouldMirror, and a Service of the same name without a selector."""
    if labels_of(endpoints).get(LABEL_SKIP_MIRROR) == "true":
        return False
    if ANNOTATION_LEADER in (meta(endpoints).get("annotations") or {}):
        return False
    return service is not None and (service.get("spec") or {}).get("selector") is None


class _SliceIndex:
    """The mirrored slices of each Endpoints: from the memo's tracking, or by scanning every slice."""

    def __init__(self, snap: Snapshot, tracking: MirroringMemo | None) -> None:
        self.snap, self.tracking = snap, tracking
        self.scanned: dict[NamespacedName, set[NamespacedName]] | None = None
        if tracking is None:
            self.scanned = {}
            for key, es in snap.index("EndpointSlice").items():
                owner = mirrored_for(es)
                if owner is not None:
                    self.scanned.setdefault(owner, set()).add(key)

    def _by_owner(self) -> dict[NamespacedName, set[NamespacedName]]:
        if self.scanned is not None:
            return self.scanned
        assert self.tracking is not None
        return self.tracking.slices_of

    def owners(self) -> set[NamespacedName]:
        return {k for k, v in self._by_owner().items() if v}

    def of(self, owner: NamespacedName) -> list[dict]:
        out = []
        for ns, name in sorted(self._by_owner().get(owner, ())):
            es = self.snap.get("EndpointSlice", ns, name)
            if es is not None:
                out.append(es)
        return out


# --- Endpoints to endpoints (RepackSubsets, utils.go) ---------------------------------------------


def port_key(ports: list[dict]) -> PortKey:
    """NewPortMapKey: the same ports in any order give the same key."""
    return json.dumps(sorted(json.dumps(port_tuple(p)) for p in ports or []))


def _slice_port(port: tuple[str, int | None, str, str | None]) -> dict:
    """epPortsToEpsPorts: name, port and protocol always, appProtocol when set."""
    name, number, protocol, app_protocol = port
    out: dict = {"name": name, "port": number, "protocol": protocol}
    if app_protocol is not None:
        out["appProtocol"] = app_protocol
    return out


def address_to_endpoint(addr: dict, ready: bool) -> tuple[dict, str] | None:
    """addressToEndpoint: the endpoint and its address type, or None for an invalid IP. Only the
    ready condition is set (serving and terminating are left unset)."""
    ip = parse_ip_sloppy(addr.get("ip"))
    if ip is None:
        return None
    ep: dict = {"addresses": [str(ip)], "conditions": {"ready": ready}}
    if addr.get("targetRef") is not None:
        ep["targetRef"] = copy.deepcopy(addr["targetRef"])
    if addr.get("nodeName") is not None:
        ep["nodeName"] = addr["nodeName"]
    if addr.get("hostname"):
        ep["hostname"] = addr["hostname"]
    return ep, "IPv4" if ip.version == 4 else "IPv6"


def _endpoint_hash(ep: dict) -> tuple:
    """hashEndpoint: addresses, hostname and the target's namespace and name identify an endpoint."""
    ref = ep.get("targetRef") or {}
    return (tuple(sorted(ep.get("addresses") or [])), ep.get("hostname") or "",
            ref.get("namespace") or "", ref.get("name") or "")  # fmt: skip


def _equal_beyond_hash(a: dict, b: dict) -> bool:
    """EndpointsEqualBeyondHash: node, zone, the three conditions (unset differs from false) and the
    target apart from its resourceVersion."""
    if a.get("nodeName") != b.get("nodeName") or a.get("zone") != b.get("zone"):
        return False
    ca, cb = a.get("conditions") or {}, b.get("conditions") or {}
    if any(ca.get(k) != cb.get(k) for k in ("ready", "serving", "terminating")):
        return False
    return _reference(a.get("targetRef")) == _reference(b.get("targetRef"))


def _reference(ref: dict | None) -> dict:
    """An object reference as semantic equality sees it, without its resourceVersion."""
    return {k: v for k, v in (ref or {}).items() if k != "resourceVersion" and v not in (None, "")}


# --- one Endpoints (reconciler.go) ----------------------------------------------------------------


class _Reconciler:
    def __init__(self, endpoints: dict, max_per_subset: int, taken: SliceNames) -> None:
        m = meta(endpoints)
        self.endpoints = endpoints
        self.ns = m.get("namespace", "") or ""
        self.name = m["name"]
        self.uid = m.get("uid", "")
        self.labels = dict(labels_of(endpoints))
        annotations = m.get("annotations") or {}
        self.annotations = {k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS}
        self.max = max_per_subset
        self.taken = taken

    def desired(self) -> dict[SliceKey, tuple[list[dict], dict[tuple, dict]]]:
        """The ports and endpoints wanted per (address type, ports), in a stable order; a key with
        no endpoints means its slices go."""
        out: dict[SliceKey, tuple[list[dict], dict[tuple, dict]]] = {}
        for ports, ready, not_ready in repack_subsets(self.endpoints.get("subsets") or []):
            slice_ports = [_slice_port(p) for p in ports]
            pk = port_key(slice_ports)
            for address_type in _ADDRESS_TYPES:  # initPorts
                out.setdefault((address_type, pk), (slice_ports, {}))
            added = 0
            for addresses, is_ready in ((ready, True), (not_ready, False)):
                for addr in addresses:
                    if added >= self.max:
                        break  # the rest of the subset is skipped (upstream: an event)
                    converted = address_to_endpoint(addr, is_ready)
                    if converted is None:
                        continue  # not an IP (upstream: an event)
                    ep, address_type = converted
                    out[(address_type, pk)][1][_endpoint_hash(ep)] = ep
                    added += 1
        return out

    def run(self, existing: list[dict]) -> list[Op]:
        existing_by_key: dict[SliceKey, list[dict]] = {}
        for es in existing:
            key = (es.get("addressType") or "", port_key(es.get("ports") or []))
            existing_by_key.setdefault(key, []).append(es)
        to_create: list[dict] = []
        to_update: list[tuple[dict, dict]] = []  # (new, the slice it replaces)
        to_delete: list[dict] = []
        desired = self.desired()
        for key, (ports, endpoints) in desired.items():
            c, u, d = self._by_port_mapping(existing_by_key.get(key, []), endpoints, ports, key[0])
            to_create += c
            to_update += u
            to_delete += d
        for key in sorted(existing_by_key):
            if key not in desired:
                to_delete += existing_by_key[key]
        return self._finalize(to_create, to_update, to_delete)

    def _by_port_mapping(
        self, existing: list[dict], endpoints: dict[tuple, dict], ports: list[dict], address_type: str
    ) -> tuple[list[dict], list[tuple[dict, dict]], list[dict]]:
        """reconcileByPortMapping: one slice per key; the first existing one is kept (rewritten if
        its endpoints, labels or annotations differ), any others deleted."""
        if not endpoints:
            return [], [], list(existing)
        to_delete = list(existing[1:])
        if existing and self._in_sync(existing[0], endpoints):
            return [], [], to_delete
        new = self._new_slice(ports, address_type)
        new["endpoints"] = [copy.deepcopy(ep) for ep in list(endpoints.values())[: self.max]]
        if existing:
            return [], [(new, existing[0])], to_delete
        return [new], [], to_delete

    def _in_sync(self, es: dict, endpoints: dict[tuple, dict]) -> bool:
        """totalChanges finds nothing to add, update or remove, and the labels (beyond the two the
        controller sets) and annotations are the Endpoints' ones."""
        matches = 0
        for ep in es.get("endpoints") or []:
            want = endpoints.get(_endpoint_hash(ep))
            if want is None or not _equal_beyond_hash(want, ep):
                return False
            matches += 1
        if matches != len(endpoints):
            return False
        labels = {k: v for k, v in labels_of(es).items() if k not in _RESERVED_LABELS}
        return labels == self.labels and (meta(es).get("annotations") or {}) == self.annotations

    def _new_slice(self, ports: list[dict], address_type: str) -> dict:
        """newEndpointSlice: the Endpoints' labels (service-name and managed-by overridden) and
        annotations (but the trigger time and kubectl's last-applied), owned by the Endpoints."""
        labels = dict(self.labels)
        labels[LABEL_SERVICE_NAME] = self.name
        labels[LABEL_MANAGED_BY] = CONTROLLER_NAME
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "namespace": self.ns,
                "labels": labels,
                "annotations": dict(self.annotations),
                "ownerReferences": [controller_ref("v1", "Endpoints", self.name, self.uid)],
            },
            "addressType": address_type,
            "endpoints": [],
            "ports": copy.deepcopy(ports),
        }

    def _finalize(
        self, to_create: list[dict], to_update: list[tuple[dict, dict]], to_delete: list[dict]
    ) -> list[Op]:
        # recycleSlices: a slice to create takes the place of one of its address type to delete.
        for address_type in _ADDRESS_TYPES:
            creates = [es for es in to_create if es["addressType"] == address_type]
            deletes = [es for es in to_delete if es.get("addressType") == address_type]
            for new, old in zip(creates, deletes, strict=False):
                to_create.remove(new)
                to_delete.remove(old)
                to_update.append((new, old))
        ops: list[Op] = []
        if not meta(self.endpoints).get("deletionTimestamp"):
            for es in to_create:
                m = es["metadata"]
                prefix = self._prefix()
                es["metadata"] = {"name": self._generate_name(prefix), "generateName": prefix, **m}
                ops.append(Op("create", es))
        for new, old in to_update:
            m = copy.deepcopy(meta(old))
            for field in ("labels", "annotations", "ownerReferences"):
                m[field] = new["metadata"][field]
            new["metadata"] = m
            if _content(new) != _content(old):
                ops.append(Op("update", new))
        ops += [Op("delete", es) for es in to_delete]
        return ops

    def _prefix(self) -> str:
        """getEndpointSlicePrefix: `<name>-` unless that is no valid name prefix."""
        prefix = f"{self.name}-"
        return self.name if name_is_dns_subdomain(prefix, True) else prefix

    def _generate_name(self, prefix: str) -> str:
        """A generateName-like name whose suffix is derived from the Endpoints, not random."""
        n = 0
        while True:
            seed = f"{CONTROLLER_NAME}/{self.ns}/{self.name}/{self.uid}/{n}".encode()
            digest = hashlib.sha256(seed).digest()
            suffix = "".join(ALPHANUMS[b % len(ALPHANUMS)] for b in digest[:RANDOM_LENGTH])
            name = prefix[: MAX_NAME_LENGTH - RANDOM_LENGTH] + suffix
            if name not in self.taken:
                self.taken.add(name)
                return name
            n += 1


def _content(es: dict) -> dict:
    """What an update would change: everything but the resourceVersion; no labels or annotations is
    the same as empty ones."""
    m = {k: v for k, v in meta(es).items() if k != "resourceVersion"}
    m["labels"] = m.get("labels") or {}
    m["annotations"] = m.get("annotations") or {}
    return {**es, "metadata": m}
