"""What every controller takes and returns: a read-only snapshot of the store in, operations out.

Controllers are pure and level-triggered: given the whole state they return the writes that move it
toward the desired state, and nothing else. The daemon applies the writes; tests call them directly.

Snapshots made by one SnapshotCache also say what changed between them (a change log, as an
informer's event stream), so an agent that remembers the snapshot it last saw can look at the few
objects that changed instead of comparing every object's resourceVersion: at 30k Services that
comparison alone is ~60 ms, a one-endpoint change a handful of dictionary look-ups.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Key = tuple[str, str, str]  # (kind, namespace or "", name)
NamespacedName = tuple[str, str]


def key_of(obj: dict) -> Key:
    meta = obj.get("metadata", {})
    return (obj["kind"], meta.get("namespace", "") or "", meta["name"])


class ChangeLog:
    """The keys that changed at each step of one SnapshotCache, in order. Bounded: entries older
    than `keep` are dropped, and a reader from before them is told to compare everything."""

    def __init__(self, keep: int = 200_000) -> None:
        self.keep = keep
        self.seqs: list[int] = []  # one per entry, non-decreasing
        self.keys: list[Key] = []
        self.complete_after = 0  # every change with a larger seq is here

    def record(self, seq: int, keys: Iterable[Key]) -> None:
        for k in keys:
            self.seqs.append(seq)
            self.keys.append(k)
        if len(self.keys) > 2 * self.keep:
            cut = len(self.keys) - self.keep
            # never split one step: drop whole steps only
            cut = bisect.bisect_right(self.seqs, self.seqs[cut - 1])
            self.complete_after = self.seqs[cut - 1]
            del self.seqs[:cut], self.keys[:cut]

    def between(self, after: int, upto: int) -> list[Key] | None:
        """Keys changed in steps after..upto, or None when the log no longer reaches back that far."""
        if after < self.complete_after:
            return None
        lo = bisect.bisect_right(self.seqs, after)
        hi = bisect.bisect_right(self.seqs, upto)
        return self.keys[lo:hi]


@dataclass(frozen=True)
class Cursor:
    """Where a reader stands in one cache's change log: the snapshot it saw last."""

    log: ChangeLog
    seq: int


@dataclass
class Snapshot:
    """All objects of the cluster at one instant, indexed by kind."""

    objects: dict[Key, dict] = field(default_factory=dict)
    now: float = 0.0  # seconds since the epoch, as the controllers should see it
    _index: dict[str, dict[tuple[str, str], dict]] = field(default_factory=dict, repr=False, compare=False)
    cursor: Cursor | None = field(default=None, repr=False, compare=False)  # set by a SnapshotCache
    _sorted: dict[str, list[dict]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, objs: Iterable[dict], now: float = 0.0) -> Snapshot:
        return cls({key_of(o): o for o in objs}, now)

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self.objects.get((kind, namespace or "", name))

    def index(self, kind: str) -> dict[tuple[str, str], dict]:
        """Objects of one kind by (namespace, name), unsorted; built once per snapshot, shared by
        every node agent that scans it (a snapshot is read-only)."""
        if not self._index:
            for (k, ns, name), o in self.objects.items():
                self._index.setdefault(k, {})[(ns, name)] = o
        return self._index.get(kind, {})

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        """Objects of one kind (in one namespace), by namespace and name; a new list each call, of
        one sort per snapshot and kind (controllers list the same kinds several times a pass)."""
        ordered = self._sorted.get(kind)
        if ordered is None:
            ordered = self._sorted[kind] = [o for _, o in sorted(self.index(kind).items())]
        if namespace is None:
            return list(ordered)
        return [o for o in ordered if (o["metadata"].get("namespace") or "") == namespace]

    def changed_keys(self, since: Cursor | None) -> list[Key] | None:
        """Keys of every object written or deleted since the snapshot `since` points at (in the
        order written, repeats included), or None when this snapshot cannot tell (see changes)."""
        cur = self.cursor
        if since is None or cur is None or since.log is not cur.log or since.seq > cur.seq:
            return None
        return cur.log.between(since.seq, cur.seq)

    def changes(self, since: Cursor | None, kinds: Iterable[str]) -> dict[str, dict[NamespacedName, dict | None]] | None:
        """Objects of these kinds that changed since the snapshot `since` points at, per kind by
        (namespace, name); None (deleted) where gone. None when this snapshot cannot tell: no
        cursor, another cache's, or older than the log keeps. The objects given may be unchanged
        (written again with the same content): a reader still compares what it needs."""
        keys = self.changed_keys(since)
        if keys is None:
            return None
        out: dict[str, dict[NamespacedName, dict | None]] = {k: {} for k in kinds}
        for kind, ns, name in keys:
            by_name = out.get(kind)
            if by_name is not None:
                by_name[(ns, name)] = self.index(kind).get((ns, name))
        return out


