"""A default-scheduler for kubewire's nodes: upstream's filter plugins, a simpler deterministic score.

Filters run per node in the default profile's order and stop at the first plugin that rejects the
node, exactly as the framework does, so the "0/N nodes are available: ..." message counts the same
reasons a real cluster would print: NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector and
required node affinity), NodePorts (hostPort clashes) and NodeResourcesFit (pod count, cpu, memory).

Scoring replaces upstream's weighted plugin sum with the spreading order the default
PodTopologySpread constraints (zone, then hostname) aim for, made lexicographic so results are
reproducible: fewest peer pods in the zone, then on the node, then fewest pods on the node, then name.
Peers are the pods selected by every Service, ReplicaSet, ReplicationController and StatefulSet that
selects the pod being placed (upstream's DefaultSelector); a pod nothing selects spreads among pods
with the same controller, or else only by total pod count.

Pods are placed one at a time in queue order (priority, then age) and each placement is counted before
the next pod is considered, as the scheduler cache assumes a pod on its node before binding it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from kubewire.controllers.events import SCHEDULER, Event, event_ops, stale
from kubewire.controllers.podutil import (
    controller_ref,
    format_time,
    get_condition,
    int_value,
    is_terminating,
    labels_of,
    map_selector_matches,
    meta,
    milli_value,
    parse_time,
    pod_matches_node,
    pod_phase,
    selector_is_empty,
    selector_matches,
)
from kubewire.controllers.types import Op, Snapshot

DEFAULT_SCHEDULER = "default-scheduler"
ZONE_LABEL = "topology.kubernetes.io/zone"
LEGACY_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
DEFAULT_MAX_PODS = 110  # kubelet's default when a node does not report allocatable pods

MSG_UNSCHEDULABLE = "node(s) were unschedulable"
MSG_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
MSG_PORTS = "node(s) didn't have free ports for the requested pod ports"
MSG_TOO_MANY_PODS = "Too many pods"
MSG_NO_NODES = "no nodes available to schedule pods"


@dataclass
class _NodeState:
    node: dict
    pods: list[dict] = field(default_factory=list)
    cpu: int = 0  # requested millicores
    memory: int = 0  # requested bytes
    ports: set[tuple[str, str, int]] = field(default_factory=set)  # (protocol, hostIP, hostPort)

    @property
    def name(self) -> str:
        return meta(self.node)["name"]

    @property
    def zone(self) -> str:
        lbl = labels_of(self.node)
        return lbl.get(ZONE_LABEL) or lbl.get(LEGACY_ZONE_LABEL) or ""

    def add(self, pod: dict) -> None:
        self.pods.append(pod)
        cpu, mem = pod_requests(pod)
        self.cpu += cpu
        self.memory += mem
        self.ports |= host_ports(pod)


def pod_requests(pod: dict) -> tuple[int, int]:
    """Effective (millicpu, memory bytes): max(sum of containers, largest init container) + overhead.
    Requests default to limits, as API defaulting does for containers that only set limits."""
    spec = pod.get("spec") or {}

    def of(c: dict) -> tuple[int, int]:
        res = c.get("resources") or {}
        req = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return milli_value(req.get("cpu")), int_value(req.get("memory"))

    containers = [of(c) for c in spec.get("containers") or []]
    inits = [of(c) for c in spec.get("initContainers") or []]
    cpu = max(sum(c for c, _ in containers), max((c for c, _ in inits), default=0))
    mem = max(sum(m for _, m in containers), max((m for _, m in inits), default=0))
    overhead = spec.get("overhead") or {}
    return cpu + milli_value(overhead.get("cpu")), mem + int_value(overhead.get("memory"))


def host_ports(pod: dict) -> set[tuple[str, str, int]]:
    out: set[tuple[str, str, int]] = set()
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.add((p.get("protocol") or "TCP", p.get("hostIP") or "0.0.0.0", int(p["hostPort"])))
    return out


def _ports_conflict(wanted: set[tuple[str, str, int]], used: set[tuple[str, str, int]]) -> bool:
    """A wildcard hostIP clashes with every address on the same protocol and port."""
    for proto, ip, port in wanted:
        for uproto, uip, uport in used:
            if proto == uproto and port == uport and (ip == uip or "0.0.0.0" in (ip, uip)):
                return True
    return False


def tolerates(toleration: dict, taint: dict) -> bool:
    """v1.Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    return op == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def _tolerated(pod: dict, taint: dict) -> bool:
    return any(tolerates(t, taint) for t in (pod.get("spec") or {}).get("tolerations") or [])


def _allocatable(node: dict, name: str) -> str | int | None:
    return ((node.get("status") or {}).get("allocatable") or {}).get(name)


