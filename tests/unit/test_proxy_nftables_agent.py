"""The nftables agent without a kernel: its maps fed from Snapshots, and the "auto" layout."""

from __future__ import annotations

import copy

from kubewire.cluster.addressing import NodePlan
from kubewire.controllers.types import Snapshot
from kubewire.kubeproxy.nftables import AUTO_FLAT_AT, NftProxyAgent
from kubewire.proxy.model import ProxyMaps, build_endpoints_map, build_service_map


def objects(n: int) -> list[dict]:
    out = []
    for i in range(n):
        name = f"s{i}"
        out.append({"kind": "Service", "metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"},
                    "spec": {"clusterIP": f"10.96.{i // 250}.{i % 250 + 1}", "ports": [{"name": "http", "port": 80}]}})
        out.append({"kind": "EndpointSlice", "addressType": "IPv4",
                    "metadata": {"namespace": "ns", "name": f"{name}-1", "resourceVersion": "1",
                                 "labels": {"kubernetes.io/service-name": name}},
                    "ports": [{"name": "http", "port": 8080}],
                    "endpoints": [{"addresses": [f"10.244.1.{i % 250 + 1}"], "nodeName": "node"}]})  # fmt: skip
    return out


def parsed(objs: list[dict]) -> tuple[dict, dict]:
    return (build_service_map([o for o in objs if o["kind"] == "Service"]),
            build_endpoints_map([o for o in objs if o["kind"] == "EndpointSlice"], "node"))  # fmt: skip


def test_maps_from_snapshots() -> None:
    """The agent's maps (ProxyMaps, shared with the other modes) from snapshots without a change log:
    only objects with a new resourceVersion count as changed, other entries stay as they were."""
    objs = objects(5) + [{"kind": "Pod", "metadata": {"namespace": "ns", "name": "p", "resourceVersion": "1"}}]
    maps = ProxyMaps("node")
    changed, _, _ = maps.sync(Snapshot.of(objs))
    assert len(changed) == 5 and (maps.service_map, maps.endpoints_map) == parsed(objs) and maps.service_count == 5
    before = {k: v for k, v in maps.endpoints_map.items()}
    assert maps.sync(Snapshot.of(copy.deepcopy(objs)))[0] == set()  # new dicts, same versions
    assert all(maps.endpoints_map[k] is v for k, v in before.items())  # entries kept as they were

    # One slice changed, one Service deleted (with its slice): only they are reported.
    objs = copy.deepcopy(objs)
    objs[3]["endpoints"][0]["addresses"] = ["10.244.1.99"]
    objs[3]["metadata"]["resourceVersion"] = "2"
    del objs[4:6]
    changed, old_svcs, old_eps = maps.sync(Snapshot.of(objs))
    assert changed == {("ns", "s1"), ("ns", "s2")}
    assert (maps.service_map, maps.endpoints_map) == parsed(objs)
    assert {k.name for k in old_svcs} == {k.name for k in old_eps} == {"s1", "s2"}  # both maps, each changed Service
    assert [k.name for k in maps.ports_by_service[("ns", "s1")]] == ["s1"] and ("ns", "s2") not in maps.ports_by_service


def test_auto_layout() -> None:
    plan = NodePlan(name="node", index=0, zone="z", zone_index=0, region="r", netns="kw-x-node", ip="172.18.0.2",
                    gateway="172.18.0.1", pod_cidr="10.244.1.0/24", bridge_ip="10.244.1.1", fabric_port="x")  # fmt: skip
    agent = NftProxyAgent(plan, "10.244.0.0/16", "10.96.0.0/12", layout="auto")
    assert agent.syncer.pod_cidrs == ["10.244.1.0/24"]
    assert agent._layout_for(10) == "upstream" and agent._layout_for(AUTO_FLAT_AT) == "flat"
    agent.syncer.flat_state = object()  # type: ignore[assignment]  # as after a sync in the flat layout
    agent.syncer.layout = "flat"
    assert agent._layout_for(AUTO_FLAT_AT - 1) == "flat"  # hysteresis: back to upstream's only well below
    assert agent._layout_for(AUTO_FLAT_AT // 2 - 1) == "upstream"
    assert NftProxyAgent(plan, "10.244.0.0/16", layout="flat")._layout_for(1) == "flat"


def test_maps_first_sync_in_parts() -> None:
    """A first sync in parts (the flat layout's first load): each part's Services are complete in
    the maps when it is yielded (their EndpointSlices came with them), slices of no listed Service
    come with the last part, and the maps end as after one sync; the change log then goes on."""
    from kubewire.controllers.types import SnapshotCache

    objs = objects(10)
    orphan = copy.deepcopy(objs[1])  # a slice whose Service is not there (yet)
    orphan["metadata"].update(name="gone-1", labels={"kubernetes.io/service-name": "gone"})
    objs.append(orphan)
    cache = SnapshotCache()
    snap = cache.apply(objs, ())
    maps = ProxyMaps("node")
    seen: list[set] = []
    for part in maps.sync_in_parts(snap, 3):
        for nsn in part:
            ports = [k for k in maps.service_map if (k.namespace, k.name) == nsn]
            assert all(maps.endpoints_map.get(k) for k in ports), f"{nsn} yielded before its endpoints"
        seen.append(part)
    assert [len(p) for p in seen] == [3, 3, 5]  # names in order, 10 // 3 per part; the orphan's in the last
    assert ("ns", "gone") in seen[-1]
    assert (maps.service_map, maps.endpoints_map) == parsed(objs) and maps.service_count == 10

    changed = copy.deepcopy(objs[3])
    changed["endpoints"][0]["addresses"] = ["10.244.1.99"]
    changed["metadata"]["resourceVersion"] = "2"
    assert maps.sync(cache.apply([changed], ()))[0] == {("ns", "s1")}
    try:
        next(maps.sync_in_parts(snap, 2))
    except RuntimeError as e:
        assert "first sync" in str(e)
    else:
        raise AssertionError("sync_in_parts on maps already filled")


def test_load_in_parts_only_into_empty_maps(monkeypatch) -> None:  # noqa: ANN001
    """A first sync that failed after the maps took in EndpointSlices (but no Service): a later
    large first load goes the ordinary way, not part by part (which needs empty maps)."""
    from kubewire.kubeproxy import nftables as agent_module
    from kubewire.proxy.nftables import nft_params

    plan = NodePlan(name="node", index=0, zone="z", zone_index=0, region="r", netns="kw-x-node", ip="172.18.0.2",
                    gateway="172.18.0.1", pod_cidr="10.244.1.0/24", bridge_ip="10.244.1.1", fabric_port="x")  # fmt: skip
    agent = NftProxyAgent(plan, "10.244.0.0/16", "10.96.0.0/12", layout="flat")
    agent.maps.update([], [o for o in objects(1) if o["kind"] == "EndpointSlice"])
    assert agent.maps.service_count == 0 and not agent.maps.empty
    monkeypatch.setattr(agent_module.nft, "tables", lambda *a: set())  # no root here: no table of ours
    params = nft_params(agent.config, "node", ["172.18.0.2"], {}, "IPv4", (), ["10.96.0.0/12"])
    snap = Snapshot.of(objects(agent_module.LOAD_IN_PARTS_AT))
    assert agent._load_in_parts(snap, params) is None
