"""The health-check NodePort's answer, byte for byte as upstream's service health server writes it
(pkg/proxy/healthcheck/service_health.go: a dedented template, tab-indented)."""

from __future__ import annotations

import json

from kubewire.kubeproxy.agent import _health_body


def test_health_body_is_upstreams_text() -> None:
    body = _health_body("shop", "web", 2)
    assert body == ('{\n\t"service": {\n\t\t"namespace": "shop",\n\t\t"name": "web"\n\t},\n'
                    '\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}')
    assert json.loads(body) == {"service": {"namespace": "shop", "name": "web"}, "localEndpoints": 2,
                                "serviceProxyHealthy": True}
