"""`kubewire describe service|endpointslice`: kubectl's text (describe.go: describeService,
describeEndpointSliceV1, formatEndpointSlices), aligned as its tabwriter aligns it.

The expected texts were compared with kubectl 1.32's against the same objects, except the
AppProtocol and Traffic Distribution lines, which newer kubectl prints and 1.32 does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubewire.cli.describe import describe_object
from kubewire.controllers.types import Op
from kubewire.store.db import Store

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"{tmp_path}/state.db")


def describe(store: Store, objs: list[dict], kind: str, name: str) -> str:
    """Stores the objects as the API server would (defaults applied), then describes one."""
    store.write([Op("create", o) for o in objs])
    obj = store.get(kind, "shop", name)
    assert obj is not None
    return describe_object(obj, store)


def service(name: str, cluster_ip: str = "10.96.0.10", **spec: object) -> dict:
    families = {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]} if cluster_ip else {}
    ips = {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip]} if cluster_ip else {}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"},
            "spec": {**ips, **families, **spec}}


def endpoint(ip: str, ready: bool | None = True, **fields: object) -> dict:
    conditions = {} if ready is None else {"ready": ready, "serving": ready, "terminating": False}
    return {"addresses": [ip], "conditions": conditions, **fields}


def endpoint_slice(name: str, service_name: str, ports: list[dict], endpoints: list[dict]) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": service_name}},
            "ports": ports, "endpoints": endpoints}


def pod_ref(name: str) -> dict:
    return {"kind": "Pod", "name": name, "namespace": "shop"}


def test_describe_cluster_ip_service_with_two_ports(store: Store) -> None:
    web = service("web", selector={"app": "web", "tier": "front"}, ports=[
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "metrics", "port": 9090, "targetPort": "metrics"},
    ])
    web["metadata"]["labels"] = {"tier": "front", "app": "web"}
    web["metadata"]["annotations"] = {LAST_APPLIED: '{"kind":"Service"}\n', "owner": "team-a"}
    slice_ = endpoint_slice("web-abcde", "web", [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}], [
        endpoint("10.244.1.2"), endpoint("10.244.1.3"), endpoint("10.244.1.4", ready=False),
        endpoint("10.244.1.5"), endpoint("10.244.2.6"),
    ])
    other = endpoint_slice("web2-fghij", "web2", [{"name": "http", "port": 8080}], [endpoint("10.244.9.9")])
    assert describe(store, [web, slice_, other], "Service", "web") == "\n".join([
        "Name:                     web",
        "Namespace:                shop",
        "Labels:                   app=web",
        "                          tier=front",
        "Annotations:              owner: team-a",
        "Selector:                 app=web,tier=front",
        "Type:                     ClusterIP",
        "IP Family Policy:         SingleStack",
        "IP Families:              IPv4",
        "IP:                       10.96.0.10",
        "IPs:                      10.96.0.10",
        "Port:                     http  80/TCP",
        "TargetPort:               8080/TCP",
        "Endpoints:                10.244.1.2:8080,10.244.1.3:8080,10.244.1.5:8080 + 1 more...",
        "Port:                     metrics  9090/TCP",
        "TargetPort:               metrics/TCP",
        "Endpoints:                10.244.1.2:9100,10.244.1.3:9100,10.244.1.5:9100 + 1 more...",
        "Session Affinity:         None",
        "Internal Traffic Policy:  Cluster",
        "Events:                   <none>",
    ])


def test_describe_load_balancer_service(store: Store) -> None:
    edge = service("edge", "10.96.0.20", type="LoadBalancer", selector={"app": "edge"},
                   externalIPs=["198.51.100.7", "198.51.100.8"], loadBalancerIP="203.0.113.20",
                   loadBalancerSourceRanges=["203.0.113.0/24", "192.0.2.0/24"], externalTrafficPolicy="Local",
                   healthCheckNodePort=32000, sessionAffinity="ClientIP", ports=[
                       {"port": 443, "targetPort": 8443, "nodePort": 31443},
                       {"name": "dns", "port": 53, "targetPort": 5353, "nodePort": 31053, "protocol": "UDP"},
                   ])
    edge["metadata"]["annotations"] = {"description": "line one\nline two\n", "long": "x" * 150, "short": "v"}
    edge["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.20"}, {"hostname": "lb.example.com"}]}}
    assert describe(store, [edge], "Service", "edge") == "\n".join([
        "Name:                        edge",
        "Namespace:                   shop",
        "Labels:                      <none>",
        "Annotations:                 description:",
        "                               line one",
        "                               line two",
        "                             long:",
        "                               " + "x" * 138 + "...",
        "                             short: v",
        "Selector:                    app=edge",
        "Type:                        LoadBalancer",
        "IP Family Policy:            SingleStack",
        "IP Families:                 IPv4",
        "IP:                          10.96.0.20",
        "IPs:                         10.96.0.20",
        "External IPs:                198.51.100.7,198.51.100.8",
        "Desired LoadBalancer IP:     203.0.113.20",
        "LoadBalancer Ingress:        203.0.113.20 (VIP), lb.example.com",  # ipMode defaulted to VIP
        "Port:                        <unset>  443/TCP",
        "TargetPort:                  8443/TCP",
        "NodePort:                    <unset>  31443/TCP",
        "Endpoints:                   <none>",
        "Port:                        dns  53/UDP",
        "TargetPort:                  5353/UDP",
        "NodePort:                    dns  31053/UDP",
        "Endpoints:                   <none>",
        "Session Affinity:            ClientIP",
        "External Traffic Policy:     Local",
        "Internal Traffic Policy:     Cluster",
        "HealthCheck NodePort:        32000",
        "LoadBalancer Source Ranges:  203.0.113.0/24,192.0.2.0/24",
        "Events:                      <none>",
    ])


def test_describe_external_name_service(store: Store) -> None:
    db = service("db", "", type="ExternalName", externalName="db.example.com")
    assert describe(store, [db], "Service", "db") == "\n".join([
        "Name:              db",
        "Namespace:         shop",
        "Labels:            <none>",
        "Annotations:       <none>",
        "Selector:          <none>",
        "Type:              ExternalName",
        "IP Families:       <none>",
        "IP:                ",  # kubectl's tabwriter pads the empty value too
        "IPs:               <none>",
        "External Name:     db.example.com",
        "Session Affinity:  None",
        "Events:            <none>",
    ])


PEERS_SLICE = endpoint_slice("peers-x1", "peers", [{"name": "", "port": 7000}], [
    endpoint("10.244.2.7", hostname="peer-0", nodeName="node-a", zone="zone-a", targetRef=pod_ref("peer-0")),
    {"addresses": ["10.244.2.8"], "conditions": {"ready": False, "serving": True, "terminating": True},
     "hostname": "peer-1", "nodeName": "node-b", "targetRef": pod_ref("peer-1")},
    endpoint("10.244.2.9", ready=None),
])


def test_describe_headless_service(store: Store) -> None:
    peers = service("peers", "None", selector={"app": "peer"}, ports=[{"port": 7000}], publishNotReadyAddresses=True)
    assert describe(store, [peers, PEERS_SLICE], "Service", "peers") == "\n".join([
        "Name:                     peers",
        "Namespace:                shop",
        "Labels:                   <none>",
        "Annotations:              <none>",
        "Selector:                 app=peer",
        "Type:                     ClusterIP",
        "IP Family Policy:         SingleStack",
        "IP Families:              IPv4",
        "IP:                       None",
        "IPs:                      None",
        "Port:                     <unset>  7000/TCP",
        "TargetPort:               7000/TCP",
        "Endpoints:                10.244.2.7:7000,10.244.2.9:7000",  # unset ready counts as ready
        "Session Affinity:         None",
        "Internal Traffic Policy:  Cluster",
        "Events:                   <none>",
    ])


def test_describe_endpointslice_with_terminating_endpoint(store: Store) -> None:
    # Each run of lines with a tab aligns on its own: "Conditions:" ends one, so the last
    # endpoint's fields align with "Events:" and not with the endpoints above.
    assert describe(store, [PEERS_SLICE], "EndpointSlice", "peers-x1") == "\n".join([
        "Name:         peers-x1",
        "Namespace:    shop",
        "Labels:       kubernetes.io/service-name=peers",
        "Annotations:  <none>",
        "AddressType:  IPv4",
        "Ports:",
        "  Name     Port  Protocol",
        "  ----     ----  --------",
        "  <unset>  7000  TCP",
        "Endpoints:",
        "  - Addresses:  10.244.2.7",
        "    Conditions:",
        "      Ready:    true",
        "    Hostname:   peer-0",
        "    TargetRef:  Pod/peer-0",
        "    NodeName:   node-a",
        "    Zone:       zone-a",
        "  - Addresses:  10.244.2.8",
        "    Conditions:",
        "      Ready:    false",
        "    Hostname:   peer-1",
        "    TargetRef:  Pod/peer-1",
        "    NodeName:   node-b",
        "    Zone:       <unset>",
        "  - Addresses:  10.244.2.9",
        "    Conditions:",
        "      Ready:   <unset>",
        "    Hostname:  <unset>",
        "    NodeName:  <unset>",
        "    Zone:      <unset>",
        "Events:        <none>",
    ])


def test_describe_endpointslice_without_ports_or_endpoints(store: Store) -> None:
    empty = endpoint_slice("gone-1", "gone", [], [])
    assert describe(store, [empty], "EndpointSlice", "gone-1") == "\n".join([
        "Name:         gone-1",
        "Namespace:    shop",
        "Labels:       kubernetes.io/service-name=gone",
        "Annotations:  <none>",
        "AddressType:  IPv4",
        "Ports: <unset>",
        "Endpoints: <none>",
        "Events:  <none>",  # after a line without a tab: aligned on its own
    ])


def test_describe_service_endpoints_as_kubectl_counts_them(store: Store) -> None:
    """formatEndpointSlices' corners: a not-ready endpoint met after three ready ones still says
    "more" (+ 0 more...), IPv6 in brackets, a slice without ports adds bare addresses (here not
    ready), and slices without a ready endpoint leave the value empty."""
    counted = service("counted", "10.96.0.30", ports=[{"port": 80}])
    slices = [
        endpoint_slice("counted-0", "counted", [{"port": 8080}], [endpoint("10.0.0.1"), endpoint("10.0.0.2")]),
        endpoint_slice("counted-1", "counted", [{"port": 8080}], [endpoint("fd00::3"), endpoint("fd00::4", ready=False)]),
        endpoint_slice("counted-2", "counted", [], [endpoint("10.0.0.5", ready=False)]),
    ]
    text = describe(store, [counted, *slices], "Service", "counted")
    assert "Endpoints:                10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 0 more...\n" in text
    unready = service("unready", "10.96.0.31", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81}])
    text = describe(store, [unready, endpoint_slice("unready-0", "unready", [{"name": "a", "port": 80}],
                                                    [endpoint("10.0.1.1", ready=False)])], "Service", "unready")
    assert text.count("Endpoints:                \n") == 2


def test_describe_service_fields_of_newer_kubectl(store: Store) -> None:
    svc = service("td", "10.96.0.32", trafficDistribution="PreferClose", ports=[{"port": 80, "appProtocol": "http"}])
    text = describe(store, [svc], "Service", "td")
    assert "TargetPort:               80/TCP\nAppProtocol:              http\nEndpoints:                <none>\n" in text
    assert text.endswith("Traffic Distribution:     PreferClose\nEvents:                   <none>")


def test_describe_other_kinds_print_yaml_like_fields(store: Store) -> None:
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "deny", "namespace": "shop", "annotations": {LAST_APPLIED: "{}", "note": "x"}},
              "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [
                  {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80, "protocol": "TCP"}]}]}}
    lines = describe(store, [policy], "NetworkPolicy", "deny").splitlines()
    assert lines[4].startswith("Created:")
    assert lines[:4] + lines[5:] == [
        "Name:           deny",
        "Namespace:      shop",
        "Labels:         <none>",
        "Annotations:    note=x",
        "Spec:",
        "  ingress:",
        "    - from:",
        "        - podSelector:",
        "            matchLabels:",
        "              app: a",
        "      ports:",
        "        - port: 80",
        "          protocol: TCP",
        "  podSelector: {}",
        "  policyTypes:",
        "    - Ingress",
        "Events:         <none>",
    ]
