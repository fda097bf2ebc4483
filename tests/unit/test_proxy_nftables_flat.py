"""The optional flat nftables layout: what it writes, and that later syncs write only differences.

(Traffic through it is tested in tests/kernel/test_proxy_nftables.py.)"""

from __future__ import annotations

import random

from kubewire.proxy.model import KubeProxyConfig, build_endpoints_map, build_service_map
from kubewire.proxy.nftables import nft_params
from kubewire.proxy.nftables.flat import FlatState, flat_elements, plan_flat
from kubewire.proxy.nftables.render import plan_service_port

CONFIG = KubeProxyConfig(cluster_cidr="10.244.0.0/16")
PARAMS = nft_params(CONFIG, "node", ["172.18.0.2"], {}, "IPv4", (), ["10.96.0.0/12"])


def objects(endpoints: dict[str, list[str]], node: str | None = "node", **spec) -> tuple[dict, dict]:
    services, slices = [], []
    for name, ips in endpoints.items():
        i = len(services) + 1
        services.append({"kind": "Service", "metadata": {"namespace": "ns", "name": name},
                         "spec": {"clusterIP": f"10.96.0.{i}", "ports": [{"name": "http", "port": 80}], **spec}})
        slices.append({"kind": "EndpointSlice", "addressType": "IPv4",
                       "metadata": {"namespace": "ns", "name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
                       "ports": [{"name": "http", "port": 8080}],
                       "endpoints": [{"addresses": [ip], **({"nodeName": node} if node else {})} for ip in ips]})  # fmt: skip
    return build_service_map(services), build_endpoints_map(slices, "node")


def lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_full_then_partial() -> None:
    svcs, eps = objects({"a": ["10.244.1.2", "10.244.1.3"], "b": []})
    tx, state = plan_flat(svcs, eps, PARAMS)
    text = tx.text()
    assert text.startswith('add table ip kube-proxy-flat { comment "rules for kube-proxy, flat layout" ; }\n')
    assert ("add map ip kube-proxy-flat k2 { typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : "
            "ip daddr . th dport ; }\n") in text  # fmt: skip
    assert ("add rule ip kube-proxy-flat services-dnat dnat ip to "
            "ip daddr . meta l4proto . th dport . numgen random mod 2 map @k2\n") in text  # fmt: skip
    assert ("add element ip kube-proxy-flat k2 { 10.96.0.1 . tcp . 80 . 0 : 10.244.1.2 . 8080, "
            "10.96.0.1 . tcp . 80 . 1 : 10.244.1.3 . 8080 }\n") in text  # fmt: skip
    assert ('add element ip kube-proxy-flat no-endpoint-services { 10.96.0.2 . tcp . 80 comment "ns/b:http" '
            ": goto reject-chain }\n") in text  # fmt: skip
    assert "add rule ip kube-proxy-flat services ip daddr @cluster-ips ip saddr != 10.244.0.0/16 jump mark-for-masquerade\n" in text
    assert "add element ip kube-proxy-flat hairpin { 10.244.1.2 . 10.244.1.2, 10.244.1.3 . 10.244.1.3 }\n" in text
    assert "add element ip kube-proxy-flat cluster-ips { 10.96.0.1, 10.96.0.2 }\n" in text
    assert "add element ip kube-proxy-flat nodeport-ips { 172.18.0.2 }\n" in text

    # One endpoint replaced: a few element operations, nothing else.
    svcs2, eps2 = objects({"a": ["10.244.1.2", "10.244.1.9"], "b": []})
    tx, state = plan_flat(svcs2, eps2, PARAMS, state, {("ns", "a")})
    assert tx.text() == (
        "delete element ip kube-proxy-flat hairpin { 10.244.1.3 . 10.244.1.3 }\n"
        "delete element ip kube-proxy-flat k2 { 10.96.0.1 . tcp . 80 . 1 }\n"
        "add element ip kube-proxy-flat hairpin { 10.244.1.9 . 10.244.1.9 }\n"
        "add element ip kube-proxy-flat k2 { 10.96.0.1 . tcp . 80 . 1 : 10.244.1.9 . 8080 }\n"
    )

    # b gets its first endpoint: moves from no-endpoint-services to a new K=1 map (map and rule added).
    svcs3, eps3 = objects({"a": ["10.244.1.2", "10.244.1.9"], "b": ["10.244.1.2"]})
    tx, state = plan_flat(svcs3, eps3, PARAMS, state, {("ns", "b")})
    text = tx.text()
    assert "add map ip kube-proxy-flat k1 {" in text and "numgen random mod 1 map @k1\n" in text
    assert "delete element ip kube-proxy-flat no-endpoint-services { 10.96.0.2 . tcp . 80 }\n" in text
    assert "hairpin" not in text  # 10.244.1.2 . 10.244.1.2 is already there (for a)

    # a deleted: its elements go, the hairpin entry b still needs stays.
    svcs4 = {k: v for k, v in svcs3.items() if k.name == "b"}
    eps4 = {k: v for k, v in eps3.items() if k.name == "b"}
    tx, state = plan_flat(svcs4, eps4, PARAMS, state, {("ns", "a")})
    text = tx.text()
    assert "delete element ip kube-proxy-flat hairpin { 10.244.1.9 . 10.244.1.9 }\n" in text
    assert "10.244.1.2 . 10.244.1.2" not in text
    assert "delete element ip kube-proxy-flat cluster-ips { 10.96.0.1 }\n" in text
    assert not lines(text, "add")


def test_hairpin_only_for_endpoints_that_can_be_local() -> None:
    # No nodeName: in the node's pod CIDR, or any when the CIDRs are not given.
    svcs, eps = objects({"a": ["10.244.1.2", "10.244.7.3"]}, node=None)
    hairpin = flat_elements(svcs, eps, PARAMS, ["10.244.1.0/24"]).get("hairpin", {})
    assert list(hairpin) == ["10.244.1.2 . 10.244.1.2"]
    assert len(flat_elements(svcs, eps, PARAMS, None)["hairpin"]) == 2
    # On another node: never (its packets go through that node's kube-proxy).
    svcs, eps = objects({"a": ["10.244.1.2"]}, node="other")
    assert "hairpin" not in flat_elements(svcs, eps, PARAMS, ["10.244.1.0/24"])


def test_external_traffic() -> None:
    """NodePort, externalIPs and a LoadBalancer with source ranges, under both traffic policies."""
    spec = {"type": "LoadBalancer", "externalIPs": ["192.0.2.9"], "loadBalancerSourceRanges": ["203.0.113.0/24"],
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}  # fmt: skip
    svcs, eps = objects({"a": ["10.244.1.2"]}, **spec)
    svc = next(iter(svcs.values()))
    svcs = {k: svc.__class__(**{**svc.__dict__, "load_balancer_vips": ("198.51.100.7",)}) for k in svcs}
    el = flat_elements(svcs, eps, PARAMS)
    assert set(el["masq-dests"]) == {"192.0.2.9 . tcp . 80", "198.51.100.7 . tcp . 80"}
    assert set(el["masq-nodeports"]) == {"tcp . 30080"}
    assert set(el["k1"]) == {"10.96.0.1 . tcp . 80 . 0", "192.0.2.9 . tcp . 80 . 0", "198.51.100.7 . tcp . 80 . 0"}
    assert el["np-k1"] == {"tcp . 30080 . 0": " : 10.244.1.2 . 8080"}
    assert set(el["firewall-ips"]) == {"198.51.100.7 . tcp . 80"}
    assert set(el["firewall-allow"]) == {"198.51.100.7 . tcp . 80 . 203.0.113.0/24"}

    # externalTrafficPolicy Local with the only endpoint elsewhere: external traffic dropped,
    # pods and the node itself short-circuited to the cluster-wide endpoints.
    svcs, eps = objects({"a": ["10.244.2.2"]}, node="other", **spec, externalTrafficPolicy="Local")
    el = flat_elements(svcs, eps, PARAMS)
    assert el["no-endpoint-nodeports"] == {"tcp . 30080": ' comment "ns/a:http" : drop'}
    assert el["no-endpoint-services"] == {"192.0.2.9 . tcp . 80": ' comment "ns/a:http" : drop'}
    assert set(el["local-dests"]) == {"192.0.2.9 . tcp . 80"} and set(el["local-nodeports"]) == {"tcp . 30080"}
    assert el["sc-k1"] == {"192.0.2.9 . tcp . 80 . 0": " : 10.244.2.2 . 8080"}
    assert el["npsc-k1"] == {"tcp . 30080 . 0": " : 10.244.2.2 . 8080"}
    assert "np-k1" not in el and set(el["k1"]) == {"10.96.0.1 . tcp . 80 . 0"}
    assert "masq-dests" not in el and "masq-nodeports" not in el

    # internalTrafficPolicy Local without a local endpoint: the ClusterIP drops.
    svcs, eps = objects({"a": ["10.244.2.2"]}, node="other", internalTrafficPolicy="Local")
    assert flat_elements(svcs, eps, PARAMS)["no-endpoint-services"] == {
        "10.96.0.1 . tcp . 80": ' comment "ns/a:http" : drop'
    }


def test_session_affinity_uses_upstreams_chains() -> None:
    spec = {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}}}
    svcs, eps = objects({"a": ["10.244.1.2", "10.244.1.3"], "b": ["10.244.1.4"]}, **{})
    aff_svcs, aff_eps = objects({"a": ["10.244.1.2", "10.244.1.3"]}, **spec)
    svcs.update(aff_svcs)
    eps.update(aff_eps)
    key = next(k for k in svcs if k.name == "a")
    upstream = plan_service_port(svcs[key], eps[key], PARAMS)
    tx, state = plan_flat(svcs, eps, PARAMS)
    text = tx.text()
    # Its chains and affinity sets as upstream writes them, reached through service-ips.
    for op in upstream.ops:
        if op[0] == "rule":
            assert f"add rule ip kube-proxy-flat {op[1]} {op[2]}" in text
        elif op[0] == "set":
            assert f"add set ip kube-proxy-flat {op[1]} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 300s ; }}" in text
    assert "update @affinity-" in text and " vmap { 0 : goto endpoint-" in text
    (vip,) = lines(text, "add element ip kube-proxy-flat service-ips")
    assert vip.startswith("add element ip kube-proxy-flat service-ips { 10.96.0.1 . tcp . 80 : goto service-")
    assert "add rule ip kube-proxy-flat services ip daddr . meta l4proto . th dport vmap @service-ips\n" in text
    assert "10.96.0.1 . tcp . 80 . 0" not in text  # not in the flat maps
    assert "10.96.0.2 . tcp . 80 . 0" in text  # b is
    assert len(state.chains) == 3 and len(state.sets) == 2

    # One endpoint goes: its chain and affinity set are deleted, the other's set is kept.
    _, eps2 = objects({"a": ["10.244.1.2"]}, **spec)
    eps = {**eps, **eps2}
    tx, state = plan_flat(svcs, eps, PARAMS, state, {("ns", "a")})
    text = tx.text()
    assert len(lines(text, "delete chain")) == 1 and len(lines(text, "delete set")) == 1
    assert not lines(text, "add set") and not lines(text, "add chain")
    assert text.index("flush chain") < text.index("delete chain") < text.index("delete set") < text.index("add rule")
    assert len(state.chains) == 2 and len(state.sets) == 1

    # No more affinity: its chains and sets go, the Service moves to the flat maps.
    svcs3, eps3 = objects({"a": ["10.244.1.2"]})
    tx, state = plan_flat({**svcs, **svcs3}, {**eps, **eps3}, PARAMS, state, {("ns", "a")})
    text = tx.text()
    assert "delete element ip kube-proxy-flat service-ips { 10.96.0.1 . tcp . 80 }\n" in text
    assert len(lines(text, "delete chain")) == 2 and len(lines(text, "delete set")) == 1
    assert "add element ip kube-proxy-flat k1 { 10.96.0.1 . tcp . 80 . 0 : 10.244.1.2 . 8080 }\n" in text
    assert not state.chains and not state.sets