def filter_node(pod: dict, state: _NodeState) -> list[str]:
    """Reasons the node rejects the pod (empty when it fits), from the first rejecting plugin."""
    node = state.node
    nspec = node.get("spec") or {}
    if nspec.get("unschedulable") and not _tolerated(
        pod, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    ):
        return [MSG_UNSCHEDULABLE]
    for taint in nspec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(pod, taint):
            return [f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"]
    if not pod_matches_node(pod, node):
        return [MSG_AFFINITY]
    if _ports_conflict(host_ports(pod), state.ports):
        return [MSG_PORTS]
    reasons: list[str] = []
    max_pods = _allocatable(node, "pods")
    allowed = int_value(max_pods) if max_pods is not None else DEFAULT_MAX_PODS
    if len(state.pods) + 1 > allowed:
        reasons.append(MSG_TOO_MANY_PODS)
    cpu, mem = pod_requests(pod)
    alloc_cpu, alloc_mem = _allocatable(node, "cpu"), _allocatable(node, "memory")
    if cpu > 0 and alloc_cpu is not None and cpu > milli_value(alloc_cpu) - state.cpu:
        reasons.append("Insufficient cpu")
    if mem > 0 and alloc_mem is not None and mem > int_value(alloc_mem) - state.memory:
        reasons.append("Insufficient memory")
    return reasons


def fit_error_message(num_nodes: int, reasons_by_node: dict[str, list[str]]) -> str:
    """framework.FitError.Error(): a sorted histogram of the per-node reasons."""
    if num_nodes == 0:
        return MSG_NO_NODES
    counts: dict[str, int] = {}
    for reasons in reasons_by_node.values():
        for r in reasons:
            counts[r] = counts.get(r, 0) + 1
    parts = sorted(f"{n} {r}" for r, n in counts.items())
    msg = f"0/{num_nodes} nodes are available:"
    if parts:
        msg += f" {', '.join(parts)}."
    return msg


class _SelectorIndex:
    """The selectors DefaultSelector consults, indexed by namespace once per scheduling pass (a
    cluster with thousands of Services would otherwise be rescanned for every pending pod)."""

    def __init__(self, snap: Snapshot) -> None:
        self.maps: dict[str, list[dict]] = {}
        self.labels: dict[str, list[dict]] = {}
        for kind in ("Service", "ReplicationController"):
            for obj in snap.list(kind):
                sel = (obj.get("spec") or {}).get("selector")
                if sel:
                    self.maps.setdefault(meta(obj).get("namespace", ""), []).append(sel)
        for kind in ("ReplicaSet", "StatefulSet"):
            for obj in snap.list(kind):
                sel = (obj.get("spec") or {}).get("selector")
                if not selector_is_empty(sel):
                    self.labels.setdefault(meta(obj).get("namespace", ""), []).append(sel)

    def peer_matcher(self, pod: dict) -> Callable[[dict], bool] | None:
        """DefaultSelector: AND of the selectors of every Service/RC/RS/StatefulSet selecting the pod;
        failing that, the pod's controller; failing that, no peers."""
        ns = meta(pod).get("namespace", "")
        pl = labels_of(pod)
        maps = [s for s in self.maps.get(ns, []) if map_selector_matches(s, pl)]
        sels = [s for s in self.labels.get(ns, []) if selector_matches(s, pl)]
        if maps or sels:

            def matches(other: dict) -> bool:
                ol = labels_of(other)
                return (
                    meta(other).get("namespace", "") == ns
                    and all(map_selector_matches(s, ol) for s in maps)
                    and all(selector_matches(s, ol) for s in sels)
                )

            return matches
        ref = controller_ref(pod)
        if ref is None:
            return None
        key = (ref.get("kind"), ref.get("name"))

        def same_controller(other: dict) -> bool:
            oref = controller_ref(other) or {}
            return meta(other).get("namespace", "") == ns and (oref.get("kind"), oref.get("name")) == key

        return same_controller


def _queue_key(pod: dict) -> tuple[int, float, str, str]:
    """PrioritySort: higher priority first, then the pod that has waited longest."""
    created = parse_time(meta(pod).get("creationTimestamp"))
    return (
        -int((pod.get("spec") or {}).get("priority") or 0),
        created if created is not None else math.inf,
        meta(pod).get("namespace", ""),
        meta(pod)["name"],
    )


def _needs_scheduling(pod: dict) -> bool:
    spec = pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and not is_terminating(pod)
        and pod_phase(pod) not in ("Succeeded", "Failed")
        and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER
    )


def _with_scheduled_condition(pod: dict, cond: dict) -> dict | None:
    """The pod with its PodScheduled condition set, or None when nothing would change."""
    status = copy.deepcopy(pod.get("status") or {})
    current = get_condition(pod, "PodScheduled")
    same = current is not None and all(current.get(k) == cond.get(k) for k in ("status", "reason", "message"))
    if same and status.get("phase") == "Pending":
        return None
    if current is not None and current.get("status") == cond["status"]:
        cond["lastTransitionTime"] = current.get("lastTransitionTime")
    status["phase"] = "Pending" if cond["status"] == "False" else status.get("phase") or "Pending"
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"] + [
        cond
    ]
    out = copy.deepcopy(pod)
    out["status"] = status
    return out


