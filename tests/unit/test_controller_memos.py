"""The garbage collector and the Service status controller as the control loop runs them, over what
the snapshot's change log says changed, give what a pass over every object gives."""

from __future__ import annotations

import copy
import random

import pytest

from kubewire.controllers.lifecycle import GarbageMemo, collect_garbage
from kubewire.controllers.serviceip import reconcile_services
from kubewire.controllers.types import Since, SnapshotCache, key_of


def test_garbage_memo_matches_a_full_pass() -> None:
    rng = random.Random(5)
    cache, memo = SnapshotCache(), GarbageMemo()
    owners = [f"o{i}" for i in range(6)]
    uid = iter(range(10**6))

    def obj(kind: str, name: str, refs: list[str] = ()) -> dict:  # type: ignore[assignment]
        m: dict = {"name": name, "namespace": "ns", "uid": f"u{next(uid)}"}
        if refs:
            m["ownerReferences"] = [{"kind": "Owner", "name": r, "uid": live.get(r, "u-gone")} for r in refs]
        return {"kind": kind, "metadata": m}

    live: dict[str, str] = {}
    objs = []
    for o in owners:
        objs.append(obj("Owner", o))
        live[o] = objs[-1]["metadata"]["uid"]
    objs += [obj("Dependent", f"d{i}", rng.sample(owners, rng.randint(1, 2))) for i in range(20)]
    snap = cache.apply(objs, ())
    deleted = 0
    for step in range(300):
        ops = collect_garbage(snap, memo)
        assert ops == collect_garbage(snap), f"step {step}"
        upserts: list[dict] = []
        deletes = [key_of(op.obj) for op in ops if rng.random() > 0.2]  # some deletions are lost
        deleted += len(deletes)
        what = rng.random()
        if what < 0.3:  # an owner deleted
            o = rng.choice(owners)
            if snap.get("Owner", "ns", o) is not None:
                deletes.append(("Owner", "ns", o))
        elif what < 0.5:  # an owner (re)created: a new uid
            o = rng.choice(owners)
            new = obj("Owner", o)
            live[o] = new["metadata"]["uid"]
            upserts.append(new)
        elif what < 0.8:  # a dependent (re)created or re-pointed
            upserts.append(obj("Dependent", f"d{rng.randint(0, 30)}", rng.sample(owners, rng.randint(0, 2))))
        elif snap.list("Dependent"):  # a dependent being deleted already
            d = copy.deepcopy(rng.choice(snap.list("Dependent")))
            d["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            upserts.append(d)
        snap = cache.apply(upserts, [k for k in deletes if k not in {key_of(u) for u in upserts}])
    assert deleted > 20


def test_service_status_since_matches_a_full_pass() -> None:
    rng = random.Random(3)
    cache, since = SnapshotCache(), Since()
    statuses = [None, {}, {"loadBalancer": {}}, {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}, "x"]

    def svc(i: int) -> dict:
        s: dict = {"kind": "Service", "metadata": {"name": f"s{i}", "namespace": "ns"},
                   "spec": {"type": rng.choice(["ClusterIP", "LoadBalancer"])}}  # fmt: skip
        st = rng.choice(statuses)
        if st is not None:
            s["status"] = copy.deepcopy(st)
        return s

    snap = cache.apply([svc(i) for i in range(10)], ())
    for step in range(200):
        ops = reconcile_services(snap, since)
        assert ops == reconcile_services(snap), f"step {step}"
        upserts = [{**op.obj} for op in ops if rng.random() > 0.2]  # some writes are lost
        upserts += [svc(rng.randint(0, 12)) for _ in range(rng.randint(0, 2))]
        snap = cache.apply(upserts, [("Service", "ns", f"s{rng.randint(0, 12)}")] if rng.random() < 0.1 else [])
    assert reconcile_services(snap, since) == reconcile_services(snap)


def test_garbage_memo_after_a_pass_that_stopped_midway(monkeypatch) -> None:  # noqa: ANN001
    """A pass that raises after taking in the changes leaves the memo to be rebuilt: the owner
    deleted in that step still has its dependent collected by the next pass."""
    from kubewire.controllers import lifecycle

    cache, memo = SnapshotCache(), GarbageMemo()
    owner = {"kind": "Owner", "metadata": {"name": "o", "namespace": "ns", "uid": "u-o"}}
    dep = {"kind": "Dependent", "metadata": {"name": "d", "namespace": "ns", "uid": "u-d",
                                             "ownerReferences": [{"kind": "Owner", "name": "o", "uid": "u-o"}]}}  # fmt: skip
    snap = cache.apply([owner, dep], ())
    assert collect_garbage(snap, memo) == []
    snap = cache.apply([], [("Owner", "ns", "o")])
    real = lifecycle._orphaned

    def boom(obj: dict, uids: object) -> bool:
        raise RuntimeError("a malformed object")

    monkeypatch.setattr(lifecycle, "_orphaned", boom)
    with pytest.raises(RuntimeError):
        collect_garbage(snap, memo)
    monkeypatch.setattr(lifecycle, "_orphaned", real)
    snap = cache.apply([], ())
    assert [op.obj["metadata"]["name"] for op in collect_garbage(snap, memo)] == ["d"] == [
        op.obj["metadata"]["name"] for op in collect_garbage(snap)]