def test_full_resync_writes_only_differences() -> None:
    svcs, eps = objects({"a": ["10.244.1.2", "10.244.1.3"], "b": []})
    _, state = plan_flat(svcs, eps, PARAMS)
    tx, state = plan_flat(svcs, eps, PARAMS, state, None)
    assert len(tx) == 0 and state.written == 0  # the same objects: not even recomputed
    # A node label topology does not look at: nothing recomputed.
    labelled = nft_params(CONFIG, "node", ["172.18.0.2"], {"x": "y"}, "IPv4", (), ["10.96.0.0/12"])
    tx, state = plan_flat(svcs, eps, labelled, state, None)
    assert len(tx) == 0 and state.written == 0
    # The node's zone: every Service recomputed, nothing to write (no topology hints here).
    zoned = nft_params(CONFIG, "node", ["172.18.0.2"], {"topology.kubernetes.io/zone": "z"}, "IPv4", (),
                       ["10.96.0.0/12"])  # fmt: skip
    tx, state = plan_flat(svcs, eps, zoned, state, None)
    assert len(tx) == 0 and state.written == 2
    # Another node IP: the static rules are rewritten in place (no new table), elements kept.
    other = nft_params(CONFIG, "node", ["172.18.0.3"], {}, "IPv4", (), ["10.96.0.0/12"])
    tx, state = plan_flat(svcs, eps, other, state, None)
    text = tx.text()
    assert "add table" not in text and "flush chain ip kube-proxy-flat services\n" in text
    assert "services-dnat" not in text.replace("jump services-dnat", "")  # its per-K rules stay
    assert "add element ip kube-proxy-flat nodeport-ips { 172.18.0.3 }\n" in text
    assert not [line for line in lines(text, "add element") if "nodeport-ips" not in line]


