"""The cluster DNS records file: rewritten when a name could have changed, and only then."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from kubewire.controllers.types import SnapshotCache
from kubewire.daemon.dnsfeed import RecordsFeed, records_doc


def objs() -> list[dict]:
    return [
        {"kind": "Namespace", "metadata": {"name": "default", "resourceVersion": "1"}},
        {"kind": "Service", "metadata": {"name": "web", "namespace": "default", "resourceVersion": "2"},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}},
        {"kind": "EndpointSlice", "metadata": {"name": "web-x", "namespace": "default", "resourceVersion": "3",
                                               "labels": {"kubernetes.io/service-name": "web"}},
         "endpoints": [{"addresses": ["10.244.1.2"], "conditions": {"ready": True}}], "ports": [{"port": 8080}]},
        {"kind": "Pod", "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "4"},
         "spec": {}, "status": {"podIP": "10.244.1.2", "phase": "Running",
                                "conditions": [{"type": "Ready", "status": "True"}]}},
    ]  # fmt: skip


def test_records_rewritten_only_when_names_can_change(tmp_path: Path) -> None:
    path = tmp_path / "dns" / "records.json"
    feed = RecordsFeed(str(path), "cluster.local", 30)
    cache = SnapshotCache()
    o = objs()
    snap = cache.apply(o, ())
    assert feed.sync(snap)
    assert json.loads(path.read_text()) == json.loads(json.dumps(records_doc(snap, "cluster.local", 30)))

    pod = copy.deepcopy(o[3])  # readiness and resourceVersion: nothing DNS answers from
    pod["status"]["conditions"][0]["status"] = "False"
    pod["metadata"]["resourceVersion"] = "5"
    assert not feed.sync(cache.apply([pod], ()))
    svc = copy.deepcopy(o[1])  # a status write to the Service
    svc["status"] = {"loadBalancer": {}}
    svc["metadata"]["resourceVersion"] = "6"
    assert not feed.sync(cache.apply([svc], ()))
    assert not feed.sync(cache.apply([], ()))

    es = copy.deepcopy(o[2])  # an endpoint no longer ready: headless answers change
    es["endpoints"][0]["conditions"]["ready"] = False
    snap = cache.apply([es], ())
    assert feed.sync(snap)
    assert json.loads(path.read_text())["endpointslices"][0]["endpoints"][0]["conditions"]["ready"] is False
    es = copy.deepcopy(es)  # the slice now answers for another Service
    es["metadata"]["labels"]["kubernetes.io/service-name"] = "api"
    assert feed.sync(cache.apply([es], ()))
    assert json.loads(path.read_text())["endpointslices"][0]["metadata"]["labels"]["kubernetes.io/service-name"] == "api"
    snap = cache.apply([], [("Pod", "default", "web-1")])  # a pod gone: its name goes
    assert feed.sync(snap) and json.loads(path.read_text())["pods"] == []
