"""Service and EndpointSlice API: defaulting, validation (exact paths and messages), allocation."""

from __future__ import annotations

import copy
import ipaddress
import random
from typing import Any

import pytest

from kubewire.api.allocation import (
    AllocationError,
    allocate_cluster_ip,
    allocate_node_port,
    ip_range_offset,
    port_range_offset,
    prepare_service,
    used_allocations,
)
from kubewire.api.errors import ManifestError
from kubewire.api.loader import Document
from kubewire.api.validation import apply_defaults, validate, validate_and_default

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"
CIDR = "10.96.0.0/12"


def service(name: str = "web", **spec: Any) -> dict:
    base: dict = {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": base}


def errors(obj: dict, old: dict | None = None) -> list[str]:
    """Errors after defaulting, as validate_and_default would see them."""
    return [str(e) for e in validate(apply_defaults(obj), old)]


def stored(obj: dict, old: dict | None = None, used: tuple = (set(), set()), seed: int = 1) -> dict:
    """Default, validate and allocate, as `kubewire apply` does inside its transaction."""
    new = validate_and_default(Document("svc.yaml", 0, obj), old)
    return prepare_service(new, old, used[0], used[1], CIDR, random.Random(seed))


# --- defaulting --------------------------------------------------------------------------------


def test_defaults_of_a_minimal_cluster_ip_service() -> None:
    spec = apply_defaults(service(ports=[{"port": 80}]))["spec"]
    assert spec == {
        "selector": {"app": "web"},
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
        "sessionAffinity": "None",
        "type": "ClusterIP",
        "internalTrafficPolicy": "Cluster",
    }


@pytest.mark.parametrize("target", [0, "", None])
def test_unset_target_port_defaults_to_port(target: Any) -> None:
    spec = apply_defaults(service(ports=[{"port": 443, "targetPort": target}]))["spec"]
    assert spec["ports"][0]["targetPort"] == 443


def test_defaults_by_type() -> None:
    node_port = apply_defaults(service(type="NodePort"))["spec"]
    assert (
        node_port["externalTrafficPolicy"] == "Cluster" and "allocateLoadBalancerNodePorts" not in node_port
    )
    lb = apply_defaults(service(type="LoadBalancer"))["spec"]
    assert lb["externalTrafficPolicy"] == "Cluster" and lb["allocateLoadBalancerNodePorts"] is True
    ext_ips = apply_defaults(service(externalIPs=["203.0.113.7"]))["spec"]
    assert ext_ips["externalTrafficPolicy"] == "Cluster"
    ext_name = apply_defaults(service(type="ExternalName", externalName="db.example.com"))["spec"]
    assert "internalTrafficPolicy" not in ext_name and "externalTrafficPolicy" not in ext_name


def test_session_affinity_defaults() -> None:
    assert apply_defaults(service(sessionAffinity="ClientIP"))["spec"]["sessionAffinityConfig"] == {
        "clientIP": {"timeoutSeconds": 10800}
    }
    kept = apply_defaults(
        service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    )
    assert kept["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 60
    dropped = apply_defaults(service(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    assert "sessionAffinityConfig" not in dropped["spec"]


def test_load_balancer_ingress_ip_mode_defaults_to_vip() -> None:
    svc = service(type="LoadBalancer")
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example"}]}}
    assert apply_defaults(svc)["status"]["loadBalancer"]["ingress"] == [
        {"ip": "203.0.113.9", "ipMode": "VIP"},
        {"hostname": "lb.example"},
    ]


# --- validation --------------------------------------------------------------------------------


def test_valid_services_pass() -> None:
    assert errors(service()) == []
    assert (
        errors(
            service(
                type="NodePort",
                ports=[{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}],
            )
        )
        == []
    )
    assert errors(service(clusterIP="None", ports=[])) == []
    assert errors(service(type="ExternalName", externalName="api.stripe.com.", ports=[], selector=None)) == []
    assert errors(service(clusterIP="10.96.0.10")) == []
    assert (
        errors(service(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=31000)) == []
    )


def test_service_name_is_a_dns1035_label() -> None:
    assert errors(service(name="1web")) == [
        'metadata.name: Invalid value: "1web": a DNS-1035 label must consist of lower case alphanumeric characters '
        "or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
        "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    ]


def test_ports_required_except_headless_and_external_name() -> None:
    assert errors(service(ports=[])) == ["spec.ports: Required value"]
    assert errors(service(ports=None)) == ["spec.ports: Required value"]
    assert errors(service(clusterIP="None", ports=None)) == []


def test_port_fields() -> None:
    svc = service(
        ports=[
            {"name": "HTTP", "port": 0, "protocol": "ICMP", "targetPort": "web_port"},
            {"port": 70000, "targetPort": 70000, "appProtocol": "bad/proto/x"},
        ]
    )
    assert errors(svc) == [
        f'spec.ports[0].name: Invalid value: "HTTP": {DNS1123_LABEL_MSG}',
        f"spec.ports[0].port: Invalid value: 0: {PORT_RANGE_MSG}",
        'spec.ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"',
        'spec.ports[0].targetPort: Invalid value: "web_port": must contain only alpha-numeric characters (a-z, 0-9), '
        "and hyphens (-)",
        "spec.ports[1].name: Required value",
        f"spec.ports[1].port: Invalid value: 70000: {PORT_RANGE_MSG}",
        f"spec.ports[1].targetPort: Invalid value: 70000: {PORT_RANGE_MSG}",
        'spec.ports[1].appProtocol: Invalid value: "bad/proto/x": a valid label key must consist of alphanumeric '
        "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or "
        "'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an "
        "optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    ]


def test_port_names_unique_and_port_protocol_pairs_unique() -> None:
    svc = service(
        type="NodePort",
        ports=[
            {"name": "a", "port": 80, "nodePort": 30080},
            {"name": "a", "port": 80, "nodePort": 30080},
            {"name": "b", "port": 80, "protocol": "UDP", "nodePort": 30080},
        ],
    )
    assert errors(svc) == [
        'spec.ports[1].name: Duplicate value: "a"',
        "spec.ports[1].nodePort: Duplicate value: 30080",
        'spec.ports[1]: Duplicate value: core.ServicePort{Name:"", Protocol:"TCP", AppProtocol:(*string)(nil), '
        'Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}',
    ]


def test_node_port_only_for_node_port_and_load_balancer() -> None:
    assert errors(service(ports=[{"port": 80, "nodePort": 30080}])) == [
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
    ]


def test_cluster_ip_fields() -> None:
    assert errors(service(clusterIP="10.96.0.300")) == [
        'spec.clusterIPs[0]: Invalid value: "10.96.0.300": must be a valid IP address, (e.g. 10.9.8.7 or '
        "2001:db8::ffff)"
    ]
    assert errors(service(clusterIP="10.96.0.5", clusterIPs=["10.96.0.6"])) == [
        'spec.clusterIPs: Invalid value: []string{"10.96.0.6"}: first value must match `clusterIP`'
    ]
    assert errors(service(clusterIPs=["10.96.0.6"])) == [
        'spec.clusterIPs: Invalid value: []string{"10.96.0.6"}: must be empty when `clusterIP` is not specified'
    ]
    assert errors(
        service(
            clusterIP="10.96.0.5", clusterIPs=["10.96.0.5", "10.96.0.6"], ipFamilyPolicy="PreferDualStack"
        )
    ) == [
        'spec.clusterIPs: Invalid value: []string{"10.96.0.5", "10.96.0.6"}: may specify no more than one IP for '
        "each IP family"
    ]
    assert errors(service(clusterIP="None", clusterIPs=["None", "10.96.0.6"])) == [
        'spec.clusterIPs: Invalid value: []string{"None", "10.96.0.6"}: \'None\' must be the first and only value'
    ]
    assert errors(service(clusterIP="fd00::5", ipFamilies=["IPv4"])) == [
        'spec.clusterIPs[0]: Invalid value: "fd00::5": expected an IPv4 value as indicated by `ipFamilies[0]`'
    ]


def test_ip_family_fields() -> None:
    assert errors(service(ipFamilies=["IPv5"], ipFamilyPolicy="Single")) == [
        'spec.ipFamilies[0]: Unsupported value: "IPv5": supported values: "IPv4", "IPv6"',
        'spec.ipFamilyPolicy: Unsupported value: "Single": supported values: "PreferDualStack", "RequireDualStack", '
        '"SingleStack"',
    ]
    assert errors(service(ipFamilies=["IPv4", "IPv6"])) == [
        "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when "
        "multiple IP families are specified"
    ]


def test_headless_is_not_for_node_ports_or_load_balancers() -> None:
    assert errors(service(type="NodePort", clusterIP="None")) == [
        "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"
    ]
    assert errors(service(type="LoadBalancer", clusterIP="None")) == [
        "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"
    ]


def test_external_name() -> None:
    assert errors(service(type="ExternalName", ports=[])) == ["spec.externalName: Required value"]
    assert errors(service(type="ExternalName", externalName="Bad_Host.")) == [
        f'spec.externalName: Invalid value: "Bad_Host": {SUBDOMAIN_MSG}'
    ]
    assert errors(
        service(
            type="ExternalName",
            externalName="db.example",
            clusterIP="10.96.0.5",
            ipFamilyPolicy="SingleStack",
        )
    ) == [
        "spec.clusterIPs: Forbidden: may not be set for ExternalName services",
        "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services",
    ]


def test_external_ips() -> None:
    assert errors(service(externalIPs=["203.0.113.7", "nope", "127.0.0.1", "169.254.1.1", "0.0.0.0"])) == [
        'spec.externalIPs[1]: Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)',
        'spec.externalIPs[2]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)',
        'spec.externalIPs[3]: Invalid value: "169.254.1.1": may not be in the link-local range (169.254.0.0/16, '
        "fe80::/10)",
        'spec.externalIPs[4]: Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0)',
    ]


def test_session_affinity() -> None:
    assert errors(service(sessionAffinity="Sticky")) == [
        'spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None"'
    ]
    for timeout in (0, 86401):
        assert errors(
            service(
                sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": timeout}}
            )
        ) == [
            f"spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: {timeout}: must be greater than 0 "
            "and less than 86400"
        ]
    assert (
        errors(
            service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86400}})
        )
        == []
    )


def test_traffic_policies() -> None:
    assert errors(service(externalTrafficPolicy="Local")) == [
        'spec.externalTrafficPolicy: Invalid value: "Local": may only be set for externally-accessible services'
    ]
    assert errors(
        service(type="NodePort", externalTrafficPolicy="Global", internalTrafficPolicy="Nearby")
    ) == [
        'spec.externalTrafficPolicy: Unsupported value: "Global": supported values: "Cluster", "Local"',
        'spec.internalTrafficPolicy: Unsupported value: "Nearby": supported values: "Cluster", "Local"',
    ]
    assert errors(service(type="NodePort", healthCheckNodePort=31000)) == [
        "spec.healthCheckNodePort: Invalid value: 31000: may only be set when `type` is 'LoadBalancer' and "
        "`externalTrafficPolicy` is 'Local'"
    ]
    assert errors(service(trafficDistribution="Anywhere")) == [
        'spec.trafficDistribution: Unsupported value: "Anywhere": supported values: "PreferClose", '
        '"PreferSameZone", "PreferSameNode"'
    ]
    assert errors(service(trafficDistribution="PreferClose")) == []


def test_load_balancer_only_fields() -> None:
    assert errors(
        service(loadBalancerSourceRanges=["10.0.0.0/8", "nope"], allocateLoadBalancerNodePorts=False)
    ) == [
        "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
        'spec.LoadBalancerSourceRanges[1]: Invalid value: "nope": must be a valid CIDR value, (e.g. 10.9.8.0/24 or '
        "2001:db8::/64)",
        "spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is 'LoadBalancer'",
    ]
    assert errors(service(type="LoadBalancer", loadBalancerSourceRanges=[" 10.0.0.0/8 "])) == []


def test_selector_labels_and_topology_annotations() -> None:
    svc = service(selector={"app": "web app"})
    svc["metadata"]["annotations"] = {
        "service.kubernetes.io/topology-mode": "Auto",
        "service.kubernetes.io/topology-aware-hints": "Disabled",
    }
    assert errors(svc) == [
        'metadata.annotations[service.kubernetes.io/topology-mode]: Invalid value: "Auto": must match '
        "annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
        'spec.selector: Invalid value: "web app": a valid label must be an empty string or consist of alphanumeric '
        "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
        "'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    ]


def test_unknown_type_and_decode_errors() -> None:
    assert errors(service(type="Internal")) == [
        'spec.type: Unsupported value: "Internal": supported values: "ClusterIP", "ExternalName", "LoadBalancer", '
        '"NodePort"'
    ]
    assert errors(service(prots=[])) == ["spec.prots: Unknown field"]
    assert errors(service(ports=[{"port": "80"}])) == [
        'spec.ports[0].port: Invalid value: "80": must be of type integer'
    ]


# --- update rules ---------------------------------------------------------------------------------


def test_reapplying_without_allocated_values_is_accepted() -> None:
    first = stored(service(type="NodePort"))
    again = service(type="NodePort")
    assert errors(again, first) == []
    second = stored(again, first)
    assert second["spec"]["clusterIP"] == first["spec"]["clusterIP"]
    assert second["spec"]["ports"][0]["nodePort"] == first["spec"]["ports"][0]["nodePort"]
    assert second == first


def test_cluster_ip_is_immutable() -> None:
    first = stored(service(clusterIP="10.96.0.20"))
    assert errors(service(clusterIP="10.96.0.21"), first) == [
        'spec.clusterIPs[0]: Invalid value: []string{"10.96.0.21"}: may not change once set'
    ]
    assert errors(service(clusterIP="None"), first) == [
        'spec.clusterIPs[0]: Invalid value: []string{"None"}: may not change once set'
    ]


def test_type_changes_to_and_from_external_name() -> None:
    first = stored(service(clusterIP="10.96.0.20"))
    to_name = service(type="ExternalName", externalName="db.example.com", ports=[])
    assert errors(to_name, first) == []
    named = stored(to_name, first)
    assert {k: v for k, v in named["spec"].items() if k.startswith(("cluster", "ipFam"))} == {}
    back = service(clusterIP="10.96.0.30")
    assert errors(back, named) == []
    assert stored(back, named)["spec"]["clusterIPs"] == ["10.96.0.30"]


def test_health_check_node_port_is_immutable() -> None:
    first = stored(service(type="LoadBalancer", externalTrafficPolicy="Local"))
    hc = first["spec"]["healthCheckNodePort"]
    changed = service(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=hc + 1)
    assert errors(changed, first) == ["spec.healthCheckNodePort: Forbidden: field is immutable"]


# --- the manifest path -------------------------------------------------------------------------------


def test_manifest_error_names_file_document_and_fields() -> None:
    with pytest.raises(ManifestError) as e:
        validate_and_default(Document("svc.yaml", 2, service(ports=[{"port": 99999}])))
    assert e.value.lines() == [
        f"error: svc.yaml: document 2 (Service default/web): spec.ports[0].port: Invalid value: 99999: {PORT_RANGE_MSG}",
        f"error: svc.yaml: document 2 (Service default/web): spec.ports[0].targetPort: Invalid value: 99999: "
        f"{PORT_RANGE_MSG}",
    ]


# --- EndpointSlice ---------------------------------------------------------------------------------


def endpointslice(**fields: Any) -> dict:
    base: dict = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "ext-1", "labels": {"kubernetes.io/service-name": "ext"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"]}],
        "ports": [{"port": 443}],
    }
    base.update(fields)
    return base


def test_endpointslice_defaults_and_valid_slices() -> None:
    assert apply_defaults(endpointslice())["ports"] == [{"port": 443, "name": "", "protocol": "TCP"}]
    assert errors(endpointslice()) == []
    no_label = endpointslice()
    del no_label["metadata"]["labels"]
    assert errors(no_label) == []
    assert errors(endpointslice(addressType="FQDN", endpoints=[{"addresses": ["api.example.com."]}])) == []


def test_endpointslice_address_type() -> None:
    assert errors(endpointslice(addressType=None, endpoints=[])) == ["addressType: Required value"]
    assert errors(endpointslice(addressType="IP", endpoints=[])) == [
        'addressType: Unsupported value: "IP": supported values: "FQDN", "IPv4", "IPv6"'
    ]
    old = apply_defaults(endpointslice())
    assert errors(endpointslice(addressType="IPv6", endpoints=[]), old) == [
        'addressType: Invalid value: "IPv6": field is immutable'
    ]


def test_endpointslice_endpoints() -> None:
    slice_ = endpointslice(
        endpoints=[
            {"addresses": []},
            {"addresses": ["fd00::1", "127.0.0.1"], "nodeName": "Node_1", "hostname": "Web"},
            {"addresses": ["192.0.2.1"], "hints": {"forZones": [{"name": "z1"}, {"name": "z1"}]}},
        ]
    )
    assert errors(slice_) == [
        "endpoints[0].addresses: Required value: must contain at least 1 address",
        'endpoints[1].addresses[0]: Invalid value: "fd00::1": must be a valid IPv4 address',
        'endpoints[1].addresses[1]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, '
        "::1/128)",
        f'endpoints[1].nodeName: Invalid value: "Node_1": {SUBDOMAIN_MSG}',
        f'endpoints[1].hostname: Invalid value: "Web": {DNS1123_LABEL_MSG}',
        'endpoints[2].hints.forZones[1].name: Duplicate value: "z1"',
    ]
    fqdn = endpointslice(addressType="FQDN", endpoints=[{"addresses": ["localhost"]}])
    assert errors(fqdn) == [
        'endpoints[0].addresses[0]: Invalid value: "localhost": should be a domain with at least two segments '
        "separated by dots"
    ]
    too_many = endpointslice(endpoints=[{"addresses": [f"192.0.2.{i % 250 + 1}"]} for i in range(1001)])
    assert errors(too_many) == ["endpoints: Too many: 1001: must have at most 1000 items"]


def test_endpointslice_ports() -> None:
    slice_ = endpointslice(
        ports=[{"port": 80}, {"port": 81}, {"name": "Web", "port": 82, "protocol": "HTTP"}]
    )
    assert errors(slice_) == [
        'ports[1].name: Duplicate value: ""',
        f'ports[2].name: Invalid value: "Web": {DNS1123_LABEL_MSG}',
        'ports[2].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"',
    ]
    assert errors(endpointslice(endpoints=[{"addresses": ["192.0.2.1"], "zone": 3}])) == [
        "endpoints[0].zone: Invalid value: 3: must be of type string"
    ]


# --- ClusterIP allocation ----------------------------------------------------------------------------


def test_ip_range_offsets_follow_upstream() -> None:
    offsets = {p: ip_range_offset(ipaddress.ip_network(f"10.96.0.0/{p}")) for p in (12, 20, 24, 27, 28, 29)}
    assert offsets == {12: 256, 20: 256, 24: 16, 27: 16, 28: 0, 29: 0}


def test_dynamic_cluster_ips_avoid_the_static_band() -> None:
    rng = random.Random(7)
    used: set[str] = set()
    for _ in range(200):
        ip = allocate_cluster_ip(CIDR, used, None, rng)
        assert ipaddress.ip_address(ip) >= ipaddress.ip_address("10.96.1.1")
        assert ipaddress.ip_address(ip) <= ipaddress.ip_address("10.111.255.254")
        assert ip not in used
        used.add(ip)


def test_static_cluster_ips_including_cluster_dns() -> None:
    rng = random.Random(1)
    assert allocate_cluster_ip(CIDR, set(), "10.96.0.10", rng) == "10.96.0.10"
    assert allocate_cluster_ip(CIDR, set(), "10.111.255.254", rng) == "10.111.255.254"
    assert allocate_cluster_ip(CIDR, {"10.96.0.5"}, "010.096.000.006", rng) == "10.96.0.6"


@pytest.mark.parametrize(
    ("requested", "used", "reason"),
    [
        ("10.96.0.5", {"10.96.0.5"}, "provided IP is already allocated"),
        (
            "10.96.0.0",
            set(),
            "the provided IP (10.96.0.0) is not in the valid range. The range of valid IPs is 10.96.0.0/12",
        ),
        (
            "10.111.255.255",
            set(),
            "the provided IP (10.111.255.255) is not in the valid range. The range of valid IPs is 10.96.0.0/12",
        ),
        ("192.168.0.1", set(), "the provided network does not match the current range"),
    ],
)
def test_cluster_ip_refusals(requested: str, used: set[str], reason: str) -> None:
    with pytest.raises(AllocationError) as e:
        allocate_cluster_ip(CIDR, used, requested, random.Random(1))
    assert [str(x) for x in e.value.errors] == [
        f'spec.clusterIPs: Invalid value: []string{{"{requested}"}}: failed to allocate IP {requested}: {reason}'
    ]


def test_tiny_service_cidr_is_exhausted() -> None:
    rng = random.Random(3)
    used: set[str] = set()
    for _ in range(6):  # a /29: 8 addresses less network and broadcast
        used.add(allocate_cluster_ip("10.0.0.0/29", used, None, rng))
    assert used == {f"10.0.0.{i}" for i in range(1, 7)}
    with pytest.raises(AllocationError) as e:
        allocate_cluster_ip("10.0.0.0/29", used, None, rng)
    assert [str(x) for x in e.value.errors] == [
        "Internal error occurred: failed to allocate a serviceIP: range is full"
    ]


def test_lower_band_is_used_only_after_the_upper_band() -> None:
    rng = random.Random(5)
    used: set[str] = set()
    got = []
    for _ in range(30):  # a /27: 30 hosts, offset 16: 14 in the upper band
        ip = allocate_cluster_ip("10.0.0.0/27", used, None, rng)
        used.add(ip)
        got.append(int(ipaddress.ip_address(ip)) - int(ipaddress.ip_address("10.0.0.0")))
    assert sorted(got[:14]) == list(range(17, 31))
    assert sorted(got[14:]) == list(range(1, 17))


# --- NodePort allocation -----------------------------------------------------------------------------


def test_port_range_offsets_follow_upstream() -> None:
    assert [port_range_offset(n) for n in (2768, 16, 17, 100, 10000)] == [86, 0, 16, 16, 128]


def test_dynamic_node_ports_avoid_the_static_band() -> None:
    rng = random.Random(11)
    used: set[int] = set()
    for _ in range(300):
        port = allocate_node_port(used, None, rng)
        assert 30086 <= port <= 32767 and port not in used
        used.add(port)
    assert allocate_node_port(used, 30080, rng) == 30080


def test_node_port_refusals() -> None:
    rng = random.Random(1)
    with pytest.raises(AllocationError) as e:
        allocate_node_port({30080}, 30080, rng)
    assert [str(x) for x in e.value.errors] == [
        "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    ]
    with pytest.raises(AllocationError) as e:
        allocate_node_port(set(), 8080, rng, path="spec.ports[2].nodePort")
    assert [str(x) for x in e.value.errors] == [
        "spec.ports[2].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid "
        "ports is 30000-32767"
    ]


def test_tiny_node_port_range_is_exhausted() -> None:
    rng = random.Random(2)
    used: set[int] = set()
    for _ in range(3):
        used.add(allocate_node_port(used, None, rng, 30000, 30002))
    assert used == {30000, 30001, 30002}
    with pytest.raises(AllocationError) as e:
        allocate_node_port(used, None, rng, 30000, 30002)
    assert [str(x) for x in e.value.errors] == [
        "Internal error occurred: failed to allocate a nodePort: range is full"
    ]


# --- prepare_service ---------------------------------------------------------------------------------


def test_prepare_cluster_ip_service() -> None:
    svc = stored(service())
    spec = svc["spec"]
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert ipaddress.ip_address(spec["clusterIP"]) in ipaddress.ip_network(CIDR)
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert svc["status"] == {"loadBalancer": {}}
    assert "nodePort" not in spec["ports"][0] and "healthCheckNodePort" not in spec


def test_prepare_requested_cluster_ip_conflict() -> None:
    used = ({"10.96.0.5"}, set())
    with pytest.raises(AllocationError) as e:
        stored(service(clusterIP="10.96.0.5"), used=used)
    assert [str(x) for x in e.value.errors] == [
        'spec.clusterIPs: Invalid value: []string{"10.96.0.5"}: failed to allocate IP 10.96.0.5: provided IP is '
        "already allocated"
    ]


def test_prepare_headless_services() -> None:
    headless = stored(service(clusterIP="None"))["spec"]
    assert headless["clusterIPs"] == ["None"] and headless["ipFamilies"] == ["IPv4"]
    assert headless["ipFamilyPolicy"] == "SingleStack"
    selectorless = stored(service(clusterIP="None", selector=None))["spec"]
    assert selectorless["ipFamilyPolicy"] == "RequireDualStack" and selectorless["ipFamilies"] == [
        "IPv4",
        "IPv6",
    ]


def test_prepare_node_ports_shared_by_port_number() -> None:
    svc = stored(
        service(
            type="NodePort",
            ports=[
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053},
                {"name": "http", "port": 80},
            ],
        )
    )
    ports = svc["spec"]["ports"]
    assert ports[0]["nodePort"] == ports[1]["nodePort"] == 30053
    assert 30086 <= ports[2]["nodePort"] <= 32767


def test_prepare_node_port_conflict_names_the_port() -> None:
    used = (set(), {30080})
    with pytest.raises(AllocationError) as e:
        stored(
            service(
                type="NodePort",
                ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30080}],
            ),
            used=used,
        )
    assert [str(x) for x in e.value.errors] == [
        "spec.ports[1].nodePort: Invalid value: 30080: provided port is already allocated"
    ]


def test_prepare_load_balancer() -> None:
    spec = stored(service(type="LoadBalancer", externalTrafficPolicy="Local"))["spec"]
    node_port, hc = spec["ports"][0]["nodePort"], spec["healthCheckNodePort"]
    assert node_port != hc and all(30000 <= p <= 32767 for p in (node_port, hc))
    no_ports = stored(service(type="LoadBalancer", allocateLoadBalancerNodePorts=False))["spec"]
    assert "nodePort" not in no_ports["ports"][0]


def test_prepare_health_check_port_conflict_is_internal() -> None:
    with pytest.raises(AllocationError) as e:
        stored(
            service(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=31000),
            used=(set(), {31000}),
        )
    assert [str(x) for x in e.value.errors] == [
        "Internal error occurred: failed to allocate requested HealthCheck NodePort 31000: provided port is "
        "already allocated"
    ]


def test_prepare_update_keeps_allocations_and_adds_new_ones() -> None:
    first = stored(service(type="NodePort", ports=[{"name": "http", "port": 80}]))
    kept = first["spec"]["ports"][0]["nodePort"]
    used = used_allocations([first])
    second = stored(
        service(type="NodePort", ports=[{"name": "http", "port": 80}, {"name": "https", "port": 443}]),
        first,
        used,
        seed=99,
    )
    assert second["spec"]["clusterIP"] == first["spec"]["clusterIP"]
    assert second["spec"]["ports"][0]["nodePort"] == kept
    assert second["spec"]["ports"][1]["nodePort"] not in (0, kept)


def test_prepare_type_change_drops_node_ports_and_load_balancer_status() -> None:
    first = stored(service(type="LoadBalancer"))
    first["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.4", "ipMode": "VIP"}]}}
    second = stored(service(), first)
    assert "nodePort" not in second["spec"]["ports"][0]
    assert (
        "allocateLoadBalancerNodePorts" not in second["spec"]
        and "externalTrafficPolicy" not in second["spec"]
    )
    assert second["status"] == {"loadBalancer": {}}
    assert second["spec"]["clusterIP"] == first["spec"]["clusterIP"]


def test_prepare_rejects_what_this_cluster_cannot_serve() -> None:
    with pytest.raises(AllocationError) as e:
        stored(service(ipFamilyPolicy="RequireDualStack"))
    assert [str(x) for x in e.value.errors] == [
        'spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services'
    ]
    with pytest.raises(AllocationError) as e:
        stored(service(clusterIP="fd00::10"))
    assert [str(x) for x in e.value.errors] == [
        'spec.clusterIPs[0]: Invalid value: []string{"fd00::10"}: IPv6 is not configured on this cluster'
    ]
    prefer = stored(service(ipFamilyPolicy="PreferDualStack"))["spec"]
    assert prefer["ipFamilies"] == ["IPv4"] and len(prefer["clusterIPs"]) == 1


def test_prepare_is_deterministic_for_a_seed_and_does_not_mutate_its_input() -> None:
    obj = apply_defaults(service(type="NodePort"))
    before = copy.deepcopy(obj)
    a = prepare_service(obj, None, set(), set(), CIDR, random.Random(4))
    b = prepare_service(obj, None, set(), set(), CIDR, random.Random(4))
    assert a == b and obj == before
