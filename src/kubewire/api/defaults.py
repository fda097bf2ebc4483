"""The API server's defaulting (core/v1 and apps/v1 defaults.go, plus the few things the
registries fill in on create), so stored objects look like what `kubectl get -o yaml` shows and
controllers never have to guess a default themselves.

A JSON null counts as unset, as a nil pointer does in Go. Malformed values are left alone for
validation to report.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

from kubewire.api.kinds import kind_info

Defaulter = Callable[[dict], None]
"""Fills defaults into an object in place (it is always a private copy)."""

DEFAULTERS: dict[str, Defaulter] = {}


def register_defaulter(kind: str, fn: Defaulter) -> None:
    DEFAULTERS[kind] = fn


def apply_defaults(obj: dict, *, namespace: str = "default") -> dict:
    """A defaulted copy of obj. Namespaced kinds without a namespace get `namespace`; cluster-scoped
    kinds lose any namespace, as the API server ignores it for them."""
    out = copy.deepcopy(obj)
    if not isinstance(out, dict):
        return out
    kind = out.get("kind")
    info = kind_info(kind) if isinstance(kind, str) else None
    if info is not None:
        if out.get("metadata") is None:
            out["metadata"] = {}
        meta = out["metadata"]
        if isinstance(meta, dict):
            if not info.namespaced:
                meta.pop("namespace", None)
            elif not meta.get("namespace"):
                meta["namespace"] = namespace
    fn = DEFAULTERS.get(kind) if isinstance(kind, str) else None
    if fn is not None:
        fn(out)
    return out


def _default(d: dict, name: str, value: Any, zeros: tuple[Any, ...] = (None,)) -> None:
    current = d.get(name)
    if any(current is z or (z is not None and current == z and type(current) is type(z)) for z in zeros):
        d[name] = value


def _dict(d: dict, name: str) -> dict | None:
    """d[name] as a dict, created when unset; None when it holds something else."""
    if d.get(name) is None:
        d[name] = {}
    v = d[name]
    return v if isinstance(v, dict) else None


def _dicts(d: dict, name: str) -> list[dict]:
    v = d.get(name)
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


# --- pods ------------------------------------------------------------------------------------


def image_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image, else IfNotPresent (digest-only counts as tagged)."""
    if not image:
        return "IfNotPresent"
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ("" if digest else "latest")
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_probe(probe: dict) -> None:
    for name, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        _default(probe, name, value, (None, 0))
    http = probe.get("httpGet")
    if isinstance(http, dict):
        _default_http_get(http)


def _default_http_get(http: dict) -> None:
    _default(http, "path", "/", (None, ""))
    _default(http, "scheme", "HTTP", (None, ""))


def default_container(c: dict) -> None:
    image = c.get("image")
    _default(c, "imagePullPolicy", image_pull_policy(image if isinstance(image, str) else ""), (None, ""))
    _default(c, "terminationMessagePath", "/dev/termination-log", (None, ""))
    _default(c, "terminationMessagePolicy", "File", (None, ""))
    for port in _dicts(c, "ports"):
        _default(port, "protocol", "TCP", (None, ""))
    for env in _dicts(c, "env"):
        source = env.get("valueFrom")
        ref = source.get("fieldRef") if isinstance(source, dict) else None
        if isinstance(ref, dict):
            _default(ref, "apiVersion", "v1", (None, ""))
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(kind)
        if isinstance(probe, dict):
            _default_probe(probe)
    lifecycle = c.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            handler = lifecycle.get(hook)
            if isinstance(handler, dict) and isinstance(handler.get("httpGet"), dict):
                _default_http_get(handler["httpGet"])


