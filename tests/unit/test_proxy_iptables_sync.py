"""kube-proxy's iptables syncs after the first: the incremental maps (ProxyMaps), the per-service-port
render cache (RenderCache), the trimmed partial payload, and the agent that drives them. What they
produce must be exactly what rendering everything from scratch gives."""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Iterator

import pytest

from kubewire.cluster.addressing import NodePlan
from kubewire.controllers.types import Snapshot
from kubewire.kubeproxy import agent as agent_module
from kubewire.proxy.iptables.render import (
    RenderCache,
    node_params,
    plan_full,
    trim_unchanged,
)
from kubewire.proxy.model import (
    KubeProxyConfig,
    ProxyMaps,
    ServicePortName,
    build_endpoints_map,
    build_service_map,
)

NODE = "node-a"
CONFIG = KubeProxyConfig(cluster_cidr="10.244.0.0/16")
PARAMS = node_params(CONFIG, NODE, ["172.18.0.2"])


def service(i: int, *, ports: int = 1, node_port: bool = False, udp: bool = False, rv: int = 1) -> dict:
    spec: dict = {"type": "NodePort" if node_port else "ClusterIP", "clusterIP": f"10.96.{i // 250}.{i % 250 + 1}",
                  "ports": [{"name": f"p{p}", "port": 80 + p, "protocol": "UDP" if udp else "TCP",
                             **({"nodePort": 30000 + i * 4 + p} if node_port else {})} for p in range(ports)]}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Service", "spec": spec,
            "metadata": {"namespace": "ns", "name": f"svc-{i:03d}", "resourceVersion": str(rv)}}  # fmt: skip


def endpoint_slice(i: int, ips: list[str], *, ports: int = 1, udp: bool = False, rv: int = 1, suffix: str = "x") -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": "ns", "name": f"svc-{i:03d}-{suffix}", "resourceVersion": str(rv),
                         "labels": {"kubernetes.io/service-name": f"svc-{i:03d}"}},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                           "nodeName": NODE if ip.endswith(".1") else "node-b"} for ip in ips],
            "ports": [{"name": f"p{p}", "port": 8080 + p, "protocol": "UDP" if udp else "TCP"} for p in range(ports)]}  # fmt: skip


def cluster(n: int) -> tuple[list[dict], list[dict]]:
    svcs = [service(i, ports=1 + i % 2, node_port=i % 5 == 0, udp=i % 7 == 0) for i in range(n)]
    slices = [endpoint_slice(i, [f"10.244.{i % 200}.{k + 1}" for k in range(i % 4)], ports=1 + i % 2, udp=i % 7 == 0)
              for i in range(n)]  # fmt: skip
    return svcs, slices


def fresh(svcs: list[dict], slices: list[dict], existing=(), changed=None):  # noqa: ANN001, ANN201
    return plan_full(build_service_map(svcs), build_endpoints_map(slices, NODE), PARAMS, existing, changed)


def mutate(rng: random.Random, svcs: list[dict], slices: list[dict], rv: int) -> None:
    """One random change of the kind a cluster sees: endpoints come and go, a Service is added,
    removed or changes type, a slice moves."""
    what = rng.randrange(6)
    i = rng.randrange(len(slices))
    if what == 0:  # one endpoint fewer
        slices[i] = copy.deepcopy(slices[i])
        slices[i]["endpoints"] = slices[i]["endpoints"][:-1]
        slices[i]["metadata"]["resourceVersion"] = str(rv)
    elif what == 1:  # one endpoint more
        slices[i] = copy.deepcopy(slices[i])
        slices[i]["endpoints"].append({"addresses": [f"10.250.{rv % 250}.{rv % 200 + 1}"], "conditions": {"ready": True}})
        slices[i]["metadata"]["resourceVersion"] = str(rv)
    elif what == 2:  # a new Service with endpoints
        n = 500 + rv
        svcs.append(service(n, rv=rv))
        slices.append(endpoint_slice(n, [f"10.251.{rv % 250}.1", f"10.251.{rv % 250}.2"], rv=rv))
    elif what == 3 and len(svcs) > 3:  # a Service goes away (its slice stays a while, as in a cluster)
        svcs.pop(rng.randrange(len(svcs)))
    elif what == 4:  # a Service becomes a NodePort
        j = rng.randrange(len(svcs))
        svcs[j] = copy.deepcopy(svcs[j])
        svcs[j]["spec"]["type"] = "NodePort"
        for p in svcs[j]["spec"]["ports"]:
            p["nodePort"] = 31000 + rv % 1000
        svcs[j]["metadata"]["resourceVersion"] = str(rv)
    else:  # a second slice for a Service
        slices.append(endpoint_slice(i, [f"10.252.{rv % 250}.3"], rv=rv, suffix=f"y{rv}"))


