"""The EndpointSlice controller, driven step by step over in-memory snapshots."""

from __future__ import annotations

import contextlib
import copy
import re
from typing import Any

import pytest

from kubewire.controllers.endpointslice import (
    CONTROLLER_NAME,
    get_allocations,
    reconcile_endpointslices,
    zone_cpu_ratios,
)
from kubewire.controllers.replicaset import ALPHANUMS
from kubewire.controllers.serviceip import reconcile_services
from kubewire.controllers.types import Op, Snapshot, key_of

NS = "default"
MANAGED = {"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": CONTROLLER_NAME}
NAME_RE = re.compile(f"web-[{ALPHANUMS}]{{5}}")


# --- builders ---------------------------------------------------------------------------------------


def node(name: str, zone: str | None, cpu: str = "4", ready: bool = True, **labels: str) -> dict:
    node_labels = {"kubernetes.io/hostname": name, **labels}
    if zone:
        node_labels["topology.kubernetes.io/zone"] = zone
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": node_labels},
        "status": {
            "allocatable": {"cpu": cpu, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def two_zones() -> list[dict]:
    return [node("n1", "zone-a"), node("n2", "zone-b")]


def pod(
    name: str,
    ip: str | None,
    node_name: str = "n1",
    *,
    ready: bool = True,
    ports: list[dict] | None = None,
    labels: dict | None = None,
    phase: str = "Running",
    deleting: bool = False,
    **spec: Any,
) -> dict:
    p: dict = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": labels or {"app": "web"}},
        "spec": {
            "nodeName": node_name,
            "containers": [
                {
                    "name": "app",
                    "ports": ports or [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                }
            ],
            **spec,
        },
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    if ip:
        p["status"]["podIP"] = ip
        p["status"]["podIPs"] = [{"ip": ip}]
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return p


def service(
    name: str = "web", annotations: dict | None = None, labels: dict | None = None, **spec: Any
) -> dict:
    base: dict = {
        "selector": {"app": "web"},
        "type": "ClusterIP",
        "clusterIP": "10.96.100.1",
        "clusterIPs": ["10.96.100.1"],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    }
    base.update(spec)
    m: dict = {"name": name, "namespace": NS, "uid": f"uid-svc-{name}"}
    if annotations:
        m["annotations"] = annotations
    if labels:
        m["labels"] = labels
    return {"apiVersion": "v1", "kind": "Service", "metadata": m, "spec": base}


def apply(snap: Snapshot, ops: list[Op]) -> Snapshot:
    """The store's semantics: create stamps identity, update replaces the object, delete removes it."""
    objects = copy.deepcopy(snap.objects)
    for i, op in enumerate(ops):
        obj = copy.deepcopy(op.obj)
        k = key_of(obj)
        if op.verb == "create":
            assert k not in objects, f"{k} exists"
            obj["metadata"].update(uid=f"uid-{obj['metadata']['name']}", resourceVersion=str(100 + i))
            objects[k] = obj
        elif op.verb == "update":
            assert k in objects, f"{k} missing"
            obj["metadata"]["uid"] = objects[k]["metadata"]["uid"]
            obj["metadata"]["resourceVersion"] = str(100 + i)
            objects[k] = obj
        elif op.verb == "status":
            objects[k]["status"] = obj["status"]
        else:
            objects.pop(k)
    return Snapshot(objects, snap.now)


def slices(snap: Snapshot) -> list[dict]:
    return snap.list("EndpointSlice")


def settle(objs: list[dict], **kw: Any) -> Snapshot:
    snap = apply(Snapshot.of(objs), reconcile_endpointslices(Snapshot.of(objs), **kw))
    assert reconcile_endpointslices(snap, **kw) == []
    return snap


def endpoint(
    name: str,
    ip: str,
    node_name: str,
    zone: str,
    *,
    ready: bool = True,
    serving: bool = True,
    terminating: bool = False,
) -> dict:
    return {
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": NS, "name": name, "uid": f"uid-{name}"},
        "nodeName": node_name,
        "zone": zone,
    }


# --- basic slices -------------------------------------------------------------------------------------


def test_one_slice_for_ready_pods_exactly_as_upstream_writes_it() -> None:
    ops = reconcile_endpointslices(
        Snapshot.of([*two_zones(), service(), pod("a", "10.244.1.2"), pod("b", "10.244.2.2", "n2")])
    )
    assert [op.verb for op in ops] == ["create"]
    es = ops[0].obj
    assert NAME_RE.fullmatch(es["metadata"]["name"])
    del es["metadata"]["name"]
    assert es == {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": "web-",
            "namespace": NS,
            "labels": MANAGED,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": "web",
                    "uid": "uid-svc-web",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "addressType": "IPv4",
        "endpoints": [
            endpoint("a", "10.244.1.2", "n1", "zone-a"),
            endpoint("b", "10.244.2.2", "n2", "zone-b"),
        ],
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    }


def test_conditions_for_not_ready_and_terminating_pods() -> None:
    objs = [
        *two_zones(),
        service(),
        pod("a", "10.244.1.2", ready=False),
        pod("b", "10.244.1.3", deleting=True),
        pod("c", "10.244.1.4", ready=False, deleting=True),
    ]
    (es,) = slices(settle(objs))
    assert [e["conditions"] for e in es["endpoints"]] == [
        {"ready": False, "serving": False, "terminating": False},
        {"ready": False, "serving": True, "terminating": True},
        {"ready": False, "serving": False, "terminating": True},
    ]


def test_publish_not_ready_addresses_makes_every_endpoint_ready() -> None:
    objs = [
        *two_zones(),
        service(publishNotReadyAddresses=True),
        pod("a", "10.244.1.2", ready=False),
        pod("b", "10.244.1.3", deleting=True),
        pod("c", "10.244.1.4", node_name="gone"),
    ]
    (es,) = slices(settle(objs))
    assert [
        (e["targetRef"]["name"], e["conditions"]["ready"], e["conditions"]["serving"])
        for e in es["endpoints"]
    ] == [
        ("a", True, False),
        ("b", True, True),
        ("c", True, True),
    ]
    assert "zone" not in es["endpoints"][2] and es["endpoints"][2]["nodeName"] == "gone"


def test_pods_that_are_not_endpoints() -> None:
    other_ns = pod("x", "10.244.1.9")
    other_ns["metadata"]["namespace"] = "other"
    objs = [
        *two_zones(),
        service(),
        pod("no-ip", None),
        pod("done", "10.244.1.5", phase="Succeeded"),
        pod("failed", "10.244.1.6", phase="Failed"),
        pod("other-app", "10.244.1.7", labels={"app": "db"}),
        pod("lost-node", "10.244.1.8", node_name="gone"),
        other_ns,
        pod("ok", "10.244.1.2"),
    ]
    (es,) = slices(settle(objs))
    assert [e["targetRef"]["name"] for e in es["endpoints"]] == ["ok"]


def test_named_target_port_resolving_differently_splits_slices() -> None:
    objs = [
        *two_zones(),
        service(),
        pod("a", "10.244.1.2", ports=[{"name": "http", "containerPort": 8080, "protocol": "TCP"}]),
        pod("b", "10.244.1.3", ports=[{"name": "http", "containerPort": 9090, "protocol": "TCP"}]),
        pod("c", "10.244.1.4", ports=[{"name": "http", "containerPort": 9090, "protocol": "TCP"}]),
        pod("d", "10.244.1.5", ports=[{"name": "http", "containerPort": 7070, "protocol": "UDP"}]),
    ]
    got = {
        tuple(p["port"] for p in es["ports"]): [e["targetRef"]["name"] for e in es["endpoints"]]
        for es in slices(settle(objs))
    }
    # d names its port for UDP only, so for this TCP port it resolves nothing: upstream keeps the pod
    # as an endpoint of a slice without ports.
    assert got == {(8080,): ["a"], (9090,): ["b", "c"], (): ["d"]}


def test_numeric_target_port_and_several_service_ports() -> None:
    svc = service(
        ports=[
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP", "appProtocol": "dns"},
        ]
    )
    a = pod("a", "10.244.1.2", ports=[{"name": "dns", "containerPort": 5353, "protocol": "UDP"}])
    (es,) = slices(settle([*two_zones(), svc, a]))
    assert es["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 8080},
        {"name": "dns", "protocol": "UDP", "port": 5353, "appProtocol": "dns"},
    ]


def test_sidecar_ports_resolve_named_target_ports() -> None:
    sidecar = {
        "name": "proxy",
        "restartPolicy": "Always",
        "ports": [{"name": "http", "containerPort": 15001, "protocol": "TCP"}],
    }
    a = pod(
        "a",
        "10.244.1.2",
        ports=[{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}],
        initContainers=[sidecar],
    )
    (es,) = slices(settle([*two_zones(), service(), a]))
    assert es["ports"] == [{"name": "http", "protocol": "TCP", "port": 15001}]


def test_more_than_100_endpoints_are_split() -> None:
    pods = [pod(f"p{i:03d}", f"10.244.{i // 200 + 1}.{i % 200 + 1}") for i in range(250)]
    snap = settle([*two_zones(), service(), *pods])
    assert sorted(len(es["endpoints"]) for es in slices(snap)) == [50, 100, 100]
    names = [e["targetRef"]["name"] for es in slices(snap) for e in es["endpoints"]]
    assert sorted(names) == [f"p{i:03d}" for i in range(250)]


def test_small_slices_fill_existing_ones_before_creating() -> None:
    objs = [*two_zones(), service(), *[pod(f"p{i}", f"10.244.1.{i + 1}") for i in range(3)]]
    snap = settle(objs, max_endpoints_per_slice=2)
    assert sorted(len(es["endpoints"]) for es in slices(snap)) == [1, 2]
    snap = apply(snap, [Op("create", pod("p3", "10.244.1.10"))])
    ops = reconcile_endpointslices(snap, max_endpoints_per_slice=2)
    assert [op.verb for op in ops] == ["update"] and len(ops[0].obj["endpoints"]) == 2


def test_headless_label_hostname_and_service_labels() -> None:
    svc = service(
        clusterIP="None", clusterIPs=["None"], labels={"tier": "web", "kubernetes.io/service-name": "evil"}
    )
    a = pod("a", "10.244.1.2", hostname="web-0", subdomain="web")
    (es,) = slices(settle([*two_zones(), svc, a]))
    assert es["metadata"]["labels"] == {"tier": "web", "service.kubernetes.io/headless": "", **MANAGED}
    assert es["endpoints"][0]["hostname"] == "web-0"


# --- level-triggered updates ----------------------------------------------------------------------------


def test_no_change_means_no_ops_and_readiness_change_is_one_update() -> None:
    objs = [*two_zones(), service(), pod("a", "10.244.1.2"), pod("b", "10.244.2.2", "n2")]
    snap = settle(objs)
    (before,) = slices(snap)
    flipped = copy.deepcopy(snap.objects)
    flipped[("Pod", NS, "b")]["status"]["conditions"][0]["status"] = "False"
    ops = reconcile_endpointslices(Snapshot(flipped))
    assert [op.verb for op in ops] == ["update"]
    after = ops[0].obj
    assert after["metadata"]["name"] == before["metadata"]["name"]
    assert after["endpoints"][0] == before["endpoints"][0]
    assert after["endpoints"][1]["conditions"] == {"ready": False, "serving": False, "terminating": False}


def test_label_change_on_the_service_updates_slices() -> None:
    snap = settle([*two_zones(), service(), pod("a", "10.244.1.2")])
    relabelled = copy.deepcopy(snap.objects)
    relabelled[("Service", NS, "web")]["metadata"]["labels"] = {"team": "payments"}
    ops = reconcile_endpointslices(Snapshot(relabelled))
    assert [op.verb for op in ops] == ["update"]
    assert ops[0].obj["metadata"]["labels"] == {"team": "payments", **MANAGED}


def test_placeholder_slice_for_no_endpoints_is_reused_when_pods_arrive() -> None:
    snap = settle([*two_zones(), service()])
    (placeholder,) = slices(snap)
    assert placeholder["endpoints"] == [] and placeholder["ports"] == []
    snap = apply(snap, [Op("create", pod("a", "10.244.1.2"))])
    ops = reconcile_endpointslices(snap)
    assert [op.verb for op in ops] == ["update"]
    assert ops[0].obj["metadata"]["name"] == placeholder["metadata"]["name"]
    assert ops[0].obj["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    snap = apply(snap, ops)
    snap = apply(snap, [Op("delete", snap.get("Pod", NS, "a"))])
    ops = reconcile_endpointslices(snap)
    assert [op.verb for op in ops] == ["update"]
    assert ops[0].obj["endpoints"] == [] and ops[0].obj["ports"] == []


def test_selectorless_and_external_name_services_get_no_managed_slices() -> None:
    user_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "ext-1", "namespace": NS, "labels": {"kubernetes.io/service-name": "ext"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"]}],
        "ports": [{"name": "", "protocol": "TCP", "port": 443}],
    }
    objs = [
        *two_zones(),
        service("ext", selector=None),
        service("db", type="ExternalName", externalName="db.example.com", clusterIP=None, clusterIPs=None),
        user_slice,
        pod("a", "10.244.1.2"),
    ]
    assert reconcile_endpointslices(Snapshot.of(objs)) == []


def test_deleted_service_loses_its_managed_slices_only() -> None:
    snap = settle([*two_zones(), service(), pod("a", "10.244.1.2")])
    user_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "web-manual", "namespace": NS, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"]}],
        "ports": [],
    }
    snap = apply(snap, [Op("create", user_slice)])
    (managed,) = [es for es in slices(snap) if es["metadata"]["name"] != "web-manual"]
    snap = apply(snap, [Op("delete", snap.get("Service", NS, "web"))])
    ops = reconcile_endpointslices(snap)
    assert [(op.verb, op.obj["metadata"]["name"]) for op in ops] == [("delete", managed["metadata"]["name"])]


def test_slices_of_a_previous_service_incarnation_are_replaced() -> None:
    snap = settle([*two_zones(), service(), pod("a", "10.244.1.2")])
    (old,) = slices(snap)
    objects = copy.deepcopy(snap.objects)
    objects[("Service", NS, "web")]["metadata"]["uid"] = "uid-svc-web-2"
    ops = reconcile_endpointslices(Snapshot(objects))
    assert [op.verb for op in ops] == ["create", "delete"]
    assert ops[0].obj["metadata"]["ownerReferences"][0]["uid"] == "uid-svc-web-2"
    assert ops[0].obj["metadata"]["name"] != old["metadata"]["name"]
    assert ops[1].obj["metadata"]["name"] == old["metadata"]["name"]


def test_slices_of_an_address_family_the_service_dropped_are_deleted() -> None:
    snap = settle([*two_zones(), service(), pod("a", "10.244.1.2")])
    (es,) = slices(snap)
    v6 = copy.deepcopy(es)
    v6["metadata"]["name"] = "web-v6xyz"
    v6["addressType"] = "IPv6"
    snap = apply(snap, [Op("create", v6)])
    ops = reconcile_endpointslices(snap)
    assert [(op.verb, op.obj["metadata"]["name"]) for op in ops] == [("delete", "web-v6xyz")]


def test_names_are_stable_and_never_collide() -> None:
    objs = [*two_zones(), service(), pod("a", "10.244.1.2")]
    first = reconcile_endpointslices(Snapshot.of(objs))[0].obj["metadata"]["name"]
    assert reconcile_endpointslices(Snapshot.of(objs))[0].obj["metadata"]["name"] == first
    squatter = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": first, "namespace": NS},
        "addressType": "IPv4",
        "endpoints": [],
        "ports": [],
    }
    other = reconcile_endpointslices(Snapshot.of([*objs, squatter]))[0].obj["metadata"]["name"]
    assert other != first and NAME_RE.fullmatch(other)


# --- topology hints ---------------------------------------------------------------------------------------


def zones_of(snap: Snapshot) -> dict[str, Any]:
    return {
        e["targetRef"]["name"]: e.get("hints")
        for es in slices(snap)
        for e in sorted(es["endpoints"], key=lambda e: e["targetRef"]["name"])
    }


def test_zone_cpu_ratios_and_allocations() -> None:
    assert zone_cpu_ratios([node("n1", "a", "4"), node("n2", "b", "12")]) == {"a": 0.25, "b": 0.75}
    assert zone_cpu_ratios([node("n1", "a"), node("n2", "a")]) is None
    assert zone_cpu_ratios([node("n1", "a"), node("n2", None)]) is None
    assert zone_cpu_ratios([node("n1", "a"), node("n2", "b", ready=False)]) is None
    cp = node("n2", "b", **{"node-role.kubernetes.io/control-plane": ""})
    assert zone_cpu_ratios([node("n1", "a"), cp]) is None
    assert get_allocations({"a": 0.5, "b": 0.5}, 4) == {"a": (2, 2, 2.0), "b": (2, 2, 2.0)}
    assert get_allocations({"a": 0.25, "b": 0.75}, 10) == {"a": (3, 3, 3.0), "b": (7, 7, 7.5)}
    assert get_allocations({"a": 0.25, "b": 0.75}, 20) == {"a": (5, 7, 5.0), "b": (13, 15, 15.0)}
    assert get_allocations({"a": 0.5, "b": 0.5}, 1) is None


def test_topology_mode_auto_balances_zones_by_cpu() -> None:
    objs = [
        *two_zones(),
        service(annotations={"service.kubernetes.io/topology-mode": "Auto"}),
        pod("a", "10.244.1.2"),
        pod("b", "10.244.1.3"),
        pod("c", "10.244.1.4"),
        pod("d", "10.244.2.2", "n2"),
        pod("e", "10.244.2.3", "n2", ready=False),
    ]
    hints = zones_of(settle(objs))
    assert hints == {
        "a": {"forZones": [{"name": "zone-b"}]},  # zone-a has one endpoint more than its half
        "b": {"forZones": [{"name": "zone-a"}]},
        "c": {"forZones": [{"name": "zone-a"}]},
        "d": {"forZones": [{"name": "zone-b"}]},
        "e": None,
    }


def test_deprecated_hints_annotation_and_fallbacks() -> None:
    pods = [pod("a", "10.244.1.2"), pod("b", "10.244.2.2", "n2")]
    auto = service(annotations={"service.kubernetes.io/topology-aware-hints": "auto"})
    assert zones_of(settle([*two_zones(), auto, *pods])) == {
        "a": {"forZones": [{"name": "zone-a"}]},
        "b": {"forZones": [{"name": "zone-b"}]},
    }
    one_zone = [node("n1", "zone-a"), node("n2", "zone-a")]
    assert zones_of(settle([*one_zone, auto, *pods])) == {"a": None, "b": None}
    three_zones = [*two_zones(), node("n3", "zone-c")]
    assert zones_of(settle([*three_zones, auto, *pods])) == {"a": None, "b": None}


def test_hints_are_removed_when_topology_mode_is_turned_off() -> None:
    auto = service(annotations={"service.kubernetes.io/topology-mode": "Auto"})
    snap = settle([*two_zones(), auto, pod("a", "10.244.1.2"), pod("b", "10.244.2.2", "n2")])
    objects = copy.deepcopy(snap.objects)
    del objects[("Service", NS, "web")]["metadata"]["annotations"]
    ops = reconcile_endpointslices(Snapshot(objects))
    assert [op.verb for op in ops] == ["update"]
    assert all("hints" not in e for e in ops[0].obj["endpoints"])


def test_traffic_distribution_prefer_close_and_same_node() -> None:
    pods = [pod("a", "10.244.1.2"), pod("b", "10.244.2.2", "n2"), pod("c", "10.244.2.3", "n2", ready=False)]
    close = zones_of(settle([*two_zones(), service(trafficDistribution="PreferClose"), *pods]))
    assert close == {
        "a": {"forZones": [{"name": "zone-a"}]},
        "b": {"forZones": [{"name": "zone-b"}]},
        "c": None,
    }
    same_node = zones_of(settle([*two_zones(), service(trafficDistribution="PreferSameNode"), *pods]))
    assert same_node["b"] == {"forZones": [{"name": "zone-b"}], "forNodes": [{"name": "n2"}]}
    # The annotation wins over the field, as upstream.
    both = service(
        trafficDistribution="PreferClose", annotations={"service.kubernetes.io/topology-mode": "Auto"}
    )
    assert zones_of(settle([node("n1", "zone-a"), node("n2", "zone-a"), both, *pods]))["a"] is None


# --- Service status -------------------------------------------------------------------------------------------


def test_service_status_is_kept_as_the_api_server_shows_it() -> None:
    lb = service("lb", type="LoadBalancer")
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.4", "ipMode": "VIP"}]}}
    was_lb = service("was-lb")
    was_lb["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}
    fresh = service("fresh")
    ops = reconcile_services(Snapshot.of([lb, was_lb, fresh]))
    assert [(op.verb, op.obj["metadata"]["name"], op.obj["status"]) for op in ops] == [
        ("status", "fresh", {"loadBalancer": {}}),
        ("status", "was-lb", {"loadBalancer": {}}),
    ]
    assert reconcile_services(apply(Snapshot.of([lb, was_lb, fresh]), ops)) == []


def test_label_index_selects_as_a_scan_does() -> None:
    """The pod index the controller selects with gives what matching every pod gives, in order."""
    import random

    from kubewire.controllers.podutil import LabelIndex, labels_of, map_selector_matches

    rng = random.Random(7)
    keys, values = ["app", "tier", "v"], ["a", "b", "c", ""]
    pods = [{"metadata": {"name": f"p{i}", "labels": {k: rng.choice(values) for k in keys if rng.random() < 0.7}}}
            for i in range(300)]  # fmt: skip
    pods.append({"metadata": {"name": "unlabelled"}})
    index = LabelIndex(pods)
    for _ in range(500):
        selector = {k: rng.choice(values) for k in keys if rng.random() < 0.5}
        want = [p for p in pods if map_selector_matches(selector, labels_of(p))]
        assert index.select(selector) == want
    assert len(index.select({})) == len(pods)  # an empty selector selects everything
    assert index.select({"app": "zzz"}) == []


def _store_writes(ops: list[Op], rv: int) -> tuple[list[dict], list]:
    """The controller's ops as the store writes them: new objects, names and identity stamped."""
    upserts: list[dict] = []
    deletes: list = []
    for op in ops:
        obj = copy.deepcopy(op.obj)
        rv += 1
        if op.verb == "delete":
            deletes.append(key_of(obj))
            continue
        if "name" not in obj["metadata"]:
            obj["metadata"]["name"] = obj["metadata"].pop("generateName") + f"x{rv}"
        obj["metadata"].update(uid=f"uid-{obj['metadata']['name']}", resourceVersion=str(rv))
        upserts.append(obj)
    return upserts, deletes


def test_in_sync_memo_changes_nothing(monkeypatch) -> None:  # noqa: ANN001
    """A pass that skips the Services found in sync with the same objects (as the control loop runs
    it, over a SnapshotCache whose unchanged objects stay the same objects) writes exactly what a
    pass over every Service writes, through random pod, Service, slice and node changes and lost
    writes; and once settled it reconciles no Service at all."""
    import random

    from kubewire.controllers.endpointslice import EndpointSliceMemo, _ServiceSync
    from kubewire.controllers.types import SnapshotCache

    rng = random.Random(11)
    cache = SnapshotCache()
    memo = EndpointSliceMemo()
    apps = ["web", "api", "db"]
    objs: list[dict] = two_zones()
    objs += [service(a, selector={"app": a}, clusterIP=f"10.96.100.{i + 1}", clusterIPs=[f"10.96.100.{i + 1}"])
             for i, a in enumerate(apps)]  # fmt: skip
    objs += [pod(f"p{i}", f"10.244.1.{i + 2}", rng.choice(["n1", "n2"]), labels={"app": rng.choice(apps)})
             for i in range(12)]  # fmt: skip
    snap = cache.apply(copy.deepcopy(objs), ())
    writes = 0
    for step in range(200):
        ops = reconcile_endpointslices(snap, memo=memo)
        assert ops == reconcile_endpointslices(snap), f"step {step}"
        upserts, deletes = _store_writes(ops, 1000 + 10 * step)
        writes += len(ops)
        if ops and rng.random() < 0.15:  # the write was lost (a conflict): the next pass must try again
            upserts, deletes = [], []
        if not ops:  # settled: change something, as pods, users and nodes do
            what = rng.random()
            pods_now = snap.list("Pod")
            if what < 0.5:
                p = copy.deepcopy(rng.choice(pods_now))
                ready = p["status"]["conditions"][0]["status"] == "True"
                p["status"]["conditions"] = [{"type": "Ready", "status": "False" if ready else "True"}]
                upserts.append(p)
            elif what < 0.7:
                p = copy.deepcopy(rng.choice(pods_now))
                p["metadata"]["labels"] = {"app": rng.choice(apps)}
                upserts.append(p)
            elif what < 0.8 and len(pods_now) > 4:
                deletes.append(key_of(rng.choice(pods_now)))
            elif what < 0.82:
                svc = copy.deepcopy(rng.choice(snap.list("Service")))
                svc["spec"]["ports"][0]["port"] = rng.choice([80, 81])
                upserts.append(svc)
            elif what < 0.85:  # a selector changed, or dropped
                svc = copy.deepcopy(rng.choice(snap.list("Service")))
                svc["spec"]["selector"] = rng.choice([{"app": rng.choice(apps)}, {}, None])
                if svc["spec"]["selector"] is None:
                    del svc["spec"]["selector"]
                upserts.append(svc)
            elif what < 0.88:  # a Service deleted, or made again
                gone = [a for a in apps if snap.get("Service", NS, a) is None]
                if gone:
                    i = apps.index(gone[0])
                    upserts.append(service(gone[0], selector={"app": gone[0]}, clusterIP=f"10.96.100.{i + 1}",
                                           clusterIPs=[f"10.96.100.{i + 1}"]))  # fmt: skip
                else:
                    deletes.append(key_of(rng.choice(snap.list("Service"))))
            elif what < 0.91 and snap.list("EndpointSlice"):  # someone deletes a managed slice
                deletes.append(key_of(rng.choice(snap.list("EndpointSlice"))))
            elif what < 0.94:  # a new pod
                name = f"p{len(pods_now) + 100 + step}"
                upserts.append(pod(name, f"10.244.2.{step + 2}", "n2", labels={"app": rng.choice(apps)}))
            else:
                n = copy.deepcopy(rng.choice(snap.list("Node")))
                n["metadata"]["labels"]["topology.kubernetes.io/zone"] = rng.choice(["zone-a", "zone-b", "zone-c"])
                upserts.append(n)
        snap = cache.apply(upserts, deletes)
    assert writes > 50  # the changes made the controller write

    for step in range(5):  # settle
        ops = reconcile_endpointslices(snap, memo=memo)
        if not ops:
            break
        snap = cache.apply(*_store_writes(ops, 5000 + 10 * step))
    reconciled: list[str] = []
    monkeypatch.setattr(_ServiceSync, "run", lambda self, pods, existing: reconciled.append(self.name) or [])
    assert reconcile_endpointslices(snap, memo=memo) == [] and reconciled == []
    with_selector = [s["metadata"]["name"] for s in snap.list("Service") if s["spec"].get("selector") is not None]
    assert reconcile_endpointslices(snap) == [] and sorted(reconciled) == sorted(with_selector)  # without: all


def test_in_sync_memo_retries_lost_deletes_of_a_full_pass() -> None:
    """A Service deleted in the same step as a node change (a full pass): its slices' deletes are
    lost; the next pass, with nothing new in the log, deletes them again, as a pass without memo."""
    from kubewire.controllers.endpointslice import EndpointSliceMemo
    from kubewire.controllers.types import SnapshotCache

    cache, memo = SnapshotCache(), EndpointSliceMemo()
    objs = [*two_zones(), service("web"), pod("p1", "10.244.1.2", "n1")]
    snap = cache.apply(copy.deepcopy(objs), ())
    snap = cache.apply(*_store_writes(reconcile_endpointslices(snap, memo=memo), 100))
    assert reconcile_endpointslices(snap, memo=memo) == [] and slices(snap)
    n1 = copy.deepcopy(snap.get("Node", "", "n1"))
    n1["metadata"]["labels"]["rack"] = "r1"
    snap = cache.apply([n1], [("Service", NS, "web")])
    ops = reconcile_endpointslices(snap, memo=memo)
    assert [op.verb for op in ops] == ["delete"] and ops == reconcile_endpointslices(snap)
    snap = cache.apply([], [])  # the deletes were lost
    assert reconcile_endpointslices(snap, memo=memo) == reconcile_endpointslices(snap) == ops


def _random_service(rng, name: str, ns: str, uid: str):  # noqa: ANN001, ANN202
    apps = ["web", "api", "db"]
    s = service(name, annotations=rng.choice([None, {"service.kubernetes.io/topology-mode": "Auto"}]),
                clusterIP=f"10.96.{ns == 'b'}.{apps.index(name) + 1}")  # fmt: skip
    s["metadata"].update(namespace=ns, uid=uid)
    selector = rng.choice([{"app": rng.choice(apps)}, {"app": rng.choice(apps), "tier": "x"}, {}, None])
    if selector is None:
        del s["spec"]["selector"]
    else:
        s["spec"]["selector"] = selector
    if rng.random() < 0.1:
        s["spec"] = {"type": "ExternalName", "externalName": "x.example", "selector": {"app": "web"}}
    return s


def _random_pod(rng, name: str, ns: str, i: int):  # noqa: ANN001, ANN202
    p = pod(name, f"10.244.{ns == 'b'}.{i % 250 + 2}", rng.choice(["n1", "n2", "n3"]), ready=rng.random() < 0.7,
            labels={"app": rng.choice(["web", "api", "db"]), "tier": rng.choice(["x", "y"])})  # fmt: skip
    p["metadata"]["namespace"] = ns
    return p


@pytest.mark.parametrize("seed", range(12))
def test_in_sync_memo_random_mixes(seed: int, monkeypatch) -> None:  # noqa: ANN001
    """Memo path == full path through mixes of changes in two namespaces: select-all and two-label
    selectors, ExternalName, pods re-created with new uids, slices relabelled to another, no or an
    unmanaged owner, managed slices made by users for Services that never existed, node zone and
    slice size changes, lost writes, and passes that raise midway."""
    import random

    from kubewire.controllers import endpointslice as es_module
    from kubewire.controllers.endpointslice import CONTROLLER_NAME, EndpointSliceMemo
    from kubewire.controllers.types import SnapshotCache

    rng = random.Random(seed)
    apps, namespaces = ["web", "api", "db"], ["a", "b"]
    cache, memo = SnapshotCache(), EndpointSliceMemo()
    objs = [node("n1", "zone-a"), node("n2", "zone-b"), node("n3", "zone-b")]
    for ns in namespaces:
        objs += [_random_service(rng, a, ns, f"uid-svc-{ns}-{a}-0") for a in apps]
        objs += [_random_pod(rng, f"p{i}", ns, i) for i in range(8)]
    snap = cache.apply(copy.deepcopy(objs), ())
    gen, size = 0, 3
    real_run = es_module._ServiceSync.run
    for step in range(150):
        if rng.random() < 0.03:
            size = rng.choice([2, 3, 100])
        if rng.random() < 0.03:  # a pass that raises at its second Service
            def run_then_fail(self, pods, existing, calls=[]):  # noqa: ANN001, ANN202, B006 (its own count)
                calls.append(1)
                if len(calls) == 2:
                    raise RuntimeError("stopped midway")
                return real_run(self, pods, existing)

            monkeypatch.setattr(es_module._ServiceSync, "run", run_then_fail)
            with contextlib.suppress(RuntimeError):
                reconcile_endpointslices(snap, size, memo=memo)
            monkeypatch.setattr(es_module._ServiceSync, "run", real_run)
        ops = reconcile_endpointslices(snap, size, memo=memo)
        assert ops == reconcile_endpointslices(snap, size), f"seed {seed} step {step}"
        upserts, deletes = _store_writes(ops, 1000 + 10 * step)
        if ops and rng.random() < 0.15:
            upserts, deletes = [], []
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            what, ns = rng.random(), rng.choice(namespaces)
            pods_now, slices_now = snap.list("Pod", ns), snap.list("EndpointSlice")
            gen += 1
            if what < 0.25 and pods_now:
                p = copy.deepcopy(rng.choice(pods_now))
                c = p["status"]["conditions"][0]
                c["status"] = "False" if c["status"] == "True" else "True"
                upserts.append(p)
            elif what < 0.4 and pods_now:
                p = copy.deepcopy(rng.choice(pods_now))
                p["metadata"]["labels"] = rng.choice([{"app": rng.choice(apps)}, {"app": "web", "tier": "x"}, {}])
                upserts.append(p)
            elif what < 0.45 and pods_now:
                deletes.append(key_of(rng.choice(pods_now)))
            elif what < 0.5 and pods_now:  # deleted and made again: a new uid
                p = copy.deepcopy(rng.choice(pods_now))
                p["metadata"].update(uid=f"uid-pod-{gen}", labels={"app": rng.choice(apps)})
                upserts.append(p)
            elif what < 0.56:
                upserts.append(_random_pod(rng, f"q{gen}", ns, gen))
            elif what < 0.64:
                upserts.append(_random_service(rng, rng.choice(apps), ns, f"uid-svc-{ns}-{gen}"))
            elif what < 0.68 and snap.list("Service", ns):
                deletes.append(key_of(rng.choice(snap.list("Service", ns))))
            elif what < 0.73 and slices_now:
                deletes.append(key_of(rng.choice(slices_now)))
            elif what < 0.8 and slices_now:
                es = copy.deepcopy(rng.choice(slices_now))
                labels, r = es["metadata"]["labels"], rng.random()
                if r < 0.4:
                    labels["kubernetes.io/service-name"] = rng.choice([*apps, "ghost"])
                elif r < 0.7:
                    labels["endpointslice.kubernetes.io/managed-by"] = rng.choice(["someone", CONTROLLER_NAME])
                else:
                    labels.pop("kubernetes.io/service-name", None)
                upserts.append(es)
            elif what < 0.85:  # a managed slice made by a user, maybe for a Service that never was
                target = rng.choice([*apps, "ghost"])
                upserts.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                                "metadata": {"name": f"{target}-user{gen}", "namespace": ns, "uid": f"u{gen}",
                                             "labels": {"kubernetes.io/service-name": target,
                                                        "endpointslice.kubernetes.io/managed-by": CONTROLLER_NAME}},
                                "endpoints": [], "ports": []})  # fmt: skip
            elif what < 0.9:
                n = copy.deepcopy(rng.choice(snap.list("Node")))
                n["metadata"]["labels"]["topology.kubernetes.io/zone"] = rng.choice(["zone-a", "zone-b", "zone-c"])
                upserts.append(n)
        last = {key_of(u): u for u in upserts}  # one write per key, the last; a delete wins
        for k in deletes:
            last.pop(k, None)
        snap = cache.apply(list(last.values()), deletes)
