"""Keeps the cluster DNS servers' records file current: what CoreDNS reads from its informers,
written atomically whenever a name could have changed."""

from __future__ import annotations

import json
import os

from kubewire.controllers.types import Cursor, Snapshot


def _pod_view(p: dict) -> dict:
    """What the records keep of a pod (one with an IP)."""
    spec = p.get("spec", {})
    meta = {"name": p["metadata"]["name"], "namespace": p["metadata"].get("namespace", "")}
    if p["metadata"].get("deletionTimestamp"):  # `pods verified` stops answering for a terminating pod
        meta["deletionTimestamp"] = p["metadata"]["deletionTimestamp"]
    return {"metadata": meta,
            "spec": {k: spec[k] for k in ("hostname", "subdomain") if k in spec},
            "status": {"podIP": p.get("status", {}).get("podIP", ""), "phase": p.get("status", {}).get("phase", "")}}


def _is_local_dns(p: dict) -> bool:
    """A pod of the cluster DNS service itself (its address is one of the servers' own)."""
    m = p["metadata"]
    return ((m.get("namespace") or "") == "kube-system" and m.get("labels", {}).get("k8s-app") == "kube-dns"
            and bool(p.get("status", {}).get("podIP")))


def records_doc(snap: Snapshot, domain: str, ttl: int) -> dict:
    pods = [_pod_view(p) for p in snap.list("Pod") if p.get("status", {}).get("podIP")]
    dns_ips = [p["status"]["podIP"] for p in snap.list("Pod", "kube-system") if _is_local_dns(p)]
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
_NOT_IN_RECORDS = object()


def _view(kind: str, obj: dict) -> object:
    """What of an object the answers depend on; resourceVersions and status writes are not names
    (_NOT_IN_RECORDS: a pod without an IP, which the records leave out)."""
    m = obj["metadata"]
    if kind == "Service":
        return obj.get("spec")
    if kind == "EndpointSlice":
        return (obj.get("endpoints"), obj.get("ports"), m.get("labels", {}).get(SERVICE_NAME_LABEL))
    if kind == "Pod":
        if not obj.get("status", {}).get("podIP"):
            return _NOT_IN_RECORDS
        return (_pod_view(obj), _is_local_dns(obj))
    return m["name"]


class RecordsFeed:
    """The records file, rewritten when a name could have changed: when the view (_view) of an
    object changed. With the snapshot's change log only the objects written since are looked at,
    so a step in which nothing the records depend on changed (a pod's readiness, a status write)
    costs a look at those, not serialising every Service and EndpointSlice (0.3 s at 10k
    Services)."""

    def __init__(self, path: str, domain: str, ttl: int) -> None:
        self.path, self.domain, self.ttl = path, domain, ttl
        self.views: dict[tuple[str, str, str], object] = {}  # of the objects in the file
        self.written = False  # the file holds self.views
        self.cursor: Cursor | None = None

    def sync(self, snap: Snapshot) -> bool:
        changes = snap.changes(self.cursor, _KINDS) if self.written else None
        if changes is None:
            views = {(k, ns, n): v for k in _KINDS for (ns, n), o in snap.index(k).items()
                     if (v := _view(k, o)) is not _NOT_IN_RECORDS}  # fmt: skip
            changed = not self.written or views != self.views
            self.views = views
        else:
            changed = False
            for kind, objs in changes.items():
                for (ns, name), obj in objs.items():
                    key = (kind, ns, name)
                    view = _view(kind, obj) if obj is not None else _NOT_IN_RECORDS
                    if self.views.get(key, _NOT_IN_RECORDS) != view:
                        changed = True
                    if view is _NOT_IN_RECORDS:
                        self.views.pop(key, None)
                    else:
                        self.views[key] = view
        if changed:
            self.written = False  # until it is
            text = json.dumps(records_doc(snap, self.domain, self.ttl), sort_keys=True, separators=(",", ":"))
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
            self.written = True
        self.cursor = snap.cursor
        return changed
