"""Names and addresses of everything kubewire builds, derived from the config alone.

Every command derives the same names from the same config, so nothing needs to be looked up and a
leaked object can always be traced to its cluster by its prefix.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from kubewire.cluster.config import ClusterConfig, NodeConfig

NS_PREFIX = "kw-"
STATE_ROOT = "/run/kubewire"


def netns_prefix(cluster: str) -> str:
    return f"{NS_PREFIX}{cluster}-"


@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int
    zone: str
    zone_index: int
    region: str
    netns: str
    ip: str  # eth0 on the zone segment
    gateway: str  # the fabric's address on that segment
    pod_cidr: str
    bridge_ip: str  # cni0, the pods' gateway
    fabric_port: str  # the node's veth end in the fabric namespace


@dataclass(frozen=True)
class Topology:
    cluster: str
    fabric_ns: str
    cloudlb_ns: str
    internet_ns: str
    nodes: tuple[NodePlan, ...]
    zones: tuple[str, ...]
    zone_cidrs: tuple[str, ...]
    zone_gateways: tuple[str, ...]
    # internet <-> cloud-lb: the public segment; cloud-lb <-> fabric: a /30 transit link
    internet_ip: str
    internet_dns_ip: str  # the public resolver, in the internet namespace
    cloudlb_public_ip: str
    public_cidr: str
    transit_cloudlb_ip: str
    transit_fabric_ip: str
    pod_subnet: str

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def plan_topology(cfg: ClusterConfig) -> Topology:
    p = netns_prefix(cfg.name)
    node_net = ipaddress.IPv4Network(cfg.node_subnet)
    pod_net = ipaddress.IPv4Network(cfg.pod_subnet)
    pod_cidrs = list(pod_net.subnets(new_prefix=24))
    zone_nets = list(node_net.subnets(new_prefix=24))
    zones = cfg.zones
    nodes: list[NodePlan] = []
    per_zone: dict[str, int] = {}
    for i, n in enumerate(cfg.nodes):
        z = zones.index(n.zone)
        k = per_zone.get(n.zone, 0)
        per_zone[n.zone] = k + 1
        zn = zone_nets[z + 1]
        cidr = pod_cidrs[i]
        nodes.append(
            NodePlan(
                name=n.name,
                index=i,
                zone=n.zone,
                zone_index=z,
                region=n.region,
                netns=f"{p}node-{n.name}",
                ip=str(zn.network_address + 10 + k),
                gateway=str(zn.network_address + 1),
                pod_cidr=str(cidr),
                bridge_ip=str(cidr.network_address + 1),
                fabric_port=f"kwn{i}",
            )
        )
    transit = zone_nets[-1]
    public = ipaddress.IPv4Network(cfg.public_subnet)
    return Topology(
        cluster=cfg.name,
        fabric_ns=f"{p}fabric",
        cloudlb_ns=f"{p}cloud-lb",
        internet_ns=f"{p}internet",
        nodes=tuple(nodes),
        zones=tuple(zones),
        zone_cidrs=tuple(str(zone_nets[z + 1]) for z in range(len(zones))),
        zone_gateways=tuple(str(zone_nets[z + 1].network_address + 1) for z in range(len(zones))),
        internet_ip=str(public.network_address + 10),
        internet_dns_ip=str(public.network_address + 53),
        cloudlb_public_ip=str(public.network_address + 1),
        public_cidr=str(public),
        transit_cloudlb_ip=str(transit.network_address + 1),
        transit_fabric_ip=str(transit.network_address + 2),
        pod_subnet=cfg.pod_subnet,
    )


def cluster_dns_ip(cfg: ClusterConfig) -> str:
    """kube-dns's address: the service CIDR's 10th, as kubeadm sets it."""
    return str(ipaddress.IPv4Network(cfg.service_subnet).network_address + 10)


def node_config(cfg: ClusterConfig, name: str) -> NodeConfig:
    for n in cfg.nodes:
        if n.name == name:
            return n
    raise KeyError(name)


def pod_netns(cluster: str, uid: str) -> str:
    return f"{netns_prefix(cluster)}pod-{uid[:13]}"


def pod_veth(uid: str) -> str:
    """Host-side veth name, as CNI plugins name them: 'veth' + 8 hex digits (15-char limit)."""
    return "veth" + hashlib.sha1(uid.encode()).hexdigest()[:8]


def state_dir(cluster: str) -> str:
    return f"{STATE_ROOT}/{cluster}"
