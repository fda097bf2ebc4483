"""Container-level validation: names, images, ports, env, mounts, probes and lifecycle hooks.

Ports and probes matter most to kubewire: the echo workload serves every declared containerPort,
Services resolve named targetPorts through them, and readiness probes decide EndpointSlice
readiness, so these follow upstream closely.
"""

from __future__ import annotations

from kubewire.api.access import (
    Errs,
    check_known,
    child,
    dict_items,
    get_bool,
    get_dict,
    get_enum,
    get_int,
    get_int_or_str,
    get_str,
    get_str_list,
    is_int,
)
from kubewire.api.errors import duplicate, forbidden, invalid, not_found, not_supported, required
from kubewire.api.meta import IS_NEGATIVE
from kubewire.api.names import (
    is_config_map_key,
    is_dns1123_label,
    is_env_var_name,
    is_http_header_name,
    is_qualified_name,
    is_valid_port_name,
    is_valid_port_num,
    name_is_dns_subdomain,
)

CONTAINER_FIELDS = frozenset(
    {
        "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
        "resizePolicy", "restartPolicy", "restartPolicyRules", "volumeMounts", "volumeDevices",
        "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
        "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty",
    }
)  # fmt: skip
PORT_FIELDS = frozenset({"name", "hostPort", "containerPort", "protocol", "hostIP"})
ENV_FIELDS = frozenset({"name", "value", "valueFrom"})
ENV_SOURCE_FIELDS = frozenset(
    {"fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef", "fileKeyRef"}
)
ENV_FROM_FIELDS = frozenset({"prefix", "configMapRef", "secretRef"})
MOUNT_FIELDS = frozenset(
    {"name", "readOnly", "recursiveReadOnly", "mountPath", "subPath", "mountPropagation", "subPathExpr"}
)
PROBE_TIMING = (
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
)
PROBE_FIELDS = frozenset(
    {"exec", "httpGet", "tcpSocket", "grpc", "terminationGracePeriodSeconds", *PROBE_TIMING}
)
HANDLER_FIELDS = {
    "exec": frozenset({"command"}),
    "httpGet": frozenset({"path", "port", "host", "scheme", "httpHeaders"}),
    "tcpSocket": frozenset({"port", "host"}),
    "grpc": frozenset({"port", "service"}),
    "sleep": frozenset({"seconds"}),
}

PROTOCOLS = ("SCTP", "TCP", "UDP")  # sorted, as upstream prints its set
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
HTTP_SCHEMES = ("HTTP", "HTTPS")
ENV_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
# Everything ConvertDownwardAPIFieldLabel knows, of which env vars accept ENV_FIELD_PATHS.
_DOWNWARD_LABELS = frozenset(
    {
        *ENV_FIELD_PATHS,
        "metadata.annotations",
        "metadata.labels",
        "spec.restartPolicy",
        "spec.schedulerName",
        "status.phase",
    }
)
RESOURCE_FIELD_PATHS = (
    "limits.cpu",
    "limits.ephemeral-storage",
    "limits.memory",
    "requests.cpu",
    "requests.ephemeral-storage",
    "requests.memory",
)


