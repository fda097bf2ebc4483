"""`kubewire describe`: the fields a person reads first, in kubectl's layout.

Services and EndpointSlices follow kubectl's describers (describeService, describeEndpointSliceV1)
line for line, through the same tab-aligned writer, so their text is kubectl's."""

from __future__ import annotations

from collections.abc import Callable

from kubewire.cli.printers import age, pod_status_word
from kubewire.cli.sortby import chronological
from kubewire.controllers.endpointslice import LABEL_SERVICE_NAME
from kubewire.store.apply import LAST_APPLIED
from kubewire.store.db import Store

PADDING = 2  # kubectl's tabbedString: tabwriter.Init(buf, 0, 8, 2, ' ', 0)
MAX_ANNOTATION_LEN = 140  # printAnnotationsMultiline: a longer value gets lines of its own
MAX_ENDPOINTS = 3  # formatEndpointSlices: the rest are "+ N more..."


def _kv(d: dict | None, indent: int = 16) -> str:
    if not d:
        return "<none>"
    items = [f"{k}={v}" for k, v in sorted(d.items())]
    return ("\n" + " " * indent).join(items)


def _shown_annotations(annotations: dict | None) -> dict:
    """kubectl never prints the last-applied configuration: it repeats the whole object."""
    return {k: v for k, v in (annotations or {}).items() if k != LAST_APPLIED}


# ---- kubectl's tab-aligned writer -----------------------------------------------------------------


def tabbed(lines: list[str]) -> str:
    """Go's text/tabwriter as kubectl's tabbedString sets it up. A cell ends at a tab (the text after
    a line's last tab is no cell); a column is as wide as its widest cell plus two over each run of
    adjacent lines that have it, so a line without that column starts a new alignment."""
    cells = [line.split("\t") for line in lines]
    widths: list[list[int]] = [[] for _ in cells]
    _column_widths(cells, 0, 0, len(cells), widths)
    return "\n".join("".join(c.ljust(w) for c, w in zip(row, ws, strict=False)) + row[-1]
                     for row, ws in zip(cells, widths, strict=True))


def _column_widths(cells: list[list[str]], col: int, lo: int, hi: int, widths: list[list[int]]) -> None:
    """tabwriter's Writer.format: the blocks of column `col` among lines lo..hi, then within each
    block the next column's blocks."""
    i = lo
    while i < hi:
        if len(cells[i]) - 1 <= col:
            i += 1
            continue
        j = i
        while j < hi and len(cells[j]) - 1 > col:
            j += 1
        width = max(len(cells[k][col]) for k in range(i, j)) + PADDING
        for k in range(i, j):
            widths[k].append(width)
        _column_widths(cells, col + 1, i, j, widths)
        i = j


def _labels(title: str, labels: dict | None) -> list[str]:
    """printLabelsMultiline: key=value, sorted, one a line."""
    labels = labels or {}
    if not labels:
        return [f"{title}:\t<none>"]
    return [("\t" if i else f"{title}:\t") + f"{k}={labels[k]}" for i, k in enumerate(sorted(labels))]


def _annotations(title: str, annotations: dict | None) -> list[str]:
    """printAnnotationsMultiline: `key: value`, sorted; a long or multi-line value below its key."""
    shown = _shown_annotations(annotations)
    if not shown:
        return [f"{title}:\t<none>"]
    lines = []
    for i, key in enumerate(sorted(shown)):
        lead = "\t" if i else f"{title}:\t"
        value = str(shown[key]).removesuffix("\n")
        if len(value) + len(key) + 2 > MAX_ANNOTATION_LEN or "\n" in value:
            lines.append(f"{lead}{key}:")
            lines += [f"\t  {_shorten(s, MAX_ANNOTATION_LEN - 2)}" for s in value.split("\n")]
        else:
            lines.append(f"{lead}{key}: {value}")
    return lines


def _shorten(s: str, limit: int) -> str:
    return s[:limit] + "..." if len(s) > limit else s


def _or(value: object, default: str) -> str:
    """A Go pointer field: the default when unset (None), the value as Go prints it otherwise."""
    if value is None:
        return default
    return str(value).lower() if isinstance(value, bool) else str(value)


