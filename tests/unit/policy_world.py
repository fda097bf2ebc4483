"""A small cluster for the NetworkPolicy unit tests, in the shape Cyclonus and the upstream e2e use:
namespaces x, y, z (labelled ns=x...), pods a, b, c in each (labelled pod=a...), every pod serving
80 and 81 on TCP, UDP and SCTP under names like serve-80-tcp. Objects go through the API server's
defaulting and validation, as `kubewire apply` would store them."""

from __future__ import annotations

import yaml

from kubewire.api.loader import Document
from kubewire.api.validation import validate_and_default
from kubewire.policy.model import ClusterView, build_view

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
NODES = {"n0": ("172.18.1.10", "10.244.0.1"), "n1": ("172.18.2.10", "10.244.1.1"), "n2": ("172.18.1.11", "10.244.2.1")}
ALL = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]


def ip_of(key: str) -> str:
    ns, pod = key.split("/")
    i = NAMESPACES.index(ns) * 3 + PODS.index(pod)
    return f"10.244.{i % 3}.{10 + i}"


def node_of(key: str) -> str:
    ns, pod = key.split("/")
    return f"n{(NAMESPACES.index(ns) * 3 + PODS.index(pod)) % 3}"


def pod_object(key: str, labels: dict | None = None, ports: list | None = None) -> dict:
    ns, name = key.split("/")
    if ports is None:
        ports = [{"name": f"serve-{n}-{proto.lower()}", "containerPort": n, "protocol": proto}
                 for proto in ("TCP", "UDP", "SCTP") for n in (80, 81)]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", "labels": labels or {"pod": name}},
        "spec": {"nodeName": node_of(key), "containers": [{"name": "c", "image": "agnhost", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip_of(key)},
    }


def namespace_object(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels if labels is not None else {"ns": name}}}


def policy(text: str) -> dict:
    """A NetworkPolicy from YAML, defaulted and validated as `kubewire apply` stores it."""
    return validate_and_default(Document("<test>", 0, yaml.safe_load(text)))


def world(*policies: dict | str, pods: list[dict] | None = None, namespaces: list[dict] | None = None) -> ClusterView:
    pol = [policy(p) if isinstance(p, str) else p for p in policies]
    return build_view(pods if pods is not None else [pod_object(k) for k in ALL],
                      namespaces if namespaces is not None else [namespace_object(n) for n in NAMESPACES],
                      pol, NODES)


# --- a small interpreter for the rules plan.py writes (no kernel needed) -------------------------------


def _addr(text: str) -> int:
    import ipaddress

    return int(ipaddress.IPv4Address(text))


def _in_element(element: str, value: tuple) -> bool:
    """One set element (an address, a prefix, a range, or an address . proto . port) against a value."""
    if " . " in element:
        ip, proto, port = element.split(" . ")
        return (_addr(ip), proto, int(port)) == value
    a = value[0]
    if "/" in element:
        base, bits = element.split("/")
        size = 1 << (32 - int(bits))
        return _addr(base) <= a < _addr(base) + size
    if "-" in element:
        lo, hi = element.split("-")
        return _addr(lo) <= a <= _addr(hi)
    return _addr(element) == a


def _run_chain(rs, chain: str, pkt: dict) -> str:  # noqa: ANN001
    chains = {c.name: c.rules for c in rs.chains}
    sets = {s.name: s.elements for s in rs.sets}
    for rule in chains[chain]:
        words = rule.split(' comment "')[0].split()
        i, ok, verdict = 0, True, None
        while i < len(words) and ok:
            w = words[i]
            if w == "ip" and words[i + 1] in ("saddr", "daddr") and words[i + 2] == ".":
                # ip daddr . meta l4proto . th dport @set
                value = (_addr(pkt["daddr"]), pkt["proto"].lower(), pkt["dport"])
                ok = any(_in_element(e, value) for e in sets[words[i + 8][1:]])
                i += 9
            elif w == "ip":
                addr = pkt[words[i + 1]]
                target = words[i + 2]
                if target.startswith("@"):
                    ok = any(_in_element(e, (_addr(addr),)) for e in sets[target[1:]])
                else:
                    ok = addr == target
                i += 3
            elif w in ("tcp", "udp", "sctp"):
                lo, _, hi = words[i + 2].partition("-")
                ok = pkt["proto"].lower() == w and int(lo) <= pkt["dport"] <= int(hi or lo)
                i += 3
            elif w == "meta":
                ok = pkt["proto"].lower() == words[i + 2]
                i += 3
            elif w == "counter":
                i += 1
            elif w == "goto":
                return _run_chain(rs, words[i + 1], pkt)
            elif w in ("accept", "drop", "return"):
                verdict = w
                i += 1
            else:
                raise AssertionError(f"rule not understood: {rule}")
        if ok and verdict:
            return verdict
    return "return"


def node_verdict(rs, pkt: dict) -> str:  # noqa: ANN001
    """A new connection's first packet through one node's forward hook: accept or drop."""
    if rs.empty:
        return "accept"
    if pkt["saddr"] in rs.node_addresses:
        return "accept"
    for chain in (dict(rs.egress).get(pkt["saddr"]), dict(rs.ingress).get(pkt["daddr"])):
        verdict = _run_chain(rs, chain, pkt) if chain is not None else "return"
        if verdict in ("accept", "drop"):
            return verdict
    return "accept"


def _where(view: ClusterView, end: str) -> tuple[str, str | None]:
    """(address, node) of NS/POD, or of a bare address (no node)."""
    if "/" in end:
        p = view.pod(*end.split("/"))
        return p.ip, p.node
    return end, None


def kernel_allows(rulesets: dict, view: ClusterView, src: str, dst: str, port: int, proto: str = "TCP") -> bool:
    """What the planned rules of the source's and the destination's nodes do with a new connection
    (each end NS/POD or an address)."""
    (saddr, snode), (daddr, dnode) = _where(view, src), _where(view, dst)
    pkt = {"saddr": saddr, "daddr": daddr, "proto": proto, "dport": port}
    nodes = [n for n in dict.fromkeys((snode, dnode)) if n is not None]
    return all(node_verdict(rulesets[n], pkt) == "accept" for n in nodes)
