"""What every controller takes and returns: a read-only snapshot of the store in, operations out.

Controllers are pure and level-triggered: given the whole state they return the writes that move it
toward the desired state, and nothing else. The daemon applies the writes; tests call them directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Key = tuple[str, str, str]  # (kind, namespace or "", name)


def key_of(obj: dict) -> Key:
    meta = obj.get("metadata", {})
    return (obj["kind"], meta.get("namespace", "") or "", meta["name"])


@dataclass
class Snapshot:
    """All objects of the cluster at one instant, indexed by kind."""

    objects: dict[Key, dict] = field(default_factory=dict)
    now: float = 0.0  # seconds since the epoch, as the controllers should see it
    _index: dict[str, dict[tuple[str, str], dict]] = field(default_factory=dict, repr=False, compare=False)

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
        out = [o for (k, ns, _), o in self.objects.items() if k == kind and (namespace is None or ns == namespace)]
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out


@dataclass
class Op:
    """One write. `create` takes a full object (metadata.name set, or generateName); `update` replaces
    spec/metadata of an existing object; `status` replaces only .status; `delete` starts graceful
    deletion (pods) or removes the object."""

    verb: Literal["create", "update", "status", "delete"]
    obj: dict
