"""The cloud load balancer's planner (kubewire.ingress.lb): address allocation from the pool, frontends
and health checks, and the nft payload, byte for byte."""

from __future__ import annotations

from kubewire.ingress import lb


def lbsvc(name: str, ns: str = "default", created: str = "2024-01-01T00:00:00Z", ports: list[dict] | None = None,
          status_ip: str | None = None, **spec: object) -> dict:
    s: dict = {"kind": "Service", "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
               "spec": {"type": "LoadBalancer", "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP",
                                                                      "nodePort": 30080}], **spec},
               "status": {"loadBalancer": {}}}
    if status_ip:
        s["status"]["loadBalancer"] = {"ingress": [{"ip": status_ip, "ipMode": "VIP"}]}
    return s


def test_lowest_free_address_oldest_first() -> None:
    ips, problems = lb.allocate([lbsvc("b", created="2024-02-01T00:00:00Z"), lbsvc("a")])
    assert ips == {("default", "a"): "203.0.113.1", ("default", "b"): "203.0.113.2"} and problems == []


def test_addresses_are_sticky_and_requested_ones_honoured() -> None:
    ips, _ = lb.allocate([lbsvc("old", status_ip="203.0.113.7"), lbsvc("new", created="2025-01-01T00:00:00Z"),
                          lbsvc("pinned", created="2025-02-01T00:00:00Z", loadBalancerIP="203.0.113.1")])
    assert ips == {("default", "old"): "203.0.113.7", ("default", "new"): "203.0.113.2",
                   ("default", "pinned"): "203.0.113.1"}


def test_not_ours_and_exhaustion() -> None:
    ips, problems = lb.allocate([lbsvc("a"), lbsvc("b", created="2025-01-01T00:00:00Z"),
                                 lbsvc("c", loadBalancerClass="example.com/other"),
                                 {"kind": "Service", "metadata": {"name": "cip", "namespace": "default"},
                                  "spec": {"type": "ClusterIP"}},
                                 lbsvc("bad", loadBalancerIP="10.0.0.1")], pool="192.0.2.0/30")
    assert ips == {("default", "a"): "192.0.2.1", ("default", "b"): "192.0.2.2"}
    assert problems == ["service default/bad: loadBalancerIP 10.0.0.1 is not a free address of 192.0.2.0/30"]
    _, problems = lb.allocate([lbsvc(f"s{i}", created=f"2024-01-0{i + 1}T00:00:00Z") for i in range(3)], pool="192.0.2.0/30")
    assert problems == ["service default/s2: no free address left in 192.0.2.0/30"]


def test_status() -> None:
    assert lb.status_for("203.0.113.4") == {"loadBalancer": {"ingress": [{"ip": "203.0.113.4", "ipMode": "VIP"}]}}
    assert lb.status_for(None) == {"loadBalancer": {}}


def test_frontends_and_health_checks() -> None:
    local = lbsvc("ing", "ingress-nginx", externalTrafficPolicy="Local", healthCheckNodePort=32000,
                  ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 31080},
                         {"name": "https", "port": 443, "protocol": "TCP", "nodePort": 31443}])
    cluster = lbsvc("dns", created="2025-01-01T00:00:00Z", externalTrafficPolicy="Cluster",
                    ports=[{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30054},
                           {"name": "sctp", "port": 9, "protocol": "SCTP", "nodePort": 30009}],
                    loadBalancerSourceRanges=["198.51.100.0/25", "198.51.100.128/25", "2001:db8::/32"])
    ips, _ = lb.allocate([local, cluster])
    fronts, problems = lb.frontends([local, cluster], ips)
    assert [(f.ip, f.protocol, f.port, f.node_port, f.health_port, f.health_check, f.source_ranges) for f in fronts] == [
        ("203.0.113.1", "tcp", 80, 31080, 32000, "http", ()),
        ("203.0.113.1", "tcp", 443, 31443, 32000, "http", ()),
        ("203.0.113.2", "tcp", 53, 30054, 30054, "tcp", ("198.51.100.0/24",)),
        ("203.0.113.2", "udp", 53, 30053, 10256, "http", ("198.51.100.0/24",)),
    ]
    assert problems == ["service default/dns: SCTP port 9 is not load balanced"]
    nodes = [lb.Node("w1", "172.18.1.10"), lb.Node("w2", "172.18.2.10")]
    assert lb.health_targets(fronts, nodes) == [
        ("172.18.1.10", 10256, "http"), ("172.18.1.10", 30054, "tcp"), ("172.18.1.10", 32000, "http"),
        ("172.18.2.10", 10256, "http"), ("172.18.2.10", 30054, "tcp"), ("172.18.2.10", 32000, "http")]


