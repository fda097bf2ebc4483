"""Apply controller Ops to a Snapshot in memory, with the API server's side effects, for tests.

The real store assigns identity and bumps generations; a kubelet starts and stops pods. These helpers
do the minimum of both so controllers can be driven step by step without a daemon, deterministically:
uids are derived from the object's key and the creation time, never from randomness.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable

from kubewire.controllers.podutil import format_time, is_active, is_terminating, meta
from kubewire.controllers.types import Key, Op, Snapshot, key_of

_UID_NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")  # uuid.NAMESPACE_URL


def apply_ops(snap: Snapshot, ops: Iterable[Op], now: float | None = None) -> Snapshot:
    """A new Snapshot with `ops` applied in order, as the store would (`now` defaults to snap.now).

    create: sets uid, creationTimestamp, resourceVersion and generation 1; refuses duplicates.
    update: replaces metadata and spec, keeps identity, bumps generation when a non-Pod spec changes.
    status: replaces status only.
    delete: pods get a deletionTimestamp (graceful; see `reap_terminating`), other kinds vanish.
    """
    now = snap.now if now is None else now
    objects: dict[Key, dict] = copy.deepcopy(snap.objects)
    version = max((int(meta(o).get("resourceVersion") or 0) for o in objects.values()), default=0)
    for op in ops:
        obj = copy.deepcopy(op.obj)
        key = key_of(obj)
        version += 1
        if op.verb == "create":
            if key in objects:
                raise ValueError(f"{key} already exists")
            m = obj.setdefault("metadata", {})
            m["uid"] = str(uuid.uuid5(_UID_NAMESPACE, f"{'/'.join(key)}@{now}"))
            m["creationTimestamp"] = format_time(now)
            m["resourceVersion"] = str(version)
            m.setdefault("generation", 1)
            objects[key] = obj
            continue
        if key not in objects:
            raise KeyError(f"{key} not found")
        current = objects[key]
        if op.verb == "update":
            updated = copy.deepcopy(current)
            new_meta = dict(obj.get("metadata") or {})
            for ident in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if ident in current["metadata"]:
                    new_meta[ident] = current["metadata"][ident]
            new_meta["resourceVersion"] = str(version)
            updated["metadata"] = new_meta
            if "spec" in obj:
                if obj["spec"] != current.get("spec") and obj["kind"] != "Pod":
                    new_meta["generation"] = int(current["metadata"].get("generation") or 0) + 1
                updated["spec"] = obj["spec"]
            objects[key] = updated
        elif op.verb == "status":
            current["status"] = obj.get("status") or {}
            current["metadata"]["resourceVersion"] = str(version)
        elif op.verb == "delete":
            if obj["kind"] == "Pod":
                current["metadata"].setdefault("deletionTimestamp", format_time(now))
                current["metadata"]["resourceVersion"] = str(version)
            else:
                del objects[key]
        else:
            raise ValueError(f"unknown verb {op.verb!r}")
    return Snapshot(objects, now)


def _edit_pods(snap: Snapshot, pick: Callable[[dict], bool], edit: Callable[[dict], None]) -> Snapshot:
    objects = copy.deepcopy(snap.objects)
    for key, obj in objects.items():
        if key[0] == "Pod" and pick(obj):
            edit(obj)
    return Snapshot(objects, snap.now)


def make_pods_ready(
    snap: Snapshot, now: float | None = None, pick: Callable[[dict], bool] | None = None, ready: bool = True
) -> Snapshot:
    """What a kubelet reports: scheduled, active pods become Running with Ready=`ready` (changing the
    condition's transition time only when its status flips)."""
    ts = format_time(snap.now if now is None else now)
    want = "True" if ready else "False"

    def edit(pod: dict) -> None:
        status = pod.setdefault("status", {})
        status["phase"] = "Running"
        conds = status.setdefault("conditions", [])
        cond = next((c for c in conds if c.get("type") == "Ready"), None)
        if cond is None:
            conds.append({"type": "Ready", "status": want, "lastTransitionTime": ts})
        elif cond.get("status") != want:
            cond.update(status=want, lastTransitionTime=ts)

    def chosen(pod: dict) -> bool:
        return (
            bool((pod.get("spec") or {}).get("nodeName")) and is_active(pod) and (pick is None or pick(pod))
        )

    return _edit_pods(snap, chosen, edit)


def reap_terminating(snap: Snapshot) -> Snapshot:
    """Finish graceful deletion: pods with a deletionTimestamp are removed."""
    return Snapshot(
        {k: v for k, v in snap.objects.items() if not (k[0] == "Pod" and is_terminating(v))}, snap.now
    )
