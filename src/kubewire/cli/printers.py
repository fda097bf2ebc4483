"""kubectl's output: aligned columns per kind, and -o yaml|json|name|wide."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import yaml


def age(ts: str | None, now: float | None = None) -> str:
    """kubectl's HumanDuration."""
    if not ts:
        return "<unknown>"
    secs = max(int((now or time.time()) - _utc(ts)), 0)
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        s = secs % 60
        return f"{mins}m{s}s" if s else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = secs // 3600
    if hours < 8:
        m = mins % 60
        return f"{hours}h{m}m" if m else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        h = hours % 24
        return f"{days}d{h}h" if h else f"{days}d"
    return f"{days}d"


def _utc(ts: str) -> float:
    import calendar

    return calendar.timegm(time.strptime(ts, "%Y-%m-%dT%H:%M:%SZ"))


def pod_status_word(p: dict) -> str:
    """What kubectl prints in STATUS (printPod in kubectl's printers)."""
    st = p.get("status", {})
    reason = st.get("reason") or st.get("phase", "Pending")
    for cs in st.get("containerStatuses", []) or []:
        s = cs.get("state", {})
        if "waiting" in s and s["waiting"].get("reason"):
            reason = s["waiting"]["reason"]
        elif "terminated" in s and s["terminated"].get("reason"):
            reason = s["terminated"]["reason"]
        elif "terminated" in s:
            reason = f"ExitCode:{s['terminated'].get('exitCode', 0)}"
    if reason == "Running" and any(c.get("type") == "Ready" and c.get("status") != "True"
                                   for c in st.get("conditions", [])):
        reason = "Running"
    if "deletionTimestamp" in p["metadata"]:
        reason = "Terminating"
    return reason


def _restarts(p: dict) -> str:
    total, last = 0, None
    for cs in p.get("status", {}).get("containerStatuses", []) or []:
        total += cs.get("restartCount", 0)
        fin = (cs.get("lastState") or {}).get("terminated", {}).get("finishedAt")
        if fin and (last is None or fin > last):
            last = fin
    if total and last:
        return f"{total} ({age(last)} ago)"
    return str(total)


def _ready(p: dict) -> str:
    cs = p.get("status", {}).get("containerStatuses", []) or []
    n = len(p.get("spec", {}).get("containers", []))
    return f"{sum(1 for c in cs if c.get('ready'))}/{n}"


def _selector(sel: dict | None) -> str:
    if not sel:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op = e["operator"]
        if op in ("In", "NotIn"):
            parts.append(f"{e['key']} {op.lower()} ({','.join(e.get('values', []))})")
        elif op == "Exists":
            parts.append(e["key"])
        else:
            parts.append(f"!{e['key']}")
    return ",".join(parts)