def validate_containers(
    spec: dict, path: str, errs: Errs, *, volumes: set[str], grace: int | None, is_pod: bool
) -> None:
    cpath = child(path, "containers")
    regular = dict_items(spec, "containers", path, errs)
    if not spec.get("containers"):
        errs.append(required(cpath))
    names: set[str] = set()
    for _, ipath, c in regular:
        _validate_common(c, ipath, errs, volumes=volumes, is_pod=is_pod)
        name = c.get("name") if isinstance(c.get("name"), str) else None
        if name is not None:
            if name in names:
                errs.append(duplicate(child(ipath, "name"), name))
            names.add(name)
        _validate_probes_and_hooks(c, ipath, errs, grace)
        if c.get("restartPolicy") is not None:
            errs.append(forbidden(child(ipath, "restartPolicy"), "may not be set for non-init containers"))
    _check_host_ports([(p, c) for _, p, c in regular], errs)

    for _, ipath, c in dict_items(spec, "initContainers", path, errs):
        _validate_common(c, ipath, errs, volumes=volumes, is_pod=is_pod)
        policy = get_str(c, "restartPolicy", ipath, errs)
        if policy is not None and policy != "Always":
            errs.append(not_supported(child(ipath, "restartPolicy"), policy, ("Always",)))
        name = c.get("name") if isinstance(c.get("name"), str) else None
        if name is not None and name in names:
            errs.append(duplicate(child(ipath, "name"), name))
        elif name:
            names.add(name)
        _check_host_ports([(ipath, c)], errs)
        if policy == "Always":
            _validate_probes_and_hooks(c, ipath, errs, grace)
        else:
            for hook in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if c.get(hook) is not None:
                    errs.append(
                        forbidden(
                            child(ipath, hook),
                            "may not be set for init containers without restartPolicy=Always",
                        )
                    )


def _validate_common(c: dict, path: str, errs: Errs, *, volumes: set[str], is_pod: bool) -> None:
    check_known(c, CONTAINER_FIELDS, path, errs)
    name = get_str(c, "name", path, errs)
    if not name:
        if c.get("name") in (None, ""):
            errs.append(required(child(path, "name")))
    else:
        errs.extend(invalid(child(path, "name"), name, m) for m in is_dns1123_label(name))
    image = get_str(c, "image", path, errs)
    if c.get("image") in (None, ""):
        errs.append(required(child(path, "image")))
    elif is_pod and image is not None and image != image.strip():
        errs.append(invalid(child(path, "image"), image, "must not have leading or trailing whitespace"))
    get_enum(c, "terminationMessagePolicy", TERMINATION_MESSAGE_POLICIES, path, errs)
    get_str(c, "terminationMessagePath", path, errs)
    get_str(c, "workingDir", path, errs)
    get_str_list(c, "command", path, errs)
    get_str_list(c, "args", path, errs)
    for flag in ("stdin", "stdinOnce", "tty"):
        get_bool(c, flag, path, errs)
    get_dict(c, "resources", path, errs)
    get_dict(c, "securityContext", path, errs)
    _validate_ports(c, path, errs)
    _validate_env(c, path, errs)
    _validate_env_from(c, path, errs)
    _validate_mounts(c, path, errs, volumes)
    get_enum(c, "imagePullPolicy", PULL_POLICIES, path, errs)


def _validate_ports(c: dict, path: str, errs: Errs) -> None:
    names: set[str] = set()
    for _, ppath, port in dict_items(c, "ports", path, errs):
        check_known(port, PORT_FIELDS, ppath, errs)
        name = get_str(port, "name", ppath, errs)
        if name:
            msgs = is_valid_port_name(name)
            errs.extend(invalid(child(ppath, "name"), name, m) for m in msgs)
            if not msgs:
                if name in names:
                    errs.append(duplicate(child(ppath, "name"), name))
                names.add(name)
        container_port = get_int(port, "containerPort", ppath, errs)
        if port.get("containerPort") in (None, 0):
            errs.append(required(child(ppath, "containerPort")))
        elif container_port is not None:
            errs.extend(
                invalid(child(ppath, "containerPort"), container_port, m)
                for m in is_valid_port_num(container_port)
            )
        host_port = get_int(port, "hostPort", ppath, errs)
        if host_port:
            errs.extend(invalid(child(ppath, "hostPort"), host_port, m) for m in is_valid_port_num(host_port))
        get_str(port, "hostIP", ppath, errs)
        get_enum(port, "protocol", PROTOCOLS, ppath, errs)


