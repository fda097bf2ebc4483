"""The health-check NodePort's answer, byte for byte as upstream's service health server writes it
(pkg/proxy/healthcheck/service_health.go: a dedented template, tab-indented)."""

from __future__ import annotations

import json

from kubewire.kubeproxy.agent import _health_body, health_answers
from kubewire.proxy.model import build_endpoints_map, build_service_map


def test_health_body_is_upstreams_text() -> None:
    body = _health_body("shop", "web", 2)
    assert body == ('{\n\t"service": {\n\t\t"namespace": "shop",\n\t\t"name": "web"\n\t},\n'
                    '\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}')
    assert json.loads(body) == {"service": {"namespace": "shop", "name": "web"}, "localEndpoints": 2,
                                "serviceProxyHealthy": True}


def test_local_endpoints_are_distinct_ready_ips_on_the_node_over_all_ports() -> None:
    """As upstream's LocalReadyEndpoints: one pod behind both ports counts once; pods that only one
    port resolves to (a named targetPort) count too; not-ready and other nodes' endpoints do not."""
    svc = {"kind": "Service", "metadata": {"namespace": "shop", "name": "web"},
           "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "externalTrafficPolicy": "Local",
                    "healthCheckNodePort": 32000,
                    "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"name": "https", "port": 443, "nodePort": 30443}]}}  # fmt: skip

    def ep(ip: str, node: str, ready: bool = True) -> dict:
        return {"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}}

    def slice_(name: str, ports: list[dict], *endpoints: dict) -> dict:
        return {"kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"namespace": "shop", "name": name, "labels": {"kubernetes.io/service-name": "web"}},
                "endpoints": list(endpoints), "ports": ports}  # fmt: skip

    both = [{"name": "http", "port": 8080}, {"name": "https", "port": 8443}]
    slices = [slice_("web-a", both, ep("10.244.1.5", "n1"), ep("10.244.1.6", "n1", ready=False), ep("10.244.2.5", "n2")),
              slice_("web-b", [{"name": "https", "port": 9443}], ep("10.244.1.7", "n1"))]  # fmt: skip
    services = build_service_map([svc])
    with_port = [k for k, s in services.items() if s.health_check_node_port]
    assert len(with_port) == 2
    assert health_answers(services, build_endpoints_map(slices, "n1"), with_port) == {32000: ("shop", "web", 2)}
    assert health_answers(services, build_endpoints_map(slices, "n2"), with_port) == {32000: ("shop", "web", 1)}
    assert health_answers(services, build_endpoints_map(slices, "n3"), with_port) == {32000: ("shop", "web", 0)}
