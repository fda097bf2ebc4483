"""v1 Endpoints: validation and defaulting as the API server does them (ValidateEndpoints,
SetDefaults_EndpointPort). The legacy API is still what older clients and hand-written
selector-less Services use; the mirroring controller turns such objects into EndpointSlices."""

from __future__ import annotations

import json

from kubewire.api.access import Errs, child, index
from kubewire.api.addresses import parse_ip_sloppy
from kubewire.api.defaults import register_defaulter
from kubewire.api.errors import FieldError, invalid, required
from kubewire.api.names import is_dns1123_label, is_qualified_name, name_is_dns_subdomain
from kubewire.api.podspec import IP_EXAMPLE
from kubewire.api.service import (
    OBJECT_REFERENCE_SCHEMA,
    check_schema,
    validate_endpoint_ip,
    validate_port_and_protocol,
)

_ADDRESS = {"ip": "string", "hostname": "string", "nodeName": "string", "targetRef": OBJECT_REFERENCE_SCHEMA}
ENDPOINTS_SCHEMA = {
    "apiVersion": "string",
    "kind": "string",
    "metadata": "any",
    "subsets": (
        "list",
        {
            "addresses": ("list", _ADDRESS),
            "notReadyAddresses": ("list", _ADDRESS),
            "ports": ("list", {"name": "string", "port": "integer", "protocol": "string", "appProtocol": "string"}),
        },
    ),
}


def default_endpoints(obj: dict) -> None:
    """SetDefaults_EndpointPort: TCP unless told otherwise."""
    subsets = obj.get("subsets")
    for ss in subsets if isinstance(subsets, list) else []:
        ports = ss.get("ports") if isinstance(ss, dict) else None
        for port in ports if isinstance(ports, list) else []:
            if isinstance(port, dict) and not port.get("protocol"):
                port["protocol"] = "TCP"


def validate_endpoints(obj: dict, old: dict | None) -> list[FieldError]:
    """validateEndpointSubsets: every subset has an address; addresses are usable unicast IPs;
    ports are named (when there are several), in range and of a supported protocol."""
    errs: Errs = []
    check_schema(obj, ENDPOINTS_SCHEMA, "", errs)
    if errs:
        return errs
    for i, ss in enumerate(obj.get("subsets") or []):
        path = index("subsets", i)
        addresses = ss.get("addresses") or []
        not_ready = ss.get("notReadyAddresses") or []
        if not addresses and not not_ready:
            errs.append(required(path, "must specify `addresses` or `notReadyAddresses`"))
        for field, items in (("addresses", addresses), ("notReadyAddresses", not_ready)):
            for j, address in enumerate(items):
                _validate_address(address, index(child(path, field), j), errs)
        ports = ss.get("ports") or []
        for j, port in enumerate(ports):
            _validate_port(port, len(ports) > 1, index(child(path, "ports"), j), errs)
    return errs


def _validate_address(address: dict, path: str, errs: Errs) -> None:
    ip = address.get("ip") or ""
    if parse_ip_sloppy(ip) is None:  # IsValidIPForLegacyField, then ValidateEndpointIP: two errors
        errs.append(invalid(child(path, "ip"), ip, IP_EXAMPLE))
    errs.extend(validate_endpoint_ip(ip, child(path, "ip")))
    hostname = address.get("hostname")
    if hostname:
        errs.extend(invalid(child(path, "hostname"), hostname, m) for m in is_dns1123_label(hostname))
    node_name = address.get("nodeName")
    if node_name is not None:
        errs.extend(invalid(child(path, "nodeName"), node_name, m) for m in name_is_dns_subdomain(node_name))


def _validate_port(port: dict, require_name: bool, path: str, errs: Errs) -> None:
    name = port.get("name") or ""
    if require_name and not name:
        errs.append(required(child(path, "name")))
    elif name:
        errs.extend(invalid(child(path, "name"), name, m) for m in is_dns1123_label(name))
    validate_port_and_protocol(port, path, errs)
    app = port.get("appProtocol")
    if app is not None:
        errs.extend(invalid(child(path, "appProtocol"), app, m) for m in is_qualified_name(app))


# --- RepackSubsets: the canonical form the API server stores (and the mirroring controller reads) --


def port_tuple(port: dict) -> tuple[str, int | None, str, str | None]:
    """An Endpoints or EndpointSlice port as a comparable value; protocol defaults to TCP, as the
    API server defaults both kinds."""
    number = port.get("port")
    return (
        port.get("name") or "",
        number if isinstance(number, int) else None,
        port.get("protocol") or "TCP",
        port.get("appProtocol"),
    )


def address_order(addr: dict) -> tuple[str, int, str]:
    """LessEndpointAddress: by IP (as text), then target UID, an address without target first."""
    ref = addr.get("targetRef")
    return (addr.get("ip") or "", 0 if not ref else 1, (ref or {}).get("uid") or "")


def repack_subsets(subsets: list[dict]) -> list[tuple[list[tuple], list[dict], list[dict]]]:
    """RepackSubsets: (ports, ready addresses, not-ready addresses) per distinct set of addresses.
    An address is one per IP and target UID (the first seen is kept); not-ready wins over ready for
    the same port; a subset without ports keeps its addresses under no ports (upstream's sentinel)."""
    first: dict[tuple[str, str], dict] = {}
    by_port: dict[tuple | None, dict[tuple[str, str], bool]] = {}
    for subset in subsets or []:
        if not isinstance(subset, dict):
            continue
        ports: list[tuple | None] = [port_tuple(p) for p in subset.get("ports") or [] if isinstance(p, dict)]
        for port in ports or [None]:
            for field, ready in (("addresses", True), ("notReadyAddresses", False)):
                for addr in subset.get(field) or []:
                    if not isinstance(addr, dict):
                        continue
                    key = (addr.get("ip") or "", ((addr.get("targetRef") or {}).get("uid")) or "")
                    first.setdefault(key, addr)
                    seen = by_port.setdefault(port, {})
                    if seen.get(key, True):  # not-ready trumps ready
                        seen[key] = ready
    groups: dict[frozenset, list[tuple]] = {}
    for port, seen in by_port.items():
        ports_of = groups.setdefault(frozenset(seen.items()), [])
        if port is not None:
            ports_of.append(port)
    out = []
    for group, ports in groups.items():
        ready = sorted((first[k] for k, r in group if r), key=address_order)
        not_ready = sorted((first[k] for k, r in group if not r), key=address_order)
        out.append((sorted(ports, key=json.dumps), ready, not_ready))
    out.sort(key=lambda s: json.dumps([s[0], [address_order(a) for a in s[1] + s[2]]]))
    return out


def canonicalize_endpoints(obj: dict) -> None:
    """endpointsStrategy.Canonicalize: subsets repacked, as the API server stores them after validation."""
    obj["subsets"] = repacked(obj.get("subsets") or [])


def repacked(subsets: list[dict]) -> list[dict]:
    """RepackSubsets as subsets: one per distinct set of addresses, each address once, not-ready
    winning, sorted."""
    out = []
    for ports, ready, not_ready in repack_subsets(subsets):
        subset: dict = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if ports:
            subset["ports"] = [_endpoint_port(p) for p in ports]
        out.append(subset)
    return out


def _endpoint_port(port: tuple[str, int | None, str, str | None]) -> dict:
    name, number, protocol, app_protocol = port
    out: dict = {"name": name} if name else {}
    out.update(port=number, protocol=protocol)
    if app_protocol is not None:
        out["appProtocol"] = app_protocol
    return out


register_defaulter("Endpoints", default_endpoints)