def _check_host_ports(containers: list[tuple[str, dict]], errs: Errs) -> None:
    seen: set[str] = set()
    for cpath, c in containers:
        for _, ppath, port in dict_items(c, "ports", cpath, []):
            host_port = port.get("hostPort")
            if not is_int(host_port) or host_port == 0:
                continue
            ident = f"{port.get('protocol') or ''}/{port.get('hostIP') or ''}/{host_port}"
            if ident in seen:
                errs.append(duplicate(child(ppath, "hostPort"), ident))
            seen.add(ident)


# --- env -------------------------------------------------------------------------------------


def _validate_env(c: dict, path: str, errs: Errs) -> None:
    for _, epath, env in dict_items(c, "env", path, errs):
        check_known(env, ENV_FIELDS, epath, errs)
        name = get_str(env, "name", epath, errs)
        if not name:
            if env.get("name") in (None, ""):
                errs.append(required(child(epath, "name")))
        else:
            errs.extend(invalid(child(epath, "name"), name, m) for m in is_env_var_name(name))
        value = get_str(env, "value", epath, errs) or ""
        source = get_dict(env, "valueFrom", epath, errs)
        if source is not None:
            _validate_env_source(source, value, child(epath, "valueFrom"), errs)


def _validate_env_source(source: dict, value: str, path: str, errs: Errs) -> None:
    check_known(source, ENV_SOURCE_FIELDS, path, errs)
    count = 0
    field_ref = get_dict(source, "fieldRef", path, errs)
    if field_ref is not None:
        count += 1
        _validate_field_ref(field_ref, child(path, "fieldRef"), errs)
    resource_ref = get_dict(source, "resourceFieldRef", path, errs)
    if resource_ref is not None:
        count += 1
        rpath = child(path, "resourceFieldRef")
        resource = get_str(resource_ref, "resource", rpath, errs)
        if not resource:
            errs.append(required(child(rpath, "resource")))
        elif resource not in RESOURCE_FIELD_PATHS and not resource.startswith(
            ("requests.hugepages-", "limits.hugepages-")
        ):
            errs.append(not_supported(child(rpath, "resource"), resource, RESOURCE_FIELD_PATHS))
    for ref in ("configMapKeyRef", "secretKeyRef"):
        selector = get_dict(source, ref, path, errs)
        if selector is not None:
            count += 1
            _validate_key_selector(selector, child(path, ref), errs)
    if source.get("fileKeyRef") is not None:
        count += 1
    if count == 0:
        errs.append(
            invalid(
                path,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            )
        )
    elif value:
        errs.append(invalid(path, "", "may not be specified when `value` is not empty"))
    elif count > 1:
        errs.append(invalid(path, "", "may not have more than one field specified at a time"))


def _split_subscript(field_path: str) -> tuple[str, str] | None:
    """fieldpath.SplitMaybeSubscriptedPath: "metadata.labels['app']" -> ("metadata.labels", "app")."""
    if not field_path.endswith("']"):
        return None
    base, sep, sub = field_path[:-2].partition("['")
    return (base, sub) if sep and base else None


def _validate_field_ref(ref: dict, path: str, errs: Errs) -> None:
    check_known(ref, {"apiVersion", "fieldPath"}, path, errs)
    api_version = get_str(ref, "apiVersion", path, errs)
    field_path = get_str(ref, "fieldPath", path, errs)
    if not api_version:
        errs.append(required(child(path, "apiVersion")))
        return
    if not field_path:
        errs.append(required(child(path, "fieldPath")))
        return
    fpath = child(path, "fieldPath")
    if api_version != "v1":
        errs.append(
            invalid(fpath, field_path, f"error converting fieldPath: unsupported pod version: {api_version}")
        )
        return
    split = _split_subscript(field_path)
    if split is not None:
        base, sub = split
        if base == "metadata.annotations":
            errs.extend(invalid(path, sub.lower(), m) for m in is_qualified_name(sub.lower()))
        elif base == "metadata.labels":
            errs.extend(invalid(path, sub, m) for m in is_qualified_name(sub))
        else:
            errs.append(
                invalid(
                    fpath,
                    field_path,
                    f"error converting fieldPath: field label does not support subscript: {field_path}",
                )
            )
        return
    label = "spec.nodeName" if field_path == "spec.host" else field_path
    if label not in _DOWNWARD_LABELS:
        errs.append(
            invalid(fpath, field_path, f"error converting fieldPath: field label not supported: {field_path}")
        )
    elif label not in ENV_FIELD_PATHS:
        errs.append(not_supported(fpath, label, ENV_FIELD_PATHS))