def test_incremental_syncs_match_a_fresh_build() -> None:
    """Random changes applied one Service at a time leave the same elements as planning anew."""
    rng = random.Random(7)
    names = [f"s{i}" for i in range(12)]
    state: FlatState | None = None
    svcs: dict = {}
    eps: dict = {}
    for _ in range(60):
        changed = set(rng.sample(names, 3))
        want = {n: [f"10.244.{rng.choice((1, 2))}.{rng.randrange(2, 9)}" for _ in range(rng.randrange(0, 4))]
                for n in changed if rng.random() < 0.85}  # fmt: skip
        spec = {"sessionAffinity": "ClientIP"} if rng.random() < 0.2 else {}
        new_svcs, new_eps = objects(want, node=None, **spec)
        # objects() numbers ClusterIPs by position: give each Service its own address instead
        new_svcs = {k: v.__class__(**{**v.__dict__, "cluster_ip": f"10.96.1.{names.index(k.name)}"})
                    for k, v in new_svcs.items()}  # fmt: skip
        svcs = {k: v for k, v in svcs.items() if k.name not in changed} | new_svcs
        eps = {k: v for k, v in eps.items() if k.name not in changed} | new_eps
        _, state = plan_flat(svcs, eps, PARAMS, state, {("ns", n) for n in changed}, ["10.244.1.0/24"])
        _, fresh = plan_flat(svcs, eps, PARAMS, None, None, ["10.244.1.0/24"])
        assert {c: e for c, e in state.elements.items() if e} == {c: e for c, e in fresh.elements.items() if e}
        assert state.chains == fresh.chains and state.sets == fresh.sets