def test_source_ranges_annotation() -> None:
    s = lbsvc("a", annotations=None)
    s["metadata"]["annotations"] = {lb.SOURCE_RANGES_ANNOTATION: "10.0.0.0/8, bogus"}
    ranges, problems = lb.source_ranges(s)
    assert ranges == ("10.0.0.0/8",) and problems == ["service default/a: source range 'bogus' is not a CIDR; ignored"]


SEED_RULES = """\
table ip kubewire-lb
delete table ip kubewire-lb
table ip kubewire-lb {
\tchain filter-prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tip daddr . meta l4proto . th dport vmap { 203.0.113.2 . tcp . 8443 : jump fw-svc-default-admin-tcp-8443 }
\t}
\tchain fw-svc-default-admin-tcp-8443 {
\t\tip saddr { 198.51.100.10/32 } return
\t\tcounter drop comment "default/admin: source not in loadBalancerSourceRanges"
\t}
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip daddr . meta l4proto . th dport vmap { 203.0.113.1 . tcp . 80 : goto svc-ingress-nginx-ingress-nginx-controller-tcp-80, \
203.0.113.1 . tcp . 443 : goto svc-ingress-nginx-ingress-nginx-controller-tcp-443, \
203.0.113.2 . tcp . 8443 : goto svc-default-admin-tcp-8443 }
\t}
\tchain svc-ingress-nginx-ingress-nginx-controller-tcp-80 {
\t\tnumgen random mod 2 vmap { 0 : goto to-w1-tcp-31080, 1 : goto to-w3-tcp-31080 }
\t}
\tchain svc-ingress-nginx-ingress-nginx-controller-tcp-443 {
\t\tnumgen random mod 2 vmap { 0 : goto to-w1-tcp-31443, 1 : goto to-w3-tcp-31443 }
\t}
\tchain svc-default-admin-tcp-8443 {
\t\tmeta l4proto tcp counter reject with tcp reset comment "default/admin:https: no healthy node"
\t}
\tchain to-w1-tcp-31080 {
\t\tmeta l4proto tcp counter dnat to 172.18.1.10:31080 comment "w1"
\t}
\tchain to-w1-tcp-31443 {
\t\tmeta l4proto tcp counter dnat to 172.18.1.10:31443 comment "w1"
\t}
\tchain to-w3-tcp-31080 {
\t\tmeta l4proto tcp counter dnat to 172.18.1.11:31080 comment "w3"
\t}
\tchain to-w3-tcp-31443 {
\t\tmeta l4proto tcp counter dnat to 172.18.1.11:31443 comment "w3"
\t}
}
"""


def test_rules_byte_exact() -> None:
    """eTP Local: only nodes whose health check NodePort says 200 (w1, w3) get new connections; a
    frontend with no healthy node resets; source ranges are checked before any translation."""
    ing = lbsvc("ingress-nginx-controller", "ingress-nginx", externalTrafficPolicy="Local", healthCheckNodePort=32000,
                ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 31080},
                       {"name": "https", "port": 443, "protocol": "TCP", "nodePort": 31443}])
    admin = lbsvc("admin", created="2025-01-01T00:00:00Z", externalTrafficPolicy="Local", healthCheckNodePort=32001,
                  ports=[{"name": "https", "port": 8443, "protocol": "TCP", "nodePort": 30443}],
                  loadBalancerSourceRanges=["198.51.100.10/32"])
    ips, _ = lb.allocate([ing, admin])
    fronts, _ = lb.frontends([ing, admin], ips)
    nodes = [lb.Node("w1", "172.18.1.10"), lb.Node("w2", "172.18.2.10"), lb.Node("w3", "172.18.1.11")]
    healthy = {("172.18.1.10", 32000), ("172.18.1.11", 32000)}
    assert lb.render(fronts, nodes, lambda ip, port: (ip, port) in healthy) == SEED_RULES