def test_proxy_maps_track_the_full_maps() -> None:
    rng = random.Random(7)
    svcs, slices = cluster(60)
    maps = ProxyMaps(NODE)
    changed, _, _ = maps.update(svcs, slices)
    assert len(changed) == 60
    for rv in range(2, 60):
        mutate(rng, svcs, slices, rv)
        before_svcs, before_eps = dict(maps.service_map), dict(maps.endpoints_map)
        changed, old_svcs, old_eps = maps.update(svcs, slices)
        assert maps.service_map == build_service_map(svcs)
        assert maps.endpoints_map == build_endpoints_map(slices, NODE)
        # what changed is exactly the Services whose entries differ, with their old entries
        differ = {(k.namespace, k.name) for k in before_svcs.keys() | maps.service_map.keys()
                  if before_svcs.get(k) != maps.service_map.get(k)}  # fmt: skip
        differ |= {(k.namespace, k.name) for k in before_eps.keys() | maps.endpoints_map.keys()
                   if before_eps.get(k) != maps.endpoints_map.get(k)}  # fmt: skip
        assert changed == differ
        assert old_svcs == {k: v for k, v in before_svcs.items() if (k.namespace, k.name) in changed}
        assert old_eps == {k: v for k, v in before_eps.items() if (k.namespace, k.name) in changed}
    # one key object per service port, shared by both maps
    for key in maps.service_map.keys() & maps.endpoints_map.keys():
        assert next(k for k in maps.endpoints_map if k == key) is next(k for k in maps.service_map if k == key)


def test_proxy_maps_keep_unchanged_objects_and_accept_snapshot_keys() -> None:
    svcs, slices = cluster(10)
    maps = ProxyMaps(NODE)
    maps.update({("Service", "ns", s["metadata"]["name"]): s for s in svcs},
                {("EndpointSlice", "ns", s["metadata"]["name"]): s for s in slices})  # fmt: skip
    kept_svc = dict(maps.service_map)
    kept_eps = dict(maps.endpoints_map)
    slices[3] = copy.deepcopy(slices[3])
    slices[3]["endpoints"] = slices[3]["endpoints"][:1]
    slices[3]["metadata"]["resourceVersion"] = "9"
    changed, _, _ = maps.update({("Service", "ns", s["metadata"]["name"]): copy.deepcopy(s) for s in svcs},
                                {("EndpointSlice", "ns", s["metadata"]["name"]): s for s in slices})  # fmt: skip
    assert changed == {("ns", "svc-003")}
    for k, v in maps.service_map.items():
        assert v is kept_svc[k]
    for k, v in maps.endpoints_map.items():
        assert (v is kept_eps[k]) == (k.name != "svc-003")
    # objects without a resourceVersion are compared by content
    bare = [{**s, "metadata": {k: v for k, v in s["metadata"].items() if k != "resourceVersion"}} for s in svcs]
    maps2 = ProxyMaps(NODE)
    maps2.update(bare, [])
    assert maps2.update(copy.deepcopy(bare), [])[0] == set()


def test_render_cache_gives_what_rendering_everything_gives() -> None:
    rng = random.Random(3)
    svcs, slices = cluster(80)
    maps = ProxyMaps(NODE)
    cache = RenderCache()
    maps.update(svcs, slices)
    first = plan_full(maps.service_map, maps.endpoints_map, PARAMS, (), None, cache)
    assert first.text() == fresh(svcs, slices).text()
    active = first.active_nat_chains
    for rv in range(2, 80):
        mutate(rng, svcs, slices, rv)
        names, _, _ = maps.update(svcs, slices)
        changed = {k for k in maps.ports_of(names) if k in maps.service_map}
        cached = plan_full(maps.service_map, maps.endpoints_map, PARAMS, active, changed, cache)
        uncached = fresh(svcs, slices, active, changed)
        assert cached.filter_rules == uncached.filter_rules
        assert sorted(cached.nat_chains) == sorted(uncached.nat_chains)
        assert sorted(cached.nat_rules) == sorted(uncached.nat_rules)
        assert cached.active_nat_chains == uncached.active_nat_chains
        active = cached.active_nat_chains
        # and a full render through the same cache is byte for byte the fresh one
        if rv % 10 == 0:
            assert plan_full(maps.service_map, maps.endpoints_map, PARAMS, (), None, cache).text() == \
                fresh(svcs, slices).text()


