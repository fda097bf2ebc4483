"""PodSpec validation (pkg/apis/core/validation), shared by Pods and pod templates.

The same spec is checked for a Pod (`spec...`) and inside Deployments and ReplicaSets
(`spec.template.spec...`); `is_pod` switches on the few checks upstream applies to Pods only.
"""

from __future__ import annotations

import ipaddress

from kubewire.api import containers
from kubewire.api.access import (
    Errs,
    check_known,
    child,
    dict_items,
    get_bool,
    get_dict,
    get_enum,
    get_int,
    get_str,
    get_str_list,
    get_str_map,
    index,
)
from kubewire.api.errors import FieldError, duplicate, forbidden, invalid, not_supported, required
from kubewire.api.meta import IS_NEGATIVE, validate_labels
from kubewire.api.names import (
    inclusive_range_error,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
    name_is_dns_subdomain,
)

POD_SPEC_FIELDS = frozenset(
    {
        "volumes", "initContainers", "containers", "ephemeralContainers", "restartPolicy",
        "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "nodeSelector",
        "serviceAccountName", "serviceAccount", "automountServiceAccountToken", "nodeName", "hostNetwork",
        "hostPID", "hostIPC", "shareProcessNamespace", "securityContext", "imagePullSecrets", "hostname",
        "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases", "priorityClassName",
        "priority", "dnsConfig", "readinessGates", "runtimeClassName", "enableServiceLinks",
        "preemptionPolicy", "overhead", "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers",
        "schedulingGates", "resourceClaims", "resources", "hostnameOverride",
    }
)  # fmt: skip
VOLUME_SOURCES = frozenset(
    {
        "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs",
        "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker",
        "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk",
        "photonPersistentDisk", "projected", "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral",
        "image",
    }
)  # fmt: skip
BOOL_FIELDS = (
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "setHostnameAsFQDN",
    "hostUsers",
)
DNS_CONFIG_FIELDS = frozenset({"nameservers", "searches", "options"})
TOLERATION_FIELDS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})
AFFINITY_FIELDS = frozenset({"nodeAffinity", "podAffinity", "podAntiAffinity"})
NODE_AFFINITY_FIELDS = frozenset(
    {"requiredDuringSchedulingIgnoredDuringExecution", "preferredDuringSchedulingIgnoredDuringExecution"}
)

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MAX_DNS_NAMESERVERS = 3
MAX_DNS_SEARCH_PATHS = 32
MAX_DNS_SEARCH_CHARS = 2048
MAX_INT32 = 2**31 - 1
IP_EXAMPLE = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def validate_pod_spec(spec: dict, path: str, errs: Errs, *, is_pod: bool) -> None:
    check_known(spec, POD_SPEC_FIELDS, path, errs)
    grace = get_int(spec, "terminationGracePeriodSeconds", path, errs)
    if spec.get("terminationGracePeriodSeconds") is None:
        errs.append(required(child(path, "terminationGracePeriodSeconds")))
    elif grace is not None and grace < 0:
        errs.append(invalid(child(path, "terminationGracePeriodSeconds"), grace, IS_NEGATIVE))

    volumes = _validate_volumes(spec, path, errs)
    containers.validate_containers(spec, path, errs, volumes=volumes, grace=grace, is_pod=is_pod)
    if spec.get("ephemeralContainers"):
        detail = "cannot be set on create" if is_pod else "ephemeral containers not allowed in pod template"
        errs.append(forbidden(child(path, "ephemeralContainers"), detail))

    for flag in BOOL_FIELDS:
        get_bool(spec, flag, path, errs)
    if spec.get("hostNetwork") is True:
        _validate_host_network_ports(spec, path, errs, is_pod=is_pod)

    get_enum(spec, "restartPolicy", RESTART_POLICIES, path, errs)
    dns_policy = get_enum(spec, "dnsPolicy", DNS_POLICIES, path, errs)
    validate_labels(get_str_map(spec, "nodeSelector", path, errs), child(path, "nodeSelector"), errs)
    affinity = get_dict(spec, "affinity", path, errs)
    if affinity is not None:
        _validate_affinity(affinity, child(path, "affinity"), errs)
    _validate_dns_config(spec, dns_policy, path, errs)

    for name in ("serviceAccountName", "nodeName", "priorityClassName"):
        value = get_str(spec, name, path, errs)
        if value:
            errs.extend(invalid(child(path, name), value, m) for m in name_is_dns_subdomain(value))
    deadline = get_int(spec, "activeDeadlineSeconds", path, errs)
    if deadline is not None and not 1 <= deadline <= MAX_INT32:
        errs.append(
            invalid(child(path, "activeDeadlineSeconds"), deadline, inclusive_range_error(1, MAX_INT32))
        )
    for name in ("hostname", "subdomain"):
        value = get_str(spec, name, path, errs)
        if value:
            errs.extend(invalid(child(path, name), value, m) for m in is_dns1123_label(value))
    validate_tolerations(spec, path, errs)
    for _, gpath, gate in dict_items(spec, "readinessGates", path, errs):
        cond = get_str(gate, "conditionType", gpath, errs) or ""
        errs.extend(invalid(child(gpath, "conditionType"), cond, m) for m in is_qualified_name(cond))