def test_one_healthy_node_and_no_frontends() -> None:
    ips, _ = lb.allocate([lbsvc("a")])
    fronts, _ = lb.frontends([lbsvc("a")], ips)
    text = lb.render(fronts, [lb.Node("n.1", "172.18.1.10")], lambda ip, port: True)
    assert "\tchain svc-default-a-tcp-80 {\n\t\tgoto to-n-1-tcp-30080\n\t}\n" in text
    assert lb.render([], [], lambda ip, port: True) == (
        "table ip kubewire-lb\ndelete table ip kubewire-lb\ntable ip kubewire-lb {\n"
        "\tchain filter-prerouting {\n\t\ttype filter hook prerouting priority mangle; policy accept;\n\t}\n"
        "\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n}\n")


# --- container-native: ports without a nodePort (allocateLoadBalancerNodePorts: false) -----------


def eslice(name: str, svc: str, ports: list[dict], endpoints: list[dict], ns: str = "default",
           address_type: str = "IPv4") -> dict:
    return {"kind": "EndpointSlice", "addressType": address_type, "ports": ports, "endpoints": endpoints,
            "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}}}


def ep(ip: str, pod: str, ready: bool | None = True, terminating: bool = False, ns: str = "default") -> dict:
    cond: dict = {"serving": ready is not False, "terminating": terminating}
    if ready is not None:
        cond["ready"] = ready
    return {"addresses": [ip], "conditions": cond, "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}}


def direct_svc(**spec: object) -> dict:
    return lbsvc("web", allocateLoadBalancerNodePorts=False,
                 ports=[{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                        {"name": "sctp", "port": 9, "protocol": "SCTP"}], **spec)


WEB_SLICES = [
    # a named targetPort resolved to 8080 for these pods ...
    eslice("web-a", "web", [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
           [ep("10.244.2.7", "web-2"), ep("10.244.0.5", "web-0"), ep("10.244.1.9", "web-1", ready=False),
            ep("10.244.1.8", "web-old", ready=False, terminating=True)]),
    # ... and to 9090 for this one (still the port named http); ready unset means ready
    eslice("web-b", "web", [{"name": "http", "port": 9090, "protocol": "TCP"}], [ep("10.244.0.6", "web-3", ready=None)]),
    eslice("web-v6", "web", [{"name": "http", "port": 8080, "protocol": "TCP"}], [ep("fd00::1", "web-4")],
           address_type="IPv6"),
    eslice("other", "other", [{"name": "http", "port": 8080, "protocol": "TCP"}], [ep("10.244.0.99", "other-0")]),
]


def test_frontends_without_node_ports_take_the_ready_endpoints() -> None:
    svc = direct_svc()
    ips, _ = lb.allocate([svc])
    assert lb.wants_endpoints([svc]) and not lb.wants_endpoints([lbsvc("a")])
    fronts, problems = lb.frontends([svc], ips, WEB_SLICES)
    assert problems == ["service default/web: SCTP port 9 is not load balanced"]
    assert [(f.protocol, f.port, f.direct, f.node_port, f.health_port, f.endpoints) for f in fronts] == [
        ("tcp", 80, True, 0, 0, (lb.Endpoint("10.244.0.5", 8080, "default/web-0"),
                                 lb.Endpoint("10.244.0.6", 9090, "default/web-3"),
                                 lb.Endpoint("10.244.2.7", 8080, "default/web-2"))),
        ("udp", 53, True, 0, 0, (lb.Endpoint("10.244.0.5", 5353, "default/web-0"),
                                 lb.Endpoint("10.244.2.7", 5353, "default/web-2"))),
    ]
    # nothing to probe: readiness is the health
    assert lb.health_targets(fronts, [lb.Node("w1", "172.18.1.10")]) == []


DIRECT_RULES = """\
table ip kubewire-lb
delete table ip kubewire-lb
table ip kubewire-lb {
\tchain filter-prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t}
\tchain filter-forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tip daddr { 10.244.0.0/16 } ct status dnat accept
\t\tip daddr { 10.244.0.0/16 } counter drop comment "pod addresses: only through a load balancer frontend"
\t}
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip daddr . meta l4proto . th dport vmap { 203.0.113.1 . tcp . 80 : goto svc-default-web-tcp-80, \
203.0.113.2 . tcp . 8080 : goto svc-default-nodeport-tcp-8080 }
\t}
\tchain svc-default-web-tcp-80 {
\t\tnumgen random mod 2 vmap { 0 : goto ep-10-244-0-5-tcp-8080, 1 : goto ep-10-244-2-7-tcp-8080 }
\t}
\tchain svc-default-nodeport-tcp-8080 {
\t\tgoto to-w1-tcp-30080
\t}
\tchain ep-10-244-0-5-tcp-8080 {
\t\tmeta l4proto tcp counter dnat to 10.244.0.5:8080 comment "default/web-0"
\t}
\tchain ep-10-244-2-7-tcp-8080 {
\t\tmeta l4proto tcp counter dnat to 10.244.2.7:8080 comment "default/web-2"
\t}
\tchain to-w1-tcp-30080 {
\t\tmeta l4proto tcp counter dnat to 172.18.1.10:30080 comment "w1"
\t}
}
"""

NO_READY_RULES = """\
table ip kubewire-lb
delete table ip kubewire-lb
table ip kubewire-lb {
\tchain filter-prerouting {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t}
\tchain filter-forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tip daddr { 10.244.0.0/16 } ct status dnat accept
\t\tip daddr { 10.244.0.0/16 } counter drop comment "pod addresses: only through a load balancer frontend"
\t}
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip daddr . meta l4proto . th dport vmap { 203.0.113.1 . tcp . 80 : goto svc-default-web-tcp-80 }
\t}
\tchain svc-default-web-tcp-80 {
\t\tmeta l4proto tcp counter reject with tcp reset comment "default/web:http: no ready endpoint"
\t}
}
"""


def test_rules_container_native_byte_exact() -> None:
    """Two ready endpoints and one not ready (and one terminating): DNAT straight to the two, spread
    per connection, no SNAT; a Service with a nodePort beside it keeps its NodePort forwarding; the
    forward chain lets only DNATed traffic reach pod addresses."""
    web = lbsvc("web", allocateLoadBalancerNodePorts=False, ports=[{"name": "http", "port": 80, "protocol": "TCP"}])
    other = lbsvc("nodeport", created="2025-01-01T00:00:00Z", ports=[{"port": 8080, "protocol": "TCP", "nodePort": 30080}])
    slices = [eslice("web-a", "web", [{"name": "http", "port": 8080, "protocol": "TCP"}],
                     [ep("10.244.2.7", "web-2"), ep("10.244.1.9", "web-1", ready=False), ep("10.244.0.5", "web-0"),
                      ep("10.244.1.8", "web-old", ready=False, terminating=True)])]
    ips, _ = lb.allocate([web, other])
    fronts, problems = lb.frontends([web, other], ips, slices)
    assert problems == []
    nodes = [lb.Node("w1", "172.18.1.10"), lb.Node("w2", "172.18.2.10")]
    healthy = {("172.18.1.10", 30080)}
    assert lb.render(fronts, nodes, lambda ip, port: (ip, port) in healthy, ("10.244.0.0/16",)) == DIRECT_RULES


def test_rules_container_native_no_ready_endpoint_resets() -> None:
    web = lbsvc("web", allocateLoadBalancerNodePorts=False, ports=[{"name": "http", "port": 80, "protocol": "TCP"}])
    for slices in ([], [eslice("web-a", "web", [{"name": "http", "port": 8080, "protocol": "TCP"}],
                               [ep("10.244.1.9", "web-1", ready=False),
                                ep("10.244.1.8", "web-old", ready=False, terminating=True)])]):
        ips, _ = lb.allocate([web])
        fronts, _ = lb.frontends([web], ips, slices)
        # every node healthy: irrelevant, only endpoint readiness counts
        text = lb.render(fronts, [lb.Node("w1", "172.18.1.10")], lambda ip, port: True, ("10.244.0.0/16",))
        assert text == NO_READY_RULES
