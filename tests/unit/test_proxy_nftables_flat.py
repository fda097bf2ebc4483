"""The optional flat nftables layout: what it writes, and that later syncs write only differences.

(Traffic through it is tested in tests/kernel/test_proxy_nftables.py.)"""

from __future__ import annotations

import pytest

from kubewire.proxy.model import KubeProxyConfig, build_endpoints_map, build_service_map
from kubewire.proxy.nftables import nft_params
from kubewire.proxy.nftables.flat import FlatUnsupported, plan_flat

PARAMS = nft_params(KubeProxyConfig(cluster_cidr="10.244.0.0/16"), "node", ["172.18.0.2"], {}, "IPv4", (),
                    ["10.96.0.0/12"])  # fmt: skip


def objects(endpoints: dict[str, list[str]], **spec) -> tuple[dict, dict]:
    services, slices = [], []
    for name, ips in endpoints.items():
        i = len(services) + 1
        services.append({"kind": "Service", "metadata": {"namespace": "ns", "name": name},
                         "spec": {"clusterIP": f"10.96.0.{i}", "ports": [{"name": "http", "port": 80}], **spec}})
        slices.append({"kind": "EndpointSlice", "addressType": "IPv4",
                       "metadata": {"namespace": "ns", "name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
                       "ports": [{"name": "http", "port": 8080}],
                       "endpoints": [{"addresses": [ip], "nodeName": "node"} for ip in ips]})  # fmt: skip
    return build_service_map(services), build_endpoints_map(slices, "node")


def test_full_then_partial() -> None:
    svcs, eps = objects({"a": ["10.244.1.2", "10.244.1.3"], "b": []})
    tx, state = plan_flat(svcs, eps, PARAMS)
    text = tx.text()
    assert text.startswith('add table ip kube-proxy-flat { comment "rules for kube-proxy, flat layout" ; }\n')
    assert "add set ip kube-proxy-flat k2 { type ipv4_addr . inet_proto . inet_service ; }\n" in text
    assert ("add rule ip kube-proxy-flat services ip daddr . meta l4proto . th dport @k2 dnat ip to "
            "ip daddr . meta l4proto . th dport . numgen random mod 2 map @endpoints\n") in text  # fmt: skip
    assert "add element ip kube-proxy-flat k2 { 10.96.0.1 . tcp . 80 }\n" in text
    assert ("add element ip kube-proxy-flat endpoints { 10.96.0.1 . tcp . 80 . 0 : 10.244.1.2 . 8080, "
            "10.96.0.1 . tcp . 80 . 1 : 10.244.1.3 . 8080 }\n") in text  # fmt: skip
    assert ('add element ip kube-proxy-flat no-endpoint-services { 10.96.0.2 . tcp . 80 comment "ns/b:http" '
            ": goto reject-chain }\n") in text  # fmt: skip
    assert "ip daddr . meta l4proto . th dport @cluster-dests ip saddr != 10.244.0.0/16 jump mark-for-masquerade" in text
    assert "add element ip kube-proxy-flat hairpin { 10.244.1.2 . 10.244.1.2, 10.244.1.3 . 10.244.1.3 }\n" in text

    # One endpoint replaced: a few element operations, nothing else.
    svcs2, eps2 = objects({"a": ["10.244.1.2", "10.244.1.9"], "b": []})
    tx, state = plan_flat(svcs2, eps2, PARAMS, state, {("ns", "a")})
    assert tx.text() == (
        "delete element ip kube-proxy-flat endpoints { 10.96.0.1 . tcp . 80 . 1 }\n"
        "delete element ip kube-proxy-flat hairpin { 10.244.1.3 . 10.244.1.3 }\n"
        "add element ip kube-proxy-flat endpoints { 10.96.0.1 . tcp . 80 . 1 : 10.244.1.9 . 8080 }\n"
        "add element ip kube-proxy-flat hairpin { 10.244.1.9 . 10.244.1.9 }\n"
    )

    # b gets its first endpoint: moves from no-endpoint-services to a new K=1 set (set and rule added).
    svcs3, eps3 = objects({"a": ["10.244.1.2", "10.244.1.9"], "b": ["10.244.1.2"]})
    tx, state = plan_flat(svcs3, eps3, PARAMS, state, {("ns", "b")})
    text = tx.text()
    assert "add set ip kube-proxy-flat k1 {" in text and "numgen random mod 1 map @endpoints" in text
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
    assert not [line for line in text.splitlines() if line.startswith("add")]


def test_session_affinity_is_refused() -> None:
    svcs, eps = objects({"a": ["10.244.1.2"]}, sessionAffinity="ClientIP")
    with pytest.raises(FlatUnsupported):
        plan_flat(svcs, eps, PARAMS)


def test_full_resync_of_unchanged_services_is_empty() -> None:
    svcs, eps = objects({"a": ["10.244.1.2", "10.244.1.3"], "b": []})
    _, state = plan_flat(svcs, eps, PARAMS)
    tx, state = plan_flat(svcs, eps, PARAMS, state, None)
    assert len(tx) == 0
    # Other node parameters rebuild the table.
    other = nft_params(KubeProxyConfig(cluster_cidr="10.244.0.0/16"), "node", ["172.18.0.3"], {}, "IPv4", (),
                       ["10.96.0.0/12"])  # fmt: skip
    tx, _ = plan_flat(svcs, eps, other, state, None)
    assert tx.text().startswith("add table ip kube-proxy-flat") and "delete table ip kube-proxy-flat\n" in tx.text()
