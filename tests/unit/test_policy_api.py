"""NetworkPolicy in the API: defaulting and validation as the API server does them (exact paths and
messages of pkg/apis/networking/validation)."""

from __future__ import annotations

import pytest

from kubewire.api.errors import ManifestError
from kubewire.api.loader import Document
from kubewire.api.validation import apply_defaults, validate, validate_and_default


def netpol(spec: dict, name: str = "p") -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def errors(spec: dict) -> list[str]:
    return [str(e) for e in validate(apply_defaults(netpol(spec)), None)]


def test_defaults() -> None:
    spec = apply_defaults(netpol({"ingress": [{"ports": [{"port": 80}]}]}))["spec"]
    assert spec == {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "TCP"}]}],
                    "policyTypes": ["Ingress"]}
    spec = apply_defaults(netpol({"podSelector": {}, "egress": [{}]}))["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    spec = apply_defaults(netpol({"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]}))["spec"]
    assert spec["policyTypes"] == ["Egress"]  # given types are kept as they are
    spec = apply_defaults(netpol({"podSelector": {}, "egress": []}))["spec"]
    assert spec["policyTypes"] == ["Ingress"]


def test_a_valid_policy_is_stored_with_its_defaults() -> None:
    obj = validate_and_default(Document("np.yaml", 0, netpol({
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
                               "podSelector": {}},
                              {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                     "ports": [{"port": "http"}, {"port": 8000, "endPort": 8080, "protocol": "UDP"}, {"protocol": "SCTP"}]}],
    })))
    assert obj["spec"]["ingress"][0]["ports"][0] == {"port": "http", "protocol": "TCP"}
    assert obj["spec"]["policyTypes"] == ["Ingress"]


def test_port_errors() -> None:
    assert errors({"ingress": [{"ports": [
        {"port": 80, "endPort": 70}, {"port": "http", "endPort": 90}, {"endPort": 5}, {"port": 0},
        {"protocol": "ICMP"}, {"port": "a_b"}, {"port": 70000, "endPort": 70001},
    ]}]}) == [
        "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
        "spec.ingress[0].ports[1].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
        "spec.ingress[0].ports[2].endPort: Invalid value: 5: may not be specified when `port` is not specified",
        "spec.ingress[0].ports[3].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        'spec.ingress[0].ports[4].protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"',
        'spec.ingress[0].ports[5].port: Invalid value: "a_b": must contain only alpha-numeric characters (a-z, 0-9), '
        "and hyphens (-)",
        "spec.ingress[0].ports[6].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "spec.ingress[0].ports[6].endPort: Invalid value: 70001: must be between 1 and 65535, inclusive",
    ]


def test_peer_and_ip_block_errors() -> None:
    assert errors({"egress": [{"to": [
        {},
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16", "10.0.0.0/8", "10.1.0.0/33"]}, "podSelector": {}},
        {"ipBlock": {"cidr": ""}},
        {"ipBlock": {"cidr": "10.0.0.0/33"}},
    ]}]}) == [
        "spec.egress[0].to[0]: Required value: must specify a peer",
        'spec.egress[0].to[1].ipBlock.except[0]: Invalid value: "11.0.0.0/16": must be a strict subset of `cidr`',
        'spec.egress[0].to[1].ipBlock.except[1]: Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`',
        'spec.egress[0].to[1].ipBlock.except[2]: Invalid value: "10.1.0.0/33": must be a valid CIDR value, '
        "(e.g. 10.9.8.0/24 or 2001:db8::/64)",
        "spec.egress[0].to[1]: Forbidden: may not specify both ipBlock and another peer",
        "spec.egress[0].to[2].ipBlock.cidr: Required value",
        'spec.egress[0].to[3].ipBlock.cidr: Invalid value: "10.0.0.0/33": must be a valid CIDR value, '
        "(e.g. 10.9.8.0/24 or 2001:db8::/64)",
    ]


def test_both_selectors_in_one_peer_are_valid() -> None:
    assert errors({"ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}]}]}) == []


def test_selector_errors() -> None:
    assert errors({"podSelector": {"matchExpressions": [
        {"key": "a", "operator": "In"}, {"key": "b", "operator": "Exists", "values": ["x"]},
        {"key": "c", "operator": "Bogus"}]}}) == [
        "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' "
        "or 'NotIn'",
        "spec.podSelector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' "
        "or 'DoesNotExist'",
        'spec.podSelector.matchExpressions[2].operator: Invalid value: "Bogus": not a valid selector operator',
    ]


def test_policy_types_errors() -> None:
    assert errors({"policyTypes": ["Ingress", "Egress", "Foo"]}) == [
        'spec.policyTypes: Invalid value: []networking.PolicyType{"Ingress", "Egress", "Foo"}: may not specify '
        "more than two policyTypes"]
    assert errors({"policyTypes": ["Foo"]}) == [
        'spec.policyTypes[0]: Unsupported value: "Foo": supported values: "Ingress", "Egress"']


def test_unknown_fields_are_reported_not_dropped() -> None:
    assert errors({"ingress": [{"form": []}]}) == ["spec.ingress[0].form: Unknown field"]


def test_errors_name_the_file_and_the_document() -> None:
    with pytest.raises(ManifestError) as e:
        validate_and_default(Document("np.yaml", 2, netpol({"ingress": [{"ports": [{"port": 0}]}]})))
    assert "np.yaml" in str(e.value) and "spec.ingress[0].ports[0].port" in str(e.value)
