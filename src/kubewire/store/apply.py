"""`apply` and `delete` of manifests against the store: all documents or none.

Every document is defaulted and validated first (against the stored object, for immutable fields)
and Services get their ClusterIPs and NodePorts; only when all of that passes is anything written,
in one transaction. When something fails, every failing document is reported at once, in document
order (kubectl reports an error per object), not just the first.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from kubewire.api.allocation import AllocationError, prepare_service, service_allocations, used_allocations
from kubewire.api.errors import FieldError, ManifestError, raise_if_any
from kubewire.api.kinds import UnknownKindError, lookup_kind
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


@dataclass
class _Prepared:
    pos: int  # place in the apply's documents, to report errors in document order
    doc: Document
    new: dict
    old: dict | None


def _prepare(store: Store, docs: list[Document], default_namespace: str,
             ) -> tuple[list[_Prepared], list[tuple[int, ManifestError]]]:
    """Each document defaulted and validated, or its error (a document read_paths could not read
    brings its own)."""
    prepared: list[_Prepared] = []
    failed: list[tuple[int, ManifestError]] = []
    namespaces_in_batch: set[str] = set()
    for pos, d in enumerate(docs):
        if d.error is not None:
            failed.append((pos, d.error))
            continue
        try:
            new, old = _prepare_one(store, d, default_namespace, namespaces_in_batch)
            prepared.append(_Prepared(pos, d, new, old))
        except ManifestError as e:
            failed.append((pos, e))
        if d.obj.get("kind") == "Namespace":
            # Even an invalid Namespace counts as created here: its own error is the one to report,
            # not a "namespace not found" for every later document in it.
            name = d.obj.get("metadata", {}).get("name") if isinstance(d.obj.get("metadata"), dict) else None
            if isinstance(name, str):
                namespaces_in_batch.add(name)
    return prepared, failed


def _prepare_one(store: Store, d: Document, default_namespace: str,
                 namespaces_in_batch: set[str]) -> tuple[dict, dict | None]:
    """(object to store, stored object or None), or ManifestError."""
    obj = json.loads(json.dumps(d.obj))
    if obj.get("metadata") is None:
        obj["metadata"] = {}
    meta = obj["metadata"]
    try:
        info = lookup_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
    except UnknownKindError:
        info = None
    if info is None or not isinstance(meta, dict):
        # Without a served kind and a metadata mapping nothing can be looked up; validation
        # rejects both and names the problem as this document's error.
        validate_and_default(Document(d.source, d.index, obj))
        raise AssertionError(f"{d.source}: document {d.index}: validation accepted an unservable object")
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
    if old is not None and "deletionTimestamp" in old["metadata"]:
        raise ManifestError(d.source, d.index, obj["kind"], meta.get("name"),
                            [FieldError("metadata", "Conflict: object is being deleted")])
    return new, old


def _keep_server_fields(obj: dict, old: dict) -> None:
    """Fields the server or controllers set (a pod's node binding) survive a re-apply, as with kubectl."""
    if obj.get("kind") == "Pod" and old.get("spec", {}).get("nodeName") and isinstance(obj.get("spec"), dict):
        obj["spec"].setdefault("nodeName", old["spec"]["nodeName"])


def _allocate(store: Store, prepared: list[_Prepared], service_cidr: str) -> list[tuple[int, ManifestError]]:
    """Give each Service its ClusterIPs and NodePorts (replacing `new` in place), in document order;
    a Service that cannot have its own gets an error and takes nothing from the later ones."""
    failed: list[tuple[int, ManifestError]] = []
    used_ips: set[str] | None = None
    used_ports: set[int] = set()
    rng = random.Random()
    for p in prepared:
        if p.new["kind"] != "Service":
            continue
        if used_ips is None:
            used_ips, used_ports = used_allocations(store.list("Service"))
        try:
            p.new = prepare_service(p.new, p.old, used_ips, used_ports, service_cidr, rng)
        except AllocationError as e:
            m = p.new["metadata"]
            failed.append((p.pos, ManifestError(p.doc.source, p.doc.index, "Service", m.get("name"), e.errors,
                                                namespace=m.get("namespace"))))
            continue
        ips, ports = service_allocations(p.new)
        used_ips |= ips
        used_ports |= ports
    return failed


def apply_documents(store: Store, docs: list[Document], default_namespace: str = "default",
                    service_cidr: str = "10.96.0.0/12") -> list[Applied]:
    """Create or update every document, or, when any fails, none: then every failing document's
    error is raised together (ManifestErrors; a lone failure as the ManifestError it is). Documents
    from read_paths that could not be read are reported the same way, in their place."""
    prepared, failed = _prepare(store, docs, default_namespace)
    out: list[Applied] = []
    with store.transaction() as db:
        # Allocation happens inside the transaction, as the API server allocates before it stores,
        # and before anything is written: a conflict between two documents is one more error.
        failed += _allocate(store, prepared, service_cidr)
        raise_if_any([e for _, e in sorted(failed, key=lambda f: f[0])])
        rv = store._next_rv(db)
        for p in prepared:
            d, new, old = p.doc, p.new, p.old
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