def schedule(snap: Snapshot) -> list[Op]:
    """Place every pending pod: an `update` binding spec.nodeName (followed by a status setting
    PodScheduled=True only if an earlier attempt had marked the pod Unschedulable), or a status
    marking it Unschedulable with upstream's message when no node fits."""
    all_pods = snap.list("Pod")
    pending = sorted((p for p in all_pods if _needs_scheduling(p)), key=_queue_key)
    if not pending:
        return []  # the usual pass: nothing to place, no node state or selector index to build
    nodes = {meta(n)["name"]: _NodeState(n) for n in snap.list("Node")}
    for pod in all_pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name in nodes and pod_phase(pod) not in ("Succeeded", "Failed"):
            nodes[node_name].add(pod)
    now = format_time(snap.now)
    index = _SelectorIndex(snap)
    peers = _PeerCounts(index, nodes)
    ops: list[Op] = []
    events: list[Event] = []
    for pod in pending:
        feasible: list[_NodeState] = []
        rejected: dict[str, list[str]] = {}
        for state in nodes.values():
            reasons = filter_node(pod, state)
            if reasons:
                rejected[state.name] = reasons
            else:
                feasible.append(state)
        if not feasible:
            cond = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": fit_error_message(len(nodes), rejected),
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
            updated = _with_scheduled_condition(pod, cond)
            failed = Event(pod, "Warning", "FailedScheduling", cond["message"], SCHEDULER)
            if updated is not None:
                ops.append(Op("status", updated))
                events.append(failed)
            elif stale(snap, failed, snap.now):  # still unschedulable: said again every 5 min, as retried
                events.append(failed)
            continue
        best = _choose(pod, feasible, nodes, peers)
        bound = copy.deepcopy(pod)
        bound.setdefault("spec", {})["nodeName"] = best.name
        ops.append(Op("update", bound))
        m = meta(pod)
        events.append(Event(pod, "Normal", "Scheduled",
                            f"Successfully assigned {m.get('namespace', '')}/{m['name']} to {best.name}", SCHEDULER))
        previous = get_condition(pod, "PodScheduled")
        if previous is not None and previous.get("status") != "True":
            # Clear an earlier Unschedulable verdict, as the binding subresource does upstream.
            cond = {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
            scheduled = _with_scheduled_condition(bound, cond)
            if scheduled is not None:
                ops.append(Op("status", scheduled))
        best.add(bound)
        peers.bound(bound, best.name)
    return ops + event_ops(snap, events, snap.now)


class _PeerCounts:
    """Peers per node for each kind of pod, counted once per scheduling pass and kept up to date
    as pods are bound: pods with the same namespace and labels have the same peers, so a batch
    of a thousand replicas costs one count, not a thousand (the count itself is O(pods))."""

    def __init__(self, index: _SelectorIndex, nodes: dict[str, _NodeState]) -> None:
        self.index, self.nodes = index, nodes
        self.counts: dict[tuple, tuple[object, dict[str, int]]] = {}

    @staticmethod
    def _key(pod: dict) -> tuple:
        m = meta(pod)
        return (m.get("namespace", ""), tuple(sorted((m.get("labels") or {}).items())))

    def for_pod(self, pod: dict) -> dict[str, int]:
        key = self._key(pod)
        if key not in self.counts:
            is_peer = self.index.peer_matcher(pod)
            per_node = {
                name: (0 if is_peer is None else sum(1 for p in st.pods if not is_terminating(p) and is_peer(p)))
                for name, st in self.nodes.items()
            }
            self.counts[key] = (is_peer, per_node)
        return self.counts[key][1]

    def bound(self, pod: dict, node: str) -> None:
        for is_peer, per_node in self.counts.values():
            if is_peer is not None and is_peer(pod):  # type: ignore[operator]
                per_node[node] = per_node.get(node, 0) + 1


def _choose(
    pod: dict, feasible: list[_NodeState], nodes: dict[str, _NodeState], peers: _PeerCounts
) -> _NodeState:
    """Fewest peers in the zone, then on the node, then fewest pods, then name."""
    counts = peers.for_pod(pod)

    def peers_on(state: _NodeState) -> int:
        return counts.get(state.name, 0)

    # Zone counts cover every node the pod could ever land on (NodeInclusionPolicy: honor affinity).
    zone_peers: dict[str, int] = {}
    for state in nodes.values():
        if pod_matches_node(pod, state.node):
            zone_peers[state.zone] = zone_peers.get(state.zone, 0) + peers_on(state)
    return min(feasible, key=lambda s: (zone_peers.get(s.zone, 0), peers_on(s), len(s.pods), s.name))
