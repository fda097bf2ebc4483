"""The Deployment controller, level-triggered, as upstream's pkg/controller/deployment.

Each call runs one syncDeployment per Deployment against the snapshot and returns the writes it would
have made: ReplicaSet creates/updates/deletes, the Deployment's revision annotation, and its status.
The structure mirrors upstream (sync.go, rolling.go, recreate.go, progress.go, util/deployment_util.go)
function by function so that rollouts progress in exactly the steps a real cluster takes.

Where upstream mutates an object and keeps using it within the same sync, this code mutates a working
copy and emits one write per object at the end.

The pod-template-hash follows controller.ComputeHash: FNV-1a (32-bit) over a deep print of the
template, then the collisionCount as 8 little-endian bytes, then rand.SafeEncodeString of the decimal
sum. The deep print here is canonical JSON (sorted keys, no whitespace, empty maps/lists and nulls
pruned) instead of Go's spew output, so hashes are stable for equal templates and differ for different
ones but are not byte-identical to a real cluster's.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Iterable

from kubewire.controllers.events import DEPLOYMENT_CONTROLLER, Event, event_ops
from kubewire.controllers.podutil import (
    claim,
    format_time,
    get_condition,
    is_controlled_by,
    is_terminating,
    labels_of,
    meta,
    new_controller_ref,
    parse_time,
    pod_phase,
    selector_is_empty,
    selector_matches,
)
from kubewire.controllers.types import Op, Snapshot

UNIQUE_LABEL_KEY = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
_SKIP_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
}
MAX_REV_HISTORY_CHARS = 2000
MAX_INT32 = 2**31 - 1

# Condition reasons (util/deployment_util.go).
REASON_RS_UPDATED = "ReplicaSetUpdated"
REASON_NEW_RS_CREATED = "NewReplicaSetCreated"
REASON_FOUND_NEW_RS = "FoundNewReplicaSet"
REASON_NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
REASON_TIMED_OUT = "ProgressDeadlineExceeded"
REASON_PAUSED = "DeploymentPaused"
REASON_RESUMED = "DeploymentResumed"
REASON_MIN_AVAILABLE = "MinimumReplicasAvailable"
REASON_MIN_UNAVAILABLE = "MinimumReplicasUnavailable"

ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


# --- hashing ----------------------------------------------------------------------------------------


def _prune(value: object) -> object:
    """Drop nulls and empty containers: Go's semantic equality treats nil and empty alike."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def fnv1a_32(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode_string(s: str) -> str:
    """rand.SafeEncodeString: map each character onto the vowel-free alphabet."""
    return "".join(ALPHANUMS[ord(c) % len(ALPHANUMS)] for c in s)


