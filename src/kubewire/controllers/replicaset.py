"""The ReplicaSet controller, level-triggered, as upstream's pkg/controller/replicaset/replica_set.go.

For every ReplicaSet: claim the active pods it selects (adopting orphans, releasing pods it no longer
selects), create or delete pods until the count matches spec.replicas, and report status. Victims are
chosen in upstream's controller.ActivePodsWithRanks order so that scaling down removes the pods a real
cluster would remove (unscheduled, pending, not-ready and doubled-up pods first).
"""

from __future__ import annotations

import copy
import functools
import math
import random

from kubewire.controllers.events import REPLICASET_CONTROLLER, Event, event_ops
from kubewire.controllers.podutil import (
    claim,
    controller_ref,
    is_active,
    is_controlled_by,
    is_pod_available,
    is_pod_ready,
    is_terminating,
    labels_of,
    max_container_restarts,
    meta,
    new_controller_ref,
    parse_time,
    pod_phase,
    pod_ready_time,
    selector_is_empty,
    selector_matches,
)
from kubewire.controllers.types import Op, Snapshot

ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery util/rand: no vowels, no 0/1/3 (avoids words)
BURST_REPLICAS = 500  # upstream caps creates/deletes per sync so one bad template cannot flood the API
MAX_NAME_LENGTH = 63
RANDOM_LENGTH = 5
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


def random_string(rng: random.Random, n: int = RANDOM_LENGTH) -> str:
    """utilrand.String: n characters from the safe alphabet."""
    return "".join(rng.choice(ALPHANUMS) for _ in range(n))


def generate_name(base: str, rng: random.Random) -> str:
    """names.SimpleNameGenerator: truncate the base so the result still fits in 63 characters."""
    base = base[: MAX_NAME_LENGTH - RANDOM_LENGTH]
    return base + random_string(rng)


def reconcile_replicasets(snap: Snapshot, rng: random.Random | None = None) -> list[Op]:
    """One sync of every ReplicaSet. `rng` picks pod name suffixes; pass a seeded one for tests."""
    rng = rng or random.Random()
    pods_by_ns: dict[str, list[dict]] = {}
    for pod in snap.list("Pod"):
        pods_by_ns.setdefault(meta(pod).get("namespace", ""), []).append(pod)
    rss_by_ns: dict[str, list[dict]] = {}
    for rs in snap.list("ReplicaSet"):
        rss_by_ns.setdefault(meta(rs).get("namespace", ""), []).append(rs)
    taken = {(meta(p).get("namespace", ""), meta(p)["name"]) for p in snap.list("Pod")}

    ops: list[Op] = []
    for ns, rss in rss_by_ns.items():
        pods = pods_by_ns.get(ns, [])
        for rs in rss:
            ops.extend(_sync_replicaset(rs, pods, rss, snap, rng, taken))
    return ops


def _sync_replicaset(
    rs: dict,
    pods: list[dict],
    rss_in_ns: list[dict],
    snap: Snapshot,
    rng: random.Random,
    taken: set[tuple[str, str]],
) -> list[Op]:
    now = snap.now
    selector = (rs.get("spec") or {}).get("selector")
    if selector_is_empty(selector):
        # Validation forbids it; an empty selector would adopt every pod in the namespace.
        return []
    ops: list[Op] = []
    filtered, writes = claim(rs, selector, [p for p in pods if is_active(p)])
    ops.extend(Op("update", w) for w in writes)

    if not is_terminating(rs):
        ops.extend(_manage_replicas(rs, filtered, pods, rss_in_ns, snap, rng, taken))

    status = calculate_status(rs, filtered, now)
    if status != (rs.get("status") or {}):
        out = copy.deepcopy(rs)
        out["status"] = status
        ops.append(Op("status", out))
    return ops


