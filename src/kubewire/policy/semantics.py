"""NetworkPolicy semantics (networking.k8s.io/v1), stated once, straight from the API documentation.

- A pod is isolated for a direction when at least one policy that selects it has that direction in
  policyTypes (whether or not the policy has rules for it). A pod no policy isolates allows all.
- An isolated pod allows what at least one rule of at least one of those policies allows: policies
  and rules combine as a union, and order never matters.
- A rule allows a connection when one of its peers matches the other end (no peers: any) and one of
  its ports matches the destination port (no ports: any port, any protocol).
- A peer with podSelector only selects pods in the policy's own namespace; namespaceSelector only,
  every pod of the selected namespaces; both, the pods matching podSelector inside the namespaces
  matching namespaceSelector (an AND within one peer; separate peers are an OR). `{}` selects all.
- ipBlock matches addresses in cidr but not in any of except; selectors never match non-pods.
- A port's protocol is TCP unless given; a numeric port with endPort is a range; a named port
  resolves on the destination pod (a containerPort with that name and protocol).
- A connection needs both: the source's egress allows it and the destination's ingress allows it.
  Replies of an allowed connection always pass; a pod can always reach itself; traffic to and from
  the node a pod runs on is always allowed.

This module decides single connections; plan.py turns the same reading into nftables rules, and
`kubewire policy explain` uses both to check the kernel against the API.
"""

from __future__ import annotations

import ipaddress
import json
from collections import defaultdict
from dataclasses import dataclass, field

from kubewire.controllers.podutil import selector_matches
from kubewire.policy.model import ClusterView, IPBlock, Peer, Pod, Policy, PortSpec, Rule


def _key(selector: dict | None) -> str:
    return json.dumps(selector, sort_keys=True)


class Selection:
    """Label selection over one view, memoised: a thousand policies share a handful of selectors."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.by_ns: dict[str, list[Pod]] = defaultdict(list)
        for p in view.pods:
            self.by_ns[p.namespace].append(p)
        self._pods: dict[tuple[str, str], list[Pod]] = {}
        self._ns: dict[str, list[str]] = {}

    def pods(self, namespace: str, selector: dict | None) -> list[Pod]:
        k = (namespace, _key(selector))
        hit = self._pods.get(k)
        if hit is None:
            hit = self._pods[k] = [p for p in self.by_ns.get(namespace, []) if selector_matches(selector, p.labels)]
        return hit

    def namespaces(self, selector: dict | None) -> list[str]:
        k = _key(selector)
        hit = self._ns.get(k)
        if hit is None:
            hit = self._ns[k] = sorted(n for n, labels in self.view.namespaces.items() if selector_matches(selector, labels))
        return hit

    def selected(self, policy: Policy) -> list[Pod]:
        return self.pods(policy.namespace, policy.pod_selector)

    def peer_pods(self, policy: Policy, peer: Peer) -> list[Pod]:
        """The pods a selector peer names (an ipBlock peer names addresses, not pods)."""
        if peer.ip_block is not None:
            return []
        namespaces = [policy.namespace] if peer.namespace_selector is None else self.namespaces(peer.namespace_selector)
        selector = peer.pod_selector if peer.pod_selector is not None else {}
        out: list[Pod] = []
        for ns in namespaces:
            out += self.pods(ns, selector)
        return out


# --- single connections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod, or an address that is no pod."""

    ip: str
    pod: Pod | None = None

    def __str__(self) -> str:
        return self.pod.key if self.pod else self.ip


def in_block(ip: str, block: IPBlock) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
        net = ipaddress.ip_network(block.cidr, strict=False)
        if addr.version != net.version or addr not in net:
            return False
        return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.excepts
                       if ipaddress.ip_network(e, strict=False).version == addr.version)
    except ValueError:
        return False


def peer_matches(view: ClusterView, policy: Policy, peer: Peer, other: Endpoint) -> bool:
    if peer.ip_block is not None:
        return in_block(other.ip, peer.ip_block)
    pod = other.pod
    if pod is None:
        return False
    if peer.namespace_selector is None:
        if pod.namespace != policy.namespace:
            return False
    elif not selector_matches(peer.namespace_selector, view.namespaces.get(pod.namespace, {})):
        return False
    return peer.pod_selector is None or selector_matches(peer.pod_selector, pod.labels)