def compute_hash(template: dict, collision_count: int | None = None) -> str:
    """controller.ComputeHash (see the module docstring for how the deep print differs)."""
    data = json.dumps(_prune(template), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if collision_count is not None:
        data += (int(collision_count) & 0xFFFFFFFF).to_bytes(4, "little") + b"\0\0\0\0"
    return safe_encode_string(str(fnv1a_32(data)))


def equal_ignore_hash(t1: dict, t2: dict) -> bool:
    """Templates equal apart from the pod-template-hash label (which only the RS copy carries)."""
    a, b = copy.deepcopy(t1 or {}), copy.deepcopy(t2 or {})
    for t in (a, b):
        ((t.get("metadata") or {}).get("labels") or {}).pop(UNIQUE_LABEL_KEY, None)
    return _prune(a) == _prune(b)


# --- numbers from the spec --------------------------------------------------------------------------


def value_from_int_or_percent(value: int | str | None, total: int, round_up: bool) -> int:
    """intstr.GetValueFromIntOrPercent: "25%" of total, rounded up (surge) or down (unavailable)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    s = str(value).strip()
    try:
        if s.endswith("%"):
            scaled = int(s[:-1]) * total / 100
            return math.ceil(scaled) if round_up else math.floor(scaled)
        return int(s)
    except ValueError:  # validation rejects these; never let one object stop the controller
        return 0


def resolve_fenceposts(
    max_surge: int | str | None, max_unavailable: int | str | None, desired: int
) -> tuple[int, int]:
    """Both zero would deadlock a rollout, so maxUnavailable becomes 1 (surge might be blocked by quota)."""
    surge = value_from_int_or_percent(max_surge if max_surge is not None else 0, desired, True)
    unavailable = value_from_int_or_percent(
        max_unavailable if max_unavailable is not None else 0, desired, False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _spec(d: dict) -> dict:
    return d.get("spec") or {}


def replicas_of(obj: dict) -> int:
    """spec.replicas with the apps/v1 default of 1."""
    r = _spec(obj).get("replicas")
    return 1 if r is None else int(r)


def _strategy(d: dict) -> dict:
    return _spec(d).get("strategy") or {"type": "RollingUpdate"}


def is_rolling_update(d: dict) -> bool:
    return (_strategy(d).get("type") or "RollingUpdate") == "RollingUpdate"


def _fenceposts(d: dict) -> tuple[int, int]:
    ru = _strategy(d).get("rollingUpdate") or {}
    return resolve_fenceposts(ru.get("maxSurge", "25%"), ru.get("maxUnavailable", "25%"), replicas_of(d))


def max_surge(d: dict) -> int:
    return _fenceposts(d)[0] if is_rolling_update(d) else 0


def max_unavailable(d: dict) -> int:
    if not is_rolling_update(d) or replicas_of(d) == 0:
        return 0
    return min(_fenceposts(d)[1], replicas_of(d))


def _progress_deadline(d: dict) -> int | None:
    """apps/v1 defaults progressDeadlineSeconds to 600; MaxInt32 means 'never'."""
    v = _spec(d).get("progressDeadlineSeconds", 600)
    return None if v is None or int(v) == MAX_INT32 else int(v)


def _revision_history_limit(d: dict) -> int | None:
    v = _spec(d).get("revisionHistoryLimit", 10)
    return None if v is None or int(v) == MAX_INT32 else int(v)


def _min_ready_seconds(obj: dict) -> int:
    return int(_spec(obj).get("minReadySeconds") or 0)


def _rs_status(rs: dict | None, field: str) -> int:
    return int(((rs or {}).get("status") or {}).get(field) or 0) if rs is not None else 0


def _sum_spec(rss: Iterable[dict | None]) -> int:
    return sum(replicas_of(rs) for rs in rss if rs is not None)


def _sum_status(rss: Iterable[dict | None], field: str) -> int:
    return sum(_rs_status(rs, field) for rs in rss if rs is not None)


def _active(rss: Iterable[dict | None]) -> list[dict]:
    """controller.FilterActiveReplicaSets: RSs that still want pods."""
    return [rs for rs in rss if rs is not None and replicas_of(rs) > 0]


def _by_creation(rss: list[dict], reverse: bool = False) -> list[dict]:
    def key(rs: dict) -> tuple[float, str]:
        t = parse_time(meta(rs).get("creationTimestamp"))
        return (t if t is not None else math.inf, meta(rs).get("name", ""))

    return sorted(rss, key=key, reverse=reverse)


def revision_of(obj: dict) -> int | None:
    """The revision annotation; 0 when absent, None when unparsable (upstream skips those)."""
    v = (meta(obj).get("annotations") or {}).get(REVISION_ANNOTATION)
    if v is None:
        return 0
    try:
        return int(v)
    except ValueError:
        return None


def _by_revision(rss: list[dict]) -> list[dict]:
    def key(rs: dict) -> tuple[int, float, str]:
        t = parse_time(meta(rs).get("creationTimestamp"))
        rev = revision_of(rs)
        return (rev if rev is not None else -1, t if t is not None else math.inf, meta(rs).get("name", ""))

    return sorted(rss, key=key)


def _int_annotation(rs: dict, key: str) -> int | None:
    v = (meta(rs).get("annotations") or {}).get(key)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _round_half_away(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


# --- conditions -------------------------------------------------------------------------------------


def _new_condition(cond_type: str, status: str, reason: str, message: str, now: float) -> dict:
    ts = format_time(now)
    return {
        "type": cond_type,
        "status": status,
        "lastUpdateTime": ts,
        "lastTransitionTime": ts,
        "reason": reason,
        "message": message,
    }


def _set_condition(status: dict, cond: dict) -> None:
    """SetDeploymentCondition: same status and reason is a no-op; same status keeps the transition time."""
    conds = status.get("conditions") or []
    current = next((c for c in conds if c.get("type") == cond["type"]), None)
    if (
        current is not None
        and current.get("status") == cond["status"]
        and current.get("reason") == cond["reason"]
    ):
        return
    if current is not None and current.get("status") == cond["status"]:
        cond["lastTransitionTime"] = current.get("lastTransitionTime")
    status["conditions"] = [c for c in conds if c.get("type") != cond["type"]] + [cond]


def _remove_condition(status: dict, cond_type: str) -> None:
    if "conditions" in status:
        status["conditions"] = [c for c in status["conditions"] if c.get("type") != cond_type]
        if not status["conditions"]:
            del status["conditions"]


def deployment_complete(d: dict, status: dict) -> bool:
    n = replicas_of(d)
    return (
        status.get("updatedReplicas", 0) == n
        and status.get("replicas", 0) == n
        and status.get("availableReplicas", 0) == n
        and status.get("observedGeneration", 0) >= int(meta(d).get("generation") or 0)
    )


def _deployment_progressing(d: dict, new: dict) -> bool:
    old = d.get("status") or {}
    old_old = old.get("replicas", 0) - old.get("updatedReplicas", 0)
    new_old = new.get("replicas", 0) - new.get("updatedReplicas", 0)
    return (
        new.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
        or new_old < old_old
        or new.get("readyReplicas", 0) > old.get("readyReplicas", 0)
        or new.get("availableReplicas", 0) > old.get("availableReplicas", 0)
    )


def _deployment_timed_out(d: dict, new: dict, now: float) -> bool:
    deadline = _progress_deadline(d)
    if deadline is None:
        return False
    cond = get_condition({"status": new}, "Progressing")
    if cond is None or cond.get("reason") == REASON_NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == REASON_TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + deadline < now


# --- the sync ---------------------------------------------------------------------------------------


class _Sync:
    """One syncDeployment. Holds working copies; `ops()` turns the differences into writes."""

    def __init__(self, snap: Snapshot, d: dict) -> None:
        self.snap = snap
        self.now = snap.now
        self.orig = d
        self.d = copy.deepcopy(d)
        self.d.setdefault("status", {})
        self.d["metadata"].setdefault("annotations", {})
        self.ns = meta(d).get("namespace", "")
        self.rs_pool: dict[str, dict] = {}  # name -> working copy of every RS in the namespace
        self.created: dict[str, dict] = {}
        self.changed: dict[str, dict] = {}
        self.deleted: dict[str, dict] = {}
        self.events: list[Event] = []

    def _scaled(self, rs: dict, old: int, new: int) -> None:
        """The ScalingReplicaSet event upstream records on the Deployment."""
        way = "up" if new > old else "down"
        self.events.append(Event(self.orig, "Normal", "ScalingReplicaSet",
                                 f"Scaled {way} replica set {meta(rs)['name']} from {old} to {new}",
                                 DEPLOYMENT_CONTROLLER))  # fmt: skip

    # -- bookkeeping
    def _touch(self, rs: dict) -> None:
        name = meta(rs)["name"]
        if name not in self.created:
            self.changed[name] = rs

    def ops(self) -> list[Op]:
        out: list[Op] = [Op("create", rs) for rs in self.created.values()]
        out += [Op("update", rs) for name, rs in self.changed.items() if name not in self.deleted]
        out += [Op("delete", rs) for rs in self.deleted.values()]
        out += event_ops(self.snap, self.events, self.now)
        orig_meta = {**self.orig["metadata"], "annotations": meta(self.orig).get("annotations") or {}}
        if self.d["metadata"] != orig_meta:
            upd = copy.deepcopy(self.orig)
            upd["metadata"] = self.d["metadata"]
            out.append(Op("update", upd))
        if self.d["status"] != (self.orig.get("status") or {}):
            st = copy.deepcopy(self.orig)
            st["status"] = self.d["status"]
            out.append(Op("status", st))
        return out

    # -- syncDeployment
    def run(self) -> list[Op]:
        d = self.d
        if selector_is_empty(_spec(d).get("selector")):
            # "This deployment is selecting all pods": only acknowledge the generation.
            if d["status"].get("observedGeneration", 0) < int(meta(d).get("generation") or 0):
                d["status"]["observedGeneration"] = int(meta(d).get("generation") or 0)
            return self.ops()
        rs_list = self._replicasets_for_deployment()
        if is_terminating(d):
            self.sync_status_only(rs_list)
            return self.ops()
        self.check_paused_conditions()
        if _spec(d).get("paused") or self.is_scaling_event(rs_list):
            self.sync(rs_list)
        elif (_strategy(d).get("type") or "RollingUpdate") == "Recreate":
            self.rollout_recreate(rs_list)
        else:
            self.rollout_rolling(rs_list)
        return self.ops()

    def _replicasets_for_deployment(self) -> list[dict]:
        """getReplicaSetsForDeployment: claim RSs by selector (adopt orphans, release strays)."""
        for rs in self.snap.list("ReplicaSet", self.ns):
            self.rs_pool[meta(rs)["name"]] = copy.deepcopy(rs)
        claimed, writes = claim(self.d, _spec(self.d)["selector"], list(self.rs_pool.values()))
        for w in writes:
            self.rs_pool[meta(w)["name"]] = w
            self._touch(w)
        return [self.rs_pool[meta(rs)["name"]] for rs in claimed]

    def _pods_by_rs(self, rs_list: list[dict]) -> dict[str, list[dict]]:
        """getPodMapForDeployment: every pod (terminating ones too) keyed by its owning RS name."""
        out: dict[str, list[dict]] = {meta(rs)["name"]: [] for rs in rs_list}
        for pod in self.snap.list("Pod", self.ns):
            if not selector_matches(_spec(self.d)["selector"], labels_of(pod)):
                continue
            for rs in rs_list:
                if is_controlled_by(pod, rs):
                    out[meta(rs)["name"]].append(pod)
                    break
        return out

    # -- sync.go
    def get_all_replicasets(self, rs_list: list[dict], create: bool) -> tuple[dict | None, list[dict]]:
        """getAllReplicaSetsAndSyncRevision: (new RS or None, all old RSs)."""
        new_rs = self._find_new_rs(rs_list)
        old = [rs for rs in rs_list if rs is not new_rs]
        return self._get_new_rs(new_rs, old, create), old

    def _find_new_rs(self, rs_list: list[dict]) -> dict | None:
        for rs in _by_creation(rs_list):
            if equal_ignore_hash(_spec(rs).get("template") or {}, _spec(self.d).get("template") or {}):
                return rs
        return None

    def _get_new_rs(self, existing: dict | None, old: list[dict], create: bool) -> dict | None:
        d = self.d
        max_old = max((r for r in (revision_of(rs) for rs in old) if r is not None), default=0)
        new_revision = str(max_old + 1)
        if existing is not None:
            annotations_updated = self._set_new_rs_annotations(existing, new_revision, exists=True)
            if annotations_updated or _min_ready_seconds(existing) != _min_ready_seconds(d):
                existing.setdefault("spec", {})["minReadySeconds"] = _min_ready_seconds(d)
                self._touch(existing)
                return existing
            d["metadata"]["annotations"][REVISION_ANNOTATION] = (meta(existing).get("annotations") or {}).get(
                REVISION_ANNOTATION, ""
            )
            if _progress_deadline(d) is not None and get_condition(d, "Progressing") is None:
                _set_condition(
                    d["status"],
                    _new_condition(
                        "Progressing",
                        "True",
                        REASON_FOUND_NEW_RS,
                        f'Found new replica set "{meta(existing)["name"]}"',
                        self.now,
                    ),
                )
            return existing
        if not create:
            return None

        template = copy.deepcopy(_spec(d).get("template") or {})
        pod_hash = compute_hash(template, d["status"].get("collisionCount"))
        template.setdefault("metadata", {})
        template["metadata"]["labels"] = {
            **(template["metadata"].get("labels") or {}),
            UNIQUE_LABEL_KEY: pod_hash,
        }
        selector = copy.deepcopy(_spec(d)["selector"])
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), UNIQUE_LABEL_KEY: pod_hash}
        name = f"{meta(d)['name']}-{pod_hash}"
        new_rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": self.ns,
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [new_controller_ref(self.orig)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": _min_ready_seconds(d),
                "selector": selector,
                "template": template,
            },
        }
        new_rs["spec"]["replicas"] = self.new_rs_new_replicas([*old, new_rs], new_rs)
        self._set_new_rs_annotations(new_rs, new_revision, exists=False)

        clash = self.rs_pool.get(name)
        if clash is not None:
            if is_controlled_by(clash, self.orig) and equal_ignore_hash(
                _spec(d).get("template") or {}, _spec(clash).get("template") or {}
            ):
                new_rs, already_exists = clash, True
            else:
                # Hash collision: bump collisionCount so the next sync hashes differently.
                d["status"]["collisionCount"] = int(d["status"].get("collisionCount") or 0) + 1
                return None
        else:
            self.created[name] = new_rs
            self.rs_pool[name] = new_rs
            already_exists = False
            if replicas_of(new_rs) > 0:
                self._scaled(new_rs, 0, replicas_of(new_rs))
        d["metadata"]["annotations"][REVISION_ANNOTATION] = new_revision
        if not already_exists and _progress_deadline(d) is not None:
            _set_condition(
                d["status"],
                _new_condition(
                    "Progressing",
                    "True",
                    REASON_NEW_RS_CREATED,
                    f'Created new replica set "{name}"',
                    self.now,
                ),
            )
        return new_rs

    def _set_new_rs_annotations(self, rs: dict, new_revision: str, exists: bool) -> bool:
        """SetNewReplicaSetAnnotations: copy the deployment's annotations, raise the revision, keep
        the history of revisions this template served, and stamp replica annotations on creation."""
        anns = rs.setdefault("metadata", {}).setdefault("annotations", {})
        changed = False
        for k, v in self.d["metadata"]["annotations"].items():
            if k in _SKIP_ANNOTATIONS or anns.get(k) == v:
                continue
            anns[k] = v
            changed = True
        had = REVISION_ANNOTATION in anns
        old_revision = anns.get(REVISION_ANNOTATION, "")
        try:
            old_int = int(old_revision) if old_revision != "" else 0
        except ValueError:
            return False
        new_int = int(new_revision)
        if old_int < new_int:
            anns[REVISION_ANNOTATION] = new_revision
            changed = True
            if had:
                history = anns.get(REVISION_HISTORY_ANNOTATION, "")
                if not history:
                    anns[REVISION_HISTORY_ANNOTATION] = old_revision
                else:
                    parts = history.split(",")
                    total, start = len(history) + len(old_revision) + 1, 0
                    while total > MAX_REV_HISTORY_CHARS and start < len(parts):
                        total -= len(parts[start]) + 1
                        start += 1
                    if total <= MAX_REV_HISTORY_CHARS:
                        anns[REVISION_HISTORY_ANNOTATION] = ",".join([*parts[start:], old_revision])
        if not exists and self._set_replicas_annotations(rs):
            changed = True
        return changed

    def _replica_annotation_values(self) -> tuple[str, str]:
        n = replicas_of(self.d)
        return str(n), str(n + max_surge(self.d))

    def _set_replicas_annotations(self, rs: dict) -> bool:
        desired, maximum = self._replica_annotation_values()
        anns = rs.setdefault("metadata", {}).setdefault("annotations", {})
        changed = (
            anns.get(DESIRED_REPLICAS_ANNOTATION) != desired or anns.get(MAX_REPLICAS_ANNOTATION) != maximum
        )
        anns[DESIRED_REPLICAS_ANNOTATION], anns[MAX_REPLICAS_ANNOTATION] = desired, maximum
        return changed

    def new_rs_new_replicas(self, all_rss: list[dict], new_rs: dict) -> int:
        """NewRSNewReplicas: how far the new RS may grow now (bounded by maxSurge when rolling)."""
        d = self.d
        if not is_rolling_update(d):
            return replicas_of(d)
        ru = _strategy(d).get("rollingUpdate") or {}
        surge = value_from_int_or_percent(ru.get("maxSurge", "25%"), replicas_of(d), True)
        current = _sum_spec(all_rss)
        max_total = replicas_of(d) + surge
        if current >= max_total:
            return replicas_of(new_rs)
        scale_up = min(max_total - current, replicas_of(d) - replicas_of(new_rs))
        return replicas_of(new_rs) + scale_up

    def scale_replicaset(self, rs: dict, new_scale: int) -> bool:
        """scaleReplicaSet: resize and refresh desired/max annotations; True when the size changed."""
        size_changes = replicas_of(rs) != new_scale
        desired, maximum = self._replica_annotation_values()
        anns = meta(rs).get("annotations") or {}
        if (
            size_changes
            or anns.get(DESIRED_REPLICAS_ANNOTATION) != desired
            or anns.get(MAX_REPLICAS_ANNOTATION) != maximum
        ):
            if size_changes:
                self._scaled(rs, replicas_of(rs), new_scale)
            rs.setdefault("spec", {})["replicas"] = new_scale
            self._set_replicas_annotations(rs)
            self._touch(rs)
        return size_changes

    def scale_if_needed(self, rs: dict, new_scale: int) -> bool:
        """scaleReplicaSetAndRecordEvent: no write at all when the size is already right."""
        if replicas_of(rs) == new_scale:
            return False
        return self.scale_replicaset(rs, new_scale)

    def is_scaling_event(self, rs_list: list[dict]) -> bool:
        """A replica count change, told apart from a rollout by the desired-replicas annotation."""
        new_rs, old = self.get_all_replicasets(rs_list, create=False)
        for rs in _active([*old, new_rs]):
            desired = _int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
            if desired is not None and desired != replicas_of(self.d):
                return True
        return False

    def sync(self, rs_list: list[dict]) -> None:
        """Scaling events and paused deployments: resize proportionally, no rollout progress."""
        new_rs, old = self.get_all_replicasets(rs_list, create=False)
        self.scale(new_rs, old)
        if _spec(self.d).get("paused"):
            self.cleanup_deployment(old)
        self.sync_deployment_status([*old, new_rs], new_rs)

    def sync_status_only(self, rs_list: list[dict]) -> None:
        new_rs, old = self.get_all_replicasets(rs_list, create=False)
        self.sync_deployment_status([*old, new_rs], new_rs)

    def check_paused_conditions(self) -> None:
        d = self.d
        if _progress_deadline(d) is None:
            return
        cond = get_condition(d, "Progressing")
        if cond is not None and cond.get("reason") == REASON_TIMED_OUT:
            return
        paused_exists = cond is not None and cond.get("reason") == REASON_PAUSED
        if _spec(d).get("paused") and not paused_exists:
            _set_condition(
                d["status"],
                _new_condition("Progressing", "Unknown", REASON_PAUSED, "Deployment is paused", self.now),
            )
        elif not _spec(d).get("paused") and paused_exists:
            _set_condition(
                d["status"],
                _new_condition("Progressing", "Unknown", REASON_RESUMED, "Deployment is resumed", self.now),
            )

    def scale(self, new_rs: dict | None, old: list[dict]) -> None:
        """sync.go scale(): one active RS takes the full count; otherwise share the difference
        proportionally (rolling) so a scale during a rollout does not speed the rollout up."""
        d = self.d
        latest = self._find_active_or_latest(new_rs, old)
        if latest is not None:
            if replicas_of(latest) != replicas_of(d):
                self.scale_if_needed(latest, replicas_of(d))
            return
        if self._is_saturated(new_rs):
            for rs in _active(old):
                self.scale_if_needed(rs, 0)
            return
        if not is_rolling_update(d):
            return
        all_rss = _active([*old, new_rs])
        allowed = replicas_of(d) + max_surge(d) if replicas_of(d) > 0 else 0
        to_add = allowed - _sum_spec(all_rss)
        if to_add > 0:  # ReplicaSetsBySizeNewer
            all_rss = sorted(_by_creation(all_rss, reverse=True), key=replicas_of, reverse=True)
        elif to_add < 0:  # ReplicaSetsBySizeOlder
            all_rss = sorted(_by_creation(all_rss), key=replicas_of, reverse=True)
        added = 0
        sizes: dict[str, int] = {}
        for rs in all_rss:
            if to_add != 0:
                proportion = self._proportion(rs, to_add, added)
                sizes[meta(rs)["name"]] = replicas_of(rs) + proportion
                added += proportion
            else:
                sizes[meta(rs)["name"]] = replicas_of(rs)
        for i, rs in enumerate(all_rss):
            name = meta(rs)["name"]
            if i == 0 and to_add != 0:
                sizes[name] = max(sizes[name] + to_add - added, 0)
            self.scale_replicaset(rs, sizes[name])

    @staticmethod
    def _find_active_or_latest(new_rs: dict | None, old: list[dict]) -> dict | None:
        if new_rs is None and not old:
            return None
        newest_first = _by_creation(old, reverse=True)
        active = _active([*newest_first, new_rs])
        if not active:
            return new_rs if new_rs is not None else newest_first[0]
        return active[0] if len(active) == 1 else None

    def _is_saturated(self, rs: dict | None) -> bool:
        if rs is None:
            return False
        desired = _int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
        n = replicas_of(self.d)
        return (
            desired is not None
            and replicas_of(rs) == n
            and desired == n
            and _rs_status(rs, "availableReplicas") == n
        )

    def _proportion(self, rs: dict, to_add: int, added: int) -> int:
        """GetProportion: this RS's share of the change, never overshooting what is left."""
        if replicas_of(rs) == 0 or to_add == 0 or to_add == added:
            return 0
        fraction = self._fraction(rs)
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    def _fraction(self, rs: dict) -> int:
        d = self.d
        if replicas_of(d) == 0:
            return -replicas_of(rs)
        deployment_replicas = replicas_of(d) + max_surge(d)
        annotated = _int_annotation(rs, MAX_REPLICAS_ANNOTATION)
        if annotated is None:
            annotated = int(d["status"].get("replicas") or 0)
        if annotated <= 0:
            return 0
        return _round_half_away(replicas_of(rs) * deployment_replicas / annotated) - replicas_of(rs)

    def cleanup_deployment(self, old: list[dict]) -> None:
        """Keep only revisionHistoryLimit old RSs, deleting the oldest revisions that are fully
        scaled down (and whose scale-down the RS controller has observed)."""
        limit = _revision_history_limit(self.d)
        if limit is None:
            return
        cleanable = [rs for rs in old if not is_terminating(rs)]
        diff = len(cleanable) - limit
        if diff <= 0:
            return
        for rs in _by_revision(cleanable)[:diff]:
            name = meta(rs)["name"]
            if (
                _rs_status(rs, "replicas") != 0
                or replicas_of(rs) != 0
                or name in self.changed
                or int(meta(rs).get("generation") or 0) > _rs_status(rs, "observedGeneration")
            ):
                continue
            self.deleted[name] = rs

    def calculate_status(self, all_rss: list[dict | None], new_rs: dict | None) -> dict:
        d = self.d
        available = _sum_status(all_rss, "availableReplicas")
        total = _sum_spec(all_rss)
        status: dict = {
            "observedGeneration": int(meta(d).get("generation") or 0),
            "replicas": _sum_status(all_rss, "replicas"),
            "updatedReplicas": _sum_status([new_rs], "replicas"),
            "readyReplicas": _sum_status(all_rss, "readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
        }
        if d["status"].get("collisionCount") is not None:
            status["collisionCount"] = d["status"]["collisionCount"]
        if d["status"].get("conditions"):
            status["conditions"] = copy.deepcopy(d["status"]["conditions"])
        if available >= replicas_of(d) - max_unavailable(d):
            cond = _new_condition(
                "Available", "True", REASON_MIN_AVAILABLE, "Deployment has minimum availability.", self.now
            )
        else:
            cond = _new_condition(
                "Available",
                "False",
                REASON_MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                self.now,
            )
        _set_condition(status, cond)
        return status

    def sync_deployment_status(self, all_rss: list[dict | None], new_rs: dict | None) -> None:
        self.d["status"] = self.calculate_status(all_rss, new_rs)

    # -- progress.go
    def sync_rollout_status(self, all_rss: list[dict | None], new_rs: dict | None) -> None:
        """syncRolloutStatus: status plus the Progressing condition that tells rollouts apart."""
        d = self.d
        new = self.calculate_status(all_rss, new_rs)
        if _progress_deadline(d) is None:
            _remove_condition(new, "Progressing")
        current = get_condition(d, "Progressing")
        complete = (
            new["replicas"] == new["updatedReplicas"]
            and current is not None
            and current.get("reason") == REASON_NEW_RS_AVAILABLE
        )
        if _progress_deadline(d) is not None and not complete:
            what = (
                f'ReplicaSet "{meta(new_rs)["name"]}"'
                if new_rs is not None
                else f'Deployment "{meta(d)["name"]}"'
            )
            if deployment_complete(d, new):
                _set_condition(
                    new,
                    _new_condition(
                        "Progressing",
                        "True",
                        REASON_NEW_RS_AVAILABLE,
                        f"{what} has successfully progressed.",
                        self.now,
                    ),
                )
            elif _deployment_progressing(d, new):
                cond = _new_condition(
                    "Progressing", "True", REASON_RS_UPDATED, f"{what} is progressing.", self.now
                )
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get("lastTransitionTime")
                    _remove_condition(new, "Progressing")
                _set_condition(new, cond)
            elif _deployment_timed_out(d, new, self.now):
                _set_condition(
                    new,
                    _new_condition(
                        "Progressing",
                        "False",
                        REASON_TIMED_OUT,
                        f"{what} has timed out progressing.",
                        self.now,
                    ),
                )
        failures = self._replica_failures(all_rss, new_rs)
        if failures:
            _set_condition(new, failures[0])
        else:
            _remove_condition(new, "ReplicaFailure")
        d["status"] = new

    @staticmethod
    def _replica_failures(all_rss: list[dict | None], new_rs: dict | None) -> list[dict]:
        def of(rs: dict | None) -> list[dict]:
            return [
                {
                    "type": c.get("type"),
                    "status": c.get("status"),
                    "lastUpdateTime": c.get("lastTransitionTime"),
                    "lastTransitionTime": c.get("lastTransitionTime"),
                    "reason": c.get("reason"),
                    "message": c.get("message"),
                }
                for c in ((rs or {}).get("status") or {}).get("conditions") or []
                if c.get("type") == "ReplicaFailure"
            ]

        found = of(new_rs)
        if found:
            return found
        return [c for rs in all_rss for c in of(rs)]

    # -- rolling.go
    def rollout_rolling(self, rs_list: list[dict]) -> None:
        new_rs, old = self.get_all_replicasets(rs_list, create=True)
        if new_rs is None:  # hash collision: retry next sync with the new collisionCount
            return
        all_rss: list[dict | None] = [*old, new_rs]
        if self.reconcile_new_replicaset(all_rss, new_rs):
            return self.sync_rollout_status(all_rss, new_rs)
        if self.reconcile_old_replicasets(all_rss, _active(old), new_rs):
            return self.sync_rollout_status(all_rss, new_rs)
        if deployment_complete(self.d, self.d["status"]):
            self.cleanup_deployment(old)
        self.sync_rollout_status(all_rss, new_rs)

    def reconcile_new_replicaset(self, all_rss: list[dict | None], new_rs: dict) -> bool:
        want = replicas_of(self.d)
        if replicas_of(new_rs) == want:
            return False
        if replicas_of(new_rs) > want:
            return self.scale_if_needed(new_rs, want)
        return self.scale_if_needed(new_rs, self.new_rs_new_replicas([r for r in all_rss if r], new_rs))

    def reconcile_old_replicasets(self, all_rss: list[dict | None], old: list[dict], new_rs: dict) -> bool:
        """Scale old RSs down only as far as maxUnavailable allows, counting the new RS's
        not-yet-available pods as unavailable so a crashlooping rollout cannot eat the old pods."""
        if _sum_spec(old) == 0:
            return False
        min_available = replicas_of(self.d) - max_unavailable(self.d)
        new_unavailable = replicas_of(new_rs) - _rs_status(new_rs, "availableReplicas")
        max_scaled_down = _sum_spec(all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = self._cleanup_unhealthy_replicas(old, max_scaled_down)
        scaled = self._scale_down_old_for_rolling_update([*old, new_rs], old)
        return cleaned + scaled > 0

    def _cleanup_unhealthy_replicas(self, old: list[dict], max_cleanup: int) -> int:
        """Unavailable old pods can go first: removing them costs no availability."""
        total = 0
        for rs in _by_creation(old):
            if total >= max_cleanup:
                break
            if replicas_of(rs) == 0 or replicas_of(rs) == _rs_status(rs, "availableReplicas"):
                continue
            count = min(max_cleanup - total, replicas_of(rs) - _rs_status(rs, "availableReplicas"))
            if count <= 0:  # availability above spec (stale status): nothing unhealthy to remove
                continue
            self.scale_if_needed(rs, replicas_of(rs) - count)
            total += count
        return total

    def _scale_down_old_for_rolling_update(self, all_rss: list[dict], old: list[dict]) -> int:
        min_available = replicas_of(self.d) - max_unavailable(self.d)
        available = _sum_status(all_rss, "availableReplicas")
        if available <= min_available:
            return 0
        total, budget = 0, available - min_available
        for rs in _by_creation(old):
            if total >= budget:
                break
            if replicas_of(rs) == 0:
                continue
            count = min(replicas_of(rs), budget - total)
            self.scale_if_needed(rs, replicas_of(rs) - count)
            total += count
        return total

    # -- recreate.go
    def rollout_recreate(self, rs_list: list[dict]) -> None:
        """Old pods all gone before the new RS is even created, so two versions never overlap."""
        new_rs, old = self.get_all_replicasets(rs_list, create=False)
        all_rss: list[dict | None] = [*old, new_rs]
        scaled_down = False
        for rs in _active(old):
            if self.scale_if_needed(rs, 0):
                scaled_down = True
        if scaled_down:
            return self.sync_rollout_status(all_rss, new_rs)
        if self._old_pods_running(new_rs, old, self._pods_by_rs(rs_list)):
            return self.sync_rollout_status(all_rss, new_rs)
        if new_rs is None:
            new_rs, old = self.get_all_replicasets(rs_list, create=True)
            if new_rs is None:
                return
            all_rss = [*old, new_rs]
        self.scale_if_needed(new_rs, replicas_of(self.d))
        if deployment_complete(self.d, self.d["status"]):
            self.cleanup_deployment(old)
        self.sync_rollout_status(all_rss, new_rs)

    @staticmethod
    def _old_pods_running(new_rs: dict | None, old: list[dict], pods_by_rs: dict[str, list[dict]]) -> bool:
        if _sum_status(old, "replicas") > 0:
            return True
        new_name = meta(new_rs)["name"] if new_rs is not None else None
        for name, pods in pods_by_rs.items():
            if name == new_name:
                continue
            if any(pod_phase(p) not in ("Succeeded", "Failed") for p in pods):
                return True
        return False


def reconcile_deployments(snap: Snapshot, rng: random.Random | None = None) -> list[Op]:
    """One syncDeployment per Deployment. `rng` is accepted for symmetry with the other
    controllers; the deployment controller itself is deterministic."""
    del rng
    ops: list[Op] = []
    for d in snap.list("Deployment"):
        ops.extend(_Sync(snap, d).run())
    return ops


def requeue_after(snap: Snapshot) -> float | None:
    """Seconds until some rollout may hit its progress deadline (requeueStuckDeployment), so the
    daemon can resync then even if nothing else changes."""
    best: float | None = None
    for d in snap.list("Deployment"):
        deadline = _progress_deadline(d)
        cond = get_condition(d, "Progressing")
        if (
            deadline is None
            or cond is None
            or cond.get("reason") in (REASON_TIMED_OUT, REASON_NEW_RS_AVAILABLE)
        ):
            continue
        if deployment_complete(d, d.get("status") or {}):
            continue
        since = parse_time(cond.get("lastUpdateTime"))
        if since is None:
            continue
        wait = max(since + deadline - snap.now, 0.0) + 1.0
        best = wait if best is None else min(best, wait)
    return best
