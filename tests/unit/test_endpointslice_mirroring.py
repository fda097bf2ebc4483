"""The EndpointSlice mirroring controller, driven step by step over in-memory snapshots."""

from __future__ import annotations

import copy
import itertools
import random
import re

import pytest

from kubewire.controllers.endpointslicemirroring import (
    CONTROLLER_NAME,
    MirroringMemo,
    mirror_endpoints,
    repack_subsets,
)
from kubewire.controllers.replicaset import ALPHANUMS
from kubewire.controllers.types import Op, Since, Snapshot, SnapshotCache, key_of

NS = "default"
NAME_RE = re.compile(f"ext-[{ALPHANUMS}]{{5}}")
_uids = itertools.count()


# --- builders ---------------------------------------------------------------------------------------


def service(name: str = "ext", selector: dict | None = None) -> dict:
    spec: dict = {"ports": [{"port": 80, "protocol": "TCP"}]}
    if selector is not None:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS, "uid": f"svc-{name}"},
            "spec": spec}  # fmt: skip


def endpoints(
    subsets: list[dict], name: str = "ext", labels: dict | None = None, annotations: dict | None = None
) -> dict:
    m: dict = {"name": name, "namespace": NS, "uid": f"ep-{name}"}
    if labels is not None:
        m["labels"] = labels
    if annotations is not None:
        m["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": m, "subsets": subsets}


