"""Keeps the cluster DNS servers' records file current: what CoreDNS reads from its informers,
written atomically whenever a name could have changed."""

from __future__ import annotations

import hashlib
import json
import os

from kubewire.controllers.types import Cursor, Snapshot


def records_doc(snap: Snapshot, domain: str, ttl: int) -> dict:
    def pod_view(p: dict) -> dict:
        spec = p.get("spec", {})
        meta = {"name": p["metadata"]["name"], "namespace": p["metadata"].get("namespace", "")}
        if p["metadata"].get("deletionTimestamp"):  # `pods verified` stops answering for a terminating pod
            meta["deletionTimestamp"] = p["metadata"]["deletionTimestamp"]
        return {"metadata": meta,
                "spec": {k: spec[k] for k in ("hostname", "subdomain") if k in spec},
                "status": {"podIP": p.get("status", {}).get("podIP", ""), "phase": p.get("status", {}).get("phase", "")}}

    pods = [pod_view(p) for p in snap.list("Pod") if p.get("status", {}).get("podIP")]
    dns_ips = [p["status"]["podIP"] for p in snap.list("Pod", "kube-system")
               if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns" and p.get("status", {}).get("podIP")]
    return {
        "domain": domain,
        "ttl": ttl,
        "namespaces": [n["metadata"]["name"] for n in snap.list("Namespace")],
        "services": [{k: s[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in s} for s in snap.list("Service")],
        "endpointslices": snap.list("EndpointSlice"),
        "pods": pods,
        "local_ips": sorted(dns_ips),
    }


_KINDS = ("Namespace", "Service", "EndpointSlice", "Pod")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # which Service a slice's endpoints answer for


def _view(kind: str, obj: dict) -> object:
    """What of an object the records depend on (what the digest below covers)."""
    m = obj["metadata"]
    if kind == "Service":
        return obj.get("spec")
    if kind == "EndpointSlice":
        return (obj.get("endpoints"), obj.get("ports"), m.get("labels", {}).get(SERVICE_NAME_LABEL))
    if kind == "Pod":
        status, spec = obj.get("status", {}), obj.get("spec", {})
        return (status.get("podIP"), status.get("phase"), m.get("deletionTimestamp"), spec.get("hostname"),
                spec.get("subdomain"), m.get("labels", {}).get("k8s-app"))
    return m["name"]


class RecordsFeed:
    """The records file, rewritten when a name could have changed. A step in which nothing the
    records depend on changed (the snapshot's change log, and each changed object's view: a pod's
    readiness, a status write) costs a look at what changed, not serialising every Service and
    EndpointSlice (0.3 s at 10k Services)."""

    def __init__(self, path: str, domain: str, ttl: int) -> None:
        self.path, self.domain, self.ttl = path, domain, ttl
        self.digest = ""
        self.cursor: Cursor | None = None
        self.views: dict[tuple[str, str, str], object] = {}

    def _unchanged(self, snap: Snapshot) -> bool:
        changes = snap.changes(self.cursor, _KINDS) if self.digest else None
        if changes is None:
            self.views = {(k, ns, n): _view(k, o) for k in _KINDS for (ns, n), o in snap.index(k).items()}
            return False
        same = True
        for kind, objs in changes.items():
            for (ns, name), obj in objs.items():
                key = (kind, ns, name)
                view = _view(kind, obj) if obj is not None else None
                if self.views.get(key) != view:
                    same = False
                if obj is None:
                    self.views.pop(key, None)
                else:
                    self.views[key] = view
        return same

    def sync(self, snap: Snapshot) -> bool:
        if self._unchanged(snap):
            self.cursor = snap.cursor
            return False
        self.cursor = None  # until written
        doc = records_doc(snap, self.domain, self.ttl)
        # resourceVersions change on every status write; the names they carry do not
        digest = hashlib.sha1(json.dumps([doc["namespaces"], [(s["metadata"]["namespace"], s["metadata"]["name"], s.get("spec")) for s in doc["services"]],
                                          [(e["metadata"]["namespace"], e["metadata"]["name"], e.get("endpoints"), e.get("ports"),
                                           e["metadata"].get("labels", {}).get(SERVICE_NAME_LABEL)) for e in doc["endpointslices"]],
                                          doc["pods"], doc["local_ips"]], sort_keys=True).encode()).hexdigest()
        if digest != self.digest:
            text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        changed, self.digest, self.cursor = digest != self.digest, digest, snap.cursor
        return changed
