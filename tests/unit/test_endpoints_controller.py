"""The Endpoints controller: v1 Endpoints as upstream's endpoints controller writes them, read from
the EndpointSlices the slice controller made of the same pods."""

from __future__ import annotations

import copy
import random

from test_endpointslices import NS, apply, pod, service, settle, two_zones

from kubewire.cli.describe import describe_object
from kubewire.cli.printers import COLUMNS
from kubewire.controllers.endpoints import EndpointsMemo, reconcile_endpoints
from kubewire.controllers.endpointslice import reconcile_endpointslices
from kubewire.controllers.types import Op, Snapshot, SnapshotCache, key_of


def endpoints_of(objs: list[dict]) -> tuple[Snapshot, dict | None]:
    """Slices settled, then one Endpoints pass applied; a second pass must have nothing to do."""
    snap = settle([*two_zones(), *objs])
    snap = apply(snap, reconcile_endpoints(snap))
    assert reconcile_endpoints(snap) == []
    return snap, snap.get("Endpoints", NS, "web")


def addr(name: str, ip: str, node: str = "n1") -> dict:
    return {"ip": ip, "nodeName": node, "targetRef": {"kind": "Pod", "namespace": NS, "name": name, "uid": f"uid-{name}"}}


HTTP = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def test_ready_not_ready_and_terminating_pods() -> None:
    _, ep = endpoints_of([
        service(labels={"app": "web", "tier": "front"}),
        pod("a", "10.244.1.9"), pod("b", "10.244.1.10", "n2"),
        pod("c", "10.244.2.5", ready=False), pod("d", "10.244.2.6", deleting=True),
    ])  # fmt: skip
    assert ep is not None
    assert ep["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert "ownerReferences" not in ep["metadata"]  # upstream's Endpoints have no owner
    # addresses sorted as upstream's LessEndpointAddress: the IP as a string
    assert ep["subsets"] == [{
        "addresses": [addr("b", "10.244.1.10", "n2"), addr("a", "10.244.1.9")],
        "notReadyAddresses": [addr("c", "10.244.2.5")],
        "ports": HTTP,
    }]  # fmt: skip


def test_publish_not_ready_addresses_lists_every_pod_as_ready() -> None:
    _, ep = endpoints_of([service(publishNotReadyAddresses=True),
                          pod("a", "10.244.1.2", ready=False), pod("b", "10.244.1.3", deleting=True)])  # fmt: skip
    assert ep is not None
    assert ep["subsets"] == [{"addresses": [addr("a", "10.244.1.2"), addr("b", "10.244.1.3")], "ports": HTTP}]


def test_named_target_port_resolving_differently_gives_two_subsets() -> None:
    other = [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    _, ep = endpoints_of([service(), pod("a", "10.244.1.2"), pod("b", "10.244.1.3", ports=other)])
    assert ep is not None
    assert ep["subsets"] == [
        {"addresses": [addr("a", "10.244.1.2")], "ports": HTTP},
        {"addresses": [addr("b", "10.244.1.3")], "ports": [{**HTTP[0], "port": 9090}]},
    ]


def test_ports_are_repacked_by_the_addresses_that_offer_them() -> None:
    """RepackSubsets: a port goes with the exact set of addresses offering it, so a pod that
    cannot resolve the named port offers only the numeric one."""
    ports = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
             {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]  # fmt: skip
    _, ep = endpoints_of([service(ports=ports), pod("a", "10.244.1.2"),
                          pod("b", "10.244.1.3", ports=[{"name": "web", "containerPort": 80, "protocol": "TCP"}])])
    assert ep is not None
    assert ep["subsets"] == [
        {"addresses": [addr("a", "10.244.1.2"), addr("b", "10.244.1.3")],
         "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}]},
        {"addresses": [addr("a", "10.244.1.2")], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
    ]  # fmt: skip


def test_headless_without_ports_and_hostnames() -> None:
    _, ep = endpoints_of([service(clusterIP="None", clusterIPs=["None"], ports=[]),
                          pod("a", "10.244.1.2", hostname="a", subdomain="web")])  # fmt: skip
    assert ep is not None
    assert ep["metadata"]["labels"] == {"service.kubernetes.io/headless": ""}
    assert ep["subsets"] == [{"addresses": [{**addr("a", "10.244.1.2"), "hostname": "a"}]}]


def test_no_pods_gives_empty_subsets_and_selectorless_or_external_name_none() -> None:
    _, ep = endpoints_of([service()])
    assert ep is not None and ep["subsets"] == []
    for svc in (service(selector=None), service(type="ExternalName", externalName="db.example.com")):
        _, ep = endpoints_of([svc, pod("a", "10.244.1.2")])
        assert ep is None


def test_user_endpoints_of_a_selectorless_service_are_left_alone() -> None:
    user = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": NS},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432, "protocol": "TCP"}]}]}  # fmt: skip
    snap, ep = endpoints_of([service(selector=None), copy.deepcopy(user)])
    assert ep == user


def test_over_capacity_is_truncated_ready_first_and_annotated_once() -> None:
    pods = [pod(f"p{i}", f"10.244.{i // 250}.{i % 250 + 1}", ready=i % 3 != 0) for i in range(1200)]
    _, ep = endpoints_of([service(), *pods])
    assert ep is not None
    (subset,) = ep["subsets"]
    assert len(subset["addresses"]) == 800 and "notReadyAddresses" in subset
    assert len(subset["notReadyAddresses"]) == 200  # what room the 800 ready ones leave
    assert ep["metadata"]["annotations"] == {"endpoints.kubernetes.io/over-capacity": "truncated"}
    more = [pod(f"q{i}", f"10.245.{i // 250}.{i % 250 + 1}") for i in range(300)]
    _, ep = endpoints_of([service(), *pods, *more])
    assert ep is not None
    (subset,) = ep["subsets"]
    assert len(subset["addresses"]) == 1000 and "notReadyAddresses" not in subset


def test_readiness_change_updates_and_service_deletion_deletes_with_the_memo() -> None:
    cache, memo = SnapshotCache(), EndpointsMemo()
    snap = settle([*two_zones(), service(), pod("a", "10.244.1.2"), pod("b", "10.244.1.3")])

    def lone(name: str, **annotations: str) -> dict:
        m: dict = {"name": name, "namespace": NS}
        if annotations:
            m["annotations"] = annotations
        return {"apiVersion": "v1", "kind": "Endpoints", "metadata": m, "subsets": [{"addresses": [{"ip": "192.0.2.1"}]}]}

    lock = lone("lock", **{"control-plane.alpha.kubernetes.io/leader": "{}"})
    snap = cache.apply([*snap.objects.values(), lone("leftover"), lock], ())
    # the first pass looks at everything, as upstream's start: a leftover without a Service goes, a lock stays
    ops = reconcile_endpoints(snap, memo)
    assert sorted((op.verb, op.obj["metadata"]["name"]) for op in ops) == [("create", "web"), ("delete", "leftover")]
    snap = cache.apply(_stamped([op for op in ops if op.verb == "create"]), [("Endpoints", NS, "leftover")])
    assert reconcile_endpoints(snap, memo) == []
    # written later without a Service: kept (upstream's controller does not watch Endpoints being added)
    snap = cache.apply([lone("later")], ())
    assert reconcile_endpoints(snap, memo) == []
    # b turns not ready: its slice changes, so does the Endpoints
    flipped = pod("b", "10.244.1.3", ready=False)
    snap = cache.apply([flipped], ())
    slice_ops = reconcile_endpointslices(snap)
    snap = cache.apply(_stamped(slice_ops), ())
    ops = reconcile_endpoints(snap, memo)
    assert ops == [op for op in reconcile_endpoints(snap) if op.verb != "delete"]
    assert [op.verb for op in ops] == ["update"]
    assert ops[0].obj["subsets"][0]["notReadyAddresses"] == [addr("b", "10.244.1.3")]
    snap = cache.apply(_stamped(ops), ())
    # the Service goes: its Endpoints go
    snap = cache.apply((), [("Service", NS, "web")])
    ops = reconcile_endpoints(snap, memo)
    assert [(op.verb, key_of(op.obj)) for op in ops] == [("delete", ("Endpoints", NS, "web"))]


def _stamped(ops: list[Op]) -> list[dict]:
    out = []
    for op in ops:
        assert op.verb in ("create", "update")
        obj = copy.deepcopy(op.obj)
        obj["metadata"].setdefault("uid", f"uid-{obj['metadata']['name']}")
        out.append(obj)
    return out


def test_memo_matches_a_full_pass_over_random_changes() -> None:
    rng = random.Random(11)
    cache, memo = SnapshotCache(), EndpointsMemo()
    snap = cache.apply([*two_zones(), service(), service("api", selector={"app": "api"})], ())
    for step in range(150):
        slice_ops = reconcile_endpointslices(snap)
        snap = cache.apply(*_split(slice_ops))
        ops = reconcile_endpoints(snap, memo)
        assert ops == reconcile_endpoints(snap), f"step {step}"
        kept = [op for op in ops if rng.random() > 0.2]  # some writes are lost
        snap = cache.apply(*_split(kept))
        i = rng.randint(0, 9)
        app = rng.choice(["web", "api"])
        what = rng.random()
        if what < 0.6:
            p = pod(f"p{i}", f"10.244.1.{i + 2}", ready=rng.random() > 0.3, labels={"app": app},
                    deleting=rng.random() < 0.1)  # fmt: skip
            snap = cache.apply([p], ())
        elif what < 0.8 and snap.get("Pod", NS, f"p{i}") is not None:
            snap = cache.apply((), [("Pod", NS, f"p{i}")])
        else:
            snap = cache.apply([service(labels={"v": str(step)})], ())


def _split(ops: list[Op]) -> tuple[list[dict], list]:
    ups = [copy.deepcopy(op.obj) for op in ops if op.verb != "delete"]
    for o in ups:
        o["metadata"].setdefault("uid", f"uid-{o['metadata']['name']}")
    return ups, [key_of(op.obj) for op in ops if op.verb == "delete"]


def test_get_and_describe_endpoints_as_kubectl_prints_them() -> None:
    pods = [pod(f"p{i}", f"10.244.1.{i + 2}") for i in range(5)]
    _, ep = endpoints_of([service(), *pods])
    assert ep is not None
    col = dict(COLUMNS["Endpoints"])["ENDPOINTS"]
    assert col(ep) == "10.244.1.2:8080,10.244.1.3:8080,10.244.1.4:8080 + 2 more..."
    assert col({"subsets": []}) == "<none>"
    assert col({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": HTTP}]}) == "[fd00::1]:8080"
    assert col({"subsets": [{"notReadyAddresses": [{"ip": "10.0.0.1"}], "ports": HTTP}]}) == ""  # kubectl: blank
    two = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "db", "namespace": NS, "labels": {"a": "b"}},
           "subsets": [{"addresses": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}], "notReadyAddresses": [{"ip": "192.0.2.3"}],
                        "ports": [{"port": 5432, "protocol": "TCP"}]}]}  # fmt: skip
    # kubectl's tabwriter: the line without a tab ("Subsets:") ends the first alignment block
    assert describe_object(two, None).splitlines() == [  # type: ignore[arg-type]
        "Name:         db",
        "Namespace:    default",
        "Labels:       a=b",
        "Annotations:  <none>",
        "Subsets:",
        "  Addresses:          192.0.2.1,192.0.2.2",
        "  NotReadyAddresses:  192.0.2.3",
        "  Ports:",
        "    Name     Port  Protocol",
        "    ----     ----  --------",
        "    <unset>  5432  TCP",
        "",
        "Events:  <none>",
    ]


def test_endpoints_are_validated_and_defaulted_as_the_api_server_does() -> None:
    from kubewire.api.errors import ManifestError
    from kubewire.api.loader import read_text
    from kubewire.api.validation import validate_and_default

    def errors(subsets: str) -> list[str]:
        (doc,) = read_text(f"apiVersion: v1\nkind: Endpoints\nmetadata: {{name: db}}\nsubsets: {subsets}\n", "ep.yaml")
        try:
            obj = validate_and_default(doc)
        except ManifestError as e:
            return [f"{fe.path}: {fe.message}" for fe in e.errors]
        return [str(p) for s in obj["subsets"] for p in s.get("ports", [])]

    assert errors("[{addresses: [{ip: 192.0.2.1}], ports: [{port: 5432}]}]") == [
        "{'port': 5432, 'protocol': 'TCP'}"]  # TCP by default
    assert errors("[{addresses: [{ip: not-an-ip}]}]") == [
        'subsets[0].addresses[0].ip: Invalid value: "not-an-ip": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)',
        'subsets[0].addresses[0].ip: Invalid value: "not-an-ip": must be a valid IP address']
    assert errors("[{notReadyAddresses: [{ip: 127.0.0.1}]}, {ports: [{port: 80}]}]") == [
        'subsets[0].notReadyAddresses[0].ip: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)',
        "subsets[1]: Required value: must specify `addresses` or `notReadyAddresses`"]
    assert errors("[{addresses: [{ip: 192.0.2.1}], ports: [{port: 80}, {name: b, port: 0, protocol: XTP}]}]") == [
        "subsets[0].ports[0].name: Required value",
        "subsets[0].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        'subsets[0].ports[1].protocol: Unsupported value: "XTP": supported values: "SCTP", "TCP", "UDP"']


def test_an_empty_selector_is_no_selector() -> None:
    from kubewire.api.service import default_service

    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"selector": {}, "ports": []}}
    default_service(svc)
    assert "selector" not in svc["spec"]  # selector-less: its Endpoints and slices are the user's


def test_stored_endpoints_are_repacked_as_the_api_server_stores_them() -> None:
    from kubewire.api.loader import read_text
    from kubewire.api.validation import validate_and_default

    text = """apiVersion: v1
kind: Endpoints
metadata: {name: db}
subsets:
- addresses: [{ip: 192.0.2.2}, {ip: 192.0.2.1}]
  ports: [{name: pg, port: 5432}]
- addresses: [{ip: 192.0.2.3}]
  notReadyAddresses: [{ip: 192.0.2.1}]
  ports: [{name: pg, port: 5432}]
"""
    (doc,) = read_text(text, "ep.yaml")
    # one subset for the one port; 192.0.2.1 listed once, not ready since one subset says so
    assert validate_and_default(doc)["subsets"] == [{
        "addresses": [{"ip": "192.0.2.2"}, {"ip": "192.0.2.3"}],
        "notReadyAddresses": [{"ip": "192.0.2.1"}],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
    }]  # fmt: skip