def test_render_cache_starts_over_when_node_or_size_changes() -> None:
    svcs, slices = cluster(20)
    smap, emap = build_service_map(svcs), build_endpoints_map(slices, NODE)
    cache = RenderCache()
    plan_full(smap, emap, PARAMS, (), None, cache)
    other = node_params(KubeProxyConfig(cluster_cidr="10.0.0.0/8", masquerade_all=True), NODE, ["172.18.0.2"])
    assert plan_full(smap, emap, other, (), None, cache).text() == plan_full(smap, emap, other).text()
    # crossing the large-cluster threshold (comments dropped) re-renders everything
    big = {k: v * 200 for k, v in emap.items()}
    assert plan_full(smap, big, other, (), None, cache).text() == plan_full(smap, big, other).text()


def _partial(svcs: list[dict], slices: list[dict], key: ServicePortName, previous, existing):  # noqa: ANN001, ANN202
    return trim_unchanged(fresh(svcs, slices, existing, {key}), previous)


def test_trim_leaves_out_unchanged_base_chains_and_filter_table() -> None:
    svcs, slices = cluster(12)
    full = fresh(svcs, slices)
    key = ServicePortName("ns", "svc-006", "p0")
    slices[6] = copy.deepcopy(slices[6])
    slices[6]["endpoints"] = slices[6]["endpoints"][:-1]
    text = _partial(svcs, slices, key, full, full.active_nat_chains)
    # one endpoint fewer: that service's chains, one deleted endpoint chain, nothing else
    assert "*filter" not in text
    assert ":KUBE-SERVICES" not in text and "-A KUBE-SERVICES" not in text
    assert text.startswith("*nat\n") and text.endswith("COMMIT\n")
    assert sum(1 for line in text.splitlines() if line.startswith("-X KUBE-SEP-")) == 1
    assert all(line.split()[1].startswith(("KUBE-SVC-", "KUBE-SEP-"))
               for line in text.splitlines() if line.startswith("-A "))  # fmt: skip
    # the last endpoint goes: the cluster IP rule moves to a REJECT in filter, KUBE-SERVICES changes
    slices[6]["endpoints"] = []
    after = fresh(svcs, slices, full.active_nat_chains, {key})
    text = trim_unchanged(after, full)
    assert "*filter" in text and '"ns/svc-006:p0 has no endpoints"' in text
    nat = text[text.index("*nat\n"):]
    assert ":KUBE-SERVICES - [0:0]" in nat and ":KUBE-NODEPORTS" not in nat
    kube_services = [line for line in nat.splitlines() if line.startswith("-A KUBE-SERVICES ")]
    assert kube_services == after.nat_base["KUBE-SERVICES"]
    assert kube_services[-1].startswith('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports;')
    # a payload without the separated pieces (built by hand) is trimmed the same way
    plain = type(after)(after.filter_chains, after.filter_rules, after.nat_chains, after.nat_rules, after.active_nat_chains)
    assert sorted(trim_unchanged(plain, full).splitlines()) == sorted(text.splitlines())


class FakeNetfilter:
    def __init__(self) -> None:
        self.restores: list[tuple[str, bool]] = []
        self.conntrack: list[list[str]] = []
        self.fail = False
        self.jumps_ensured = 0
        self.canaries = True  # the KUBE-PROXY-CANARY chains are there
        self.canary_checks: list[str] = []

    def nfacct_ensure(self, netns: str, names: list[str]) -> bool:
        return True

    def ensure_jumps(self, netns: str, rules: list) -> None:
        self.jumps_ensured += 1
        self.canaries = True

    def chain_exists(self, netns: str, table: str, chain: str) -> bool:
        self.canary_checks.append(f"{table}/{chain}")
        return self.canaries

    def save(self, netns: str, table: str | None = None) -> str:
        return ""

    def restore(self, netns: str, payload: str, noflush: bool = True, timeout: float = 300) -> None:
        if self.fail:
            raise RuntimeError("iptables-restore failed")
        self.restores.append((payload, noflush))

    def conntrack_delete(self, netns: str, args: list[str]) -> int:
        self.conntrack.append(args)
        return 0


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNetfilter]:
    nf = FakeNetfilter()
    monkeypatch.setattr(agent_module, "netfilter", nf)
    loop = asyncio.new_event_loop()  # the agent looks at the loop it runs in (not running here)
    asyncio.set_event_loop(loop)
    yield nf
    asyncio.set_event_loop(None)
    loop.close()


def _agent() -> agent_module.ProxyAgent:
    plan = NodePlan(NODE, 0, "z", 0, "r", "kw-test-node-a", "172.18.0.2", "172.18.0.1", "10.244.0.0/24",
                    "10.244.0.1", "p")  # fmt: skip
    return agent_module.ProxyAgent(plan, "10.244.0.0/16")


def _snap(svcs: list[dict], slices: list[dict], labels: dict | None = None) -> Snapshot:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": labels or {}}}
    return Snapshot.of([*svcs, *slices, node])