@dataclass
class Since:
    """A controller's place in the snapshots' change log, kept by the control loop between passes,
    so that a pass looks at what changed; and the keys its last pass wrote for, looked at again
    until they settle (a write that was lost shows in no change log)."""

    cursor: Cursor | None = None
    pending: set[Key] = field(default_factory=set)

    def changed(self, snap: Snapshot) -> set[Key] | None:
        """The keys to look at in snap: changed since the last pass, and pending; None: all."""
        keys = snap.changed_keys(self.cursor)
        return None if keys is None else set(keys) | self.pending

    def done(self, snap: Snapshot, pending: Iterable[Key]) -> None:
        """The pass over snap is done; `pending`: the keys it wrote for."""
        self.cursor, self.pending = snap.cursor, set(pending)


def controller_ref(api_version: str, kind: str, name: str, uid: object) -> dict:
    """metav1.NewControllerRef: the owner reference a controller puts on what it makes."""
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}  # fmt: skip


class SliceOwners:
    """Which owner (a Service, or an Endpoints) each EndpointSlice belongs to, and the slices of
    each owner: kept from the change log, so that a changed or deleted slice (which may have lost
    the labels that said whose it was) names the owner to reconcile."""

    def __init__(self) -> None:
        self.slice_owner: dict[NamespacedName, NamespacedName] = {}
        self.slices_of: dict[NamespacedName, set[NamespacedName]] = {}

    def track(self, key: NamespacedName, owner: NamespacedName | None) -> NamespacedName | None:
        """Record a slice's owner (None: none of ours, or gone); returns the one before."""
        before = self.slice_owner.pop(key, None)
        if before is not None:
            self.slices_of[before].discard(key)
            if not self.slices_of[before]:
                del self.slices_of[before]
        if owner is not None:
            self.slice_owner[key] = owner
            self.slices_of.setdefault(owner, set()).add(key)
        return before


class SliceNames:
    """The EndpointSlice names taken in a namespace, read from the snapshot only when a name is
    needed (a pass that creates no slice never scans them)."""

    def __init__(self, snap: Snapshot, namespace: str) -> None:
        self.snap, self.namespace = snap, namespace
        self.names: set[str] | None = None

    def _load(self) -> set[str]:
        if self.names is None:
            self.names = {name for (n, name) in self.snap.index("EndpointSlice") if n == self.namespace}
        return self.names

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def add(self, name: str) -> None:
        self._load().add(name)


class SnapshotCache:
    """Parsed objects kept between snapshots, as an informer's cache: each step applies what was
    written since the last one, and each Snapshot it returns is an independent copy (its dicts of
    objects; the objects themselves are shared and must be treated as read-only)."""

    def __init__(self, log_keep: int = 200_000) -> None:
        self.objects: dict[Key, dict] = {}
        self._by_kind: dict[str, dict[NamespacedName, dict]] = {}
        self.log = ChangeLog(log_keep)
        self.seq = 0

    def apply(self, upserts: Iterable[dict], deletes: Iterable[Key], now: float = 0.0) -> Snapshot:
        changed: list[Key] = []
        for o in upserts:
            k = key_of(o)
            self.objects[k] = o
            self._by_kind.setdefault(k[0], {})[(k[1], k[2])] = o
            changed.append(k)
        for k in deletes:
            if self.objects.pop(k, None) is not None:
                self._by_kind.get(k[0], {}).pop((k[1], k[2]), None)
                changed.append(k)
        if changed:
            self.seq += 1
            self.log.record(self.seq, changed)
        return self.snapshot(now)

    def snapshot(self, now: float = 0.0) -> Snapshot:
        index = {kind: dict(objs) for kind, objs in self._by_kind.items() if objs}
        return Snapshot(dict(self.objects), now, index, Cursor(self.log, self.seq))


@dataclass
class Op:
    """One write. `create` takes a full object (metadata.name set, or generateName); `update` replaces
    spec/metadata of an existing object; `status` replaces only .status; `delete` starts graceful
    deletion (pods) or removes the object."""

    verb: Literal["create", "update", "status", "delete"]
    obj: dict
