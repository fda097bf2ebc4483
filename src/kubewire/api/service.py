"""v1 Service and discovery.k8s.io/v1 EndpointSlice: defaulting and validation as the API server does.

Sources followed: pkg/apis/core/v1/defaults.go (SetDefaults_Service), pkg/apis/core/validation
(ValidateService, ValidateServiceUpdate, ValidateServiceClusterIPsRelatedFields), the Service
registry (pkg/registry/core/service: patchAllocatedValues, NormalizeClusterIPs,
dropTypeDependentFields, alloc.go initIPFamilyFields) and pkg/apis/discovery/validation.

The API server allocates a Service's IPs and ports *before* it validates (BeginCreate/BeginUpdate
run ahead of the strategy), so validation never sees an unallocated health-check port or a PUT that
simply left `clusterIP` out. `validate_service` therefore validates the object as it will be
stored, less the allocations themselves: it applies the same pure transforms to a copy and skips
only the "Required" checks that allocation satisfies. The allocations (and the cluster-dependent
IP family checks) happen in `kubewire.api.allocation.prepare_service`.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from kubewire.api.access import Errs, check_known, child, index, is_int, key
from kubewire.api.addresses import IP
from kubewire.api.addresses import parse_cidr_sloppy as parse_cidr
from kubewire.api.addresses import parse_ip_sloppy as parse_ip
from kubewire.api.defaults import register_defaulter
from kubewire.api.errors import (
    FieldError,
    GoValue,
    duplicate,
    forbidden,
    go_quote,
    go_string_slice,
    invalid,
    not_supported,
    required,
    type_invalid,
)
from kubewire.api.meta import FIELD_IMMUTABLE, validate_labels
from kubewire.api.names import (
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
    is_valid_port_name,
    is_valid_port_num,
    name_is_dns_subdomain,
)

# Enumerations as upstream lists them in "supported values" (sets.List sorts them).
SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
PROTOCOLS = ("SCTP", "TCP", "UDP")
SESSION_AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
# A slice literal upstream (PreferSameTrafficDistribution is on by default since 1.34): not sorted.
TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameZone", "PreferSameNode")
ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")

DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_AFFINITY_TIMEOUT = 86400
CLUSTER_IP_NONE = "None"

ANNOTATION_TOPOLOGY_MODE = "service.kubernetes.io/topology-mode"
ANNOTATION_TOPOLOGY_AWARE_HINTS = "service.kubernetes.io/topology-aware-hints"
ANNOTATION_LB_SOURCE_RANGES = "service.beta.kubernetes.io/load-balancer-source-ranges"

# EndpointSlice limits (pkg/apis/discovery/validation).
MAX_SLICE_ENDPOINTS = 1000
MAX_SLICE_ADDRESSES = 100
MAX_SLICE_PORTS = 20000
MAX_TOPOLOGY_LABELS = 16
MAX_ZONE_HINTS = 8
MAX_NODE_HINTS = 8


def ip_family(text: str) -> str:
    """The family name of an address ("IPv4", "IPv6", or "unknown"), as the registry's familyOf."""
    ip = parse_ip(text)
    return "unknown" if ip is None else ("IPv4" if ip.version == 4 else "IPv6")


def _is_link_local_multicast(ip: IP) -> bool:
    if ip.version == 4:
        return ip in ipaddress.IPv4Network("224.0.0.0/24")
    return ip.packed[0] == 0xFF and ip.packed[1] & 0x0F == 0x02