def test_agent_full_then_partial_syncs(fake: FakeNetfilter) -> None:
    svcs, slices = cluster(30)
    ag = _agent()
    assert ag.sync(_snap(svcs, slices)) and ag.last_kind == "full"
    payload, noflush = fake.restores[-1]
    assert not noflush and fresh(svcs, slices).text().replace("*nat\n", "*nat\n:KUBE-PROXY-CANARY - [0:0]\n") \
        .replace("*filter\n", "*filter\n:KUBE-PROXY-CANARY - [0:0]\n") == payload  # fmt: skip
    assert not ag.sync(_snap(svcs, slices))  # nothing changed: no restore
    assert len(fake.restores) == 1

    previous = fresh(svcs, slices)
    slices[7] = copy.deepcopy(slices[7])
    slices[7]["endpoints"] = slices[7]["endpoints"][:-1]
    slices[7]["metadata"]["resourceVersion"] = "2"
    assert ag.sync(_snap(svcs, slices))
    assert ag.last_kind == "partial (2 service ports)"  # svc-007 has two ports
    payload, noflush = fake.restores[-1]
    keys = {ServicePortName("ns", "svc-007", "p0", "UDP"), ServicePortName("ns", "svc-007", "p1", "UDP")}
    expected = trim_unchanged(fresh(svcs, slices, previous.active_nat_chains, keys), previous)
    assert noflush and sorted(payload.splitlines()) == sorted(expected.splitlines())

    # a UDP service loses an endpoint: its stale conntrack entries are flushed
    fake.conntrack.clear()
    slices[14] = copy.deepcopy(slices[14])
    gone = slices[14]["endpoints"].pop()["addresses"][0]
    slices[14]["metadata"]["resourceVersion"] = "3"
    assert ag.sync(_snap(svcs, slices))
    assert ["--orig-dst", "10.96.0.15", "--dst-nat", gone, "-p", "udp"] in fake.conntrack

    # node labels changed: a full sync again
    assert ag.sync(_snap(svcs, slices, {"topology.kubernetes.io/zone": "z1"})) and ag.last_kind == "full"


def test_agent_rewrites_everything_once_its_canary_chains_are_gone(fake: FakeNetfilter) -> None:
    """As upstream's iptables monitor: every syncPeriod the canaries are looked for; someone having
    flushed the tables (they went with the rest) makes the next sync full, jumps included."""
    svcs, slices = cluster(5)
    ag = _agent()
    assert ag.sync(_snap(svcs, slices)) and ag.last_kind == "full" and fake.jumps_ensured == 1
    assert not ag.sync(_snap(svcs, slices)) and fake.canary_checks == []  # not due before syncPeriod
    ag._canary_due = 0.0  # syncPeriod passed
    assert not ag.sync(_snap(svcs, slices))  # canaries there: nothing to do
    assert fake.canary_checks == ["mangle/KUBE-PROXY-CANARY", "nat/KUBE-PROXY-CANARY", "filter/KUBE-PROXY-CANARY"]
    fake.canaries = False  # `iptables -t nat -F; iptables -t nat -X` on the node
    assert not ag.sync(_snap(svcs, slices)) and len(fake.restores) == 1  # noticed only once due
    ag._canary_due = 0.0
    assert ag.sync(_snap(svcs, slices)) and ag.last_kind == "full" and fake.jumps_ensured == 2
    assert len(fake.restores) == 2 and not fake.restores[-1][1]


def test_agent_syncs_everything_once_an_hour(fake: FakeNetfilter) -> None:
    """Upstream's FullSyncPeriod: a full sync an hour after the last, even when nothing changed."""
    svcs, slices = cluster(5)
    ag = _agent()
    assert ag.sync(_snap(svcs, slices)) and ag.last_kind == "full"
    assert not ag.sync(_snap(svcs, slices))
    ag._full_due = 0.0  # an hour passed
    assert ag.sync(_snap(svcs, slices)) and ag.last_kind == "full" and len(fake.restores) == 2
    assert not ag.sync(_snap(svcs, slices))


def test_agent_failed_restore_makes_the_next_sync_full(fake: FakeNetfilter) -> None:
    svcs, slices = cluster(5)
    ag = _agent()
    ag.sync(_snap(svcs, slices))
    slices[1] = copy.deepcopy(slices[1])
    slices[1]["endpoints"] = []
    slices[1]["metadata"]["resourceVersion"] = "2"
    fake.fail = True
    with pytest.raises(RuntimeError):
        ag.sync(_snap(svcs, slices))
    fake.fail = False
    assert ag.sync(_snap(svcs, slices)) and ag.last_kind == "full"