def _join_or_none(items: list | None) -> str:
    return ",".join(items) if items else "<none>"


# ---- Service ------------------------------------------------------------------------------------


def _service_lines(svc: dict, store: Store) -> list[str]:
    """describeService."""
    m, spec = svc["metadata"], svc.get("spec") or {}
    lines = [f"Name:\t{m['name']}", f"Namespace:\t{m.get('namespace', '')}"]
    lines += _labels("Labels", m.get("labels"))
    lines += _annotations("Annotations", m.get("annotations"))
    selector = spec.get("selector") or {}
    lines.append(f"Selector:\t{','.join(f'{k}={selector[k]}' for k in sorted(selector)) or '<none>'}")
    lines.append(f"Type:\t{spec.get('type', '')}")
    if spec.get("ipFamilyPolicy") is not None:
        lines.append(f"IP Family Policy:\t{spec['ipFamilyPolicy']}")
    lines.append(f"IP Families:\t{_join_or_none(spec.get('ipFamilies'))}")
    lines.append(f"IP:\t{spec.get('clusterIP', '')}")
    lines.append(f"IPs:\t{_join_or_none(spec.get('clusterIPs'))}")
    lines += _service_addresses(svc)
    slices = _service_slices(svc, store)
    for port in spec.get("ports") or []:
        lines += _service_port_lines(port, slices)
    lines.append(f"Session Affinity:\t{spec.get('sessionAffinity', '')}")
    if spec.get("externalTrafficPolicy"):
        lines.append(f"External Traffic Policy:\t{spec['externalTrafficPolicy']}")
    if spec.get("internalTrafficPolicy") is not None:
        lines.append(f"Internal Traffic Policy:\t{spec['internalTrafficPolicy']}")
    if spec.get("healthCheckNodePort"):
        lines.append(f"HealthCheck NodePort:\t{spec['healthCheckNodePort']}")
    if spec.get("loadBalancerSourceRanges"):
        lines.append(f"LoadBalancer Source Ranges:\t{','.join(spec['loadBalancerSourceRanges'])}")
    if spec.get("trafficDistribution") is not None:
        lines.append(f"Traffic Distribution:\t{spec['trafficDistribution']}")
    lines += event_lines(svc, store)
    return lines


def _service_addresses(svc: dict) -> list[str]:
    """The addresses besides the cluster IPs, each only when set."""
    spec = svc.get("spec") or {}
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    lines = []
    if spec.get("externalIPs"):
        lines.append(f"External IPs:\t{','.join(spec['externalIPs'])}")
    if spec.get("loadBalancerIP"):
        lines.append(f"Desired LoadBalancer IP:\t{spec['loadBalancerIP']}")
    if spec.get("externalName"):
        lines.append(f"External Name:\t{spec['externalName']}")
    if ingress:
        lines.append(f"LoadBalancer Ingress:\t{', '.join(_ingress_text(i) for i in ingress)}")
    return lines


def _ingress_text(ingress: dict) -> str:
    """buildIngressString: the IP and its mode, else the hostname."""
    if ingress.get("ip"):
        return ingress["ip"] + (f" ({ingress['ipMode']})" if ingress.get("ipMode") is not None else "")
    return ingress.get("hostname", "")