def _validate_volumes(spec: dict, path: str, errs: Errs) -> set[str]:
    """Names and the one-source rule only; what is inside a source is not modelled yet."""
    names: set[str] = set()
    for _, vpath, vol in dict_items(spec, "volumes", path, errs):
        check_known(vol, VOLUME_SOURCES | {"name"}, vpath, errs)
        sources = [k for k in vol if k in VOLUME_SOURCES]
        if not sources:
            errs.append(required(vpath, "must specify a volume type"))
        for extra in sources[1:]:
            errs.append(forbidden(child(vpath, extra), "may not specify more than 1 volume type"))
        name = get_str(vol, "name", vpath, errs) or ""
        if not name:
            errs.append(required(child(vpath, "name")))
        else:
            errs.extend(invalid(child(vpath, "name"), name, m) for m in is_dns1123_label(name))
        if name in names:
            errs.append(duplicate(child(vpath, "name"), name))
        names.add(name)
    return names


def _validate_host_network_ports(spec: dict, path: str, errs: Errs, *, is_pod: bool) -> None:
    for _, cpath, c in dict_items(spec, "containers", path, []):
        for _, ppath, port in dict_items(c, "ports", cpath, []):
            host, cport = port.get("hostPort") or 0, port.get("containerPort")
            if (is_pod or host != 0) and host != cport:
                errs.append(
                    invalid(
                        child(ppath, "hostPort"),
                        host,
                        "must match `containerPort` when `hostNetwork` is true",
                    )
                )


def _validate_dns_config(spec: dict, dns_policy: str | None, path: str, errs: Errs) -> None:
    cpath = child(path, "dnsConfig")
    config = get_dict(spec, "dnsConfig", path, errs)
    if dns_policy == "None":
        if config is None:
            errs.append(required(cpath, "must provide `dnsConfig` when `dnsPolicy` is None"))
            return
        if not config.get("nameservers"):
            errs.append(
                required(
                    child(cpath, "nameservers"),
                    "must provide at least one DNS nameserver when `dnsPolicy` is None",
                )
            )
            return
    if config is None:
        return
    check_known(config, DNS_CONFIG_FIELDS, cpath, errs)
    nameservers = get_str_list(config, "nameservers", cpath, errs) or []
    if len(nameservers) > MAX_DNS_NAMESERVERS:
        errs.append(
            invalid(
                child(cpath, "nameservers"),
                nameservers,
                f"must not have more than {MAX_DNS_NAMESERVERS} nameservers",
            )
        )
    for i, ns in enumerate(nameservers):
        if not _valid_ip(ns):
            errs.append(invalid(index(child(cpath, "nameservers"), i), ns, IP_EXAMPLE))
    searches = get_str_list(config, "searches", cpath, errs) or []
    if len(searches) > MAX_DNS_SEARCH_PATHS:
        errs.append(
            invalid(
                child(cpath, "searches"),
                searches,
                f"must not have more than {MAX_DNS_SEARCH_PATHS} search paths",
            )
        )
    if len(" ".join(searches)) > MAX_DNS_SEARCH_CHARS:
        errs.append(
            invalid(
                child(cpath, "searches"),
                searches,
                f"must not have more than {MAX_DNS_SEARCH_CHARS} characters (including spaces) in the search list",
            )
        )
    for i, search in enumerate(searches):
        trimmed = search[:-1] if search.endswith(".") else search
        errs.extend(
            invalid(index(child(cpath, "searches"), i), trimmed, m) for m in is_dns1123_subdomain(trimmed)
        )
    for _, opath, option in dict_items(config, "options", cpath, errs):
        if not get_str(option, "name", opath, errs):
            errs.append(required(opath, "must not be empty"))


