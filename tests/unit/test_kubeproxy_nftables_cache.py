"""The nftables agent's map cache: only changed objects are parsed again, and it says which
Services changed (the same maps as parsing everything)."""

from __future__ import annotations

import copy

from kubewire.kubeproxy.nftables import MapCache
from kubewire.proxy.model import build_endpoints_map, build_service_map


def objects() -> tuple[list[dict], list[dict]]:
    services, slices = [], []
    for i, name in enumerate(("a", "b", "c"), start=1):
        services.append({"kind": "Service", "metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"},
                         "spec": {"clusterIP": f"10.96.0.{i}", "ports": [{"name": "http", "port": 80}]}})
        slices.append({"kind": "EndpointSlice", "addressType": "IPv4",
                       "metadata": {"namespace": "ns", "name": f"{name}-1", "resourceVersion": "1",
                                    "labels": {"kubernetes.io/service-name": name}},
                       "ports": [{"name": "http", "port": 8080}],
                       "endpoints": [{"addresses": [f"10.244.1.{i}"], "nodeName": "node"}]})  # fmt: skip
    return services, slices


def same_as_parsing(cache: MapCache, services: list[dict], slices: list[dict]) -> bool:
    return cache.service_map == build_service_map(services) and cache.endpoints_map == build_endpoints_map(
        slices, "node"
    )


def test_map_cache() -> None:
    services, slices = objects()
    cache = MapCache("node")
    changed, _, _ = cache.update(services, slices)
    assert changed == {("ns", "a"), ("ns", "b"), ("ns", "c")} and same_as_parsing(cache, services, slices)
    assert cache.update(services, slices)[0] == set()

    slices = copy.deepcopy(slices)
    slices[1]["endpoints"][0]["addresses"] = ["10.244.1.9"]
    slices[1]["metadata"]["resourceVersion"] = "2"
    changed, old_svcs, old_eps = cache.update(services, slices)
    assert changed == {("ns", "b")} and same_as_parsing(cache, services, slices)
    assert [str(e) for e in next(iter(old_eps.values()))] == ["10.244.1.2:8080"] and not old_svcs

    # A Service deleted; a slice moved to another Service; a Service changed without its slices.
    services = [s for s in services if s["metadata"]["name"] != "a"]
    slices = [s for s in slices if s["metadata"]["name"] != "a-1"]
    slices[1] = copy.deepcopy(slices[1])
    slices[1]["metadata"]["labels"]["kubernetes.io/service-name"] = "b"
    slices[1]["metadata"]["resourceVersion"] = "3"
    changed, _, _ = cache.update(services, slices)
    assert changed == {("ns", "a"), ("ns", "b"), ("ns", "c")} and same_as_parsing(cache, services, slices)
    services = copy.deepcopy(services)
    services[0]["spec"]["ports"][0]["port"] = 81
    services[0]["metadata"]["resourceVersion"] = "4"
    assert cache.update(services, slices)[0] == {("ns", "b")} and same_as_parsing(cache, services, slices)