def _manage_replicas(
    rs: dict,
    filtered: list[dict],
    pods: list[dict],
    rss_in_ns: list[dict],
    snap: Snapshot,
    rng: random.Random,
    taken: set[tuple[str, str]],
) -> list[Op]:
    now = snap.now
    want = int((rs.get("spec") or {}).get("replicas", 1))
    diff = len(filtered) - want
    if diff < 0:
        new = [_new_pod(rs, rng, taken) for _ in range(min(-diff, BURST_REPLICAS))]
        events = [Event(rs, "Normal", "SuccessfulCreate", f"Created pod: {meta(p)['name']}", REPLICASET_CONTROLLER)
                  for p in new]  # fmt: skip
        return [Op("create", p) for p in new] + event_ops(snap, events, now)
    if diff > 0:
        related = _indirectly_related_pods(rs, pods, rss_in_ns)
        victims = pods_to_delete(filtered, related, min(diff, BURST_REPLICAS), now)
        events = [Event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {meta(v)['name']}", REPLICASET_CONTROLLER)
                  for v in victims if "deletionTimestamp" not in meta(v)]  # fmt: skip
        return [Op("delete", v) for v in victims] + event_ops(snap, events, now)
    return []


def _new_pod(rs: dict, rng: random.Random, taken: set[tuple[str, str]]) -> dict:
    """controller.GetPodFromTemplate plus a generated name (the store does not generate names)."""
    rs_meta = meta(rs)
    ns = rs_meta.get("namespace", "")
    template = (rs.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    prefix = rs_meta["name"] + "-"
    name = generate_name(prefix, rng)
    while (ns, name) in taken:
        name = generate_name(prefix, rng)
    taken.add((ns, name))
    pod_meta: dict = {
        "name": name,
        "generateName": prefix,
        "namespace": ns,
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [new_controller_ref(rs)],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        pod_meta["finalizers"] = list(tmeta["finalizers"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": copy.deepcopy(template.get("spec") or {}),
        "status": {"phase": "Pending"},
    }


def calculate_status(rs: dict, filtered: list[dict], now: float) -> dict:
    """replica_set_utils.calculateStatus: counts over the claimed active pods, conditions preserved."""
    status = copy.deepcopy(rs.get("status") or {})
    template_labels = (((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
        "labels"
    ) or {}
    min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
    fully = ready = available = 0
    for pod in filtered:
        pl = labels_of(pod)
        if all(pl.get(k) == v for k, v in template_labels.items()):
            fully += 1
        if is_pod_ready(pod):
            ready += 1
            if is_pod_available(pod, min_ready, now):
                available += 1
    status["replicas"] = len(filtered)
    status["fullyLabeledReplicas"] = fully
    status["readyReplicas"] = ready
    status["availableReplicas"] = available
    status["observedGeneration"] = int(meta(rs).get("generation") or 0)
    return status


# --- choosing victims -------------------------------------------------------------------------------


def _indirectly_related_pods(rs: dict, pods: list[dict], rss_in_ns: list[dict]) -> list[dict]:
    """Pods selected by any ReplicaSet sharing this one's controller (e.g. all revisions of a
    Deployment), so a scale-down prefers nodes where the whole workload is doubled up."""
    ref = controller_ref(rs)
    if ref is None:
        return []
    related: list[dict] = []
    seen: set[str] = set()
    for other in rss_in_ns:
        oref = controller_ref(other)
        if oref is None or (oref.get("uid"), oref.get("kind"), oref.get("name")) != (
            ref.get("uid"),
            ref.get("kind"),
            ref.get("name"),
        ):
            continue
        sel = (other.get("spec") or {}).get("selector")
        for pod in pods:
            key = meta(pod).get("uid") or meta(pod)["name"]
            if key not in seen and selector_matches(sel, labels_of(pod)):
                seen.add(key)
                related.append(pod)
    return related


def _deletion_cost(pod: dict) -> int:
    raw = (meta(pod).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    try:
        value = int(raw) if raw is not None else 0
    except ValueError:
        return 0
    return value if -(2**31) <= value < 2**31 else 0


def _after_or_zero(t1: float | None, t2: float | None) -> bool:
    if t1 is None or t2 is None:
        return t1 is None
    return t1 > t2


def _log_rank_diff(t1: float, t2: float, now: float) -> int:
    """Compare ages on a log2 scale of nanoseconds (LogarithmicScaleDown), so near-equal ages tie."""

    def rank(t: float) -> int:
        d = (now - t) * 1e9
        return int(math.log2(d)) if d > 0 else -1

    return rank(t1) - rank(t2)


def _less(a: dict, rank_a: int, b: dict, rank_b: int, now: float) -> bool:
    """controller.ActivePodsWithRanks.Less: True when `a` should be deleted before `b`."""
    na, nb = (a.get("spec") or {}).get("nodeName") or "", (b.get("spec") or {}).get("nodeName") or ""
    if na != nb and (not na or not nb):
        return not na
    pa, pb = _PHASE_ORDINAL.get(pod_phase(a), 0), _PHASE_ORDINAL.get(pod_phase(b), 0)
    if pa != pb:
        return pa < pb
    ra, rb = is_pod_ready(a), is_pod_ready(b)
    if ra != rb:
        return not ra
    ca, cb = _deletion_cost(a), _deletion_cost(b)
    if ca != cb:
        return ca < cb
    if rank_a != rank_b:
        return rank_a > rank_b
    uid_a, uid_b = meta(a).get("uid") or "", meta(b).get("uid") or ""
    if ra and rb:
        ta, tb = pod_ready_time(a), pod_ready_time(b)
        if ta != tb:
            if not now or ta is None or tb is None:
                return _after_or_zero(ta, tb)
            diff = _log_rank_diff(ta, tb, now)
            return uid_a < uid_b if diff == 0 else diff < 0
    ma, mb = max_container_restarts(a), max_container_restarts(b)
    if ma != mb:
        return ma > mb
    ta, tb = parse_time(meta(a).get("creationTimestamp")), parse_time(meta(b).get("creationTimestamp"))
    if ta != tb:
        if not now or ta is None or tb is None:
            return _after_or_zero(ta, tb)
        diff = _log_rank_diff(ta, tb, now)
        return uid_a < uid_b if diff == 0 else diff < 0
    return False


def pods_to_delete(filtered: list[dict], related: list[dict], diff: int, now: float) -> list[dict]:
    """getPodsToDelete: rank each pod by how many active related pods share its node, then sort."""
    if diff >= len(filtered):
        return list(filtered)
    on_node: dict[str, int] = {}
    for pod in related:
        if is_active(pod):
            node = (pod.get("spec") or {}).get("nodeName") or ""
            on_node[node] = on_node.get(node, 0) + 1
    ranked = [(p, on_node.get((p.get("spec") or {}).get("nodeName") or "", 0)) for p in filtered]

    def cmp(x: tuple[dict, int], y: tuple[dict, int]) -> int:
        if _less(x[0], x[1], y[0], y[1], now):
            return -1
        if _less(y[0], y[1], x[0], x[1], now):
            return 1
        return 0

    ranked.sort(key=functools.cmp_to_key(cmp))
    return [p for p, _ in ranked[:diff]]


def requeue_after(snap: Snapshot) -> float | None:
    """Seconds until some ready pod turns available (minReadySeconds), when nothing else will change:
    upstream re-enqueues the ReplicaSet after minReadySeconds for exactly this."""
    best: float | None = None
    pods = [p for p in snap.list("Pod") if is_active(p) and is_pod_ready(p)]
    for rs in snap.list("ReplicaSet"):
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
        if not min_ready:
            continue
        for pod in pods:
            if not is_controlled_by(pod, rs) or is_pod_available(pod, min_ready, snap.now):
                continue
            since = pod_ready_time(pod)
            if since is not None:
                wait = max(since + min_ready - snap.now, 0.0)
                best = wait if best is None else min(best, wait)
    return best
