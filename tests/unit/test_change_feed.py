"""Snapshots that say what changed (SnapshotCache), kube-proxy's maps fed from them, and the
store's incremental snapshots: the same result as reading and parsing everything."""

from __future__ import annotations

import copy
import random

import pytest

from kubewire.controllers.types import ChangeLog, Op, Snapshot, SnapshotCache
from kubewire.proxy.model import ProxyMaps, build_endpoints_map, build_service_map
from kubewire.store.db import Store


def service(name: str, i: int, rv: str = "1", port: int = 80) -> dict:
    return {"kind": "Service", "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv},
            "spec": {"clusterIP": f"10.96.0.{i}", "ports": [{"name": "http", "port": port}]}}  # fmt: skip


def endpoint_slice(name: str, svc: str, ip: str, rv: str = "1") -> dict:
    return {"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": svc}},
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip], "nodeName": "node"}]}  # fmt: skip


def parsed(snap: Snapshot) -> tuple[dict, dict]:
    return build_service_map(snap.list("Service")), build_endpoints_map(snap.list("EndpointSlice"), "node")


def test_changes_between_snapshots() -> None:
    cache = SnapshotCache()
    s1 = cache.apply([service("a", 1), service("b", 2), endpoint_slice("a-1", "a", "10.244.1.1")], ())
    assert s1.changes(None, ["Service"]) is None  # no cursor: the reader compares everything
    s2 = cache.apply([service("a", 1, rv="2")], [("Service", "ns", "b")])
    s3 = cache.apply([], ())  # nothing written: same step
    assert s2.changes(s1.cursor, ["Service", "EndpointSlice"]) == {
        "Service": {("ns", "a"): s2.get("Service", "ns", "a"), ("ns", "b"): None}, "EndpointSlice": {}}
    assert s3.changes(s2.cursor, ["Service"]) == {"Service": {}}
    assert s3.changes(s1.cursor, ["Service"])["Service"].keys() == {("ns", "a"), ("ns", "b")}
    assert s1.changes(s2.cursor, ["Service"]) is None  # from the future
    assert s2.changes(SnapshotCache().snapshot().cursor, ["Service"]) is None  # another cache's
    # snapshots are independent copies: a later step does not change an earlier snapshot
    assert s1.get("Service", "ns", "b") is not None and s2.get("Service", "ns", "b") is None
    assert s1.index("Service").keys() == {("ns", "a"), ("ns", "b")} and s2.index("Service").keys() == {("ns", "a")}


def test_change_log_forgets_whole_steps() -> None:
    log = ChangeLog(keep=4)
    for seq in range(1, 6):
        log.record(seq, [("Service", "ns", f"s{seq}-{i}") for i in range(3)])
    assert log.between(0, 5) is None  # older than the log reaches: compare everything
    assert [k[2] for k in log.between(4, 5)] == ["s5-0", "s5-1", "s5-2"]
    assert log.between(log.complete_after, 5) is not None and len(log.keys) % 3 == 0


def test_proxy_maps_from_change_log_equal_parsing_everything() -> None:
    """Random writes and deletes; every snapshot fed to one ProxyMaps through the change log and
    to another as whole snapshots: both equal parsing everything, and report the same Services."""
    rng = random.Random(7)
    cache = SnapshotCache()
    delta, whole = ProxyMaps("node"), ProxyMaps("node")
    live: dict = {}
    rv = 1
    for step in range(60):
        writes, deletes = [], []
        for _ in range(rng.randint(0, 4)):
            rv += 1
            i = rng.randint(1, 8)
            r = rng.random()
            if r < 0.35:
                o = service(f"s{i}", i, str(rv), port=rng.choice([80, 81]))
            elif r < 0.8:
                o = endpoint_slice(f"s{i}-{rng.randint(1, 2)}", f"s{rng.choice([i, i % 8 + 1])}",
                                   f"10.244.1.{rng.randint(1, 5)}", str(rv))  # fmt: skip
            else:
                if live:
                    deletes.append(rng.choice(sorted(live)))
                continue
            writes.append(o)
        for o in writes:
            live[(o["kind"], "ns", o["metadata"]["name"])] = o
        for k in deletes:
            live.pop(k, None)
        snap = cache.apply(writes, deletes)
        if step % 9 == 4:
            snap = Snapshot.of(copy.deepcopy(list(snap.objects.values())))  # a snapshot without a log
        a, b = delta.sync(snap), whole.update(snap.index("Service"), snap.index("EndpointSlice"))
        assert a[0] == b[0], step
        assert (delta.service_map, delta.endpoints_map) == parsed(snap) == (whole.service_map, whole.endpoints_map)


def test_store_snapshots_read_only_what_changed(tmp_path: pytest.TempPathFactory) -> None:
    store = Store(f"{tmp_path}/state.db")
    store.verify = True  # every snapshot compared with a full read (SystemExit if they differ)
    store.write([Op("create", service("a", 1)), Op("create", service("b", 2)),
                 Op("create", endpoint_slice("a-1", "a", "10.244.1.1"))])  # fmt: skip
    s1 = store.snapshot()
    b = s1.get("Service", "ns", "b")
    new_a = copy.deepcopy(s1.get("Service", "ns", "a"))
    new_a["spec"]["ports"][0]["port"] = 81
    store.write([Op("update", new_a), Op("delete", s1.get("EndpointSlice", "ns", "a-1"))])
    s2 = store.snapshot()
    assert s2.get("Service", "ns", "b") is b  # unchanged: not read or parsed again
    assert s2.get("Service", "ns", "a")["spec"]["ports"][0]["port"] == 81 and s2.get("EndpointSlice", "ns", "a-1") is None
    assert s2.changes(s1.cursor, ["Service", "EndpointSlice"]) == {
        "Service": {("ns", "a"): s2.get("Service", "ns", "a")}, "EndpointSlice": {("ns", "a-1"): None}}
    # deleted and created again between two snapshots: there, as created
    store.write([Op("delete", s2.get("Service", "ns", "b"))])
    store.write([Op("create", service("b", 3))])
    s3 = store.snapshot()
    assert s3.get("Service", "ns", "b")["spec"]["clusterIP"] == "10.96.0.3"
    # another connection's writes are seen too (the CLI writes while the daemon reads)
    other = Store(f"{tmp_path}/state.db")
    other.write([Op("delete", s3.get("Service", "ns", "a"))])
    assert store.snapshot().get("Service", "ns", "a") is None
    assert store.snapshot().objects == {k: v for k, v in Snapshot.of(other.list()).objects.items()}


def test_store_notices_a_modified_snapshot(tmp_path: pytest.TempPathFactory) -> None:
    store = Store(f"{tmp_path}/state.db")
    store.verify = True
    store.write([Op("create", service("a", 1))])
    store.snapshot().get("Service", "ns", "a")["spec"]["ports"] = []  # what no caller may do
    with pytest.raises(SystemExit):
        store.snapshot()