def _service_slices(svc: dict, store: Store) -> list[dict]:
    """The Service's EndpointSlices by their service-name label, in name order as the API lists them."""
    m = svc["metadata"]
    return [s for s in store.list("EndpointSlice", m.get("namespace", ""))
            if (s["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME) == m["name"]]


def _service_port_lines(port: dict, slices: list[dict]) -> list[str]:
    name, proto = port.get("name") or "<unset>", port.get("protocol") or ""
    target = port.get("targetPort")  # IntOrString; Go's zero value is the number 0
    lines = [f"Port:\t{name}\t{port.get('port', 0)}/{proto}", f"TargetPort:\t{_or(target, '0')}/{proto}"]
    if port.get("appProtocol") is not None:
        lines.append(f"AppProtocol:\t{port['appProtocol']}")
    if port.get("nodePort"):
        lines.append(f"NodePort:\t{name}\t{port['nodePort']}/{proto}")
    lines.append(f"Endpoints:\t{format_endpoint_slices(slices, port.get('name') or '')}")
    return lines


def format_endpoint_slices(slices: list[dict], port_name: str | None = None) -> str:
    """formatEndpointSlices: ready endpoints' first addresses, as host:port for each slice port of
    that name (None: every port), or bare when a slice has no ports; three, then "+ N more...".

    As kubectl, any endpoint met once three are listed sets "more", a not-ready one too, so the
    text can end "+ 0 more...". A slice port without a number gives bare addresses (kubectl panics)."""
    if not slices:
        return "<none>"
    listed: list[str] = []
    more, count = False, 0
    for s in slices:
        ports = s.get("ports") or []
        numbers = [p.get("port") for p in ports if port_name is None or (p.get("name") or "") == port_name]
        for number in numbers if ports else [None]:
            for ep in s.get("endpoints") or []:
                more = more or len(listed) == MAX_ENDPOINTS
                addresses = ep.get("addresses") or []
                if not addresses or (ep.get("conditions") or {}).get("ready") is False:
                    continue  # an unset ready is ready
                if not more:
                    listed.append(addresses[0] if number is None else _host_port(addresses[0], number))
                count += 1
    text = ",".join(listed)
    return f"{text} + {count - MAX_ENDPOINTS} more..." if more else text


def _host_port(host: str, port: int) -> str:
    """net.JoinHostPort: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---- EndpointSlice ------------------------------------------------------------------------------


def _endpointslice_lines(eps: dict, store: Store) -> list[str]:
    """describeEndpointSliceV1."""
    m = eps["metadata"]
    lines = [f"Name:\t{m['name']}", f"Namespace:\t{m.get('namespace', '')}"]
    lines += _labels("Labels", m.get("labels"))
    lines += _annotations("Annotations", m.get("annotations"))
    lines.append(f"AddressType:\t{eps.get('addressType', '')}")
    ports = eps.get("ports") or []
    if ports:
        lines += ["Ports:", "  Name\tPort\tProtocol", "  ----\t----\t--------"]
        lines += [f"  {p.get('name') or '<unset>'}\t{_or(p.get('port'), '<unset>')}\t{p.get('protocol', '')}"
                  for p in ports]
    else:
        lines.append("Ports: <unset>")
    endpoints = eps.get("endpoints") or []
    if endpoints:
        lines.append("Endpoints:")
        for ep in endpoints:
            lines += _endpoint_lines(ep)
    else:
        lines.append("Endpoints: <none>")
    lines += event_lines(eps, store)
    return lines


def _endpoint_lines(ep: dict) -> list[str]:
    lines = [f"  - Addresses:\t{', '.join(ep.get('addresses') or []) or '<none>'}",
             "    Conditions:",
             f"      Ready:\t{_or((ep.get('conditions') or {}).get('ready'), '<unset>')}",
             f"    Hostname:\t{_or(ep.get('hostname'), '<unset>')}"]
    ref = ep.get("targetRef")
    if ref is not None:
        lines.append(f"    TargetRef:\t{ref.get('kind', '')}/{ref.get('name', '')}")
    lines.append(f"    NodeName:\t{_or(ep.get('nodeName'), '<unset>')}")
    lines.append(f"    Zone:\t{_or(ep.get('zone'), '<unset>')}")
    return lines


# ---- Endpoints ----------------------------------------------------------------------------------


def _endpoints_lines(ep: dict, store: Store) -> list[str]:
    """describeEndpoints: per subset its ready and not-ready IPs and its ports."""
    m = ep["metadata"]
    lines = [f"Name:\t{m['name']}", f"Namespace:\t{m.get('namespace', '')}"]
    lines += _labels("Labels", m.get("labels"))
    lines += _annotations("Annotations", m.get("annotations"))
    lines.append("Subsets:")
    for ss in ep.get("subsets") or []:
        for title, field in (("Addresses", "addresses"), ("NotReadyAddresses", "notReadyAddresses")):
            ips = ",".join(a.get("ip", "") for a in ss.get(field) or [])
            lines.append(f"  {title}:\t{ips or '<none>'}")
        ports = ss.get("ports") or []
        if ports:
            lines += ["  Ports:", "    Name\tPort\tProtocol", "    ----\t----\t--------"]
            lines += [f"    {p.get('name') or '<unset>'}\t{p.get('port', 0)}\t{p.get('protocol', '')}" for p in ports]
        lines.append("")
    lines += event_lines(ep, store)
    return lines


TABBED: dict[str, Callable[[dict, Store], list[str]]] = {
    "Service": _service_lines,
    "Endpoints": _endpoints_lines,
    "EndpointSlice": _endpointslice_lines,
}


# ---- every other kind ---------------------------------------------------------------------------


def _generic_lines(o: dict) -> list[str]:
    """A kind without a layout of its own: spec and status as indented `key: value` lines, data's keys."""
    lines = []
    for key in ("spec", "data", "status"):
        if key not in o:
            continue
        value, title = o[key], f"{key.capitalize() + ':':<16}"
        if key == "data" and isinstance(value, dict):
            lines.append(f"{title}{', '.join(sorted(value))}")
        elif _nested(value):
            lines.append(title.rstrip())
            lines += _yaml_lines(value, 2)
        else:
            lines.append(f"{title}{_scalar(value)}")
    return lines


def _nested(value: object) -> bool:
    return isinstance(value, dict | list) and bool(value)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return '""' if value == "" else str(value)  # an empty mapping or list: {} or []


def _yaml_lines(value: object, indent: int) -> list[str]:
    """Mappings (keys sorted, as kubectl -o yaml) and lists as YAML-like lines, never Python reprs."""
    pad = " " * indent
    if isinstance(value, dict):
        out = []
        for k in sorted(value):
            if _nested(value[k]):
                out += [f"{pad}{k}:"] + _yaml_lines(value[k], indent + 2)
            else:
                out.append(f"{pad}{k}: {_scalar(value[k])}")
        return out
    if isinstance(value, list):
        out = []
        for item in value:
            sub = _yaml_lines(item, indent + 2) if _nested(item) else [f"{pad}  {_scalar(item)}"]
            out += [f"{pad}- {sub[0][indent + 2:]}"] + sub[1:]
        return out
    return [f"{pad}{_scalar(value)}"]


def event_lines(o: dict, store: Store | None) -> list[str]:
    """DescribeEvents: the object's Events, oldest last-seen first, repeats as "(xN over AGE)"."""
    m = o["metadata"]
    uid = m.get("uid")

    def about(e: dict) -> bool:
        ref = e.get("involvedObject") or {}
        if uid:
            return ref.get("uid") == uid
        return ref.get("kind") == o.get("kind") and ref.get("name") == m.get("name")

    events = [] if store is None else [e for e in store.list("Event", m.get("namespace") or "default") if about(e)]
    if not events:
        return ["Events:\t<none>"]
    lines = ["Events:", "  Type\tReason\tAge\tFrom\tMessage", "  ----\t------\t----\t----\t-------"]
    for e in chronological(events):
        first = age(e.get("firstTimestamp") or e["metadata"].get("creationTimestamp"))
        count = int(e.get("count") or 1)
        interval = f"{age(e.get('lastTimestamp'))} (x{count} over {first})" if count > 1 else first
        source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or ""  # no host, as kubectl
        lines.append(f"  {e.get('type', '')}\t{e.get('reason', '')}\t{interval}\t{source}\t{(e.get('message') or '').strip()}")
    return lines


def describe_object(o: dict, store: Store) -> str:
    kind = o["kind"]
    if kind in TABBED:
        return tabbed(TABBED[kind](o, store))
    m = o["metadata"]
    lines = [f"Name:           {m['name']}"]
    if m.get("namespace"):
        lines.append(f"Namespace:      {m['namespace']}")
    lines.append(f"Labels:         {_kv(m.get('labels'))}")
    lines.append(f"Annotations:    {_kv(_shown_annotations(m.get('annotations')))}")
    lines.append(f"Created:        {m.get('creationTimestamp')} ({age(m.get('creationTimestamp'))} ago)")
    if kind == "Pod":
        spec, st = o.get("spec", {}), o.get("status", {})
        lines += [
            f"Node:           {spec.get('nodeName', '<none>')}/{st.get('hostIP', '')}",
            f"Status:         {pod_status_word(o)}",
            f"IP:             {st.get('podIP', '<none>')}",
        ]
        owners = m.get("ownerReferences") or []
        if owners:
            lines.append(f"Controlled By:  {owners[0]['kind']}/{owners[0]['name']}")
        lines.append("Containers:")
        statuses = {c["name"]: c for c in st.get("containerStatuses", []) or []}
        for c in spec.get("containers", []):
            cs = statuses.get(c["name"], {})
            state = next(iter(cs.get("state", {}) or {"waiting": {}}), "waiting")
            lines.append(f"  {c['name']}:")
            lines.append(f"    Image:          {c.get('image', '')}")
            ports = ", ".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}" + (f" ({p['name']})" if p.get("name") else "")
                              for p in c.get("ports") or [])
            lines.append(f"    Ports:          {ports or '<none>'}")
            lines.append(f"    State:          {state.capitalize()}")
            reason = (cs.get("state", {}).get(state) or {}).get("reason")
            if reason:
                lines.append(f"      Reason:       {reason}")
            last = (cs.get("lastState") or {}).get("terminated")
            if last:
                lines.append("    Last State:     Terminated")
                lines.append(f"      Reason:       {last.get('reason')}")
                lines.append(f"      Exit Code:    {last.get('exitCode')}")
            lines.append(f"    Ready:          {cs.get('ready', False)}")
            lines.append(f"    Restart Count:  {cs.get('restartCount', 0)}")
            for pname in ("readinessProbe", "livenessProbe"):
                p = c.get(pname)
                if p:
                    h = next((k for k in ("httpGet", "tcpSocket", "exec", "grpc") if k in p), "")
                    lines.append(f"    {pname[0].upper() + pname[1:-5]}:      {h} {p.get(h)} period={p.get('periodSeconds', 10)}s")
        lines.append("Conditions:")
        lines.append("  Type                        Status")
        for c in st.get("conditions", []) or []:
            lines.append(f"  {c['type']:<28}{c['status']}")
    elif kind in ("Deployment", "ReplicaSet"):
        spec, st = o.get("spec", {}), o.get("status", {})
        lines.append(f"Selector:       {_kv((spec.get('selector') or {}).get('matchLabels'))}")
        lines.append(f"Replicas:       {spec.get('replicas')} desired | {st.get('updatedReplicas', st.get('replicas', 0))} updated | "
                     f"{st.get('replicas', 0)} total | {st.get('availableReplicas', 0)} available | "
                     f"{st.get('unavailableReplicas', 0)} unavailable")
        if kind == "Deployment":
            strat = spec.get("strategy", {})
            lines.append(f"StrategyType:   {strat.get('type')}")
            ru = strat.get("rollingUpdate")
            if ru:
                lines.append(f"RollingUpdateStrategy:  {ru.get('maxUnavailable')} max unavailable, {ru.get('maxSurge')} max surge")
            for c in st.get("conditions", []) or []:
                lines.append(f"Condition:      {c['type']}={c['status']} ({c.get('reason', '')})")
            rss = [r for r in store.list("ReplicaSet", m["namespace"])
                   if any(ref.get("uid") == m.get("uid") for ref in r["metadata"].get("ownerReferences") or [])]
            for r in rss:
                lines.append(f"ReplicaSet:     {r['metadata']['name']} ({r.get('status', {}).get('replicas', 0)}/"
                             f"{r['spec'].get('replicas')} replicas)")
    elif kind == "Node":
        st = o.get("status", {})
        for a in st.get("addresses", []):
            lines.append(f"{a['type'] + ':':<16}{a['address']}")
        lines.append(f"PodCIDR:        {o.get('spec', {}).get('podCIDR')}")
        lines.append(f"Allocatable:    {_kv(st.get('allocatable'))}")
        pods = [p for p in store.list("Pod") if p.get("spec", {}).get("nodeName") == m["name"]]
        lines.append(f"Non-terminated Pods: ({len(pods)} in total)")
        for p in pods:
            lines.append(f"  {p['metadata']['namespace']:<16}{p['metadata']['name']}")
    else:
        lines += _generic_lines(o)
    events = event_lines(o, store)
    lines += ["Events:         <none>"] if len(events) == 1 else tabbed(events).splitlines()
    return "\n".join(lines)
