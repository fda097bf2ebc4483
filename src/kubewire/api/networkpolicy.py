"""networking.k8s.io/v1 NetworkPolicy: defaulting and validation as the API server does them.

Sources followed: pkg/apis/networking/v1/defaults.go (SetDefaults_NetworkPolicy,
SetDefaults_NetworkPolicyPort) and pkg/apis/networking/validation (ValidateNetworkPolicySpec,
ValidateNetworkPolicyPort, ValidateNetworkPolicyPeer, ValidateIPBlock): the same checks, in the
same order, with the same paths and messages.
"""

from __future__ import annotations

from typing import Any

from kubewire.api.access import Errs, child, index, is_int
from kubewire.api.defaults import register_defaulter
from kubewire.api.errors import (
    FieldError,
    GoValue,
    forbidden,
    go_quote,
    invalid,
    not_supported,
    required,
    type_invalid,
)
from kubewire.api.meta import validate_label_selector
from kubewire.api.names import is_valid_port_name, is_valid_port_num
from kubewire.api.service import check_schema, is_valid_cidr, parse_cidr

PROTOCOLS = ("TCP", "UDP", "SCTP")  # upstream lists them in this order, unsorted
POLICY_TYPES = ("Ingress", "Egress")

_STR_LIST = ("list", "string")
PORT_SCHEMA = {"protocol": "string", "port": "intstr", "endPort": "integer"}
PEER_SCHEMA = {"podSelector": "any", "namespaceSelector": "any", "ipBlock": {"cidr": "string", "except": _STR_LIST}}
NETWORK_POLICY_SCHEMA = {
    "apiVersion": "string",
    "kind": "string",
    "metadata": "any",
    "spec": {
        "podSelector": "any",
        "ingress": ("list", {"from": ("list", PEER_SCHEMA), "ports": ("list", PORT_SCHEMA)}),
        "egress": ("list", {"to": ("list", PEER_SCHEMA), "ports": ("list", PORT_SCHEMA)}),
        "policyTypes": _STR_LIST,
    },
    "status": "any",  # NetworkPolicyStatus existed until 1.28; old manifests may carry an empty one
}


# --- defaulting ---------------------------------------------------------------------------------


def default_networkpolicy(obj: dict) -> None:
    """SetDefaults_NetworkPolicy and SetDefaults_NetworkPolicyPort. policyTypes: Ingress always,
    Egress when egress rules exist (only when policyTypes is empty); a port's protocol: TCP."""
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    if not isinstance(spec, dict):
        return
    if spec.get("podSelector") is None:
        spec["podSelector"] = {}  # a struct, not a pointer, in v1: serialised as {}
    for direction in ("ingress", "egress"):
        rules = spec.get(direction)
        for rule in rules if isinstance(rules, list) else []:
            ports = rule.get("ports") if isinstance(rule, dict) else None
            for port in ports if isinstance(ports, list) else []:
                if isinstance(port, dict) and port.get("protocol") is None:
                    port["protocol"] = "TCP"
    types = spec.get("policyTypes")
    if types is None or (isinstance(types, list) and not types):
        egress = spec.get("egress")
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if isinstance(egress, list) and egress else [])


register_defaulter("NetworkPolicy", default_networkpolicy)


# --- validation ---------------------------------------------------------------------------------


def validate_networkpolicy(obj: dict, old: dict | None) -> list[FieldError]:
    """ValidateNetworkPolicy / ValidateNetworkPolicyUpdate less ObjectMeta (validate() checks it)."""
    errs: Errs = []
    check_schema(obj, NETWORK_POLICY_SCHEMA, "", errs)
    if any(e.message.startswith("Invalid value") for e in errs):
        return errs  # the decoder would have refused the document before any validation
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    _selector(spec.get("podSelector"), "spec.podSelector", errs)
    for direction, peers_field in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            rpath = index(child("spec", direction), i)
            if not isinstance(rule, dict):
                continue
            for j, port in enumerate(rule.get("ports") or []):
                if isinstance(port, dict):
                    validate_port(port, index(child(rpath, "ports"), j), errs)
            for j, peer in enumerate(rule.get(peers_field) or []):
                if isinstance(peer, dict):
                    validate_peer(peer, index(child(rpath, peers_field), j), errs)
    types = spec.get("policyTypes") or []
    if len(types) > len(POLICY_TYPES):
        value = GoValue("[]networking.PolicyType{" + ", ".join(go_quote(str(t)) for t in types) + "}")
        errs.append(invalid("spec.policyTypes", value, "may not specify more than two policyTypes"))
        return errs
    for i, t in enumerate(types):
        if t not in POLICY_TYPES:
            errs.append(not_supported(index("spec.policyTypes", i), t, POLICY_TYPES))
    return errs


def _selector(sel: Any, path: str, errs: Errs) -> None:
    if sel is None:
        return
    if not isinstance(sel, dict):
        errs.append(type_invalid(path, sel, "object"))
        return
    validate_label_selector(sel, path, errs)


def validate_port(port: dict, path: str, errs: Errs) -> None:
    """ValidateNetworkPolicyPort."""
    protocol = port.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        errs.append(not_supported(child(path, "protocol"), protocol, PROTOCOLS))
    number, end = port.get("port"), port.get("endPort")
    if number is not None:
        if is_int(number):
            errs.extend(invalid(child(path, "port"), number, m) for m in is_valid_port_num(number))
            if end is not None:
                if end < number:
                    errs.append(invalid(child(path, "endPort"), number, "must be greater than or equal to `port`"))
                errs.extend(invalid(child(path, "endPort"), end, m) for m in is_valid_port_num(end))
        else:
            if end is not None:
                errs.append(invalid(child(path, "endPort"), end, "may not be specified when `port` is non-numeric"))
            errs.extend(invalid(child(path, "port"), number, m) for m in is_valid_port_name(number))
    elif end is not None:
        errs.append(invalid(child(path, "endPort"), end, "may not be specified when `port` is not specified"))


def validate_peer(peer: dict, path: str, errs: Errs) -> None:
    """ValidateNetworkPolicyPeer: exactly one kind of peer, or both selectors (an AND)."""
    n = 0
    if peer.get("podSelector") is not None:
        n += 1
        _selector(peer["podSelector"], child(path, "podSelector"), errs)
    if peer.get("namespaceSelector") is not None:
        n += 1
        _selector(peer["namespaceSelector"], child(path, "namespaceSelector"), errs)
    if peer.get("ipBlock") is not None:
        n += 1
        validate_ip_block(peer["ipBlock"], child(path, "ipBlock"), errs)
    if n == 0:
        errs.append(required(path, "must specify a peer"))
    elif n > 1 and peer.get("ipBlock") is not None:
        errs.append(forbidden(path, "may not specify both ipBlock and another peer"))


def validate_ip_block(block: dict, path: str, errs: Errs) -> None:
    """ValidateIPBlock: a valid cidr; every except a valid CIDR and a strict subset of it."""
    cidr = block.get("cidr") or ""
    if not cidr:
        errs.append(required(child(path, "cidr"), ""))
        return
    errs.extend(is_valid_cidr(child(path, "cidr"), cidr))
    net = parse_cidr(cidr)
    if net is None:
        return
    for i, text in enumerate(block.get("except") or []):
        epath = index(child(path, "except"), i)
        errs.extend(is_valid_cidr(epath, text))
        exc = parse_cidr(text)
        if exc is None:
            continue
        if exc.version != net.version or exc.network_address not in net or net.prefixlen >= exc.prefixlen:
            errs.append(invalid(epath, text, "must be a strict subset of `cidr`"))