def port_matches(spec: PortSpec, dst: Endpoint, port: int, protocol: str) -> bool:
    if spec.protocol != protocol:
        return False
    if spec.port is None:
        return True
    if isinstance(spec.port, int):
        return spec.port <= port <= (spec.end_port or spec.port)
    return dst.pod is not None and port in dst.pod.named_ports(spec.port, protocol)


def rule_matches(view: ClusterView, policy: Policy, rule: Rule, other: Endpoint, dst: Endpoint, port: int,
                 protocol: str) -> bool:
    peers_ok = rule.peers is None or any(peer_matches(view, policy, p, other) for p in rule.peers)
    ports_ok = rule.ports is None or any(port_matches(s, dst, port, protocol) for s in rule.ports)
    return peers_ok and ports_ok


def selects(view: ClusterView, policy: Policy, pod: Pod) -> bool:
    return policy.namespace == pod.namespace and selector_matches(policy.pod_selector, pod.labels)


@dataclass
class Side:
    """One direction's decision: the source's egress, or the destination's ingress."""

    direction: str
    pod: str | None  # ns/name, or None when that end is not a pod
    isolated: bool = False
    policies: list[str] = field(default_factory=list)  # the policies isolating the pod for this direction
    allowed_by: list[str] = field(default_factory=list)  # "ns/policy ingress[i]"
    allowed: bool = True
    reason: str = ""


@dataclass
class Verdict:
    allowed: bool
    egress: Side
    ingress: Side

    def as_dict(self) -> dict:
        return {"allowed": self.allowed, "egress": self.egress.__dict__, "ingress": self.ingress.__dict__}


def _side(view: ClusterView, direction: str, pod: Pod, other: Endpoint, dst: Endpoint, port: int,
          protocol: str) -> Side:
    side = Side(direction, pod.key)
    for pol in view.policies:
        if not pol.isolates(direction) or not selects(view, pol, pod):
            continue
        side.isolated = True
        side.policies.append(pol.key)
        for r in pol.rules(direction):
            if rule_matches(view, pol, r, other, dst, port, protocol):
                side.allowed_by.append(f"{pol.key} {direction}[{r.index}]")
    if not side.isolated:
        side.reason = f"no policy with {direction.capitalize()} in policyTypes selects {pod.key}: not isolated"
    elif side.allowed_by:
        side.reason = "allowed by " + ", ".join(side.allowed_by)
    else:
        side.allowed = False
        side.reason = f"isolated by {', '.join(side.policies)} and no rule allows it"
    return side


def evaluate(view: ClusterView, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> Verdict:
    """Would a new connection from src to dst:port/protocol be allowed?"""
    if src.pod is None:
        egress = Side("egress", None, reason=f"{src.ip} is not a pod: no egress policy applies")
    elif dst.pod is not None and dst.pod.uid == src.pod.uid:
        egress = Side("egress", src.pod.key, reason="a pod can always reach itself")
    elif dst.ip in view.nodes.get(src.pod.node, ()):
        egress = Side("egress", src.pod.key, reason="traffic to the pod's own node is always allowed")
    else:
        egress = _side(view, "egress", src.pod, dst, dst, port, protocol)
    if dst.pod is None:
        ingress = Side("ingress", None, reason=f"{dst.ip} is not a pod: no ingress policy applies")
    elif src.pod is not None and src.pod.uid == dst.pod.uid:
        ingress = Side("ingress", dst.pod.key, reason="a pod can always reach itself")
    elif src.ip in view.nodes.get(dst.pod.node, ()):
        ingress = Side("ingress", dst.pod.key, reason="traffic from the pod's own node is always allowed")
    else:
        ingress = _side(view, "ingress", dst.pod, src, dst, port, protocol)
    return Verdict(egress.allowed and ingress.allowed, egress, ingress)


def endpoint(view: ClusterView, text: str) -> Endpoint:
    """NS/POD, or an IP address (a pod's address resolves to the pod)."""
    if "/" in text:
        ns, name = text.split("/", 1)
        pod = view.pod(ns, name)
        if pod is None:
            raise KeyError(f"pod {text} not found (or it has no address yet)")
        return Endpoint(pod.ip, pod)
    ipaddress.ip_address(text)
    return Endpoint(text, view.pod_by_ip(text))