def _node_status(n: dict) -> str:
    ready = next((c for c in n.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)
    s = "Ready" if ready and ready["status"] == "True" else "NotReady"
    if n.get("spec", {}).get("unschedulable"):
        s += ",SchedulingDisabled"
    return s


def _ports(svc: dict) -> str:
    out = []
    for p in svc.get("spec", {}).get("ports", []) or []:
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _external_ip(svc: dict, wide: bool = False) -> str:
    """kubectl's getServiceExternalIP: a LoadBalancer's ingress IPs (sorted, cut to 16 characters
    unless wide) before its externalIPs; ClusterIP and NodePort show externalIPs only."""
    spec = svc.get("spec", {})
    kind = spec.get("type") or "ClusterIP"
    external = list(spec.get("externalIPs") or [])
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    if kind != "LoadBalancer":
        return "<unknown>"
    ingress = (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    lb = ",".join(sorted({i.get("ip") or i.get("hostname") for i in ingress if i.get("ip") or i.get("hostname")}))
    if not wide and len(lb) > 16:
        lb = lb[:13] + "..."
    return ",".join(([lb] if lb else []) + external) or "<pending>"


def _listed(items: list[str]) -> str:
    """kubectl's listWithMoreString: the first three, then how many more."""
    shown = ",".join(items[:3])
    return shown + (f" + {len(items) - 3} more..." if len(items) > 3 else "")


def _slice_ports(s: dict) -> str:
    ports = s.get("ports") or []
    if not ports:
        return "<unset>"
    return _listed([str(p["port"]) if p.get("port") is not None else p.get("name") or "*" for p in ports])


def _slice_endpoints(s: dict) -> str:
    addrs = [a for e in s.get("endpoints") or [] for a in e.get("addresses", [])]
    return _listed(addrs) if addrs else "<unset>"


def _endpoints(o: dict) -> str:
    """kubectl's formatEndpoints: ip:port for every ready address and port, the first three."""
    shown: list[str] = []
    count = 0
    for ss in o.get("subsets") or []:
        addrs = [a.get("ip", "") for a in ss.get("addresses") or []]
        ports = ss.get("ports") or []
        if not ports:
            count += len(addrs)
            shown += addrs
            continue
        for p in ports:
            count += len(addrs)
            shown += [f"[{ip}]:{p.get('port')}" if ":" in ip else f"{ip}:{p.get('port')}" for ip in addrs]
    if not o.get("subsets"):
        return "<none>"
    if count > 3:
        return ",".join(shown[:3]) + f" + {count - 3} more..."
    return ",".join(shown)  # subsets without a ready address: an empty cell, as kubectl


def _event_object(o: dict) -> str:
    ref = o.get("involvedObject") or {}
    kind = (ref.get("kind") or "").lower()
    return f"{kind}/{ref['name']}" if ref.get("name") else kind


def _event_source(o: dict) -> str:
    src = o.get("source") or {}
    component = src.get("component") or o.get("reportingComponent") or ""
    host = src.get("host") or o.get("reportingInstance") or ""
    return f"{component}, {host}" if host else component


def _ingress_hosts(o: dict) -> str:
    hosts = [r.get("host") for r in o.get("spec", {}).get("rules") or [] if r.get("host")]
    return ",".join(hosts) or "*"


def _ingress_address(o: dict) -> str:
    ing = o.get("status", {}).get("loadBalancer", {}).get("ingress") or []
    return ",".join(i.get("ip") or i.get("hostname", "") for i in ing)


def _ingress_ports(o: dict) -> str:
    return "80, 443" if o.get("spec", {}).get("tls") else "80"


Column = tuple[str, Callable[[dict], str]]

COLUMNS: dict[str, list[Column]] = {
    "Pod": [("NAME", lambda o: o["metadata"]["name"]), ("READY", _ready), ("STATUS", pod_status_word),
            ("RESTARTS", _restarts), ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "Deployment": [("NAME", lambda o: o["metadata"]["name"]),
                   ("READY", lambda o: f"{o.get('status', {}).get('readyReplicas', 0)}/{o['spec'].get('replicas', 1)}"),
                   ("UP-TO-DATE", lambda o: str(o.get("status", {}).get("updatedReplicas", 0))),
                   ("AVAILABLE", lambda o: str(o.get("status", {}).get("availableReplicas", 0))),
                   ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "ReplicaSet": [("NAME", lambda o: o["metadata"]["name"]),
                   ("DESIRED", lambda o: str(o["spec"].get("replicas", 1))),
                   ("CURRENT", lambda o: str(o.get("status", {}).get("replicas", 0))),
                   ("READY", lambda o: str(o.get("status", {}).get("readyReplicas", 0))),
                   ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "Node": [("NAME", lambda o: o["metadata"]["name"]), ("STATUS", _node_status), ("ROLES", lambda o: "<none>"),
             ("AGE", lambda o: age(o["metadata"].get("creationTimestamp"))),
             ("VERSION", lambda o: o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""))],
    "Namespace": [("NAME", lambda o: o["metadata"]["name"]),
                  ("STATUS", lambda o: "Terminating" if "deletionTimestamp" in o["metadata"] else o.get("status", {}).get("phase", "Active")),
                  ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "ConfigMap": [("NAME", lambda o: o["metadata"]["name"]),
                  ("DATA", lambda o: str(len(o.get("data") or {}) + len(o.get("binaryData") or {}))),
                  ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "Secret": [("NAME", lambda o: o["metadata"]["name"]), ("TYPE", lambda o: o.get("type", "Opaque")),
               ("DATA", lambda o: str(len(o.get("data") or {}))),
               ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "Service": [("NAME", lambda o: o["metadata"]["name"]), ("TYPE", lambda o: o["spec"].get("type", "ClusterIP")),
                ("CLUSTER-IP", lambda o: o["spec"].get("clusterIP") or "<none>"), ("EXTERNAL-IP", _external_ip),
                ("PORT(S)", _ports), ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "NetworkPolicy": [("NAME", lambda o: o["metadata"]["name"]),
                      ("POD-SELECTOR", lambda o: _selector(o.get("spec", {}).get("podSelector")) if (o.get("spec", {}).get("podSelector") or {}) else "<none>"),
                      ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "Ingress": [("NAME", lambda o: o["metadata"]["name"]),
                ("CLASS", lambda o: o.get("spec", {}).get("ingressClassName") or "<none>"),
                ("HOSTS", _ingress_hosts), ("ADDRESS", _ingress_address), ("PORTS", _ingress_ports),
                ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "IngressClass": [("NAME", lambda o: o["metadata"]["name"]),
                     ("CONTROLLER", lambda o: o.get("spec", {}).get("controller", "")),
                     ("PARAMETERS", lambda o: "<none>"),
                     ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "Event": [("LAST SEEN", lambda o: age(o.get("lastTimestamp") or o["metadata"].get("creationTimestamp"))),
              ("TYPE", lambda o: o.get("type", "")), ("REASON", lambda o: o.get("reason", "")),
              ("OBJECT", _event_object), ("MESSAGE", lambda o: (o.get("message") or "").strip())],
    "Endpoints": [("NAME", lambda o: o["metadata"]["name"]), ("ENDPOINTS", _endpoints),
                  ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
    "EndpointSlice": [("NAME", lambda o: o["metadata"]["name"]), ("ADDRESSTYPE", lambda o: o.get("addressType", "")),
                      ("PORTS", _slice_ports),
                      ("ENDPOINTS", _slice_endpoints), ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))],
}

WIDE: dict[str, list[Column]] = {
    "Pod": [("IP", lambda o: o.get("status", {}).get("podIP") or "<none>"),
            ("NODE", lambda o: o.get("spec", {}).get("nodeName") or "<none>"),
            ("NOMINATED NODE", lambda o: "<none>"), ("READINESS GATES", lambda o: "<none>")],
    "Deployment": [("CONTAINERS", lambda o: ",".join(c["name"] for c in o["spec"]["template"]["spec"]["containers"])),
                   ("IMAGES", lambda o: ",".join(c.get("image", "") for c in o["spec"]["template"]["spec"]["containers"])),
                   ("SELECTOR", lambda o: _selector(o["spec"].get("selector")))],
    "ReplicaSet": [("CONTAINERS", lambda o: ",".join(c["name"] for c in o["spec"]["template"]["spec"]["containers"])),
                   ("IMAGES", lambda o: ",".join(c.get("image", "") for c in o["spec"]["template"]["spec"]["containers"])),
                   ("SELECTOR", lambda o: _selector(o["spec"].get("selector")))],
    "Node": [("INTERNAL-IP", lambda o: next((a["address"] for a in o.get("status", {}).get("addresses", []) if a["type"] == "InternalIP"), "<none>")),
             ("EXTERNAL-IP", lambda o: "<none>"),
             ("ZONE", lambda o: o["metadata"].get("labels", {}).get("topology.kubernetes.io/zone", "")),
             ("POD-CIDR", lambda o: o.get("spec", {}).get("podCIDR", "")),
             ("CONTAINER-RUNTIME", lambda o: o.get("status", {}).get("nodeInfo", {}).get("containerRuntimeVersion", ""))],
    "Event": [("SUBOBJECT", lambda o: (o.get("involvedObject") or {}).get("fieldPath", "")), ("SOURCE", _event_source),
              ("FIRST SEEN", lambda o: age(o.get("firstTimestamp") or o["metadata"].get("creationTimestamp"))),
              ("COUNT", lambda o: str(o.get("count") or 1)), ("NAME", lambda o: o["metadata"]["name"])],
    "Service": [("SELECTOR", lambda o: ",".join(f"{k}={v}" for k, v in sorted((o["spec"].get("selector") or {}).items())) or "<none>")],
}


def table_columns(kind: str, wide: bool = False, namespaced_all: bool = False, show_labels: bool = False) -> list[Column]:
    """The columns kubectl prints for a kind with these flags (the watch prints its rows with them too)."""
    cols = list(COLUMNS.get(kind, [("NAME", lambda o: o["metadata"]["name"]),
                                   ("AGE", lambda o: age(o["metadata"].get("creationTimestamp")))]))
    if wide:
        if kind == "Service":  # kubectl cuts a LoadBalancer's ingress list only when not wide
            cols = [(h, (lambda o: _external_ip(o, wide=True)) if h == "EXTERNAL-IP" else f) for h, f in cols]
        cols += WIDE.get(kind, [])
        if kind == "Event":  # kubectl puts SUBOBJECT and SOURCE before MESSAGE
            cols = cols[:4] + cols[5:7] + [cols[4]] + cols[7:]
    if namespaced_all:
        cols.insert(0, ("NAMESPACE", lambda o: o["metadata"].get("namespace", "")))
    if show_labels:
        cols.append(("LABELS", lambda o: ",".join(f"{k}={v}" for k, v in sorted((o["metadata"].get("labels") or {}).items())) or "<none>"))
    return cols


def table(kind: str, objs: list[dict], wide: bool = False, namespaced_all: bool = False,
          show_labels: bool = False) -> str:
    cols = table_columns(kind, wide, namespaced_all, show_labels)
    rows = [[h for h, _ in cols]] + [[f(o) for _, f in cols] for o in objs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def as_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (last-applied-configuration, ConfigMap files) as `|` blocks, as kubectl's
    go-yaml writes them, instead of quoted strings with escaped or doubled newlines."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_BlockDumper.add_representer(str, _str)


def dump(obj: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=4)
    return yaml.dump(obj, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False).rstrip()