def validate_tolerations(spec: dict, path: str, errs: Errs) -> None:
    for _, tpath, tol in dict_items(spec, "tolerations", path, errs):
        check_known(tol, TOLERATION_FIELDS, tpath, errs)
        k = get_str(tol, "key", tpath, errs) or ""
        op = get_str(tol, "operator", tpath, errs) or ""
        value = get_str(tol, "value", tpath, errs) or ""
        effect = get_str(tol, "effect", tpath, errs) or ""
        seconds = get_int(tol, "tolerationSeconds", tpath, errs)
        if k:
            errs.extend(invalid(child(tpath, "key"), k, m) for m in is_qualified_name(k))
        if not k and op != "Exists":
            errs.append(
                invalid(
                    child(tpath, "operator"),
                    op,
                    'operator must be Exists when `key` is empty, which means "match all values and all keys"',
                )
            )
        if seconds is not None and effect != "NoExecute":
            errs.append(
                invalid(
                    child(tpath, "effect"),
                    effect,
                    "effect must be 'NoExecute' when `tolerationSeconds` is set",
                )
            )
        if op in ("Equal", ""):
            msgs = is_label_value(value)
            if msgs:
                errs.append(invalid(child(tpath, "operator"), value, ";".join(msgs)))
        elif op == "Exists":
            if value:
                errs.append(
                    invalid(
                        child(tpath, "operator"), value, "value must be empty when `operator` is 'Exists'"
                    )
                )
        else:
            errs.append(not_supported(child(tpath, "operator"), op, ("Equal", "Exists")))
        if effect and effect not in TAINT_EFFECTS:
            errs.append(not_supported(child(tpath, "effect"), effect, TAINT_EFFECTS))


# --- node affinity ---------------------------------------------------------------------------


def _validate_affinity(affinity: dict, path: str, errs: Errs) -> None:
    check_known(affinity, AFFINITY_FIELDS, path, errs)
    node = get_dict(affinity, "nodeAffinity", path, errs)
    if node is None:
        return
    npath = child(path, "nodeAffinity")
    check_known(node, NODE_AFFINITY_FIELDS, npath, errs)
    req = get_dict(node, "requiredDuringSchedulingIgnoredDuringExecution", npath, errs)
    if req is not None:
        rpath = child(npath, "requiredDuringSchedulingIgnoredDuringExecution")
        check_known(req, {"nodeSelectorTerms"}, rpath, errs)
        if not req.get("nodeSelectorTerms"):
            errs.append(
                required(child(rpath, "nodeSelectorTerms"), "must have at least one node selector term")
            )
        for _, tpath, term in dict_items(req, "nodeSelectorTerms", rpath, errs):
            _validate_node_selector_term(term, tpath, errs)
    for _, ppath, pref in dict_items(node, "preferredDuringSchedulingIgnoredDuringExecution", npath, errs):
        check_known(pref, {"weight", "preference"}, ppath, errs)
        weight = get_int(pref, "weight", ppath, errs) or 0
        if not 1 <= weight <= 100:
            errs.append(invalid(child(ppath, "weight"), weight, "must be in the range 1-100"))
        _validate_node_selector_term(
            get_dict(pref, "preference", ppath, errs) or {}, child(ppath, "preference"), errs
        )


def _validate_node_selector_term(term: dict, path: str, errs: Errs) -> None:
    check_known(term, {"matchExpressions", "matchFields"}, path, errs)
    for _, rpath, req in dict_items(term, "matchExpressions", path, errs):
        check_known(req, {"key", "operator", "values"}, rpath, errs)
        op = get_str(req, "operator", rpath, errs) or ""
        values = get_str_list(req, "values", rpath, errs) or []
        vpath = child(rpath, "values")
        if op in ("In", "NotIn"):
            if not values:
                errs.append(required(vpath, "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errs.append(
                    forbidden(vpath, "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
                )
        elif op in ("Gt", "Lt"):
            if len(values) != 1:
                errs.append(required(vpath, "must be specified single value when `operator` is 'Lt' or 'Gt'"))
        else:
            errs.append(invalid(child(rpath, "operator"), op, "not a valid selector operator"))
        k = get_str(req, "key", rpath, errs) or ""
        errs.extend(invalid(child(rpath, "key"), k, m) for m in is_qualified_name(k))
        for j, v in enumerate(values):
            errs.extend(invalid(index(vpath, j), v, m) for m in is_label_value(v))
    for _, fpath, req in dict_items(term, "matchFields", path, errs):
        check_known(req, {"key", "operator", "values"}, fpath, errs)
        op = get_str(req, "operator", fpath, errs) or ""
        values = get_str_list(req, "values", fpath, errs) or []
        if op in ("In", "NotIn"):
            if len(values) != 1:
                errs.append(
                    required(
                        child(fpath, "values"),
                        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                    )
                )
        else:
            errs.append(invalid(child(fpath, "operator"), op, "not a valid selector operator"))
        k = get_str(req, "key", fpath, errs) or ""
        if k != "metadata.name":
            errs.append(invalid(child(fpath, "key"), k, "not a valid field selector key"))
        else:
            for j, v in enumerate(values):
                errs.extend(invalid(index(child(fpath, "values"), j), v, m) for m in name_is_dns_subdomain(v))


def validate_pod_spec_errors(spec: dict, path: str, *, is_pod: bool) -> list[FieldError]:
    errs: Errs = []
    validate_pod_spec(spec, path, errs, is_pod=is_pod)
    return errs