def is_valid_ip(path: str, value: str) -> list[FieldError]:
    if parse_ip(value) is None:
        return [invalid(path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")]
    return []


def is_valid_cidr(path: str, value: str) -> list[FieldError]:
    if parse_cidr(value) is None:
        return [invalid(path, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")]
    return []


def validate_endpoint_ip(value: str, path: str) -> list[FieldError]:
    """ValidateEndpointIP: addresses that make no sense as a service backend or external IP."""
    ip = parse_ip(value)
    if ip is None:
        return [invalid(path, value, "must be a valid IP address")]
    errs = []
    if ip.is_unspecified:
        errs.append(invalid(path, value, f"may not be unspecified ({value})"))
    if ip.is_loopback:
        errs.append(invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
    if ip.is_link_local:
        errs.append(invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
    if _is_link_local_multicast(ip):
        errs.append(
            invalid(path, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
        )
    return errs


def is_fully_qualified_domain_name(path: str, name: str) -> list[FieldError]:
    if not name:
        return [required(path)]
    name = name.removesuffix(".")
    msgs = is_dns1123_subdomain(name)
    if msgs:
        return [invalid(path, name, ",".join(msgs))]
    if len(name.split(".")) < 2:
        return [invalid(path, name, "should be a domain with at least two segments separated by dots")]
    for label in name.split("."):
        msgs = is_dns1123_label(label)
        if msgs:
            return [invalid(path, label, ",".join(msgs))]
    return []


def too_many(path: str, actual: int, maximum: int) -> FieldError:
    return FieldError(path, f"Too many: {actual}: must have at most {maximum} items")


# --- structural (decode-time) checks ------------------------------------------------------------

# A tiny schema: "string" | "integer" | "boolean" | "intstr" | "any" | ("list", item) |
# ("map", "string") | {field: schema}. Dicts are objects with a closed set of fields.
Schema = Any

_STR_MAP = ("map", "string")
_STR_LIST = ("list", "string")

SERVICE_PORT_SCHEMA = {
    "name": "string",
    "protocol": "string",
    "appProtocol": "string",
    "port": "integer",
    "targetPort": "intstr",
    "nodePort": "integer",
}
SERVICE_SPEC_SCHEMA = {
    "ports": ("list", SERVICE_PORT_SCHEMA),
    "selector": _STR_MAP,
    "clusterIP": "string",
    "clusterIPs": _STR_LIST,
    "type": "string",
    "externalIPs": _STR_LIST,
    "sessionAffinity": "string",
    "loadBalancerIP": "string",
    "loadBalancerSourceRanges": _STR_LIST,
    "externalName": "string",
    "externalTrafficPolicy": "string",
    "healthCheckNodePort": "integer",
    "publishNotReadyAddresses": "boolean",
    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": "integer"}},
    "ipFamilies": _STR_LIST,
    "ipFamilyPolicy": "string",
    "allocateLoadBalancerNodePorts": "boolean",
    "loadBalancerClass": "string",
    "internalTrafficPolicy": "string",
    "trafficDistribution": "string",
}
_PORT_STATUS_SCHEMA = {"port": "integer", "protocol": "string", "error": "string"}
_CONDITION_SCHEMA = {
    "type": "string",
    "status": "string",
    "observedGeneration": "integer",
    "lastTransitionTime": "string",
    "reason": "string",
    "message": "string",
}
SERVICE_SCHEMA = {
    "apiVersion": "string",
    "kind": "string",
    "metadata": "any",
    "spec": SERVICE_SPEC_SCHEMA,
    "status": {
        "loadBalancer": {
            "ingress": (
                "list",
                {
                    "ip": "string",
                    "hostname": "string",
                    "ipMode": "string",
                    "ports": ("list", _PORT_STATUS_SCHEMA),
                },
            )
        },
        "conditions": ("list", _CONDITION_SCHEMA),
    },
}
OBJECT_REFERENCE_SCHEMA = {
    "kind": "string",
    "namespace": "string",
    "name": "string",
    "uid": "string",
    "apiVersion": "string",
    "resourceVersion": "string",
    "fieldPath": "string",
}
ENDPOINT_SCHEMA = {
    "addresses": _STR_LIST,
    "conditions": {"ready": "boolean", "serving": "boolean", "terminating": "boolean"},
    "hostname": "string",
    "targetRef": OBJECT_REFERENCE_SCHEMA,
    "deprecatedTopology": _STR_MAP,
    "nodeName": "string",
    "zone": "string",
    "hints": {"forZones": ("list", {"name": "string"}), "forNodes": ("list", {"name": "string"})},
}
ENDPOINT_SLICE_SCHEMA = {
    "apiVersion": "string",
    "kind": "string",
    "metadata": "any",
    "addressType": "string",
    "endpoints": ("list", ENDPOINT_SCHEMA),
    "ports": ("list", {"name": "string", "protocol": "string", "port": "integer", "appProtocol": "string"}),
}

_TYPE_NAMES = {"string": "string", "integer": "integer", "boolean": "boolean", "intstr": "integer or string"}


def check_schema(value: Any, schema: Schema, path: str, errs: Errs) -> None:
    """What the API server's strict decoder rejects: wrong JSON types and unknown fields.
    A JSON null is always accepted (it is Go's zero value)."""
    if value is None or schema == "any":
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            errs.append(type_invalid(path, value, "object"))
            return
        check_known(value, schema.keys(), path, errs)
        for name, sub in schema.items():
            if name in value:
                check_schema(value[name], sub, child(path, name), errs)
        return
    if isinstance(schema, tuple):
        kind, item = schema
        if kind == "list":
            if not isinstance(value, list):
                errs.append(type_invalid(path, value, "array"))
                return
            for i, v in enumerate(value):
                check_schema(v, item, index(path, i), errs)
        else:
            if not isinstance(value, dict):
                errs.append(type_invalid(path, value, "object"))
                return
            for k, v in value.items():
                check_schema(v, item, key(path, str(k)), errs)
        return
    ok = {
        "string": isinstance(value, str),
        "integer": is_int(value),
        "boolean": isinstance(value, bool),
        "intstr": is_int(value) or isinstance(value, str),
    }[schema]
    if not ok:
        errs.append(type_invalid(path, value, _TYPE_NAMES[schema]))


# --- small readers over well-typed objects -------------------------------------------------------


def spec_of(svc: dict | None) -> dict:
    spec = (svc or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def _writable_spec(svc: dict) -> dict:
    spec = svc.get("spec")
    if not isinstance(spec, dict):
        spec = svc["spec"] = {}
    return spec


def svc_type(svc: dict | None) -> str:
    return spec_of(svc).get("type") or ""


def ports_of(svc: dict | None) -> list[dict]:
    return [p for p in spec_of(svc).get("ports") or [] if isinstance(p, dict)]


def cluster_ips_of(svc: dict | None) -> list[str] | None:
    """spec.clusterIPs, keeping Go's nil/empty distinction (None is nil)."""
    ips = spec_of(svc).get("clusterIPs")
    return list(ips) if isinstance(ips, list) else None


def ip_families_of(svc: dict | None) -> list[str]:
    return list(spec_of(svc).get("ipFamilies") or [])


def is_headless(svc: dict | None) -> bool:
    """isHeadlessService: exactly one clusterIPs entry, "None"."""
    ips = cluster_ips_of(svc) or []
    return len(ips) == 1 and ips[0] == CLUSTER_IP_NONE


def externally_accessible(svc: dict | None) -> bool:
    """apiservice.ExternallyAccessible."""
    t = svc_type(svc)
    return t in ("LoadBalancer", "NodePort") or (t == "ClusterIP" and bool(spec_of(svc).get("externalIPs")))


def needs_health_check(svc: dict | None) -> bool:
    """apiservice.NeedsHealthCheck: LoadBalancer with externalTrafficPolicy Local."""
    return (
        svc_type(svc) == "LoadBalancer"
        and externally_accessible(svc)
        and spec_of(svc).get("externalTrafficPolicy") == "Local"
    )


def needs_cluster_ip(svc: dict | None) -> bool:
    return svc_type(svc) != "ExternalName"


def needs_node_port(svc: dict | None) -> bool:
    return svc_type(svc) in ("NodePort", "LoadBalancer")


def _needs_hc_node_port(svc: dict | None) -> bool:
    """The registry's own variant (no externally-accessible check)."""
    return svc_type(svc) == "LoadBalancer" and spec_of(svc).get("externalTrafficPolicy") == "Local"


def should_allocate_node_ports(svc: dict | None) -> bool:
    t = svc_type(svc)
    if t == "NodePort":
        return True
    return t == "LoadBalancer" and spec_of(svc).get("allocateLoadBalancerNodePorts") is not False


def go_ip_families(families: list[str] | None) -> GoValue:
    if families is None:
        return GoValue("[]core.IPFamily(nil)")
    return GoValue("[]core.IPFamily{" + ", ".join(go_quote(f) for f in families) + "}")


def go_cluster_ips(svc: dict) -> GoValue:
    return GoValue(go_string_slice(cluster_ips_of(svc)))


# --- defaulting (SetDefaults_Service, SetDefaults_EndpointPort) ------------------------------------


def _unset(value: Any, *zeros: Any) -> bool:
    return value is None or any(value == z and type(value) is type(z) for z in zeros)


def default_service(obj: dict) -> None:
    """SetDefaults_Service. Cluster-dependent defaults (ipFamilies, ipFamilyPolicy) and allocated
    values are the registry's, filled by prepare_service."""
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    if not isinstance(spec, dict):
        return
    if spec.get("selector") == {}:
        # an empty map does not survive the API's encoding (omitempty, protobuf): no selector at all,
        # so the Service is selector-less, not one selecting every pod
        del spec["selector"]
    if _unset(spec.get("sessionAffinity"), ""):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        config = spec.get("sessionAffinityConfig")
        client_ip = config.get("clientIP") if isinstance(config, dict) else None
        if not isinstance(client_ip, dict) or client_ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": DEFAULT_AFFINITY_TIMEOUT}}
    if _unset(spec.get("type"), ""):
        spec["type"] = "ClusterIP"
    for port in spec.get("ports") or [] if isinstance(spec.get("ports"), list) else []:
        if not isinstance(port, dict):
            continue
        if _unset(port.get("protocol"), ""):
            port["protocol"] = "TCP"
        if _unset(port.get("targetPort"), 0, "") and (is_int(port.get("port")) or port.get("port") is None):
            port["targetPort"] = port.get("port") or 0
    if externally_accessible(obj) and _unset(spec.get("externalTrafficPolicy"), ""):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and spec["type"] in (
        "NodePort",
        "LoadBalancer",
        "ClusterIP",
    ):
        spec["internalTrafficPolicy"] = "Cluster"
    if spec["type"] == "LoadBalancer":
        if spec.get("allocateLoadBalancerNodePorts") is None:
            spec["allocateLoadBalancerNodePorts"] = True
        status = obj.get("status")
        lb = status.get("loadBalancer") if isinstance(status, dict) else None
        ingress = lb.get("ingress") if isinstance(lb, dict) else None
        for ing in ingress if isinstance(ingress, list) else []:
            if isinstance(ing, dict) and ing.get("ip") and ing.get("ipMode") is None:
                ing["ipMode"] = "VIP"


def default_endpointslice(obj: dict) -> None:
    """SetDefaults_EndpointPort: an unnamed TCP port unless told otherwise."""
    ports = obj.get("ports")
    for port in ports if isinstance(ports, list) else []:
        if isinstance(port, dict):
            if port.get("name") is None:
                port["name"] = ""
            if port.get("protocol") is None:
                port["protocol"] = "TCP"


register_defaulter("Service", default_service)
register_defaulter("EndpointSlice", default_endpointslice)


# --- the registry's transforms (pure; shared by validation and allocation) ------------------------


def normalize_cluster_ips(svc: dict, old: dict | None) -> None:
    """NormalizeClusterIPs: keep clusterIP and clusterIPs in step for clients that set only one."""
    spec = _writable_spec(svc)
    new_ip = spec.get("clusterIP") or ""
    new_ips = cluster_ips_of(svc)
    if old is None:
        if new_ip and not new_ips:
            spec["clusterIPs"] = [new_ip]
        return
    old_ip = spec_of(old).get("clusterIP") or ""
    old_ips = cluster_ips_of(old) or []
    if old_ips and not new_ips and old_ip == new_ip:
        spec["clusterIPs"] = list(old_ips)
        new_ips = spec["clusterIPs"]
    if old_ip != new_ip:
        same = (new_ips or []) == old_ips
        if old_ip and not new_ip:
            if same:
                spec["clusterIPs"] = None
        elif same:
            spec["clusterIPs"] = [new_ip]
    if spec.get("clusterIPs") is None:
        spec.pop("clusterIPs", None)


def patch_allocated_values(svc: dict, old: dict) -> None:
    """patchAllocatedValues: re-applying a manifest keeps what was allocated on the user's behalf."""
    spec, old_spec = _writable_spec(svc), spec_of(old)
    if needs_cluster_ip(old) and needs_cluster_ip(svc):
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if not cluster_ips_of(svc) and cluster_ips_of(old):
            spec["clusterIPs"] = list(cluster_ips_of(old) or [])
    if needs_node_port(old) and needs_node_port(svc):
        old_used = {p.get("nodePort") for p in ports_of(old) if p.get("nodePort")}
        new_used = {p.get("nodePort") for p in ports_of(svc) if p.get("nodePort")}
        used = old_used & new_used
        by_name = {p.get("name") or "": p.get("nodePort") or 0 for p in ports_of(old)}
        for p in ports_of(svc):
            if not p.get("nodePort"):
                value = by_name.get(p.get("name") or "", 0)
                if value and value not in used:
                    p["nodePort"] = value
    hc_patchable = _needs_hc_node_port(old) and _needs_hc_node_port(svc)
    if hc_patchable and not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]


def drop_type_dependent_fields(svc: dict, old: dict) -> None:
    """dropTypeDependentFields: a type change wipes the allocations the user did not touch."""
    spec, old_spec = _writable_spec(svc), spec_of(old)
    if needs_cluster_ip(old) and not needs_cluster_ip(svc):
        if (spec.get("clusterIP") or "") == (old_spec.get("clusterIP") or "") and (
            cluster_ips_of(svc) or []
        ) == (cluster_ips_of(old) or []):
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        if ip_families_of(svc) == ip_families_of(old):
            spec.pop("ipFamilies", None)
        if (spec.get("ipFamilyPolicy") or "") == (old_spec.get("ipFamilyPolicy") or ""):
            spec.pop("ipFamilyPolicy", None)
    if needs_node_port(old) and not needs_node_port(svc):
        old_ports = {p.get("nodePort") for p in ports_of(old) if p.get("nodePort")}
        if {p.get("nodePort") for p in ports_of(svc) if p.get("nodePort")} <= old_ports:
            for p in ports_of(svc):
                p.pop("nodePort", None)
    if (
        _needs_hc_node_port(old)
        and not _needs_hc_node_port(svc)
        and (spec.get("healthCheckNodePort") or 0) == (old_spec.get("healthCheckNodePort") or 0)
    ):
        spec.pop("healthCheckNodePort", None)
    if svc_type(old) == "LoadBalancer" and svc_type(svc) != "LoadBalancer":
        new_alloc, old_alloc = (
            spec.get("allocateLoadBalancerNodePorts"),
            old_spec.get("allocateLoadBalancerNodePorts"),
        )
        if new_alloc is not None and old_alloc is not None and new_alloc == old_alloc:
            spec.pop("allocateLoadBalancerNodePorts", None)
        if spec.get("loadBalancerClass") == old_spec.get("loadBalancerClass"):
            spec.pop("loadBalancerClass", None)


def _is_matching_prefer_dual_stack(svc: dict, old: dict | None) -> bool:
    if old is None or spec_of(svc).get("ipFamilyPolicy") is None:
        return False
    if svc_type(old) != svc_type(svc) or svc_type(svc) not in ("ClusterIP", "NodePort", "LoadBalancer"):
        return False
    if spec_of(svc).get("ipFamilyPolicy") != "PreferDualStack":
        return False
    if spec_of(old).get("ipFamilyPolicy") not in (None, "PreferDualStack"):
        return False
    same_ips = (spec_of(old).get("clusterIP") or "") == (spec_of(svc).get("clusterIP") or "") and (
        cluster_ips_of(old) or []
    ) == (cluster_ips_of(svc) or [])
    return same_ips and ip_families_of(old) == ip_families_of(svc)


def init_ip_family_fields(svc: dict, old: dict | None, families: tuple[str, ...] | None) -> list[FieldError]:
    """initIPFamilyFields: default ipFamilyPolicy and ipFamilies, rejecting what cannot be served.

    `families` are the cluster's service IP families, primary first; None means "not known here"
    (validation time), which skips the checks and defaults that depend on the cluster."""
    if svc_type(svc) == "ExternalName" or _is_matching_prefer_dual_stack(svc, old):
        return []
    spec = _writable_spec(svc)
    if spec.get("ipFamilyPolicy") is None:
        old_policy = spec_of(old).get("ipFamilyPolicy") if old is not None else None
        if old_policy is not None:
            spec["ipFamilyPolicy"] = old_policy
        elif spec.get("clusterIP") == CLUSTER_IP_NONE and not spec.get("selector"):
            spec["ipFamilyPolicy"] = "RequireDualStack"
        else:
            spec["ipFamilyPolicy"] = "SingleStack"
    policy = spec["ipFamilyPolicy"]

    errs = validate_cluster_ips_related_fields(svc)
    if errs:
        return errs
    policy_path = "spec.ipFamilyPolicy"
    ips = cluster_ips_of(svc) or []
    fams = ip_families_of(svc)
    if old is not None:
        if policy == "SingleStack":
            if ips == (cluster_ips_of(old) or []) and len(ips) > 1:
                spec["clusterIPs"] = ips = ips[:1]
            if fams == ip_families_of(old) and len(fams) > 1:
                spec["ipFamilies"] = fams = fams[:1]
        else:
            if ips and len(ips) < len(cluster_ips_of(old) or []):
                errs.append(
                    invalid(policy_path, policy, "must be 'SingleStack' to release the secondary cluster IP")
                )
            if fams and len(fams) < len(ip_families_of(old)):
                errs.append(
                    invalid(policy_path, policy, "must be 'SingleStack' to release the secondary IP family")
                )
    if policy == "SingleStack":
        if len(ips) == 2:
            errs.append(
                invalid(
                    policy_path,
                    policy,
                    "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
                )
            )
        if len(fams) == 2:
            errs.append(
                invalid(
                    policy_path,
                    policy,
                    "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
                )
            )
    for i, ip in enumerate(ips):
        if ip == CLUSTER_IP_NONE:
            break
        fam = ip_family(ip)
        if i >= len(fams):
            if families is not None and fam not in families:
                errs.append(
                    invalid(
                        index("spec.clusterIPs", i),
                        go_cluster_ips(svc),
                        f"{fam} is not configured on this cluster",
                    )
                )
            else:
                fams.append(fam)
    if fams:
        spec["ipFamilies"] = fams
    if errs or families is None:
        return errs

    if spec.get("clusterIP") == CLUSTER_IP_NONE and not spec.get("selector"):
        if not fams:
            fams = [families[0]]
        if len(fams) < 2 and policy != "SingleStack":
            fams.append("IPv6" if fams[0] == "IPv4" else "IPv4")
        spec["ipFamilies"] = fams
        return []
    if policy == "RequireDualStack" and len(families) < 2:
        errs.append(invalid(policy_path, policy, "this cluster is not configured for dual-stack services"))
    for i, fam in enumerate(fams):
        if fam not in families:
            errs.append(invalid(index("spec.ipFamilies", i), fam, "not configured on this cluster"))
    if errs:
        return errs
    if not fams:
        fams = [families[0]]
    if policy != "SingleStack" and len(fams) == 1 and len(families) == 2:
        fams.append("IPv6" if fams[0] == "IPv4" else "IPv4")
    spec["ipFamilies"] = fams
    return []


def as_stored(
    svc: dict, old: dict | None, families: tuple[str, ...] | None = None
) -> tuple[dict, list[FieldError]]:
    """A copy of `svc` after the registry's pre-validation steps, minus the allocations, and the
    errors those steps raise (which upstream reports instead of the validation errors)."""
    out = copy.deepcopy(svc)
    if old is not None:
        patch_allocated_values(out, old)
    normalize_cluster_ips(out, old)
    errs = init_ip_family_fields(out, old, families)
    if old is not None:
        drop_type_dependent_fields(out, old)
    return out, errs


# --- Service validation ---------------------------------------------------------------------------


def validate_service(obj: dict, old: dict | None) -> list[FieldError]:
    """ValidateServiceCreate / ValidateServiceUpdate for a defaulted, not yet allocated Service."""
    errs: Errs = []
    check_schema(obj, SERVICE_SCHEMA, "", errs)
    if any(e.message.startswith("Invalid value") for e in errs):
        return errs  # the decoder would have refused the document before any validation
    svc, family_errs = as_stored(obj, old)
    if family_errs:
        return errs + family_errs
    if old is not None:
        errs.extend(_validate_service_update(svc, old))
    errs.extend(validate_service_spec(svc, allocated=False))
    return errs


def _validate_service_update(svc: dict, old: dict) -> list[FieldError]:
    errs = _validate_upgrade_downgrade_cluster_ips(old, svc)
    errs += _validate_upgrade_downgrade_ip_families(old, svc)
    if svc_type(old) == "LoadBalancer" and svc_type(svc) == "LoadBalancer":
        new_class = spec_of(svc).get("loadBalancerClass")
        if new_class != spec_of(old).get("loadBalancerClass"):
            errs.append(invalid("spec.loadBalancerClass", new_class, "may not change once set"))
    hc_changed = (spec_of(svc).get("healthCheckNodePort") or 0) != (
        spec_of(old).get("healthCheckNodePort") or 0
    )
    if needs_health_check(old) and needs_health_check(svc) and hc_changed:
        errs.append(forbidden("spec.healthCheckNodePort", FIELD_IMMUTABLE))
    return errs


def _validate_upgrade_downgrade_cluster_ips(old: dict, svc: dict) -> list[FieldError]:
    errs: Errs = []
    if "ExternalName" in (svc_type(svc), svc_type(old)) or (is_headless(old) and is_headless(svc)):
        return errs
    old_ips, new_ips = cluster_ips_of(old) or [], cluster_ips_of(svc) or []
    value = go_cluster_ips(svc)
    if len(old_ips) == len(new_ips):
        for i, ip in enumerate(old_ips):
            if ip != new_ips[i]:
                errs.append(invalid(index("spec.clusterIPs", i), value, "may not change once set"))
    elif len(old_ips) > len(new_ips):
        if not new_ips:
            errs.append(invalid("spec.clusterIPs[0]", value, "primary clusterIP can not be unset"))
        if old_ips and new_ips and new_ips[0] != old_ips[0]:
            errs.append(invalid("spec.clusterIPs[0]", value, "may not change once set"))
        if len(new_ips) == 1 and spec_of(svc).get("ipFamilyPolicy") != "SingleStack":
            errs.append(
                invalid(
                    "spec.ipFamilyPolicy",
                    spec_of(svc).get("ipFamilyPolicy"),
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                )
            )
    elif old_ips and new_ips[0] != old_ips[0]:
        errs.append(invalid("spec.clusterIPs[0]", value, "may not change once set"))
    return errs


def _validate_upgrade_downgrade_ip_families(old: dict, svc: dict) -> list[FieldError]:
    errs: Errs = []
    if "ExternalName" in (svc_type(svc), svc_type(old)) or is_headless(svc) or is_headless(old):
        return errs
    old_f, new_f = ip_families_of(old), ip_families_of(svc)
    families_value = go_ip_families(spec_of(svc).get("ipFamilies"))
    # Upstream reports clusterIPs (not ipFamilies) as the value of two of these errors; kept.
    ips_value = go_cluster_ips(svc)
    if len(old_f) == len(new_f):
        for i, fam in enumerate(old_f):
            if fam != new_f[i]:
                errs.append(invalid("spec.ipFamilies[0]", families_value, "may not change once set"))
    elif len(old_f) > len(new_f):
        if not cluster_ips_of(svc):
            errs.append(invalid("spec.ipFamilies[0]", families_value, "primary ipFamily can not be unset"))
        if new_f and new_f[0] != old_f[0]:
            errs.append(invalid("spec.ipFamilies[0]", ips_value, "may not change once set"))
        if len(new_f) == 1 and spec_of(svc).get("ipFamilyPolicy") != "SingleStack":
            errs.append(
                invalid(
                    "spec.ipFamilyPolicy",
                    spec_of(svc).get("ipFamilyPolicy"),
                    "must be set to 'SingleStack' when releasing the secondary ipFamily",
                )
            )
    elif old_f and new_f and new_f[0] != old_f[0]:
        errs.append(invalid("spec.ipFamilies[0]", ips_value, "may not change once set"))
    return errs


def validate_cluster_ips_related_fields(svc: dict) -> list[FieldError]:
    """ValidateServiceClusterIPsRelatedFields."""
    if svc_type(svc) == "ExternalName":
        return []
    errs: Errs = []
    spec = spec_of(svc)
    cluster_ip = spec.get("clusterIP") or ""
    ips = cluster_ips_of(svc)
    value = go_cluster_ips(svc)
    path = "spec.clusterIPs"
    if cluster_ip:
        if not ips:
            errs.append(required(path))
        elif ips[0] != cluster_ip:
            errs.append(invalid(path, value, "first value must match `clusterIP`"))
    elif ips:
        errs.append(invalid(path, value, "must be empty when `clusterIP` is not specified"))

    seen: set[str] = set()
    for i, fam in enumerate(ip_families_of(svc)):
        if fam not in IP_FAMILIES:
            errs.append(not_supported(index("spec.ipFamilies", i), fam, IP_FAMILIES))
        if fam in seen:
            errs.append(duplicate(index("spec.ipFamilies", i), fam))
        seen.add(fam)
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in IP_FAMILY_POLICIES:
        errs.append(not_supported("spec.ipFamilyPolicy", policy, IP_FAMILY_POLICIES))

    ips = ips or []
    bad = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == CLUSTER_IP_NONE:
            if len(ips) > 1:
                bad = True
                errs.append(invalid(path, value, "'None' must be the first and only value"))
            continue
        ip_errs = is_valid_ip(index(path, i), ip)
        bad = bad or bool(ip_errs)
        errs.extend(ip_errs)
    if len(ips) > 2:
        errs.append(invalid(path, value, "may only hold up to 2 values"))
    if bad:
        return errs
    if len(ips) > 1 and {ip_family(ip) for ip in ips} != {"IPv4", "IPv6"}:
        errs.append(invalid(path, value, "may specify no more than one IP for each IP family"))
    fams = ip_families_of(svc)
    if not is_headless(svc) and ips and fams:
        for i, ip in enumerate(ips[: len(fams)]):
            if fams[i] == "IPv4" and ip_family(ip) == "IPv6":
                errs.append(
                    invalid(index(path, i), ip, f"expected an IPv4 value as indicated by `ipFamilies[{i}]`")
                )
            if fams[i] == "IPv6" and ip_family(ip) != "IPv6":
                errs.append(
                    invalid(index(path, i), ip, f"expected an IPv6 value as indicated by `ipFamilies[{i}]`")
                )
    return errs


def _go_service_port_key(protocol: str, port: int) -> GoValue:
    return GoValue(
        f'core.ServicePort{{Name:"", Protocol:{go_quote(protocol)}, AppProtocol:(*string)(nil), Port:{port}, '
        'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}'
    )


def validate_port_and_protocol(port: dict, path: str, errs: Errs) -> None:
    """A port number in range and a supported protocol, as a ServicePort or EndpointPort needs."""
    number = port.get("port") or 0
    errs.extend(invalid(child(path, "port"), number, m) for m in is_valid_port_num(number))
    protocol = port.get("protocol") or ""
    if not protocol:
        errs.append(required(child(path, "protocol")))
    elif protocol not in PROTOCOLS:
        errs.append(not_supported(child(path, "protocol"), protocol, PROTOCOLS))


def _validate_service_port(port: dict, require_name: bool, names: set[str], path: str, errs: Errs) -> None:
    name = port.get("name") or ""
    if require_name and not name:
        errs.append(required(child(path, "name")))
    elif name:
        errs.extend(invalid(child(path, "name"), name, m) for m in is_dns1123_label(name))
        if name in names:
            errs.append(duplicate(child(path, "name"), name))
        names.add(name)
    validate_port_and_protocol(port, path, errs)
    target = port.get("targetPort")
    target = 0 if target is None else target
    if is_int(target):
        errs.extend(invalid(child(path, "targetPort"), target, m) for m in is_valid_port_num(target))
    else:
        errs.extend(invalid(child(path, "targetPort"), target, m) for m in is_valid_port_name(target))
    app = port.get("appProtocol")
    if app is not None:
        errs.extend(invalid(child(path, "appProtocol"), app, m) for m in is_qualified_name(app))


def _validate_client_ip_affinity(config: dict | None, errs: Errs) -> None:
    path = "spec.sessionAffinityConfig"
    detail = "when session affinity type is ClientIP"
    if config is None:
        errs.append(required(path, detail))
        return
    client_ip = config.get("clientIP")
    if client_ip is None:
        errs.append(required(child(path, "clientIP"), detail))
        return
    timeout = client_ip.get("timeoutSeconds")
    tpath = f"{path}.clientIP.timeoutSeconds"
    if timeout is None:
        errs.append(required(tpath, detail))
    elif timeout <= 0 or timeout > MAX_AFFINITY_TIMEOUT:
        errs.append(invalid(tpath, timeout, f"must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}"))


def validate_service_spec(svc: dict, *, allocated: bool = True) -> list[FieldError]:
    """ValidateService without ObjectMeta (the framework checks that). With `allocated=False` the
    checks that allocation satisfies (a required healthCheckNodePort) are left out."""
    errs: Errs = []
    meta = svc.get("metadata") if isinstance(svc.get("metadata"), dict) else {}
    raw_annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    annotations = {k: v for k, v in raw_annotations.items() if isinstance(v, str)}
    if ANNOTATION_TOPOLOGY_MODE in annotations and ANNOTATION_TOPOLOGY_AWARE_HINTS in annotations:
        mode = annotations[ANNOTATION_TOPOLOGY_MODE]
        if mode != annotations[ANNOTATION_TOPOLOGY_AWARE_HINTS]:
            errs.append(
                invalid(
                    key("metadata.annotations", ANNOTATION_TOPOLOGY_MODE),
                    mode,
                    f"must match annotations[{ANNOTATION_TOPOLOGY_AWARE_HINTS}] when both are specified",
                )
            )
    spec = spec_of(svc)
    kind = svc_type(svc)
    ports = ports_of(svc)
    headless = is_headless(svc)
    if not ports and not headless and kind != "ExternalName":
        errs.append(required("spec.ports"))
    if kind in ("LoadBalancer", "NodePort") and headless:
        errs.append(
            invalid("spec.clusterIPs[0]", CLUSTER_IP_NONE, f"may not be set to 'None' for {kind} services")
        )
    elif kind == "ExternalName":
        if cluster_ips_of(svc):
            errs.append(forbidden("spec.clusterIPs", "may not be set for ExternalName services"))
        if ip_families_of(svc):
            errs.append(forbidden("spec.ipFamilies", "may not be set for ExternalName services"))
        if spec.get("ipFamilyPolicy") is not None:
            errs.append(forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"))
        cname = (spec.get("externalName") or "").removesuffix(".")
        if cname:
            errs.extend(invalid("spec.externalName", cname, m) for m in is_dns1123_subdomain(cname))
        else:
            errs.append(required("spec.externalName"))

    names: set[str] = set()
    for i, port in enumerate(ports):
        _validate_service_port(port, len(ports) > 1, names, index("spec.ports", i), errs)

    if spec.get("selector") is not None:
        validate_labels(spec["selector"], "spec.selector", errs)

    affinity = spec.get("sessionAffinity") or ""
    if not affinity:
        errs.append(required("spec.sessionAffinity"))
    elif affinity not in SESSION_AFFINITIES:
        errs.append(not_supported("spec.sessionAffinity", affinity, SESSION_AFFINITIES))
    if affinity == "ClientIP":
        _validate_client_ip_affinity(spec.get("sessionAffinityConfig"), errs)
    elif affinity == "None" and spec.get("sessionAffinityConfig") is not None:
        errs.append(forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"))

    errs.extend(validate_cluster_ips_related_fields(svc))

    for i, ip in enumerate(spec.get("externalIPs") or []):
        path = index("spec.externalIPs", i)
        errs.extend(is_valid_ip(path, ip) or validate_endpoint_ip(ip, path))

    if not kind:
        errs.append(required("spec.type"))
    elif kind not in SERVICE_TYPES:
        errs.append(not_supported("spec.type", kind, SERVICE_TYPES))

    if kind == "ClusterIP":
        for i, port in enumerate(ports):
            if port.get("nodePort"):
                errs.append(
                    forbidden(
                        index("spec.ports", i) + ".nodePort", "may not be used when `type` is 'ClusterIP'"
                    )
                )

    seen_node_ports: set[tuple[str, int]] = set()
    for i, port in enumerate(ports):
        if not port.get("nodePort"):
            continue
        np_key = (port.get("protocol") or "", port["nodePort"])
        if np_key in seen_node_ports:
            errs.append(duplicate(index("spec.ports", i) + ".nodePort", port["nodePort"]))
        seen_node_ports.add(np_key)
    seen_ports: set[tuple[str, int]] = set()
    for i, port in enumerate(ports):
        p_key = (port.get("protocol") or "", port.get("port") or 0)
        if p_key in seen_ports:
            errs.append(duplicate(index("spec.ports", i), _go_service_port_key(*p_key)))
        seen_ports.add(p_key)

    ranges = spec.get("loadBalancerSourceRanges") or []
    if ranges:
        path = "spec.LoadBalancerSourceRanges"  # sic: upstream's path has the capital L
        if kind != "LoadBalancer":
            errs.append(forbidden(path, "may only be used when `type` is 'LoadBalancer'"))
        for i, value in enumerate(ranges):
            errs.extend(is_valid_cidr(index(path, i), value.strip()))
    elif ANNOTATION_LB_SOURCE_RANGES in annotations:
        path = key("metadata.annotations", ANNOTATION_LB_SOURCE_RANGES)
        if kind != "LoadBalancer":
            errs.append(forbidden(path, "may only be used when `type` is 'LoadBalancer'"))
        value = annotations[ANNOTATION_LB_SOURCE_RANGES].strip()
        if value:
            for cidr in value.split(","):
                errs.extend(is_valid_cidr(path, cidr.strip()))

    if spec.get("allocateLoadBalancerNodePorts") is not None and kind != "LoadBalancer":
        errs.append(
            forbidden("spec.allocateLoadBalancerNodePorts", "may only be used when `type` is 'LoadBalancer'")
        )
    if kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        errs.append(required("allocateLoadBalancerNodePorts"))  # sic: upstream omits "spec."

    lb_class = spec.get("loadBalancerClass")
    if kind == "LoadBalancer":
        if lb_class is not None:
            errs.extend(invalid("spec.loadBalancerClass", lb_class, m) for m in is_qualified_name(lb_class))
    elif lb_class is not None:
        errs.append(forbidden("spec.loadBalancerClass", "may only be used when `type` is 'LoadBalancer'"))

    etp = spec.get("externalTrafficPolicy") or ""
    if not externally_accessible(svc):
        if etp:
            errs.append(
                invalid(
                    "spec.externalTrafficPolicy", etp, "may only be set for externally-accessible services"
                )
            )
    elif not etp:
        errs.append(required("spec.externalTrafficPolicy"))
    elif etp not in TRAFFIC_POLICIES:
        errs.append(not_supported("spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES))
    hc = spec.get("healthCheckNodePort") or 0
    if not needs_health_check(svc):
        if hc:
            errs.append(
                invalid(
                    "spec.healthCheckNodePort",
                    hc,
                    "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
                )
            )
    elif not hc:
        if allocated:
            errs.append(required("spec.healthCheckNodePort"))
    else:
        errs.extend(invalid("spec.healthCheckNodePort", hc, m) for m in is_valid_port_num(hc))

    itp = spec.get("internalTrafficPolicy")
    if itp is None:
        if kind in ("NodePort", "LoadBalancer", "ClusterIP"):
            errs.append(required("spec.internalTrafficPolicy"))
    elif itp not in TRAFFIC_POLICIES:
        errs.append(not_supported("spec.internalTrafficPolicy", itp, TRAFFIC_POLICIES))

    distribution = spec.get("trafficDistribution")
    if distribution is not None and distribution not in TRAFFIC_DISTRIBUTIONS:
        errs.append(not_supported("spec.trafficDistribution", distribution, TRAFFIC_DISTRIBUTIONS))
    return errs


# --- EndpointSlice validation ----------------------------------------------------------------------


def validate_endpointslice(obj: dict, old: dict | None) -> list[FieldError]:
    """ValidateEndpointSliceCreate / ValidateEndpointSliceUpdate for a user-made (or any) slice."""
    errs: Errs = []
    check_schema(obj, ENDPOINT_SLICE_SCHEMA, "", errs)
    if any(e.message.startswith("Invalid value") for e in errs):
        return errs
    address_type = obj.get("addressType") or ""
    if not address_type:
        errs.append(required("addressType"))
    elif address_type not in ADDRESS_TYPES:
        errs.append(not_supported("addressType", address_type, ADDRESS_TYPES))
    _validate_slice_endpoints(obj.get("endpoints") or [], address_type, errs)
    _validate_slice_ports(obj.get("ports") or [], errs)
    if old is not None and address_type != (old.get("addressType") or ""):
        errs.append(invalid("addressType", address_type, FIELD_IMMUTABLE))
    return errs


def _validate_slice_endpoints(endpoints: list, address_type: str, errs: Errs) -> None:
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        errs.append(too_many("endpoints", len(endpoints), MAX_SLICE_ENDPOINTS))
        return
    for i, ep in enumerate(endpoints):
        if not isinstance(ep, dict):
            continue
        path = index("endpoints", i)
        apath = child(path, "addresses")
        addresses = ep.get("addresses") or []
        if not addresses:
            errs.append(required(apath, "must contain at least 1 address"))
        elif len(addresses) > MAX_SLICE_ADDRESSES:
            errs.append(too_many(apath, len(addresses), MAX_SLICE_ADDRESSES))
        for j, address in enumerate(addresses):
            ipath = index(apath, j)
            ip = parse_ip(address)
            if address_type == "IPv4":
                if ip is None or ip.version != 4:
                    errs.append(invalid(ipath, address, "must be a valid IPv4 address"))
                errs.extend(validate_endpoint_ip(address, ipath))
            elif address_type == "IPv6":
                if ip is None or ip.version != 6:
                    errs.append(invalid(ipath, address, "must be a valid IPv6 address"))
                errs.extend(validate_endpoint_ip(address, ipath))
            elif address_type == "FQDN":
                errs.extend(is_fully_qualified_domain_name(ipath, address))
        node_name = ep.get("nodeName")
        if node_name is not None:
            errs.extend(
                invalid(child(path, "nodeName"), node_name, m) for m in name_is_dns_subdomain(node_name)
            )
        topology = ep.get("deprecatedTopology") or {}
        tpath = child(path, "deprecatedTopology")
        if len(topology) > MAX_TOPOLOGY_LABELS:
            errs.append(too_many(tpath, len(topology), MAX_TOPOLOGY_LABELS))
        validate_labels(topology, tpath, errs)
        hostname = ep.get("hostname")
        if hostname is not None:
            errs.extend(invalid(child(path, "hostname"), hostname, m) for m in is_dns1123_label(hostname))
        if ep.get("hints") is not None:
            _validate_hints(ep["hints"], child(path, "hints"), errs)


def _validate_hints(hints: dict, path: str, errs: Errs) -> None:
    zpath = child(path, "forZones")
    zones = hints.get("forZones") or []
    if len(zones) > MAX_ZONE_HINTS:
        errs.append(too_many(zpath, len(zones), MAX_ZONE_HINTS))
        return
    seen: set[str] = set()
    for i, zone in enumerate(zones):
        name = (zone or {}).get("name") or ""
        npath = child(index(zpath, i), "name")
        if name in seen:
            errs.append(duplicate(npath, name))
        seen.add(name)
        errs.extend(invalid(npath, name, m) for m in is_label_value(name))
    npath_root = child(path, "forNodes")
    nodes = hints.get("forNodes") or []
    if len(nodes) > MAX_NODE_HINTS:
        errs.append(too_many(npath_root, len(nodes), MAX_NODE_HINTS))
        return
    seen = set()
    for i, node in enumerate(nodes):
        name = (node or {}).get("name") or ""
        npath = child(index(npath_root, i), "name")
        if name in seen:
            errs.append(duplicate(npath, name))
        seen.add(name)
        errs.extend(invalid(npath, name, m) for m in name_is_dns_subdomain(name))


def _validate_slice_ports(ports: list, errs: Errs) -> None:
    if len(ports) > MAX_SLICE_PORTS:
        errs.append(too_many("ports", len(ports), MAX_SLICE_PORTS))
        return
    names: set[str] = set()
    for i, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        path = index("ports", i)
        name = port.get("name") or ""
        if name:
            errs.extend(invalid(child(path, "name"), name, m) for m in is_dns1123_label(name))
        if name in names:
            errs.append(duplicate(child(path, "name"), name))
        names.add(name)
        protocol = port.get("protocol")
        if protocol is None:
            errs.append(required(child(path, "protocol")))
        elif protocol not in PROTOCOLS:
            errs.append(not_supported(child(path, "protocol"), protocol, PROTOCOLS))
        app = port.get("appProtocol")
        if app is not None:
            errs.extend(invalid(child(path, "appProtocol"), app, m) for m in is_qualified_name(app))