def subset(
    ready: list[str] | None = None, not_ready: list[str] | None = None, ports: list[dict] | None = None
) -> dict:
    out: dict = {"ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    if ready:
        out["addresses"] = [{"ip": ip} for ip in ready]
    if not_ready:
        out["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return out


def ips(n: int, base: str = "10.1") -> list[str]:
    return [f"{base}.{i // 250}.{i % 250 + 1}" for i in range(n)]


def apply(snap: Snapshot, ops: list[Op]) -> Snapshot:
    """What the API server does with the writes: creates get a uid and resourceVersion."""
    objects = dict(snap.objects)
    for op in ops:
        if op.verb == "delete":
            objects.pop(key_of(op.obj), None)
        else:
            obj = copy.deepcopy(op.obj)
            obj["metadata"].setdefault("uid", f"uid-{next(_uids)}")
            obj["metadata"]["resourceVersion"] = str(next(_uids))
            objects[key_of(obj)] = obj
    return Snapshot(objects)


def slices(snap: Snapshot) -> list[dict]:
    return snap.list("EndpointSlice")


def settle(snap: Snapshot) -> Snapshot:
    """Run to a fixed point; the second pass must write nothing."""
    snap = apply(snap, mirror_endpoints(snap))
    assert mirror_endpoints(snap) == []
    return snap


def addresses(es: dict) -> list[str]:
    return [ep["addresses"][0] for ep in es["endpoints"]]


# --- what a slice holds --------------------------------------------------------------------------------


def test_selectorless_service_mirrors_into_one_slice() -> None:
    ep = endpoints(
        [{"addresses": [{"ip": "10.0.0.1", "hostname": "a", "nodeName": "n1",
                         "targetRef": {"kind": "Pod", "namespace": NS, "name": "p1", "uid": "u1"}}],
          "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}, {"port": 9090}]}],
        labels={"app": "ext", "kubernetes.io/service-name": "other"},
        annotations={"note": "x", "endpoints.kubernetes.io/last-change-trigger-time": "t",
                     "kubectl.kubernetes.io/last-applied-configuration": "{}"},
    )  # fmt: skip
    ops = mirror_endpoints(Snapshot.of([service(), ep]))
    assert [op.verb for op in ops] == ["create"]
    es = ops[0].obj
    m = es["metadata"]
    assert NAME_RE.fullmatch(m["name"]) and m["generateName"] == "ext-" and m["namespace"] == NS
    assert m["labels"] == {
        "app": "ext",
        "kubernetes.io/service-name": "ext",
        "endpointslice.kubernetes.io/managed-by": CONTROLLER_NAME,
    }
    assert m["annotations"] == {"note": "x"}
    assert m["ownerReferences"] == [{"apiVersion": "v1", "kind": "Endpoints", "name": "ext", "uid": "ep-ext",
                                     "controller": True, "blockOwnerDeletion": True}]  # fmt: skip
    assert es["apiVersion"] == "discovery.k8s.io/v1" and es["kind"] == "EndpointSlice"
    assert es["addressType"] == "IPv4"
    assert sorted(es["ports"], key=lambda p: p["port"]) == [
        {"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"},
        {"name": "", "port": 9090, "protocol": "TCP"},
    ]
    assert es["endpoints"] == [{
        "addresses": ["10.0.0.1"], "conditions": {"ready": True}, "hostname": "a", "nodeName": "n1",
        "targetRef": {"kind": "Pod", "namespace": NS, "name": "p1", "uid": "u1"},
    }]  # fmt: skip
    # labels beyond the reserved two differ from the Endpoints' forever: rebuilt, but nothing written
    settle(apply(Snapshot.of([service(), ep]), ops))


def test_not_ready_addresses_are_not_ready() -> None:
    ops = mirror_endpoints(Snapshot.of([service(), endpoints([subset(["10.0.0.1"], ["10.0.0.2"])])]))
    (es,) = [op.obj for op in ops]
    assert [(ep["addresses"], ep["conditions"]) for ep in es["endpoints"]] == [
        (["10.0.0.1"], {"ready": True}),
        (["10.0.0.2"], {"ready": False}),
    ]


def test_subsets_with_different_ports_give_two_slices() -> None:
    ep = endpoints(
        [subset(["10.0.0.1"]), subset(["10.0.0.2"], ports=[{"name": "dns", "port": 53, "protocol": "UDP"}])]
    )
    ops = mirror_endpoints(Snapshot.of([service(), ep]))
    assert [op.verb for op in ops] == ["create", "create"]
    by_port = {op.obj["ports"][0]["port"]: addresses(op.obj) for op in ops}
    assert by_port == {8080: ["10.0.0.1"], 53: ["10.0.0.2"]}
    assert len({op.obj["metadata"]["name"] for op in ops}) == 2


def test_subsets_with_the_same_ports_merge() -> None:
    ep = endpoints([subset(["10.0.0.2"]), subset(["10.0.0.1"], ["10.0.0.2"])])
    ops = mirror_endpoints(Snapshot.of([service(), ep]))
    (es,) = [op.obj for op in ops]
    # repacked: the address listed both ready and not ready is not ready
    assert [(ep["addresses"][0], ep["conditions"]["ready"]) for ep in es["endpoints"]] == [
        ("10.0.0.1", True),
        ("10.0.0.2", False),
    ]


def test_subset_without_ports_is_kept() -> None:
    ops = mirror_endpoints(Snapshot.of([service(), endpoints([subset(["10.0.0.1"], ports=[])])]))
    (es,) = [op.obj for op in ops]
    assert es["ports"] == [] and addresses(es) == ["10.0.0.1"]


def test_address_families_split() -> None:
    ep = endpoints([subset(["10.0.0.1", "fd00::1", "::ffff:10.0.0.2", "fd00:0::2"])])
    ops = mirror_endpoints(Snapshot.of([service(), ep]))
    by_type = {op.obj["addressType"]: sorted(addresses(op.obj)) for op in ops}
    assert by_type == {"IPv4": ["10.0.0.1", "10.0.0.2"], "IPv6": ["fd00::1", "fd00::2"]}  # as restringified


def test_invalid_addresses_are_skipped() -> None:
    ep = endpoints([subset(["10.0.0.1", "not-an-ip", "", "10.0.0.300"])])
    (op,) = mirror_endpoints(Snapshot.of([service(), ep]))
    assert addresses(op.obj) == ["10.0.0.1"]


def test_more_than_a_hundred_addresses_stay_in_one_slice() -> None:
    ep = endpoints([subset(ips(250))])
    ops = mirror_endpoints(Snapshot.of([service(), ep]))
    assert [len(op.obj["endpoints"]) for op in ops] == [250]


def test_more_than_a_thousand_addresses_are_truncated_ready_first() -> None:
    ready, not_ready = ips(900), ips(300, base="10.2")
    ep = endpoints([subset(ready, not_ready)])
    (op,) = mirror_endpoints(Snapshot.of([service(), ep]))
    eps = op.obj["endpoints"]
    assert len(eps) == 1000
    assert sum(ep["conditions"]["ready"] for ep in eps) == 900
    # the limit counts per subset: another port set has its own thousand
    ep = endpoints([subset(ips(1200)), subset(ips(5, base="10.3"), ports=[{"port": 53, "protocol": "UDP"}])])
    assert sorted(len(op.obj["endpoints"]) for op in mirror_endpoints(Snapshot.of([service(), ep]))) == [
        5,
        1000,
    ]
    (op,) = mirror_endpoints(
        Snapshot.of([service(), endpoints([subset(ips(30))])]), max_endpoints_per_subset=10
    )
    assert len(op.obj["endpoints"]) == 10


# --- when not to mirror ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    ["selector", "empty-selector", "no-service", "skip-mirror", "leader", "no-endpoints"],
)
def test_not_mirrored_deletes_mirrored_slices(change: str) -> None:
    ep = endpoints([subset(["10.0.0.1"]), subset(["fd00::1"], ports=[{"port": 53, "protocol": "UDP"}])])
    snap = settle(Snapshot.of([service(), ep]))
    assert len(slices(snap)) == 2
    objs = {"svc": service(), "ep": ep}
    if change == "selector":
        objs["svc"] = service(selector={"app": "x"})
    elif change == "empty-selector":
        objs["svc"] = service(selector={})
    elif change == "no-service":
        del objs["svc"]
    elif change == "skip-mirror":
        objs["ep"] = endpoints(ep["subsets"], labels={"endpointslice.kubernetes.io/skip-mirror": "true"})
    elif change == "leader":
        objs["ep"] = endpoints(ep["subsets"], annotations={"control-plane.alpha.kubernetes.io/leader": "{}"})
    else:
        del objs["ep"]
    before = slices(snap)
    snap = Snapshot.of(list(objs.values()) + before)
    ops = mirror_endpoints(snap)
    assert sorted((op.verb, op.obj["metadata"]["name"]) for op in ops) == sorted(
        ("delete", es["metadata"]["name"]) for es in before
    )
    assert slices(settle(snap)) == []


def test_not_mirrored_from_the_start() -> None:
    for objs in (
        [service(selector={"app": "x"}), endpoints([subset(["10.0.0.1"])])],
        [endpoints([subset(["10.0.0.1"])])],
        [
            service(),
            endpoints([subset(["10.0.0.1"])], labels={"endpointslice.kubernetes.io/skip-mirror": "true"}),
        ],
    ):
        assert mirror_endpoints(Snapshot.of(objs)) == []


def test_other_controllers_slices_are_left_alone() -> None:
    theirs = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
              "metadata": {"name": "ext-abcde", "namespace": NS,
                           "labels": {"kubernetes.io/service-name": "ext",
                                      "endpointslice.kubernetes.io/managed-by": "someone-else"}},
              "endpoints": [], "ports": []}  # fmt: skip
    snap = settle(Snapshot.of([service(), endpoints([subset(["10.0.0.1"])]), theirs]))
    assert theirs in slices(snap) and len(slices(snap)) == 2


def test_terminating_endpoints_creates_nothing() -> None:
    ep = endpoints([subset(["10.0.0.1"])])
    ep["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert mirror_endpoints(Snapshot.of([service(), ep])) == []


# --- reconciling -------------------------------------------------------------------------------------


def test_address_change_updates_the_same_slice() -> None:
    snap = settle(Snapshot.of([service(), endpoints([subset(["10.0.0.1", "10.0.0.2"])])]))
    (es,) = slices(snap)
    snap = Snapshot.of([service(), endpoints([subset(["10.0.0.1", "10.0.0.3"])]), es])
    (op,) = mirror_endpoints(snap)
    assert op.verb == "update" and op.obj["metadata"]["name"] == es["metadata"]["name"]
    assert op.obj["metadata"]["uid"] == es["metadata"]["uid"]
    assert op.obj["metadata"]["resourceVersion"] == es["metadata"]["resourceVersion"]
    assert addresses(op.obj) == ["10.0.0.1", "10.0.0.3"]
    settle(snap)


def test_label_and_annotation_changes_update() -> None:
    snap = settle(Snapshot.of([service(), endpoints([subset(["10.0.0.1"])], labels={"a": "1"})]))
    (es,) = slices(snap)
    snap = Snapshot.of(
        [service(), endpoints([subset(["10.0.0.1"])], labels={"a": "2"}, annotations={"n": "v"}), es]
    )
    (op,) = mirror_endpoints(snap)
    assert op.verb == "update" and op.obj["metadata"]["labels"]["a"] == "2"
    assert op.obj["metadata"]["annotations"] == {"n": "v"}
    # only the trigger time changes: nothing to write
    snap = settle(snap)
    ep = endpoints([subset(["10.0.0.1"])], labels={"a": "2"},
                   annotations={"n": "v", "endpoints.kubernetes.io/last-change-trigger-time": "t"})  # fmt: skip
    assert mirror_endpoints(Snapshot.of([service(), ep, *slices(snap)])) == []


def test_port_change_recycles_the_slice() -> None:
    snap = settle(Snapshot.of([service(), endpoints([subset(["10.0.0.1"])])]))
    (es,) = slices(snap)
    snap = Snapshot.of([service(), endpoints([subset(["10.0.0.1"], ports=[{"port": 81}])]), es])
    (op,) = mirror_endpoints(snap)
    assert op.verb == "update" and op.obj["metadata"]["name"] == es["metadata"]["name"]
    assert op.obj["ports"] == [{"name": "", "port": 81, "protocol": "TCP"}]
    settle(snap)


def test_extra_and_foreign_family_slices_are_deleted() -> None:
    snap = settle(Snapshot.of([service(), endpoints([subset(["10.0.0.1"])])]))
    (es,) = slices(snap)
    dup = copy.deepcopy(es)
    dup["metadata"]["name"] = "ext-zzzzz"
    v6 = copy.deepcopy(es)
    v6["metadata"]["name"], v6["addressType"] = "ext-yyyyy", "IPv6"
    snap = Snapshot.of([service(), endpoints([subset(["10.0.0.1"])]), es, dup, v6])
    ops = mirror_endpoints(snap)
    assert sorted((op.verb, op.obj["metadata"]["name"]) for op in ops) == [
        ("delete", "ext-yyyyy"),
        ("delete", "ext-zzzzz"),
    ]
    settle(snap)


def test_names_avoid_taken_ones() -> None:
    first = mirror_endpoints(Snapshot.of([service(), endpoints([subset(["10.0.0.1"])])]))[0].obj
    squatter = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": first["metadata"]["name"], "namespace": NS}, "endpoints": [], "ports": []}  # fmt: skip
    (op,) = mirror_endpoints(Snapshot.of([service(), endpoints([subset(["10.0.0.1"])]), squatter]))
    assert op.obj["metadata"]["name"] != first["metadata"]["name"] and NAME_RE.fullmatch(
        op.obj["metadata"]["name"]
    )


def test_repack_dedupes_by_ip_and_target() -> None:
    ref = {"kind": "Pod", "name": "p", "uid": "u"}
    packed = repack_subsets([
        {"addresses": [{"ip": "10.0.0.2"}, {"ip": "10.0.0.1", "targetRef": ref}], "ports": [{"port": 1}]},
        {"addresses": [{"ip": "10.0.0.1", "targetRef": ref}, {"ip": "10.0.0.2"}], "ports": [{"port": 2}]},
    ])  # fmt: skip
    assert len(packed) == 1
    ports, ready, not_ready = packed[0]
    assert [p[1] for p in ports] == [1, 2] and [a["ip"] for a in ready] == ["10.0.0.1", "10.0.0.2"]
    assert not_ready == []


# --- with a memo ----------------------------------------------------------------------------------


def _random_subsets(rng: random.Random) -> list[dict]:
    out = []
    for _ in range(rng.randint(0, 3)):
        pool = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "fd00::2", "bogus"]
        ports = rng.choice([[{"port": 80}], [{"name": "dns", "port": 53, "protocol": "UDP"}], []])
        out.append(
            subset(rng.sample(pool, rng.randint(0, 3)), rng.sample(pool, rng.randint(0, 2)), ports=ports)
        )
    return out


@pytest.mark.parametrize("memo_type", [MirroringMemo, Since])
def test_memo_matches_a_full_pass(memo_type: type[Since]) -> None:
    rng = random.Random(7)
    cache, memo = SnapshotCache(), memo_type()
    names = ["a", "b", "c", "d"]
    uid = itertools.count()

    def ep(name: str) -> dict:
        labels = rng.choice([None, {"tier": "x"}, {"endpointslice.kubernetes.io/skip-mirror": "true"}])
        obj = endpoints(_random_subsets(rng), name=name, labels=labels)
        obj["metadata"]["uid"] = f"ep-{name}-{next(uid)}"
        return obj

    snap = cache.apply([service(n, selector=rng.choice([None, None, {"app": n}])) for n in names]
                       + [ep(n) for n in names], ())  # fmt: skip
    written = 0
    for step in range(300):
        ops = mirror_endpoints(snap, memo)
        assert ops == mirror_endpoints(snap), f"step {step}"
        written += len(ops)
        upserts: list[dict] = []
        deletes = []
        for op in ops:
            if rng.random() < 0.2:
                continue  # a lost write
            if op.verb == "delete":
                deletes.append(key_of(op.obj))
            else:
                obj = copy.deepcopy(op.obj)
                obj["metadata"].setdefault("uid", f"uid-{next(uid)}")
                upserts.append(obj)
        what = rng.random()
        name = rng.choice(names)
        if what < 0.35:
            upserts.append(ep(name))
        elif what < 0.45:
            deletes.append(("Endpoints", NS, name))
        elif what < 0.6:
            upserts.append(service(name, selector=rng.choice([None, {"app": name}])))
        elif what < 0.65:
            deletes.append(("Service", NS, name))
        elif what < 0.8 and snap.list("EndpointSlice"):
            es = copy.deepcopy(rng.choice(snap.list("EndpointSlice")))
            if rng.random() < 0.5:
                deletes.append(key_of(es))  # someone deletes a mirrored slice
            else:  # or relabels it
                es["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] = rng.choice(
                    ["x", CONTROLLER_NAME]
                )
                es["metadata"]["labels"]["kubernetes.io/service-name"] = rng.choice(names)
                upserts.append(es)
        keys = {key_of(u) for u in upserts}
        snap = cache.apply(upserts, [k for k in deletes if k not in keys])
    assert written > 100
    assert mirror_endpoints(snap, memo) == mirror_endpoints(snap)


def test_memo_converges_and_then_writes_nothing() -> None:
    cache, memo = SnapshotCache(), MirroringMemo()
    snap = cache.apply([service(), endpoints([subset(["10.0.0.1"])])], ())
    ops = mirror_endpoints(snap, memo)
    assert [op.verb for op in ops] == ["create"]
    assert memo.pending == {("Endpoints", NS, "ext")}
    snap = cache.apply([op.obj for op in ops], ())
    assert mirror_endpoints(snap, memo) == []
    assert memo.pending == set()
    # a mirrored slice deleted behind the controller's back comes back
    snap = cache.apply([], [key_of(ops[0].obj)])
    assert [op.verb for op in mirror_endpoints(snap, memo)] == ["create"]


def test_memo_looks_only_at_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubewire.controllers import endpointslicemirroring as mirroring

    cache, memo = SnapshotCache(), MirroringMemo()
    objs = [o for n in ("a", "b", "c") for o in (service(n), endpoints([subset(["10.0.0.1"])], name=n))]
    snap = cache.apply(objs, ())
    snap = cache.apply([op.obj for op in mirror_endpoints(snap, memo)], ())
    assert mirror_endpoints(snap, memo) == []
    seen: list[str] = []
    real = mirroring._Reconciler.run

    def run(self: mirroring._Reconciler, existing: list[dict]) -> list[Op]:
        seen.append(self.name)
        return real(self, existing)

    monkeypatch.setattr(mirroring._Reconciler, "run", run)
    snap = cache.apply([endpoints([subset(["10.0.0.2"])], name="b")], ())
    (op,) = mirror_endpoints(snap, memo)
    assert op.verb == "update" and seen == ["b"]
    seen.clear()
    b_slice = snap.get("EndpointSlice", NS, op.obj["metadata"]["name"])
    snap = cache.apply([], [key_of(b_slice)])  # deleted behind the controller's back
    (op,) = mirror_endpoints(snap, memo)
    assert op.verb == "create" and seen == ["b"]
