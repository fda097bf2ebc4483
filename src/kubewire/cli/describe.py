"""`kubewire describe`: the fields a person reads first, in kubectl's layout."""

from __future__ import annotations

from kubewire.cli.printers import age, pod_status_word
from kubewire.store.db import Store


def _kv(d: dict | None, indent: int = 16) -> str:
    if not d:
        return "<none>"
    items = [f"{k}={v}" for k, v in sorted(d.items())]
    return ("\n" + " " * indent).join(items)


def describe_object(o: dict, store: Store) -> str:
    m = o["metadata"]
    lines = [f"Name:           {m['name']}"]
    if m.get("namespace"):
        lines.append(f"Namespace:      {m['namespace']}")
    lines.append(f"Labels:         {_kv(m.get('labels'))}")
    lines.append(f"Annotations:    {_kv(m.get('annotations'))}")
    lines.append(f"Created:        {m.get('creationTimestamp')} ({age(m.get('creationTimestamp'))} ago)")
    kind = o["kind"]
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
        for k in ("spec", "data", "status"):
            if k in o:
                lines.append(f"{k.capitalize()}:         {o[k] if k != 'data' else ', '.join(sorted(o[k]))}")
    lines.append("Events:         <none>")
    return "\n".join(lines)
