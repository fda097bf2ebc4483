"""The inputs of NetworkPolicy enforcement, read from Kubernetes-shaped objects: pods that have an
address, namespace labels, and policies parsed into rules (with the API server's defaults applied
again, so hand-made objects in tests behave like stored ones).

Everything here is plain data: the semantics (semantics.py), the node planner (plan.py), the prober
(probe.py) and the explainer all read the same view.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    ip: str
    node: str
    labels: dict = field(compare=False, hash=False)
    ports: tuple[ContainerPort, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_ports(self, name: str, protocol: str) -> list[int]:
        """A named port resolves on the destination pod: the containerPorts with that name and protocol."""
        return [p.port for p in self.ports if p.name == name and p.protocol == protocol]


@dataclass(frozen=True)
class PortSpec:
    protocol: str
    port: int | str | None = None  # None: every port of the protocol; str: a named port
    end_port: int | None = None


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    excepts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Peer:
    pod_selector: dict | None = field(default=None, compare=False, hash=False)
    namespace_selector: dict | None = field(default=None, compare=False, hash=False)
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class Rule:
    index: int
    peers: tuple[Peer, ...] | None  # None: from/to absent or empty, every peer
    ports: tuple[PortSpec, ...] | None  # None: ports absent or empty, every port and protocol


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: dict = field(compare=False, hash=False)
    ingress: bool  # policyTypes has Ingress: selected pods are isolated for ingress
    egress: bool
    ingress_rules: tuple[Rule, ...] = ()
    egress_rules: tuple[Rule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress_rules if direction == "ingress" else self.egress_rules

    def isolates(self, direction: str) -> bool:
        return self.ingress if direction == "ingress" else self.egress


@dataclass
class ClusterView:
    pods: list[Pod]
    namespaces: dict[str, dict[str, str]]  # name -> labels
    policies: list[Policy]
    nodes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # node name -> its own addresses

    def pod(self, namespace: str, name: str) -> Pod | None:
        for p in self.pods:
            if p.namespace == namespace and p.name == name:
                return p
        return None

    def pod_by_ip(self, ip: str) -> Pod | None:
        for p in self.pods:
            if p.ip == ip:
                return p
        return None


# --- reading objects -----------------------------------------------------------------------------


def pod_from_object(obj: dict) -> Pod | None:
    """A pod policy can see: it has an IPv4 address, it is not in the host's network, it has not
    finished (a finished pod's address can belong to another pod)."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ip = status.get("podIP") or ""
    if not ip or spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    try:
        if ipaddress.ip_address(ip).version != 4:
            return None
    except ValueError:
        return None
    ports = []
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            if isinstance(p, dict) and isinstance(p.get("containerPort"), int):
                ports.append(ContainerPort(p.get("name") or "", p["containerPort"], p.get("protocol") or "TCP"))
    return Pod(meta.get("namespace") or "default", meta.get("name", ""), meta.get("uid", ""), ip,
               spec.get("nodeName") or "", dict(meta.get("labels") or {}), tuple(ports))


def _port(p: dict) -> PortSpec:
    return PortSpec(p.get("protocol") or "TCP", p.get("port"), p.get("endPort"))


def _peer(p: dict) -> Peer:
    block = p.get("ipBlock")
    ipb = IPBlock(block.get("cidr") or "", tuple(block.get("except") or ())) if isinstance(block, dict) else None
    return Peer(p.get("podSelector"), p.get("namespaceSelector"), ipb)


def _rules(items: list | None, peers_field: str) -> tuple[Rule, ...]:
    out = []
    for i, r in enumerate(items or []):
        r = r if isinstance(r, dict) else {}
        peers = r.get(peers_field) or []
        ports = r.get("ports") or []
        out.append(Rule(i, tuple(_peer(p) for p in peers if isinstance(p, dict)) or None,
                        tuple(_port(p) for p in ports if isinstance(p, dict)) or None))
    return tuple(out)


def policy_from_object(obj: dict) -> Policy:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress") else []))
    return Policy(meta.get("namespace") or "default", meta.get("name", ""), spec.get("podSelector") or {},
                  "Ingress" in types, "Egress" in types,
                  _rules(spec.get("ingress"), "from"), _rules(spec.get("egress"), "to"))


def _rank(obj: dict) -> tuple:
    """Which of two pods claiming one address holds it: a pod being deleted gives its address back
    before its object goes, so the live one, then the newer one, wins."""
    meta = obj.get("metadata") or {}
    rv = str(meta.get("resourceVersion") or "0")
    return ("deletionTimestamp" not in meta, meta.get("creationTimestamp") or "", int(rv) if rv.isdigit() else 0)


def build_view(pods: Iterable[dict], namespaces: Iterable[dict], policies: Iterable[dict],
               nodes: dict[str, tuple[str, ...]] | None = None) -> ClusterView:
    by_ip: dict[str, tuple[tuple, Pod]] = {}
    for o in pods:
        p = pod_from_object(o)
        if p is None:
            continue
        rank = _rank(o)
        held = by_ip.get(p.ip)
        if held is None or rank > held[0]:
            by_ip[p.ip] = (rank, p)
    view_pods = sorted((p for _, p in by_ip.values()), key=lambda p: (p.namespace, p.name))
    ns = {o["metadata"]["name"]: dict(o["metadata"].get("labels") or {}) for o in namespaces}
    for p in view_pods:  # a namespace always carries its name label (the API server sets it)
        ns.setdefault(p.namespace, {})
    for name, labels in ns.items():
        labels.setdefault("kubernetes.io/metadata.name", name)
    pols = sorted((policy_from_object(o) for o in policies), key=lambda p: (p.namespace, p.name))
    return ClusterView(view_pods, ns, pols, dict(nodes or {}))


def view_of_snapshot(snap, nodes: dict[str, tuple[str, ...]] | None = None) -> ClusterView:  # noqa: ANN001
    return build_view(snap.list("Pod"), snap.list("Namespace"), snap.list("NetworkPolicy"), nodes)


def fingerprint(pods: Iterable[dict], namespaces: Iterable[dict], policies: Iterable[dict]) -> str:
    """What enforcement depends on, and nothing else: a pod's readiness or restart count changes its
    resourceVersion but not a single rule."""
    h = hashlib.sha1()
    for o in pods:
        p = pod_from_object(o)
        if p is not None:
            h.update(repr((p, sorted(p.labels.items()))).encode())
    h.update(b"|")
    for o in namespaces:
        h.update(repr((o["metadata"]["name"], sorted((o["metadata"].get("labels") or {}).items()))).encode())
    h.update(b"|")
    for o in policies:
        m = o["metadata"]
        version = m.get("resourceVersion") or json.dumps(o.get("spec"), sort_keys=True)
        h.update(repr((m.get("namespace"), m["name"], m.get("uid"), version)).encode())
    return h.hexdigest()
