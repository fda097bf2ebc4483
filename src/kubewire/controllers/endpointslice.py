"""The EndpointSlice controller, level-triggered, as upstream's (pkg/controller/endpointslice and
staging/src/k8s.io/endpointslice: reconciler.go, utils.go, topologycache, trafficdist).

For every Service with a selector (ExternalName and selector-less Services are left to their owners):
the selected pods that have an IP and are not finished become endpoints, grouped by the set of ports
they resolve (a named targetPort can resolve differently per pod), at most 100 per slice. Existing
slices are updated in place where possible, emptied ones deleted, and a Service with no endpoints
keeps one empty placeholder slice, so that consumers can tell "no endpoints" from "not synced yet".
Zone hints follow the topology-mode annotation (proportional to each zone's allocatable CPU) or
spec.trafficDistribution.

Upstream picks from Go maps and random name suffixes; here every choice is made in a stable order and
slice names come from a hash of the Service, so a given cluster state always yields the same writes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math

from kubewire.api.addresses import parse_ip_sloppy as parse_ip
from kubewire.api.names import name_is_dns_subdomain
from kubewire.controllers.podutil import (
    LabelIndex,
    get_condition,
    is_pod_ready,
    is_terminating,
    labels_of,
    map_selector_matches,
    meta,
    milli_value,
    pod_phase,
)
from kubewire.controllers.replicaset import ALPHANUMS
from kubewire.controllers.types import Cursor, Op, SliceNames, SliceOwners, Snapshot, controller_ref

CONTROLLER_NAME = "endpointslice-controller.k8s.io"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_HEADLESS = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"
ANNOTATION_TOPOLOGY_MODE = "service.kubernetes.io/topology-mode"
ANNOTATION_TOPOLOGY_AWARE_HINTS = "service.kubernetes.io/topology-aware-hints"
MAX_ENDPOINTS_PER_SLICE = 100
OVERLOAD_THRESHOLD = 0.2  # topologycache: the most any endpoint may be overloaded by zone hints
CLOSE_TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameZone", "PreferSameNode")
_RESERVED_LABELS = (LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS)
_EXCLUDED_NODE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


NamespacedName = tuple[str, str]
_KINDS = ("Service", "Pod", "EndpointSlice", "Node")


class EndpointSliceMemo(SliceOwners):
    """What the controller remembers between passes, so that a pass costs what changed.

    * In sync: the Services a pass found in sync, with the very objects it found them in sync
      with. Snapshot objects are shared between snapshots and never modified (the kernel tests
      check it: KUBEWIRE_VERIFY_SNAPSHOTS), and a Service's sync is a function of its own object,
      the pods it selects, its slices and the nodes; so a Service seen again with the same objects
      wants no change.
    * Which Services a change can concern: the managed slices of each Service, the Services by
      selector pair, and each pod's labels. With the snapshot's change log (a SnapshotCache's
      snapshots, as the control loop's store makes them) a pass reconciles only the Services whose
      object, slices or selected pods (before or after the change) changed, and those whose last
      reconcile wrote something (retried until in sync). A node change, or a snapshot that cannot
      say what changed, makes a full pass, which rebuilds all of this.

    Keep one per control loop; a pass without one reconciles every Service."""

    def __init__(self) -> None:
        super().__init__()
        self.services: dict[NamespacedName, tuple[dict, list[dict], list[dict]]] = {}
        self.nodes: list[dict] = []
        self.max_per_slice = 0
        self.cursor: Cursor | None = None
        self.pending: set[NamespacedName] = set()
        self.selectors: dict[NamespacedName, dict[str, str]] = {}
        self.by_pair: dict[tuple[str, str, str], set[NamespacedName]] = {}
        self.select_all: dict[str, set[NamespacedName]] = {}
        self.pod_labels: dict[NamespacedName, dict[str, str]] = {}

    def check_nodes(self, nodes: list[dict], max_per_slice: int) -> None:
        """Forget the Services in sync when a node (zones, CPU for hints) or the slice size changed."""
        if max_per_slice != self.max_per_slice or not _same_objects(nodes, self.nodes):
            self.services.clear()
            self.nodes, self.max_per_slice = nodes, max_per_slice

    def rebuild(self, services: dict[NamespacedName, dict], managed: dict[NamespacedName, list[dict]],
                pods: list[dict]) -> None:  # fmt: skip
        self.slices_of, self.slice_owner = {}, {}
        for owner, slices in managed.items():
            for es in slices:
                self.track_slice((meta(es).get("namespace", ""), meta(es)["name"]), owner)
        self.selectors, self.by_pair, self.select_all = {}, {}, {}
        for key, svc in services.items():
            self.index_service(key, svc)
        self.pod_labels = {(meta(p).get("namespace", ""), meta(p)["name"]): labels_of(p) for p in pods}
        for key in [k for k in self.services if k not in services]:
            del self.services[key]

    track_slice = SliceOwners.track

    def index_service(self, key: NamespacedName, svc: dict | None) -> None:
        """Index (or, for None, forget) a Service's selector."""
        old = self.selectors.pop(key, None)
        if old is not None:
            if old:
                for k, v in old.items():
                    self.by_pair[(key[0], k, v)].discard(key)
            else:
                self.select_all[key[0]].discard(key)
        spec = (svc or {}).get("spec") or {}
        selector = spec.get("selector")
        if svc is None or spec.get("type") == "ExternalName" or selector is None:
            return
        self.selectors[key] = selector
        if selector:
            for k, v in selector.items():
                self.by_pair.setdefault((key[0], k, v), set()).add(key)
        else:
            self.select_all.setdefault(key[0], set()).add(key)

    def selecting(self, namespace: str, labels: dict[str, str]) -> set[NamespacedName]:
        """The Services (with a selector) in the namespace that select these labels."""
        out = set(self.select_all.get(namespace, ()))
        for k, v in labels.items():
            for key in self.by_pair.get((namespace, k, v), ()):
                if key not in out and map_selector_matches(self.selectors[key], labels):
                    out.add(key)
        return out


def _same_objects(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def managed_owner(es: dict) -> NamespacedName | None:
    labels = labels_of(es)
    if labels.get(LABEL_MANAGED_BY) == CONTROLLER_NAME and labels.get(LABEL_SERVICE_NAME):
        return (meta(es).get("namespace", ""), labels[LABEL_SERVICE_NAME])
    return None


def reconcile_endpointslices(
    snap: Snapshot, max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE, memo: EndpointSliceMemo | None = None
) -> list[Op]:
    """One sync of every Service's EndpointSlices; no Ops when everything is already as it should be.
    With a memo, only the Services that what changed can concern are reconciled (see
    EndpointSliceMemo); the Ops are those of a pass over every Service."""
    if memo is None:
        return _full_pass(snap, max_endpoints_per_slice, None)
    since, memo.cursor = memo.cursor, None  # unknown until this pass is done
    changes = snap.changes(since, _KINDS) if since is not None else None
    if changes is None or changes["Node"] or max_endpoints_per_slice != memo.max_per_slice:
        ops = _full_pass(snap, max_endpoints_per_slice, memo)
    else:
        ops = _changed_pass(snap, max_endpoints_per_slice, memo, changes)
    memo.cursor = snap.cursor
    return ops


def _full_pass(snap: Snapshot, max_endpoints_per_slice: int, memo: EndpointSliceMemo | None) -> list[Op]:
    node_list = snap.list("Node")
    nodes = {meta(n)["name"]: n for n in node_list}
    if memo is not None:
        memo.check_nodes(node_list, max_endpoints_per_slice)
    ratios = zone_cpu_ratios(list(nodes.values()))
    services = {(meta(s).get("namespace", ""), meta(s)["name"]): s for s in snap.list("Service")}
    all_pods = snap.list("Pod")
    pods_by_ns: dict[str, list[dict]] = {}
    for pod in all_pods:
        pods_by_ns.setdefault(meta(pod).get("namespace", ""), []).append(pod)
    index = {ns: LabelIndex(pods) for ns, pods in pods_by_ns.items()}
    managed: dict[NamespacedName, list[dict]] = {}
    taken: dict[str, set[str]] = {}
    for es in snap.list("EndpointSlice"):
        ns = meta(es).get("namespace", "")
        taken.setdefault(ns, set()).add(meta(es)["name"])
        owner = managed_owner(es)
        if owner is not None:
            managed.setdefault(owner, []).append(es)
    if memo is not None:
        memo.rebuild(services, managed, all_pods)
        memo.pending = set()

    ops: list[Op] = []
    for key, svc in services.items():
        ops += _reconcile(key, svc, index.get(key[0]), managed.get(key, []), nodes, ratios,
                          max_endpoints_per_slice, taken.setdefault(key[0], set()), memo)  # fmt: skip
    # The garbage collector removes them too (they are owned); doing it here needs no second pass.
    for key, slices in sorted(managed.items()):
        if key not in services:
            ops += [Op("delete", es) for es in slices]
            if memo is not None:
                memo.pending.add(key)  # until they are gone (a lost delete shows in no change log)
    return ops


def _changed_pass(snap: Snapshot, max_endpoints_per_slice: int, memo: EndpointSliceMemo,
                  changes: dict[str, dict[NamespacedName, dict | None]]) -> list[Op]:  # fmt: skip
    dirty = set(memo.pending)
    memo.pending = set()
    for key, svc in changes["Service"].items():
        dirty.add(key)
        memo.index_service(key, svc)
    for key, es in changes["EndpointSlice"].items():
        owner = managed_owner(es) if es is not None else None
        before = memo.track_slice(key, owner)
        dirty.update(k for k in (before, owner) if k is not None)
    for key, pod in changes["Pod"].items():
        before = memo.pod_labels.pop(key, None)
        if before is not None:
            dirty |= memo.selecting(key[0], before)
        if pod is not None:
            memo.pod_labels[key] = labels = labels_of(pod)
            dirty |= memo.selecting(key[0], labels)
    if not dirty:
        return []

    nodes = {meta(n)["name"]: n for n in memo.nodes}
    ratios = zone_cpu_ratios(memo.nodes)
    services = snap.index("Service")
    indexes: dict[str, LabelIndex] = {}
    taken: dict[str, SliceNames] = {}
    ops: list[Op] = []
    orphans: list[Op] = []
    for key in sorted(dirty):
        ns = key[0]
        existing = [es for k in sorted(memo.slices_of.get(key, ())) if (es := snap.get("EndpointSlice", *k))]
        svc = services.get(key)
        if svc is None:
            memo.services.pop(key, None)
            if existing:
                orphans += [Op("delete", es) for es in existing]
                memo.pending.add(key)  # until they are gone
            continue
        if ns not in indexes:
            indexes[ns] = LabelIndex(snap.list("Pod", ns))
            taken[ns] = SliceNames(snap, ns)
        ops += _reconcile(key, svc, indexes[ns], existing, nodes, ratios, max_endpoints_per_slice, taken[ns], memo)
    return ops + orphans


def _reconcile(key: NamespacedName, svc: dict, pods_index: LabelIndex | None, existing: list[dict],
               nodes: dict[str, dict], ratios: dict[str, float] | None, max_per_slice: int,
               taken: set[str] | SliceNames,
               memo: EndpointSliceMemo | None) -> list[Op]:  # fmt: skip
    """One Service (skipped when in sync with the same objects as before)."""
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName" or spec.get("selector") is None:
        return []
    pods = pods_index.select(spec["selector"]) if pods_index is not None else []
    if memo is not None:
        seen = memo.services.get(key)
        if seen is not None and seen[0] is svc and _same_objects(seen[1], pods) and _same_objects(seen[2], existing):
            return []
    ops = _ServiceSync(svc, nodes, ratios, max_per_slice, taken).run(pods, existing)
    if memo is not None:
        if ops:
            memo.services.pop(key, None)
            memo.pending.add(key)
        else:
            memo.services[key] = (svc, pods, existing)
    return ops


# --- pods to endpoints (utils.go) -------------------------------------------------------------------


def find_port(pod: dict, service_port: dict) -> int | None:
    """FindPort: a number is used as is; a name is looked up in the pod's containers (and sidecars)
    for the same protocol."""
    target = service_port.get("targetPort")
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if not isinstance(target, str):
        return None
    spec = pod.get("spec") or {}
    protocol = service_port.get("protocol") or "TCP"
    sidecars = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    for container in list(spec.get("containers") or []) + sidecars:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return port.get("containerPort")
    return None


def endpoint_ports(svc: dict, pod: dict) -> list[dict]:
    """getEndpointPorts: the ports this pod serves; a port whose name it lacks is left out."""
    spec = svc.get("spec") or {}
    out = []
    for sp in spec.get("ports") or []:
        number = find_port(pod, sp)
        if number is None:
            continue
        port = {"name": sp.get("name") or "", "protocol": sp.get("protocol") or "TCP", "port": number}
        if sp.get("appProtocol") is not None:
            port["appProtocol"] = sp["appProtocol"]
        out.append(port)
    return out


def port_map_key(ports: list[dict]) -> str:
    """NewPortMapKey: the same ports in any order group together."""
    return json.dumps(sorted(json.dumps(p, sort_keys=True) for p in ports or []))


def should_pod_be_in_endpoints(pod: dict) -> bool:
    """ShouldPodBeInEndpoints(pod, includeTerminating=true)."""
    status = pod.get("status") or {}
    if pod_phase(pod) in ("Succeeded", "Failed"):
        return False
    return bool(status.get("podIP") or status.get("podIPs"))


def _pod_addresses(pod: dict, address_type: str) -> list[str]:
    status = pod.get("status") or {}
    entries = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    out = []
    for entry in entries:
        ip = parse_ip((entry or {}).get("ip"))
        if ip is not None and (ip.version == 6) == (address_type == "IPv6"):
            out.append(str(ip))
    return out


def pod_to_endpoint(pod: dict, node: dict | None, svc: dict, address_type: str) -> dict:
    """podToEndpoint: a terminating pod stays as ready=false, serving=its readiness,
    terminating=true; publishNotReadyAddresses makes every endpoint ready."""
    serving = is_pod_ready(pod)
    terminating = is_terminating(pod)
    spec = svc.get("spec") or {}
    ready = bool(spec.get("publishNotReadyAddresses")) or (serving and not terminating)
    m = meta(pod)
    ep: dict = {
        "addresses": _pod_addresses(pod, address_type),
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
    }
    pod_spec = pod.get("spec") or {}
    same_ns = m.get("namespace", "") == meta(svc).get("namespace", "")
    if pod_spec.get("hostname") and pod_spec.get("subdomain") == meta(svc)["name"] and same_ns:
        ep["hostname"] = pod_spec["hostname"]
    ep["targetRef"] = {
        "kind": "Pod",
        "namespace": m.get("namespace", ""),
        "name": m["name"],
        "uid": m.get("uid", ""),
    }
    if pod_spec.get("nodeName"):
        ep["nodeName"] = pod_spec["nodeName"]
    zone = labels_of(node).get(ZONE_LABEL) if node is not None else None
    if zone:
        ep["zone"] = zone
    return ep


def _endpoint_hash(ep: dict) -> tuple:
    """hashEndpoint: addresses, hostname and the target pod identify an endpoint."""
    ref = ep.get("targetRef") or {}
    return (
        tuple(sorted(ep.get("addresses") or [])),
        ep.get("hostname") or "",
        ref.get("namespace"),
        ref.get("name"),
    )


def _equal_beyond_hash(a: dict, b: dict) -> bool:
    """EndpointsEqualBeyondHash (hints are deliberately not compared)."""
    ca, cb = a.get("conditions") or {}, b.get("conditions") or {}
    if any(ca.get(k) != cb.get(k) for k in ("ready", "serving", "terminating")):
        return False
    if a.get("nodeName") != b.get("nodeName") or a.get("zone") != b.get("zone"):
        return False
    ra = {k: v for k, v in (a.get("targetRef") or {}).items() if k != "resourceVersion"}
    rb = {k: v for k, v in (b.get("targetRef") or {}).items() if k != "resourceVersion"}
    return ra == rb


def _ready(ep: dict) -> bool:
    return (ep.get("conditions") or {}).get("ready") is True


def hints_enabled(annotations: dict[str, str]) -> bool:
    """The deprecated topology-aware-hints annotation wins over topology-mode when both are set."""
    value = annotations.get(ANNOTATION_TOPOLOGY_AWARE_HINTS, annotations.get(ANNOTATION_TOPOLOGY_MODE))
    return value in ("Auto", "auto")


def address_types(svc: dict) -> list[str]:
    """getAddressTypesForService."""
    spec = svc.get("spec") or {}
    out = sorted({f for f in spec.get("ipFamilies") or [] if f in ("IPv4", "IPv6")})
    if out:
        return out
    cluster_ip = spec.get("clusterIP") or ""
    if cluster_ip and cluster_ip != "None":
        return ["IPv6" if ":" in cluster_ip else "IPv4"]
    return ["IPv4", "IPv6"]


# --- topology hints (topologycache) ---------------------------------------------------------------


def _node_ready(node: dict) -> bool:
    cond = get_condition(node, "Ready")
    return cond is not None and cond.get("status") == "True"


def zone_cpu_ratios(nodes: list[dict]) -> dict[str, float] | None:
    """TopologyCache.SetNodes: each zone's share of the ready workers' allocatable CPU, or None when
    any of them lacks a zone or CPU, or fewer than two zones remain."""
    cpu_by_zone: dict[str, int] = {}
    for node in sorted(nodes, key=lambda n: meta(n)["name"]):
        labels = labels_of(node)
        if any(k in labels for k in _EXCLUDED_NODE_LABELS) or not _node_ready(node):
            continue
        cpu = milli_value(((node.get("status") or {}).get("allocatable") or {}).get("cpu"))
        zone = labels.get(ZONE_LABEL)
        if not zone or cpu == 0:
            return None
        cpu_by_zone[zone] = cpu_by_zone.get(zone, 0) + cpu
    total = sum(cpu_by_zone.values())
    if total == 0 or len(cpu_by_zone) < 2:
        return None
    return {zone: cpu / total for zone, cpu in cpu_by_zone.items()}


def get_allocations(
    ratios: dict[str, float] | None, endpoints: int
) -> dict[str, tuple[int, int, float]] | None:
    """getAllocations: (minimum, maximum, desired) endpoints per zone, or None when no allocation
    keeps every endpoint below the overload threshold."""
    if ratios is None or len(ratios) < 2 or len(ratios) > endpoints:
        return None
    remaining, min_total = endpoints, 0
    partial: dict[str, tuple[int, float]] = {}
    for zone, ratio in sorted(ratios.items()):
        desired = ratio * endpoints
        minimum = math.ceil(desired * (1 / (1 + OVERLOAD_THRESHOLD)))
        partial[zone] = (minimum, max(desired, float(minimum)))
        min_total += minimum
        remaining -= minimum
        if remaining < 0:
            return None
    return {z: (mn, mn + endpoints - min_total, d) for z, (mn, d) in partial.items()}


def _hints_by_zone(
    slice_: dict, allocated: dict[str, int], allocations: dict[str, tuple[int, int, float]]
) -> dict[str, int] | None:
    """getHintsByZone: None when the slice's hints are missing, stale or would overload a zone."""
    counts: dict[str, int] = {}
    for ep in slice_.get("endpoints") or []:
        if not _ready(ep):
            continue
        zones = ((ep.get("hints") or {}).get("forZones")) or []
        if not zones:
            return None
        for z in zones:
            name = z.get("name")
            if name not in allocations:
                return None
            counts[name] = counts.get(name, 0) + 1
    for zone, n in counts.items():
        if n + allocated.get(zone, 0) > allocations[zone][1]:
            return None
    return counts


def _most(values: dict[str, float]) -> tuple[str, float]:
    zone, most = "", 0.0
    for z, n in sorted(values.items()):
        if n > most:
            zone, most = z, n
    return zone, most


def _giving_and_receiving(
    allocations: dict[str, tuple[int, int, float]], allocated: dict[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    giving_f: dict[str, float] = {}
    receiving_f: dict[str, float] = {}
    for zone, (_, _, desired) in allocations.items():
        have = allocated.get(zone, 0)
        if have > desired:
            giving_f[zone] = have - desired
        elif have < desired:
            receiving_f[zone] = desired - have
    giving: dict[str, int] = {}
    receiving: dict[str, int] = {}
    while True:
        gz, give = _most(giving_f)
        rz, receive = _most(receiving_f)
        if not gz or not rz or (give < 1.0 and receive < 1.0) or give < 0.5 or receive < 0.5:
            break
        giving[gz] = giving.get(gz, 0) + 1
        giving_f[gz] -= 1
        receiving[rz] = receiving.get(rz, 0) + 1
        receiving_f[rz] -= 1
    return giving, receiving


def _redistribute(slices: list[dict], giving: dict[str, int], receiving: dict[str, int]) -> dict[str, int]:
    changes: dict[str, int] = {}
    for slice_ in slices:
        for ep in slice_["endpoints"]:
            if not _ready(ep):
                continue
            if not giving or not receiving:
                return changes
            zone = ep.get("zone")
            if not zone or giving.get(zone, 0) <= 0:
                continue
            for target in sorted(receiving):
                if receiving[target] > 0:
                    ep["hints"] = {"forZones": [{"name": target}]}
                    giving[zone] -= 1
                    if not giving[zone]:
                        del giving[zone]
                    receiving[target] -= 1
                    if not receiving[target]:
                        del receiving[target]
                    changes[target] = changes.get(target, 0) + 1
                    changes[zone] = changes.get(zone, 0) - 1
                    break
    return changes


# --- one Service ----------------------------------------------------------------------------------


class _ServiceSync:
    """Reconciler.Reconcile for one Service; slices are plain dicts, new ones have no name yet."""

    def __init__(
        self,
        svc: dict,
        nodes: dict[str, dict],
        ratios: dict[str, float] | None,
        max_per_slice: int,
        taken: set[str] | SliceNames,
    ) -> None:
        self.svc = svc
        self.nodes = nodes
        self.ratios = ratios
        self.max = max_per_slice
        self.taken = taken
        self.ns = meta(svc).get("namespace", "")
        self.name = meta(svc)["name"]
        self.uid = meta(svc).get("uid", "")

    def run(self, pods: list[dict], existing: list[dict]) -> list[Op]:
        supported = address_types(self.svc)
        ops: list[Op] = []
        by_type: dict[str, list[dict]] = {}
        stale: list[dict] = []
        for es in existing:
            if es.get("addressType") in supported:
                by_type.setdefault(es["addressType"], []).append(es)
            else:
                stale.append(es)
        for address_type in supported:
            ops += self._by_address_type(pods, by_type.get(address_type, []), address_type)
        return ops + [Op("delete", es) for es in stale]

    # ownership and labels

    def owned(self, es: dict) -> bool:
        return any(
            r.get("uid") == self.uid and r.get("kind") == "Service" and r.get("apiVersion") == "v1"
            for r in meta(es).get("ownerReferences") or []
        )

    def labels_for(self, es: dict | None) -> tuple[dict[str, str], bool]:
        """setEndpointSliceLabels: the Service's labels plus the reserved ones; True if the
        non-reserved labels differ from the slice's."""
        current = {k: v for k, v in (labels_of(es) if es else {}).items() if k not in _RESERVED_LABELS}
        labels = {k: v for k, v in labels_of(self.svc).items() if k not in _RESERVED_LABELS}
        changed = current != labels
        cluster_ip = (self.svc.get("spec") or {}).get("clusterIP") or ""
        if cluster_ip in ("", "None"):
            labels[LABEL_HEADLESS] = ""
        labels[LABEL_SERVICE_NAME] = self.name
        labels[LABEL_MANAGED_BY] = CONTROLLER_NAME
        return labels, changed

    def new_slice(self, ports: list[dict], address_type: str) -> dict:
        prefix = f"{self.name}-"
        if name_is_dns_subdomain(prefix, True):
            prefix = self.name
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": prefix,
                "namespace": self.ns,
                "labels": self.labels_for(None)[0],
                "ownerReferences": [controller_ref("v1", "Service", self.name, self.uid)],
            },
            "addressType": address_type,
            "endpoints": [],
            "ports": copy.deepcopy(ports),
        }

    # reconcileByAddressType

    def _by_address_type(self, pods: list[dict], existing: list[dict], address_type: str) -> list[Op]:
        to_create: list[dict] = []
        to_update: list[dict] = []
        to_delete: list[dict] = []
        existing_by_key: dict[str, list[dict]] = {}
        for es in existing:
            if self.owned(es):
                existing_by_key.setdefault(port_map_key(es.get("ports") or []), []).append(es)
            else:
                to_delete.append(es)

        desired: dict[str, dict[tuple, dict]] = {}
        desired_ports: dict[str, list[dict]] = {}
        publish = bool((self.svc.get("spec") or {}).get("publishNotReadyAddresses"))
        for pod in pods:
            if not should_pod_be_in_endpoints(pod):
                continue
            ports = endpoint_ports(self.svc, pod)
            key = port_map_key(ports)
            desired.setdefault(key, {})
            desired_ports.setdefault(key, ports)
            node = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
            if node is None and not publish:
                continue  # upstream skips (and retries) a pod whose Node is missing
            ep = pod_to_endpoint(pod, node, self.svc, address_type)
            if ep["addresses"]:
                desired[key][_endpoint_hash(ep)] = ep

        for key in sorted(desired):
            c, u, d = self._by_port_mapping(
                existing_by_key.get(key, []), desired[key], desired_ports[key], address_type
            )
            to_create += c
            to_update += u
            to_delete += d
        for key in sorted(existing_by_key):
            if key not in desired:
                to_delete += existing_by_key[key]

        if len(existing) == len(to_delete) and not to_create:
            placeholder = self.new_slice([], address_type)
            if len(to_delete) == 1 and self._is_placeholder(to_delete[0], placeholder):
                to_delete = []
            else:
                to_create.append(placeholder)

        changed = {meta(es)["name"] for es in to_update + to_delete}
        unchanged = [es for es in existing if meta(es)["name"] not in changed]
        spec = self.svc.get("spec") or {}
        annotations = meta(self.svc).get("annotations") or {}
        distribution = spec.get("trafficDistribution")
        use_distribution = distribution in CLOSE_TRAFFIC_DISTRIBUTIONS and not hints_enabled(annotations)
        if hints_enabled(annotations):
            to_update = self._add_hints(to_create, to_update, unchanged)
        elif not use_distribution:
            to_update = self._remove_hints(to_create, to_update, unchanged)
        if use_distribution:
            to_update = self._distribution_hints(distribution, to_create, to_update, unchanged)
        return self._finalize(to_create, to_update, to_delete, {meta(es)["name"]: es for es in existing})

    def _is_placeholder(self, es: dict, placeholder: dict) -> bool:
        """placeholderSliceCompare: only namespace, labels and owners count among the metadata."""
        return (
            meta(es).get("namespace", "") == self.ns
            and labels_of(es) == labels_of(placeholder)
            and (meta(es).get("ownerReferences") or []) == meta(placeholder)["ownerReferences"]
            and es.get("addressType") == placeholder["addressType"]
            and not es.get("endpoints")
            and not es.get("ports")
        )

    # reconcileByPortMapping

    def _by_port_mapping(
        self, existing: list[dict], desired: dict[tuple, dict], ports: list[dict], address_type: str
    ) -> tuple[list[dict], list[dict], list[dict]]:
        by_name: dict[str, dict] = {}
        unchanged: list[str] = []
        to_update: list[str] = []
        to_delete: list[str] = []
        for es in existing:
            name = meta(es)["name"]
            by_name[name] = es
            kept: list[dict] = []
            updated = False
            for ep in es.get("endpoints") or []:
                want = desired.get(_endpoint_hash(ep))
                if want is not None:
                    kept.append(copy.deepcopy(want))
                    updated = updated or not _equal_beyond_hash(want, ep)
                    del desired[_endpoint_hash(ep)]
            labels, labels_changed = self.labels_for(es)
            if updated or len(es.get("endpoints") or []) != len(kept):
                if not kept:
                    to_delete.append(name)
                else:
                    copy_ = copy.deepcopy(es)
                    copy_["endpoints"] = kept
                    copy_["metadata"]["labels"] = labels
                    by_name[name] = copy_
                    to_update.append(name)
            elif labels_changed:
                copy_ = copy.deepcopy(es)
                copy_["metadata"]["labels"] = labels
                by_name[name] = copy_
                to_update.append(name)
            else:
                unchanged.append(name)

        remaining = list(desired.values())
        if remaining and to_update:
            for name in sorted(to_update, key=lambda n: -len(by_name[n]["endpoints"])):
                es = by_name[name]
                while remaining and len(es["endpoints"]) < self.max:
                    es["endpoints"].append(remaining.pop(0))

        to_create: list[dict] = []
        while remaining:
            fill: dict | None = None
            if len(remaining) < self.max and unchanged:
                fill = self._slice_to_fill([by_name[n] for n in unchanged], len(remaining))
            if fill is None:
                fill = self.new_slice(ports, address_type)
            else:
                fill = copy.deepcopy(fill)
                by_name[meta(fill)["name"]] = fill
            while remaining and len(fill["endpoints"]) < self.max:
                fill["endpoints"].append(remaining.pop(0))
            if meta(fill).get("name"):
                to_update.append(meta(fill)["name"])
                unchanged.remove(meta(fill)["name"])
            else:
                to_create.append(fill)
        return to_create, [by_name[n] for n in to_update], [by_name[n] for n in to_delete]

    def _slice_to_fill(self, slices: list[dict], count: int) -> dict | None:
        """getSliceToFill: the slice that ends closest to full."""
        best, best_diff = None, self.max
        for es in slices:
            diff = self.max - (count + len(es.get("endpoints") or []))
            if 0 <= diff < best_diff:
                best, best_diff = es, diff
                if diff == 0:
                    break
        return best

    # hints

    def _remove_hints(
        self, to_create: list[dict], to_update: list[dict], unchanged: list[dict]
    ) -> list[dict]:
        """RemoveHintsFromSlices: returns the new to-update list (unchanged slices that had hints join)."""
        for es in to_create + to_update:
            for ep in es["endpoints"]:
                ep.pop("hints", None)
        out = list(to_update)
        for es in list(unchanged):
            if any("hints" in ep for ep in es.get("endpoints") or []):
                copy_ = copy.deepcopy(es)
                for ep in copy_["endpoints"]:
                    ep.pop("hints", None)
                out.append(copy_)
                unchanged.remove(es)
        return out

    def _add_hints(self, to_create: list[dict], to_update: list[dict], unchanged: list[dict]) -> list[dict]:
        """TopologyCache.AddHints for topology-mode Auto."""
        total = sum(
            sum(1 for ep in es.get("endpoints") or [] if _ready(ep))
            for es in to_create + to_update + unchanged
        )
        allocations = get_allocations(self.ratios, total)
        if allocations is None:
            return self._remove_hints(to_create, to_update, unchanged)
        allocated: dict[str, int] = {}
        to_update = list(to_update)
        for es in list(unchanged):
            counts = _hints_by_zone(es, allocated, allocations)
            if counts is None:
                to_update.append(copy.deepcopy(es))
                unchanged.remove(es)
            else:
                for zone, n in counts.items():
                    allocated[zone] = allocated.get(zone, 0) + n
        allocatable = to_create + to_update
        for es in allocatable:
            for ep in es["endpoints"]:
                if not _ready(ep):
                    continue
                if not ep.get("zone"):
                    return self._remove_hints(to_create, to_update, unchanged)
                allocated[ep["zone"]] = allocated.get(ep["zone"], 0) + 1
                ep["hints"] = {"forZones": [{"name": ep["zone"]}]}
        giving, receiving = _giving_and_receiving(allocations, allocated)
        for zone, diff in _redistribute(allocatable, giving, receiving).items():
            allocated[zone] = allocated.get(zone, 0) + diff
        if not allocated:
            return self._remove_hints(to_create, to_update, unchanged)
        return to_update

    def _distribution_hints(
        self, distribution: str, to_create: list[dict], to_update: list[dict], unchanged: list[dict]
    ) -> list[dict]:
        """trafficdist.ReconcileHints with the preferClose heuristic."""
        for_nodes = distribution == "PreferSameNode"

        def wanted(ep: dict) -> dict | None:
            hints: dict = {}
            if ep.get("zone"):
                hints["forZones"] = [{"name": ep["zone"]}]
            if ep.get("nodeName") and for_nodes:
                hints["forNodes"] = [{"name": ep["nodeName"]}]
            return hints or None

        def needs_update(es: dict) -> bool:
            for ep in es.get("endpoints") or []:
                if not _ready(ep):
                    continue
                have = ep.get("hints") or {}
                want = wanted(ep) or {}
                if (have.get("forZones") or None) != want.get("forZones") or (
                    have.get("forNodes") or None
                ) != want.get("forNodes"):
                    return True
            return False

        out = list(to_update)
        for es in list(unchanged):
            if needs_update(es):
                out.append(copy.deepcopy(es))
                unchanged.remove(es)
        for es in to_create + out:
            for ep in es["endpoints"]:
                if not _ready(ep):
                    continue
                hints = wanted(ep)
                if hints is None:
                    ep.pop("hints", None)
                else:
                    ep["hints"] = hints
        return out

    # finalize

    def _finalize(
        self, to_create: list[dict], to_update: list[dict], to_delete: list[dict], current: dict[str, dict]
    ) -> list[Op]:
        to_create, to_delete = list(to_create), list(to_delete)
        i = 0
        while i < len(to_delete) and to_create:
            doomed = to_delete[i]
            if doomed.get("addressType") == to_create[-1]["addressType"] and self.owned(doomed):
                reused = to_create.pop()
                reused["metadata"] = {
                    **copy.deepcopy(meta(doomed)),
                    "labels": reused["metadata"]["labels"],
                    "ownerReferences": reused["metadata"]["ownerReferences"],
                }
                to_update.append(reused)
                del to_delete[i]
            else:
                i += 1
        ops: list[Op] = []
        if not meta(self.svc).get("deletionTimestamp"):
            for es in to_create:
                es["metadata"] = {
                    "name": self._generate_name(es["metadata"]["generateName"]),
                    **es["metadata"],
                }
                ops.append(Op("create", es))
        for es in to_update:
            before = current.get(meta(es)["name"])
            if before is None or _content(before) != _content(es):
                ops.append(Op("update", es))
        ops += [Op("delete", es) for es in to_delete]
        return ops

    def _generate_name(self, prefix: str) -> str:
        """A generateName-like name whose 5-character suffix is derived from the Service."""
        n = 0
        while True:
            digest = hashlib.sha256(f"{self.ns}/{self.name}/{self.uid}/{n}".encode()).digest()
            name = prefix[:58] + "".join(ALPHANUMS[b % len(ALPHANUMS)] for b in digest[:5])
            if name not in self.taken:
                self.taken.add(name)
                return name
            n += 1


def _content(es: dict) -> dict:
    """What an update would change: everything but the server-managed resourceVersion."""
    m = {k: v for k, v in meta(es).items() if k != "resourceVersion"}
    return {**es, "metadata": m}
