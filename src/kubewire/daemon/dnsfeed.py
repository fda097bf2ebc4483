"""Keeps the cluster DNS servers' records file current: what CoreDNS reads from its informers,
written atomically whenever a name could have changed."""

from __future__ import annotations

import hashlib
import json
import os

from kubewire.controllers.types import Snapshot


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


class RecordsFeed:
    def __init__(self, path: str, domain: str, ttl: int) -> None:
        self.path, self.domain, self.ttl = path, domain, ttl
        self.digest = ""

    def sync(self, snap: Snapshot) -> bool:
        doc = records_doc(snap, self.domain, self.ttl)
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        # resourceVersions change on every status write; the names they carry do not
        digest = hashlib.sha1(json.dumps([doc["namespaces"], [(s["metadata"]["namespace"], s["metadata"]["name"], s.get("spec")) for s in doc["services"]],
                                          [(e["metadata"]["namespace"], e["metadata"]["name"], e.get("endpoints"), e.get("ports")) for e in doc["endpointslices"]],
                                          doc["pods"], doc["local_ips"]], sort_keys=True).encode()).hexdigest()
        if digest == self.digest:
            return False
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)
        self.digest = digest
        return True
