"""Pure planner of the machine-level topology: the exact `ip -batch` payloads that build it.

Batches run in order; each names the namespace it runs in (None: no namespace option, used only
for `netns add`, which creates a namespace and touches nothing in the machine's own). Nothing here
talks to the kernel, so `up` can print what it would do and tests can compare text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubewire.cluster.addressing import NodePlan, Topology


@dataclass(frozen=True)
class Batch:
    netns: str | None
    lines: tuple[str, ...]


@dataclass
class Plan:
    namespaces: list[str] = field(default_factory=list)
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # netns -> key -> value
    batches: list[Batch] = field(default_factory=list)
    iptables: dict[str, str] = field(default_factory=dict)  # netns -> iptables-restore payload


ROUTER_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/conf/default/rp_filter": "0",
}
NODE_SYSCTLS = {
    **ROUTER_SYSCTLS,
    # Without it a Service backend's reply is bridged at L2 and never un-DNATed (KERNEL-NOTES).
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
    # kube-proxy's localhost NodePorts need it, as on a real node.
    "net/ipv4/conf/all/route_localnet": "1",
}


def mac_for(ip: str) -> str:
    """A MAC derived from the IPv4 address, as the CNI bridge plugin does (0a:58 + address)."""
    a, b, c, d = (int(x) for x in ip.split("."))
    return f"0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}"


def prefixlen(cidr: str) -> str:
    return cidr.split("/")[1]


NODE_LOCAL_DNS_IP = "169.254.20.10"


def plan_cluster(t: Topology, external_addresses: tuple[str, ...] = (), node_local_dns: bool = False) -> Plan:
    """Everything below pods: fabric, node namespaces and their bridges, cloud-lb, internet."""
    plan = Plan()
    plan.namespaces = [t.fabric_ns, t.cloudlb_ns, t.internet_ns, *(n.netns for n in t.nodes)]
    plan.batches.append(Batch(None, tuple(f"netns add {ns}" for ns in plan.namespaces)))
    plan.sysctls[t.fabric_ns] = dict(ROUTER_SYSCTLS)
    plan.sysctls[t.cloudlb_ns] = dict(ROUTER_SYSCTLS)
    for n in t.nodes:
        plan.sysctls[n.netns] = dict(NODE_SYSCTLS)

    fabric = ["link set lo up"]
    for z, (cidr, gw) in enumerate(zip(t.zone_cidrs, t.zone_gateways, strict=True)):
        fabric += [
            f"link add br-z{z} type bridge",
            f"addr add {gw}/{prefixlen(cidr)} dev br-z{z}",
            f"link set br-z{z} up",
        ]
    for n in t.nodes:
        fabric += [
            f"link add {n.fabric_port} type veth peer name eth0 netns {n.netns}",
            f"link set {n.fabric_port} master br-z{n.zone_index} up",
        ]
    fabric += [
        f"link add kwt0 type veth peer name eth1 netns {t.cloudlb_ns}",
        f"addr add {t.transit_fabric_ip}/30 dev kwt0",
        "link set kwt0 up",
    ]
    # Direct routing: every node's pod CIDR is routed to that node's address.
    fabric += [f"route add {n.pod_cidr} via {n.ip}" for n in t.nodes]
    fabric.append(f"route add {t.public_cidr} via {t.transit_cloudlb_ip}")
    plan.batches.append(Batch(t.fabric_ns, tuple(fabric)))

    for n in t.nodes:
        lines = node_lines(t, n)
        if node_local_dns:
            # upstream puts it on a dummy interface; this kernel has no dummy driver, and lo gives
            # the same local delivery
            lines.append(f"addr add {NODE_LOCAL_DNS_IP}/32 dev lo")
        plan.batches.append(Batch(n.netns, tuple(lines)))

    node_supernet = node_subnet_of(t)
    plan.batches.append(Batch(t.cloudlb_ns, (
        "link set lo up",
        f"addr add {t.transit_cloudlb_ip}/30 dev eth1",
        "link set eth1 up",
        f"link add kwi0 type veth peer name eth0 netns {t.internet_ns}",
        f"addr add {t.cloudlb_public_ip}/{prefixlen(t.public_cidr)} dev kwi0",
        "link set kwi0 up",
        # The edge knows node addresses only: pod and Service addresses are not routable from outside.
        f"route add {node_supernet} via {t.transit_fabric_ip}",
    )))
    plan.batches.append(Batch(t.internet_ns, (
        "link set lo up",
        f"addr add {t.internet_ip}/{prefixlen(t.public_cidr)} dev eth0",
        # the public resolver and the external hosts (api.stripe.com, ...) live here too
        *(f"addr add {a}/{prefixlen(t.public_cidr)} dev eth0" for a in (t.internet_dns_ip, *external_addresses)),
        "link set eth0 up",
        f"route add default via {t.cloudlb_public_ip}",
    )))
    for n in t.nodes:
        plan.iptables[n.netns] = masquerade_payload() + (node_local_dns_payload() if node_local_dns else "")
    return plan


def node_local_dns_payload() -> str:
    """NodeLocal DNSCache's rules: its traffic skips conntrack (no DNAT, no table entries, none of
    the conntrack races behind the 5-second DNS timeouts) and is accepted."""
    ip, c = NODE_LOCAL_DNS_IP, '-m comment --comment "NodeLocal DNS Cache: skip conntrack"'
    raw = [f"-A {chain} {d} {ip} -p {proto} -m {proto} {port} 53 {c} -j NOTRACK"
           for chain, d, port in (("PREROUTING", "-d", "--dport"), ("OUTPUT", "-s", "--sport"), ("OUTPUT", "-d", "--dport"))
           for proto in ("udp", "tcp")]
    flt = [f"-A {chain} {d} {ip} -p {proto} -m {proto} {port} 53 -j ACCEPT"
           for chain, d, port in (("INPUT", "-d", "--dport"), ("OUTPUT", "-s", "--sport")) for proto in ("udp", "tcp")]
    return "\n".join(["*raw", *raw, "COMMIT", "*filter", *flt, "COMMIT"]) + "\n"


NON_MASQUERADE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def masquerade_payload() -> str:
    """What ip-masq-agent (kind, GKE) writes on a node: traffic to private ranges keeps the pod's
    address; anything else (the internet) leaves SNATed to the node, since nothing outside routes
    pod addresses back."""
    c = "ip-masq-agent"
    lines = [
        "*nat",
        ":IP-MASQ-AGENT - [0:0]",
        f'-A POSTROUTING -m comment --comment "{c}: ensure nat POSTROUTING directs all non-LOCAL destination '
        f'traffic to our custom IP-MASQ-AGENT chain" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT',
        *(f'-A IP-MASQ-AGENT -d {cidr} -m comment --comment "{c}: local traffic is not subject to MASQUERADE" -j RETURN'
          for cidr in NON_MASQUERADE),
        f'-A IP-MASQ-AGENT -m comment --comment "{c}: outbound traffic is subject to MASQUERADE (must be last in chain)" -j MASQUERADE',
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def node_subnet_of(t: Topology) -> str:
    first = t.zone_cidrs[0].split("/")[0].split(".")
    return f"{first[0]}.{first[1]}.0.0/16"


def node_lines(t: Topology, n: NodePlan) -> list[str]:
    lines = [
        "link set lo up",
        f"addr add {n.ip}/{prefixlen(t.zone_cidrs[n.zone_index])} dev eth0",
        "link set eth0 up",
        f"route add default via {n.gateway}",
        f"link add cni0 address {mac_for(n.bridge_ip)} type bridge",
        f"addr add {n.bridge_ip}/24 dev cni0",
        "link set cni0 up",
    ]
    # Same-zone peers are on this L2 segment: reach their pods directly, not through the router.
    lines += [f"route add {p.pod_cidr} via {p.ip}" for p in t.nodes if p.zone_index == n.zone_index and p is not n]
    return lines
