"""A container's environment, as kubelet builds it: literal values, the downward API, ConfigMaps, Secrets."""

from __future__ import annotations

import base64
import re

from kubewire.controllers.types import Snapshot

_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_VAR_REF = re.compile(r"\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class EnvError(Exception):
    """A referenced ConfigMap/Secret key is missing: kubelet reports CreateContainerConfigError."""


def field_value(pod: dict, path: str, host_ip: str, pod_ip: str) -> str:
    meta, spec = pod["metadata"], pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if path in simple:
        return simple[path]
    m = _LABEL_REF.match(path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        d = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
    return ""


def _source(snap: Snapshot, kind: str, ns: str, name: str) -> dict[str, str] | None:
    obj = snap.get(kind, ns, name)
    if obj is None:
        return None
    if kind == "Secret":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
    return dict(obj.get("data") or {})


def build_env(pod: dict, container: dict, snap: Snapshot, host_ip: str, pod_ip: str) -> dict[str, str]:
    ns = pod["metadata"].get("namespace", "default")
    env: dict[str, str] = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           "HOSTNAME": pod.get("spec", {}).get("hostname") or pod["metadata"]["name"]}
    for ef in container.get("envFrom") or []:
        ref = ef.get("configMapRef") or ef.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in ef else "Secret"
        data = _source(snap, kind, ns, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{kind.lower()} "{ref["name"]}" not found')
        for k, v in data.items():
            env[ef.get("prefix", "") + k] = v
    for e in container.get("env") or []:
        name = e["name"]
        if "value" in e or "valueFrom" not in e:
            env[name] = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), str(e.get("value", "")))
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"]["fieldPath"], host_ip, pod_ip)
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            kind = "ConfigMap" if "configMapKeyRef" in vf else "Secret"
            ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef")
            data = _source(snap, kind, ns, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = f'{kind.lower()} "{ref["name"]}" not found' if data is None else \
                    f'couldn\'t find key {ref["key"]} in {kind} {ns}/{ref["name"]}'
                raise EnvError(what)
            env[name] = data[ref["key"]]
        elif "resourceFieldRef" in vf:
            env[name] = "0"
    return env