def default_pod_spec(spec: dict) -> None:
    """SetDefaults_PodSpec and what it cascades to; shared by Pods and pod templates."""
    _default(spec, "dnsPolicy", "ClusterFirst", (None, ""))
    _default(spec, "restartPolicy", "Always", (None, ""))
    _default(spec, "terminationGracePeriodSeconds", 30)
    _default(spec, "schedulerName", "default-scheduler", (None, ""))
    _default(spec, "securityContext", {})
    for name in ("containers", "initContainers"):
        for c in _dicts(spec, name):
            default_container(c)
    for vol in _dicts(spec, "volumes"):
        for source in ("configMap", "secret", "downwardAPI", "projected"):
            if isinstance(vol.get(source), dict):
                _default(vol[source], "defaultMode", 0o644)
        if isinstance(vol.get("hostPath"), dict):
            _default(vol["hostPath"], "type", "")


def _default_pod(obj: dict) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    default_pod_spec(spec)
    _default(spec, "enableServiceLinks", True)
    host_network = spec.get("hostNetwork") is True
    for name in ("containers", "initContainers"):
        for c in _dicts(spec, name):
            if host_network:
                for port in _dicts(c, "ports"):
                    _default(port, "hostPort", port.get("containerPort"), (None, 0))
            resources = c.get("resources")
            limits = resources.get("limits") if isinstance(resources, dict) else None
            if isinstance(limits, dict) and limits:
                requests = _dict(resources, "requests")
                if requests is not None:
                    for k, v in limits.items():
                        requests.setdefault(k, copy.deepcopy(v))


# --- workloads -------------------------------------------------------------------------------


def _default_template(spec: dict) -> None:
    template = _dict(spec, "template")
    if template is not None:
        pod_spec = _dict(template, "spec")
        if pod_spec is not None:
            default_pod_spec(pod_spec)


def _drop_zero(spec: dict, name: str, zero: Any) -> None:
    """Go's omitempty: a zero int32 or false bool is not serialised, so it is not stored."""
    if name in spec and spec[name] == zero and type(spec[name]) is type(zero):
        del spec[name]


def _default_deployment(obj: dict) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    _default(spec, "replicas", 1)
    strategy = _dict(spec, "strategy")
    if strategy is not None:
        _default(strategy, "type", "RollingUpdate", (None, ""))
        if strategy["type"] == "RollingUpdate":
            rolling = _dict(strategy, "rollingUpdate")
            if rolling is not None:
                _default(rolling, "maxUnavailable", "25%")
                _default(rolling, "maxSurge", "25%")
    _default(spec, "revisionHistoryLimit", 10)
    _default(spec, "progressDeadlineSeconds", 600)
    _drop_zero(spec, "minReadySeconds", 0)
    _drop_zero(spec, "paused", False)
    _default_template(spec)


def _default_replicaset(obj: dict) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    _default(spec, "replicas", 1)
    _drop_zero(spec, "minReadySeconds", 0)
    _default_template(spec)


# --- config ----------------------------------------------------------------------------------


def _default_secret(obj: dict) -> None:
    _default(obj, "type", "Opaque", (None, ""))
    string_data = obj.get("stringData")
    if not isinstance(string_data, dict):
        return
    data = _dict(obj, "data")
    if data is None:
        return
    for k in [k for k, v in string_data.items() if isinstance(v, str)]:
        # stringData wins over data, and is write-only: it is never stored.
        data[str(k)] = base64.b64encode(string_data.pop(k).encode()).decode()
    if not string_data:
        del obj["stringData"]


def _default_namespace(obj: dict) -> None:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]:
        labels = _dict(meta, "labels")
        if labels is not None:
            labels["kubernetes.io/metadata.name"] = meta["name"]
    spec = _dict(obj, "spec")
    if spec is not None:
        _default(spec, "finalizers", ["kubernetes"])
    status = _dict(obj, "status")
    if status is not None:
        _default(status, "phase", "Active", (None, ""))


register_defaulter("Pod", _default_pod)
register_defaulter("Deployment", _default_deployment)
register_defaulter("ReplicaSet", _default_replicaset)
register_defaulter("Secret", _default_secret)
register_defaulter("Namespace", _default_namespace)
