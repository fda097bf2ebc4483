"""Garbage collection and namespace deletion, as kube-controller-manager does them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable

from kubewire.controllers.types import Key, Op, Since, Snapshot, key_of

NAMESPACED_SKIP = {"Namespace", "Node"}
_ABSENT = object()


class GarbageMemo(Since):
    """What the garbage collector keeps between the loop's passes: how many objects carry each uid,
    and the owner uids of every object that has owners. A pass then looks only at the dependents
    that changed, or at every dependent when a uid went away (an owner may be gone)."""

    def __init__(self) -> None:
        super().__init__()
        self.uid_of: dict[Key, object] = {}
        self.uids: Counter = Counter()
        self.dependents: dict[Key, tuple] = {}

    def rebuild(self, snap: Snapshot) -> None:
        self.uid_of, self.uids, self.dependents = {}, Counter(), {}
        for key, obj in snap.objects.items():
            self.add(key, obj)

    def add(self, key: Key, obj: dict) -> None:
        m = obj["metadata"]
        uid = m.get("uid")
        self.uid_of[key] = uid
        self.uids[uid] += 1
        refs = m.get("ownerReferences") or []
        if refs:
            self.dependents[key] = tuple(r.get("uid") for r in refs)

    def remove(self, key: Key) -> object:
        """Forget the object; returns the uid it had (_ABSENT if it was not known)."""
        self.dependents.pop(key, None)
        if key not in self.uid_of:
            return _ABSENT
        uid = self.uid_of.pop(key)
        self.uids[uid] -= 1
        if not self.uids[uid]:
            del self.uids[uid]
        return uid


def collect_garbage(snap: Snapshot, memo: GarbageMemo | None = None) -> list[Op]:
    """Background cascading deletion: a dependent whose owners are all gone is deleted. With a memo
    (the control loop's), only what changed is looked at."""
    if memo is None:
        uids = {o["metadata"].get("uid") for o in snap.objects.values()}
        return [Op("delete", o) for _, o in sorted(snap.objects.items()) if _orphaned(o, uids)]
    changed = memo.changed(snap)
    memo.cursor = None  # a pass that stops midway leaves the memo half-updated: the next one rebuilds it
    if changed is None:
        memo.rebuild(snap)
        candidates: Iterable[Key] = list(memo.dependents)
    else:
        before = []
        for key in changed:
            before.append(memo.remove(key))
            obj = snap.objects.get(key)
            if obj is not None:
                memo.add(key, obj)
        uid_gone = any(uid is not _ABSENT and uid not in memo.uids for uid in before)  # an owner may be gone
        candidates = list(memo.dependents) if uid_gone else [k for k in changed if k in memo.dependents]
    ops = [Op("delete", snap.objects[k]) for k in sorted(candidates) if _orphaned(snap.objects[k], memo.uids)]
    memo.done(snap, (key_of(op.obj) for op in ops))
    return ops


def _orphaned(obj: dict, uids: Collection) -> bool:
    m = obj["metadata"]
    refs = m.get("ownerReferences") or []
    return bool(refs) and not any(r.get("uid") in uids for r in refs) and "deletionTimestamp" not in m


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