def _validate_key_selector(selector: dict, path: str, errs: Errs) -> None:
    check_known(selector, {"name", "key", "optional"}, path, errs)
    name = get_str(selector, "name", path, errs) or ""
    errs.extend(invalid(child(path, "name"), name, m) for m in name_is_dns_subdomain(name))
    k = get_str(selector, "key", path, errs)
    if not k:
        errs.append(required(child(path, "key")))
    else:
        errs.extend(invalid(child(path, "key"), k, m) for m in is_config_map_key(k))
    get_bool(selector, "optional", path, errs)


def _validate_env_from(c: dict, path: str, errs: Errs) -> None:
    list_path = child(path, "envFrom")
    for _, epath, source in dict_items(c, "envFrom", path, errs):
        check_known(source, ENV_FROM_FIELDS, epath, errs)
        prefix = get_str(source, "prefix", epath, errs)
        if prefix:
            errs.extend(invalid(child(epath, "prefix"), prefix, m) for m in is_env_var_name(prefix))
        count = 0
        for ref in ("configMapRef", "secretRef"):
            target = get_dict(source, ref, epath, errs)
            if target is None:
                continue
            count += 1
            rpath = child(epath, ref)
            check_known(target, {"name", "optional"}, rpath, errs)
            name = get_str(target, "name", rpath, errs)
            if not name:
                errs.append(required(child(rpath, "name")))
            else:
                errs.extend(invalid(child(rpath, "name"), name, m) for m in name_is_dns_subdomain(name, True))
        if count == 0:
            errs.append(invalid(list_path, "", "must specify one of: `configMapRef` or `secretRef`"))
        elif count > 1:
            errs.append(invalid(list_path, "", "may not have more than one field specified at a time"))


def _validate_mounts(c: dict, path: str, errs: Errs, volumes: set[str]) -> None:
    mount_points: set[str] = set()
    for _, mpath, mount in dict_items(c, "volumeMounts", path, errs):
        check_known(mount, MOUNT_FIELDS, mpath, errs)
        name = get_str(mount, "name", mpath, errs) or ""
        if not name:
            errs.append(required(child(mpath, "name")))
        if name not in volumes:
            errs.append(not_found(child(mpath, "name"), name))
        mount_path = get_str(mount, "mountPath", mpath, errs) or ""
        if not mount_path:
            errs.append(required(child(mpath, "mountPath")))
        if mount_path in mount_points:
            errs.append(invalid(child(mpath, "mountPath"), mount_path, "must be unique"))
        mount_points.add(mount_path)
        get_bool(mount, "readOnly", mpath, errs)


# --- probes and lifecycle hooks --------------------------------------------------------------


def _validate_probes_and_hooks(c: dict, path: str, errs: Errs, grace: int | None) -> None:
    lifecycle = get_dict(c, "lifecycle", path, errs)
    if lifecycle is not None:
        lpath = child(path, "lifecycle")
        check_known(lifecycle, {"postStart", "preStop", "stopSignal"}, lpath, errs)
        for hook in ("postStart", "preStop"):
            handler = get_dict(lifecycle, hook, lpath, errs)
            if handler is not None:
                _validate_handler(
                    handler, child(lpath, hook), errs, grace, ("exec", "httpGet", "tcpSocket", "sleep")
                )
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = get_dict(c, kind, path, errs)
        if probe is not None:
            _validate_probe(probe, child(path, kind), errs, grace, kind)


