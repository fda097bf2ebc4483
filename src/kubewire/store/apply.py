"""`apply` and `delete` of manifests against the store: all documents or none.

Every document is defaulted and validated first (against the stored object, for immutable fields);
only when all pass is anything written, in one transaction.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from kubewire.api.allocation import AllocationError, prepare_service, service_allocations, used_allocations
from kubewire.api.errors import FieldError, ManifestError
from kubewire.api.kinds import lookup_kind
from kubewire.api.loader import Document
from kubewire.api.validation import validate_and_default
from kubewire.store.db import Store, stamp_new

# Fields a user's apply owns; the rest (status, uid, timestamps, controller-set fields) stay.
SERVER_META = ("uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp",
               "deletionGracePeriodSeconds", "ownerReferences", "finalizers")


@dataclass
class Applied:
    obj: dict
    action: str  # created | configured | unchanged


def _prepare(store: Store, docs: list[Document], default_namespace: str) -> list[tuple[Document, dict, dict | None]]:
    prepared = []
    namespaces_in_batch: set[str] = set()
    for d in docs:
        obj = json.loads(json.dumps(d.obj))
        info = lookup_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            meta["namespace"] = meta.get("namespace") or default_namespace
        else:
            meta.pop("namespace", None)
        old = store.get(obj["kind"], meta.get("namespace", ""), meta.get("name", "")) if meta.get("name") else None
        if old is not None:
            _keep_server_fields(obj, old)
        new = validate_and_default(Document(d.source, d.index, obj), old)
        ns = new["metadata"].get("namespace")
        if info.namespaced and ns not in namespaces_in_batch:
            nso = store.get("Namespace", "", ns)
            if nso is None:
                raise ManifestError(d.source, d.index, obj["kind"], meta.get("name"),
                                    [FieldError("metadata.namespace", f'Not found: namespaces "{ns}" not found')])
            if "deletionTimestamp" in nso["metadata"]:
                raise ManifestError(d.source, d.index, obj["kind"], meta.get("name"),
                                    [FieldError("metadata.namespace", f'Forbidden: unable to create new content in namespace {ns} because it is being terminated')])
        if obj["kind"] == "Namespace":
            namespaces_in_batch.add(new["metadata"]["name"])
        if old is not None and "deletionTimestamp" in old["metadata"]:
            raise ManifestError(d.source, d.index, obj["kind"], meta.get("name"),
                                [FieldError("metadata", "Conflict: object is being deleted")])
        prepared.append((d, new, old))
    return prepared


def _keep_server_fields(obj: dict, old: dict) -> None:
    """Fields the server or controllers set (a pod's node binding) survive a re-apply, as with kubectl."""
    if obj.get("kind") == "Pod" and old.get("spec", {}).get("nodeName") and isinstance(obj.get("spec"), dict):
        obj["spec"].setdefault("nodeName", old["spec"]["nodeName"])


def apply_documents(store: Store, docs: list[Document], default_namespace: str = "default",
                    service_cidr: str = "10.96.0.0/12") -> list[Applied]:
    prepared = _prepare(store, docs, default_namespace)
    out: list[Applied] = []
    rng = random.Random()
    with store.transaction() as db:
        rv = store._next_rv(db)
        used_ips: set[str] | None = None
        used_ports: set[int] = set()
        for d, new, old in prepared:
            if new["kind"] == "Service":
                # Allocation happens inside the transaction, as the API server allocates before it
                # stores: a failure rolls back every document of this apply.
                if used_ips is None:
                    used_ips, used_ports = used_allocations(store.list("Service"))
                try:
                    new = prepare_service(new, old, used_ips, used_ports, service_cidr, rng)
                except AllocationError as e:
                    m = new["metadata"]
                    raise ManifestError(d.source, d.index, "Service", m.get("name"), e.errors,
                                        namespace=m.get("namespace")) from None
                ips, ports = service_allocations(new)
                used_ips |= ips
                used_ports |= ports
            if old is None:
                _record_applied(new, d.obj)
                stamp_new(new)
                new.pop("status", None)
                if new["kind"] == "Namespace":
                    new["status"] = {"phase": "Active"}
                elif new["kind"] == "Service":
                    new["status"] = {"loadBalancer": {}}
                store._put(db, new, rv)
                out.append(Applied(new, "created"))
                continue
            merged = json.loads(json.dumps(old))
            _record_applied(new, d.obj)
            for k, v in new.items():
                if k in ("metadata", "status"):
                    continue
                merged[k] = v
            for k in list(merged):
                if k not in new and k not in ("metadata", "status", "apiVersion", "kind"):
                    del merged[k]
            for k, v in new["metadata"].items():
                if k not in SERVER_META and k not in ("labels", "annotations"):
                    merged["metadata"][k] = v
            last = _last_applied(old)
            for k in ("labels", "annotations"):
                # kubectl's three-way merge: drop only keys the user's previous apply set and this one
                # does not; keys others set (a controller's revision annotation, `label`) stay.
                mine_before = set((last.get("metadata") or {}).get(k) or {})
                cur = {kk: vv for kk, vv in (old["metadata"].get(k) or {}).items()
                       if kk not in mine_before or kk in (new["metadata"].get(k) or {})}
                cur.update(new["metadata"].get(k) or {})
                if cur:
                    merged["metadata"][k] = cur
                else:
                    merged["metadata"].pop(k, None)
            if _same(merged, old):
                out.append(Applied(old, "unchanged"))
                continue
            if merged.get("spec") != old.get("spec"):
                merged["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
            store._put(db, merged, rv)
            out.append(Applied(merged, "configured"))
    return out


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _record_applied(obj: dict, manifest: dict) -> None:
    m = json.loads(json.dumps(manifest))
    (m.get("metadata") or {}).get("annotations", {}).pop(LAST_APPLIED, None)
    obj["metadata"].setdefault("annotations", {})[LAST_APPLIED] = json.dumps(m, separators=(",", ":"), sort_keys=True) + "\n"


def _last_applied(obj: dict) -> dict:
    try:
        return json.loads((obj["metadata"].get("annotations") or {}).get(LAST_APPLIED, "{}"))
    except ValueError:
        return {}


def _same(a: dict, b: dict) -> bool:
    strip = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}  # noqa: E731
    return strip(a) == strip(b)


@dataclass
class Deleted:
    kind: str
    namespace: str
    name: str
    found: bool


def delete_objects(store: Store, keys: list[tuple[str, str, str]], grace: int | None = None) -> list[Deleted]:
    """Pods and namespaces are deleted gracefully (their owners finish the job); the rest at once.
    Dependents (a Deployment's ReplicaSets and Pods) are collected by the daemon's garbage collector."""
    out = []
    for kind, ns, name in keys:
        cur = store.get(kind, ns, name)
        if cur is None:
            out.append(Deleted(kind, ns, name, False))
            continue
        if kind in ("Pod", "Namespace"):
            store.mark_deleting(kind, ns, name, grace)
        else:
            from kubewire.controllers.types import Op

            store.write([Op("delete", cur)])
        out.append(Deleted(kind, ns, name, True))
    return out

