"""Small predicates over Kubernetes-shaped dicts, shared by the workload controllers and the scheduler.

They follow upstream's helpers (k8s.io/kubernetes pkg/api/v1/pod, pkg/controller/controller_utils.go,
apimachinery labels/selectors, component-helpers nodeaffinity) so that every controller agrees on what
"ready", "available", "active" and "selected" mean.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

Selector = dict  # a metav1.LabelSelector: {"matchLabels": {...}, "matchExpressions": [...]}


# --- time -------------------------------------------------------------------------------------------


def parse_time(value: str | None) -> float | None:
    """RFC3339 → epoch seconds; None when absent or unparsable (upstream's zero time)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_time(now: float) -> str:
    """Epoch seconds → RFC3339 at second precision, as metav1.Time serialises."""
    return datetime.fromtimestamp(int(now), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- pods -------------------------------------------------------------------------------------------


def meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def labels_of(obj: dict) -> dict[str, str]:
    return meta(obj).get("labels") or {}


def get_condition(obj: dict, cond_type: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == cond_type:
            return c
    return None


def is_pod_ready(pod: dict) -> bool:
    c = get_condition(pod, "Ready")
    return c is not None and c.get("status") == "True"


def pod_ready_time(pod: dict) -> float | None:
    """When the pod last became Ready (None if not ready or unknown)."""
    if not is_pod_ready(pod):
        return None
    c = get_condition(pod, "Ready")
    return parse_time((c or {}).get("lastTransitionTime"))


def is_pod_available(pod: dict, min_ready_seconds: int | float, now: float) -> bool:
    """Ready for longer than minReadySeconds; upstream requires strictly-after, and a known time."""
    if not is_pod_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = pod_ready_time(pod)
    return since is not None and since + min_ready_seconds < now


def is_terminating(obj: dict) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def pod_phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or ""


def is_active(pod: dict) -> bool:
    """Counts toward a controller's replicas: not being deleted and not finished (controller.IsPodActive)."""
    return not is_terminating(pod) and pod_phase(pod) not in ("Succeeded", "Failed")


def max_container_restarts(pod: dict) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max((int(s.get("restartCount") or 0) for s in statuses), default=0)


# --- label selectors --------------------------------------------------------------------------------


def _expression_matches(expr: dict, labels: dict[str, str]) -> bool:
    key, op = expr.get("key", ""), expr.get("operator", "")
    values = expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False  # unknown operators select nothing, like an invalid selector


def selector_matches(selector: Selector | None, labels: dict[str, str] | None) -> bool:
    """metav1.LabelSelector semantics: None selects nothing, {} selects everything."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    return all(_expression_matches(e, labels) for e in selector.get("matchExpressions") or [])


def selector_is_empty(selector: Selector | None) -> bool:
    return not selector or (not selector.get("matchLabels") and not selector.get("matchExpressions"))


def map_selector_matches(selector: dict[str, str] | None, labels: dict[str, str] | None) -> bool:
    """Plain equality maps (nodeSelector, Service.spec.selector): every pair must be present."""
    labels = labels or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


class LabelIndex:
    """Objects by each of their label pairs, so that a map selector looks only at the objects that
    carry one of its pairs: matching every Service against every pod was nine tenths of an
    EndpointSlice pass at 10k Services."""

    def __init__(self, objs: Iterable[dict]) -> None:
        self.objs = list(objs)
        self.by_pair: dict[tuple[str, str], list[dict]] = {}
        for obj in self.objs:
            for pair in labels_of(obj).items():
                self.by_pair.setdefault(pair, []).append(obj)

    def select(self, selector: dict[str, str]) -> list[dict]:
        """The objects map_selector_matches(selector, labels) accepts, in the order given."""
        if not selector:
            return list(self.objs)
        candidates = min((self.by_pair.get(pair, ()) for pair in selector.items()), key=len)
        return [o for o in candidates if map_selector_matches(selector, labels_of(o))]


def _node_expression_matches(expr: dict, labels: dict[str, str]) -> bool:
    op = expr.get("operator", "")
    if op in ("Gt", "Lt"):
        key, values = expr.get("key", ""), expr.get("values") or []
        if key not in labels or len(values) != 1:
            return False
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return _expression_matches(expr, labels)


def node_selector_term_matches(term: dict, node: dict) -> bool:
    """AND of the term's expressions and fields; an empty term matches no node (upstream)."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = labels_of(node)
    if not all(_node_expression_matches(e, labels) for e in exprs):
        return False
    field_values = {"metadata.name": meta(node).get("name", "")}
    for f in fields:
        key = f.get("key", "")
        if key not in field_values or f.get("operator") not in ("In", "NotIn"):
            return False
        if not _expression_matches(f, {key: field_values[key]}):
            return False
    return True


def node_selector_matches(node_selector: dict | None, node: dict) -> bool:
    """A v1.NodeSelector: OR of its terms."""
    if node_selector is None:
        return True
    return any(node_selector_term_matches(t, node) for t in node_selector.get("nodeSelectorTerms") or [])


def pod_matches_node(pod: dict, node: dict) -> bool:
    """nodeSelector AND required node affinity, as the NodeAffinity filter plugin checks."""
    spec = pod.get("spec") or {}
    if not map_selector_matches(spec.get("nodeSelector"), labels_of(node)):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    return node_selector_matches(required, node)


# --- owners -----------------------------------------------------------------------------------------


def controller_ref(obj: dict) -> dict | None:
    """The ownerReference with controller: true, if any."""
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: dict, owner: dict) -> bool:
    """Compare by uid when both sides have one, otherwise by kind and name (objects not yet stored)."""
    ref = controller_ref(obj)
    if ref is None:
        return False
    owner_uid = meta(owner).get("uid")
    if owner_uid and ref.get("uid"):
        return ref["uid"] == owner_uid
    return ref.get("kind") == owner.get("kind") and ref.get("name") == meta(owner).get("name")


def new_controller_ref(owner: dict) -> dict:
    m = meta(owner)
    return {
        "apiVersion": owner.get("apiVersion", ""),
        "kind": owner.get("kind", ""),
        "name": m.get("name", ""),
        "uid": m.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def claim(owner: dict, selector: Selector, candidates: list[dict]) -> tuple[list[dict], list[dict]]:
    """Upstream's ControllerRefManager: keep what we own and still select, adopt matching orphans,
    release what we own but no longer select. Returns (claimed objects, objects to write back)."""
    owner_deleting = is_terminating(owner)
    claimed: list[dict] = []
    writes: list[dict] = []
    for obj in candidates:
        ref = controller_ref(obj)
        matches = selector_matches(selector, labels_of(obj))
        if ref is not None:
            if not is_controlled_by(obj, owner):
                continue
            if matches:
                claimed.append(obj)
            elif not owner_deleting:
                released = copy.deepcopy(obj)
                released["metadata"]["ownerReferences"] = [
                    r for r in released["metadata"].get("ownerReferences") or [] if r != ref
                ]
                writes.append(released)
            continue
        if owner_deleting or not matches or is_terminating(obj):
            continue
        adopted = copy.deepcopy(obj)
        adopted["metadata"].setdefault("ownerReferences", [])
        adopted["metadata"]["ownerReferences"] = list(adopted["metadata"]["ownerReferences"]) + [
            new_controller_ref(owner)
        ]
        claimed.append(adopted)
        writes.append(adopted)
    return claimed, writes


# --- quantities -------------------------------------------------------------------------------------

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


def parse_quantity(value: str | int | float | None) -> Decimal:
    """resource.Quantity text ("100m", "1.5", "128Mi", "1e3") → exact decimal; invalid → 0."""
    if value is None:
        return Decimal(0)
    if isinstance(value, int | float):
        return Decimal(str(value))
    s = value.strip()
    try:
        for suffix, mult in _BINARY.items():
            if s.endswith(suffix):
                return Decimal(s[: -len(suffix)]) * mult
        if s and s[-1] in "numkMGTPE" and not s[-1].isdigit():
            return Decimal(s[:-1]) * _DECIMAL[s[-1]]
        return Decimal(s)
    except (InvalidOperation, KeyError):
        return Decimal(0)


def milli_value(value: str | int | float | None) -> int:
    """Quantity in thousandths, rounded up like Quantity.MilliValue (used for cpu)."""
    return math.ceil(parse_quantity(value) * 1000)


def int_value(value: str | int | float | None) -> int:
    """Quantity as an integer, rounded up like Quantity.Value (used for memory and pod counts)."""
    return math.ceil(parse_quantity(value))
