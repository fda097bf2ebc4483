"""Stale UDP conntrack entries, as kube-proxy (1.26-1.30) decides which to flush: the filters, with
upstream's conntrack flags, for each case its detectStaleConntrackEntries distinguishes."""

from __future__ import annotations

from kubewire.kubeproxy.conntrack import stale_filters
from kubewire.proxy.model import build_endpoints_map, build_service_map


def svc(protocol: str = "UDP", status: dict | None = None, **spec: object) -> dict:
    return {"kind": "Service", "metadata": {"namespace": "ns", "name": "dns"}, "status": status or {},
            "spec": {"clusterIP": "10.96.0.53", "ports": [{"name": "p", "port": 53, "protocol": protocol}], **spec}}


def slice_(*endpoints: tuple[str, dict], protocol: str = "UDP") -> dict:
    return {"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": "ns", "name": "dns-1", "labels": {"kubernetes.io/service-name": "dns"}},
            "endpoints": [{"addresses": [ip], "nodeName": "n1", "conditions": c} for ip, c in endpoints],
            "ports": [{"name": "p", "port": 5353, "protocol": protocol}]}


READY = {"ready": True}
TERMINATING = {"ready": False, "serving": True, "terminating": True}
GONE_DOWN = {"ready": False, "serving": False, "terminating": True}


def filters(svc_before: dict | None, slice_before: dict | None, svc_after: dict | None, slice_after: dict | None) -> list[list[str]]:
    def maps(s: dict | None, sl: dict | None) -> tuple[dict, dict]:
        return build_service_map([s] if s else []), build_endpoints_map([sl] if sl else [], "n1")
    return stale_filters(*maps(svc_before, slice_before), *maps(svc_after, slice_after))


def test_an_endpoint_that_left_has_its_nated_flows_flushed_for_every_service_ip_and_the_node_port() -> None:
    s = svc(type="LoadBalancer", externalIPs=["198.51.100.9"], ports=[{"name": "p", "port": 53, "protocol": "UDP", "nodePort": 30053}],
            status={"loadBalancer": {"ingress": [{"ip": "203.0.113.53"}]}})  # fmt: skip
    before = slice_(("10.244.1.5", READY), ("10.244.2.5", READY))
    after = slice_(("10.244.2.5", READY))
    assert filters(s, before, s, after) == [
        ["-p", "udp", "--dport", "30053", "--dst-nat", "10.244.1.5"],
        ["--orig-dst", "10.96.0.53", "--dst-nat", "10.244.1.5", "-p", "udp"],
        ["--orig-dst", "198.51.100.9", "--dst-nat", "10.244.1.5", "-p", "udp"],
        ["--orig-dst", "203.0.113.53", "--dst-nat", "10.244.1.5", "-p", "udp"],
    ]


def test_an_endpoint_that_changed_readiness_is_flushed_one_that_did_not_serve_is_not() -> None:
    s = svc()
    assert filters(s, slice_(("10.244.1.5", READY), ("10.244.2.5", READY)),
                   s, slice_(("10.244.1.5", TERMINATING), ("10.244.2.5", READY))) == [
        ["--orig-dst", "10.96.0.53", "--dst-nat", "10.244.1.5", "-p", "udp"]]  # fmt: skip
    assert filters(s, slice_(("10.244.1.5", GONE_DOWN), ("10.244.2.5", READY)), s, slice_(("10.244.2.5", READY))) == []
    assert filters(s, slice_(("10.244.1.5", READY)), s, slice_(("10.244.1.5", READY))) == []


def test_a_service_getting_its_first_serving_endpoint_has_every_flow_to_it_flushed() -> None:
    """Entries made while it had none hold the REJECT (or the DROP) until they time out."""
    s = svc(type="NodePort", externalIPs=["198.51.100.9"], ports=[{"name": "p", "port": 53, "protocol": "UDP", "nodePort": 30053}])
    expected = [["--orig-dst", "10.96.0.53", "-p", "udp"], ["--orig-dst", "198.51.100.9", "-p", "udp"],
                ["-p", "udp", "--dport", "30053"]]  # fmt: skip
    assert filters(s, slice_(), s, slice_(("10.244.1.5", READY))) == expected
    assert filters(s, None, s, slice_(("10.244.1.5", TERMINATING))) == expected  # serving counts
    assert filters(s, slice_(("10.244.1.5", GONE_DOWN)), s, slice_(("10.244.1.5", READY))) == expected


def test_a_deleted_service_has_every_flow_to_its_cluster_ip_flushed() -> None:
    s = svc()
    assert filters(s, slice_(("10.244.1.5", READY)), None, None) == [["--orig-dst", "10.96.0.53", "-p", "udp"]]
    assert filters(s, None, None, None) == [["--orig-dst", "10.96.0.53", "-p", "udp"]]


def test_tcp_services_are_left_alone() -> None:
    s = svc("TCP")
    assert filters(s, slice_(("10.244.1.5", READY), protocol="TCP"), s, slice_(protocol="TCP")) == []
    assert filters(s, slice_(protocol="TCP"), s, slice_(("10.244.1.5", READY), protocol="TCP")) == []
    assert filters(s, None, None, None) == []
