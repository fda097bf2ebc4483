"""The `Cluster` config document (kubewire.io/v1alpha1), in the spirit of kind's config.

It says what the machine-level topology is (nodes, zones, CIDRs, modes); Kubernetes objects come
from manifests. Errors name the file and field, as manifest errors do.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kubewire.api.errors import FieldError, ManifestError

API_VERSION = "kubewire.io/v1alpha1"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PROXY_MODES = ("iptables", "nftables", "ebpf")
NFTABLES_LAYOUTS = ("upstream", "flat", "auto")
ROUTING_MODES = ("direct",)  # a VXLAN overlay is not built yet: refused rather than ignored


@dataclass
class NodeConfig:
    name: str
    zone: str
    region: str
    labels: dict[str, str] = field(default_factory=dict)
    cpu: str = "2"
    pods: int = 110


@dataclass
class ExternalHost:
    """A server on the internet side (e.g. api.stripe.com): an echo server at `address` on `ports`,
    named by the public DNS."""

    name: str
    address: str
    ports: list[int] = field(default_factory=lambda: [80])


def default_external_hosts() -> list[ExternalHost]:
    return [ExternalHost("api.stripe.com", "198.51.100.20", [80])]


@dataclass
class ClusterConfig:
    name: str = "kubewire"
    nodes: list[NodeConfig] = field(default_factory=list)
    pod_subnet: str = "10.244.0.0/16"
    service_subnet: str = "10.96.0.0/12"
    node_subnet: str = "172.18.0.0/16"
    public_subnet: str = "198.51.100.0/24"
    load_balancer_pool: str = "203.0.113.0/24"
    dns_domain: str = "cluster.local"
    proxy_mode: str = "iptables"
    nftables_layout: str = "auto"  # nftables mode: upstream | flat | auto (flat from 1000 Services)
    routing: str = "direct"
    restart_backoff_seconds: float = 10.0
    kube_proxy_sync_period: float = 30.0  # iptables mode: how often the canary chains are checked
    external_hosts: list[ExternalHost] = field(default_factory=default_external_hosts)
    node_local_dns: bool = False
    dns_ttl: int = 5

    @property
    def zones(self) -> list[str]:
        """Zones in order of first appearance: the fabric builds one segment per zone."""
        seen: list[str] = []
        for n in self.nodes:
            if n.zone not in seen:
                seen.append(n.zone)
        return seen


def default_nodes(cluster: str) -> list[NodeConfig]:
    """Three workers in two zones, named as kind names them."""
    return [
        NodeConfig(f"{cluster}-worker", "us-east-1a", "us-east-1"),
        NodeConfig(f"{cluster}-worker2", "us-east-1b", "us-east-1"),
        NodeConfig(f"{cluster}-worker3", "us-east-1a", "us-east-1"),
    ]


def load_config(path: str | None, name: str) -> ClusterConfig:
    """Read and validate a Cluster document, or give the default cluster when there is none."""
    if path is None:
        return validated(ClusterConfig(name=name, nodes=default_nodes(name)), "<default>")
    text = Path(path).read_text()
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ManifestError(path, 0, "Cluster", None, [FieldError("", f"invalid YAML: {e}")]) from e
    return parse_config(doc, name, path)


def parse_config(doc: dict, name: str, source: str = "<config>") -> ClusterConfig:
    errs: list[FieldError] = []

    def fail(p: str, msg: str) -> None:
        errs.append(FieldError(p, msg))

    if not isinstance(doc, dict):
        raise ManifestError(source, 0, None, None, [FieldError("", "must be a mapping")])
    if doc.get("apiVersion") != API_VERSION:
        fail("apiVersion", f'Unsupported value: "{doc.get("apiVersion")}": supported values: "{API_VERSION}"')
    if doc.get("kind") != "Cluster":
        fail("kind", f'Unsupported value: "{doc.get("kind")}": supported values: "Cluster"')
    known = {"apiVersion", "kind", "name", "nodes", "networking", "kubelet", "kubeProxy", "dns", "externalHosts"}
    for k in doc:
        if k not in known:
            fail(k, "unknown field")
    cfg = ClusterConfig(name=str(doc.get("name") or name))
    net = doc.get("networking") or {}
    net_fields = {
        "podSubnet": "pod_subnet",
        "serviceSubnet": "service_subnet",
        "nodeSubnet": "node_subnet",
        "publicSubnet": "public_subnet",
        "loadBalancerPool": "load_balancer_pool",
        "dnsDomain": "dns_domain",
        "kubeProxyMode": "proxy_mode",
        "kubeProxyNftablesLayout": "nftables_layout",
        "routing": "routing",
    }
    for k, v in net.items():
        if k not in net_fields:
            fail(f"networking.{k}", "unknown field")
        else:
            setattr(cfg, net_fields[k], str(v))
    dns = doc.get("dns") or {}
    for k in dns:
        if k not in ("nodeLocalDNSCache", "ttl"):
            fail(f"dns.{k}", "unknown field")
    cfg.node_local_dns = bool(dns.get("nodeLocalDNSCache", False))
    cfg.dns_ttl = int(dns.get("ttl", 5))
    if "externalHosts" in doc:
        cfg.external_hosts = []
        for i, e in enumerate(doc.get("externalHosts") or []):
            if not isinstance(e, dict) or not e.get("name") or not e.get("address"):
                fail(f"externalHosts[{i}]", "Required value: name and address")
                continue
            cfg.external_hosts.append(ExternalHost(str(e["name"]).lower().rstrip("."), str(e["address"]),
                                                   [int(p) for p in e.get("ports") or [80]]))
    kubelet = doc.get("kubelet") or {}
    if "restartBackoffSeconds" in kubelet:
        cfg.restart_backoff_seconds = float(kubelet["restartBackoffSeconds"])
    kube_proxy = doc.get("kubeProxy") or {}
    for k in kube_proxy:
        if k != "syncPeriodSeconds":
            fail(f"kubeProxy.{k}", "unknown field")
    if "syncPeriodSeconds" in kube_proxy:
        period = kube_proxy["syncPeriodSeconds"]
        if isinstance(period, bool) or not isinstance(period, (int, float)) or period <= 0:
            fail("kubeProxy.syncPeriodSeconds", f"Invalid value: {period!r}: must be a number of seconds greater than 0")
        else:
            cfg.kube_proxy_sync_period = float(period)
    nodes = doc.get("nodes")
    if nodes is None:
        cfg.nodes = default_nodes(cfg.name)
    else:
        for i, n in enumerate(nodes):
            p = f"nodes[{i}]"
            if not isinstance(n, dict):
                fail(p, "must be a mapping")
                continue
            for k in n:
                if k not in {"name", "zone", "region", "labels", "allocatable", "role"}:
                    fail(f"{p}.{k}", "unknown field")
            alloc = n.get("allocatable") or {}
            cfg.nodes.append(
                NodeConfig(
                    name=str(n.get("name") or f"{cfg.name}-worker{'' if i == 0 else i + 1}"),
                    zone=str(n.get("zone") or "us-east-1a"),
                    region=str(n.get("region") or "us-east-1"),
                    labels={str(a): str(b) for a, b in (n.get("labels") or {}).items()},
                    cpu=str(alloc.get("cpu", "2")),
                    pods=int(alloc.get("pods", 110)),
                )
            )
    if errs:
        raise ManifestError(source, 0, "Cluster", cfg.name, errs)
    return validated(cfg, source)


def validated(cfg: ClusterConfig, source: str) -> ClusterConfig:
    errs: list[FieldError] = []
    if not DNS_LABEL.match(cfg.name) or len(cfg.name) > 20:
        errs.append(FieldError("name", f'Invalid value: "{cfg.name}": must be a DNS-1123 label of at most 20 characters'))
    for attr, path in (("pod_subnet", "networking.podSubnet"), ("service_subnet", "networking.serviceSubnet"),
                       ("node_subnet", "networking.nodeSubnet"), ("public_subnet", "networking.publicSubnet"),
                       ("load_balancer_pool", "networking.loadBalancerPool")):
        try:
            ipaddress.IPv4Network(getattr(cfg, attr))
        except ValueError as e:
            errs.append(FieldError(path, f'Invalid value: "{getattr(cfg, attr)}": {e}'))
    if not errs:
        pod = ipaddress.IPv4Network(cfg.pod_subnet)
        if pod.prefixlen > 24 - max(1, (len(cfg.nodes) - 1).bit_length()):
            errs.append(FieldError("networking.podSubnet", f'Invalid value: "{cfg.pod_subnet}": too small for a /24 per node'))
        if ipaddress.IPv4Network(cfg.node_subnet).prefixlen > 16:
            errs.append(FieldError("networking.nodeSubnet", f'Invalid value: "{cfg.node_subnet}": must be a /16 or larger (a /24 per zone)'))
    if cfg.proxy_mode not in PROXY_MODES:
        errs.append(FieldError("networking.kubeProxyMode", f'Unsupported value: "{cfg.proxy_mode}": supported values: ' + ", ".join(f'"{m}"' for m in PROXY_MODES)))
    if cfg.nftables_layout not in NFTABLES_LAYOUTS:
        errs.append(FieldError("networking.kubeProxyNftablesLayout", f'Unsupported value: "{cfg.nftables_layout}": supported values: '
                               + ", ".join(f'"{m}"' for m in NFTABLES_LAYOUTS)))
    if cfg.routing not in ROUTING_MODES:
        errs.append(FieldError("networking.routing", f'Unsupported value: "{cfg.routing}": supported values: ' + ", ".join(f'"{m}"' for m in ROUTING_MODES)))
    if not cfg.nodes:
        errs.append(FieldError("nodes", "Required value: at least one node"))
    if len(cfg.nodes) > 200:
        errs.append(FieldError("nodes", "Too many: at most 200 nodes"))
    seen: set[str] = set()
    for i, n in enumerate(cfg.nodes):
        if not DNS_LABEL.match(n.name) or len(n.name) > 63:
            errs.append(FieldError(f"nodes[{i}].name", f'Invalid value: "{n.name}": must be a DNS-1123 label'))
        if n.name in seen:
            errs.append(FieldError(f"nodes[{i}].name", f'Duplicate value: "{n.name}"'))
        seen.add(n.name)
        if not 1 <= n.pods <= 250:
            errs.append(FieldError(f"nodes[{i}].allocatable.pods", f"Invalid value: {n.pods}: must be between 1 and 250 (a /24 per node)"))
    public = ipaddress.IPv4Network(cfg.public_subnet) if not errs else None
    for i, e in enumerate(cfg.external_hosts):
        try:
            if public is not None and ipaddress.IPv4Address(e.address) not in public:
                errs.append(FieldError(f"externalHosts[{i}].address", f'Invalid value: "{e.address}": must be inside networking.publicSubnet {cfg.public_subnet}'))
        except ValueError:
            errs.append(FieldError(f"externalHosts[{i}].address", f'Invalid value: "{e.address}": must be an IPv4 address'))
    if len(cfg.zones) > 250:
        errs.append(FieldError("nodes", "Too many zones"))
    if errs:
        raise ManifestError(source, 0, "Cluster", cfg.name, errs)
    return cfg


def to_doc(cfg: ClusterConfig) -> dict:
    """The config as a document, so the daemon and every later command see what `up` saw."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "name": cfg.name,
        "networking": {
            "podSubnet": cfg.pod_subnet,
            "serviceSubnet": cfg.service_subnet,
            "nodeSubnet": cfg.node_subnet,
            "publicSubnet": cfg.public_subnet,
            "loadBalancerPool": cfg.load_balancer_pool,
            "dnsDomain": cfg.dns_domain,
            "kubeProxyMode": cfg.proxy_mode,
            "kubeProxyNftablesLayout": cfg.nftables_layout,
            "routing": cfg.routing,
        },
        "kubelet": {"restartBackoffSeconds": cfg.restart_backoff_seconds},
        "kubeProxy": {"syncPeriodSeconds": cfg.kube_proxy_sync_period},
        "dns": {"nodeLocalDNSCache": cfg.node_local_dns, "ttl": cfg.dns_ttl},
        "externalHosts": [{"name": e.name, "address": e.address, "ports": e.ports} for e in cfg.external_hosts],
        "nodes": [
            {"name": n.name, "zone": n.zone, "region": n.region, "labels": n.labels,
             "allocatable": {"cpu": n.cpu, "pods": n.pods}}
            for n in cfg.nodes
        ],
    }