def _validate_probe(probe: dict, path: str, errs: Errs, grace: int | None, kind: str) -> None:
    check_known(probe, PROBE_FIELDS, path, errs)
    _validate_handler(probe, path, errs, grace, ("exec", "httpGet", "tcpSocket", "grpc"))
    for name in PROBE_TIMING:
        value = get_int(probe, name, path, errs)
        if value is not None and value < 0:
            errs.append(invalid(child(path, name), value, IS_NEGATIVE))
    probe_grace = get_int(probe, "terminationGracePeriodSeconds", path, errs)
    if probe_grace is not None and probe_grace <= 0:
        errs.append(
            invalid(child(path, "terminationGracePeriodSeconds"), probe_grace, "must be greater than 0")
        )
    if kind in ("livenessProbe", "startupProbe"):
        success = probe.get("successThreshold", 0)
        if is_int(success) and success != 1:
            errs.append(invalid(child(path, "successThreshold"), success, "must be 1"))
    elif probe_grace is not None:
        errs.append(
            invalid(
                child(path, "terminationGracePeriodSeconds"),
                probe_grace,
                "must not be set for readinessProbes",
            )
        )


def _validate_handler(
    handler: dict, path: str, errs: Errs, grace: int | None, kinds: tuple[str, ...]
) -> None:
    if kinds[-1] == "sleep":
        check_known(handler, kinds, path, errs)
    found = False
    for kind in kinds:
        action = get_dict(handler, kind, path, errs)
        if action is None:
            continue
        apath = child(path, kind)
        if found:
            errs.append(forbidden(apath, "may not specify more than 1 handler type"))
            continue
        found = True
        check_known(action, HANDLER_FIELDS[kind], apath, errs)
        if kind == "exec":
            if not get_str_list(action, "command", apath, errs):
                errs.append(required(child(apath, "command")))
        elif kind == "httpGet":
            _validate_http_get(action, apath, errs)
        elif kind == "tcpSocket":
            _validate_port_num_or_name(action, apath, errs)
        elif kind == "grpc":
            port = get_int(action, "port", apath, errs)
            port = 0 if port is None else port
            errs.extend(invalid(child(apath, "port"), port, m) for m in is_valid_port_num(port))
        elif kind == "sleep":
            seconds = get_int(action, "seconds", apath, errs) or 0
            if grace is not None and not 0 <= seconds <= grace:
                errs.append(
                    invalid(
                        apath,
                        seconds,
                        f"must be non-negative and less than terminationGracePeriodSeconds ({grace})",
                    )
                )
    if not found:
        errs.append(required(path, "must specify a handler type"))


def _validate_http_get(action: dict, path: str, errs: Errs) -> None:
    if not get_str(action, "path", path, errs):
        errs.append(required(child(path, "path")))
    _validate_port_num_or_name(action, path, errs)
    scheme = get_str(action, "scheme", path, errs) or ""
    if scheme not in HTTP_SCHEMES:
        errs.append(not_supported(child(path, "scheme"), scheme, HTTP_SCHEMES))
    for _, hpath, header in dict_items(action, "httpHeaders", path, errs):
        name = get_str(header, "name", hpath, errs) or ""
        errs.extend(invalid(child(path, "httpHeaders"), name, m) for m in is_http_header_name(name))


def _validate_port_num_or_name(action: dict, path: str, errs: Errs) -> None:
    port = get_int_or_str(action, "port", path, errs)
    ppath = child(path, "port")
    if isinstance(port, str):
        errs.extend(invalid(ppath, port, m) for m in is_valid_port_name(port))
    elif action.get("port") is None or port is not None:
        value = port or 0
        errs.extend(invalid(ppath, value, m) for m in is_valid_port_num(value))
