"""Byte-for-byte tests of the nftables kube-proxy planner against upstream's expectations.

Upstream (kubernetes/kubernetes pkg/proxy/nftables/proxier_test.go) runs its proxier against
knftables' fake and compares the fake's Dump() (the table's state, one "add ..." command per
object) with literal expectations after sorting both with its sortNFTablesTransaction. We do the
same: our transactions are applied to a small port of the fake (`FakeTable`, enough of it for the
commands kube-proxy writes), dumped, and compared with upstream's literal text after a port of the
same sort. Transaction sizes are compared with upstream's NumOperations() expectations.

Upstream's fake proxier hard-codes the mark "0x4000" where the real one writes "%#08x" of
1<<masqueradeBit ("0x00004000"); comparisons substitute the former for the latter.
"""

from __future__ import annotations

import re
import textwrap

import pytest
import typer
from typer.testing import CliRunner

from kubewire.cli.proxy_cmd import proxy_app
from kubewire.proxy.model import KubeProxyConfig, ServicePortName, build_endpoints_map, build_service_map
from kubewire.proxy.nftables import (
    NftState,
    changed_services,
    endpoint_chain_base,
    nft_params,
    plan_sync,
    render_full,
    service_port_chain_base,
)

# ---------------------------------------------------------------------------------------------
# Upstream's fixture (NewFakeProxier): node "test-node", node IP 192.168.0.2, pod CIDR 10.0.0.0/8
# for local detection, service CIDR 172.30.0.0/16, nodePortAddresses 192.168.0.2/32 and
# 2001:db8::1/128.
# ---------------------------------------------------------------------------------------------

TEST_NODE = "test-node"
TEST_NODE_IPS = ["192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2"]
UPSTREAM_CONFIG = KubeProxyConfig(
    cluster_cidr="10.0.0.0/8,fd00:10::/64",
    node_port_addresses=("192.168.0.2/32", "2001:db8::1/128"),
)
SERVICE_CIDRS = ["172.30.0.0/16", "fd00:10:96::/112"]


def upstream_params(family="IPv4", config=UPSTREAM_CONFIG):
    return nft_params(config, TEST_NODE, TEST_NODE_IPS, {}, family, (), SERVICE_CIDRS)


def svc(ns: str, name: str, **spec) -> dict:
    status = spec.pop("status", None)
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def lb_status(*ips: str) -> dict:
    return {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}


def eps(ns: str, service: str, endpoints: list[dict], ports: list[dict], num: int = 1, family="IPv4") -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": f"{service}-{num}", "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports,
    }


def ep(ip: str, node: str | None = None, **conditions) -> dict:
    out: dict = {"addresses": [ip]}
    if node is not None:
        out["nodeName"] = node
    if conditions:
        out["conditions"] = conditions
    return out


def port(name: str, number: int, protocol: str = "TCP", node_port: int = 0) -> dict:
    out = {"name": name, "port": number, "protocol": protocol}
    if node_port:
        out["nodePort"] = node_port
    return out


# ---------------------------------------------------------------------------------------------
# A port of what knftables' Fake does with the commands kube-proxy writes, and of its Dump().
# ---------------------------------------------------------------------------------------------

_LINE = re.compile(r"^(add|flush|delete) (table|chain|rule|set|map|element) (ip6?) kube-proxy ?(\S*) ?(.*)$")


class FakeTable:
    def __init__(self) -> None:
        self.table: str | None = None
        self.chains: dict[str, tuple[str, list[str]]] = {}  # name -> (add line, rules)
        self.sets: dict[str, tuple[str, dict[str, str]]] = {}  # name -> (add line, key -> add line)
        self.ops = 0

    def run(self, text: str) -> None:
        for line in text.splitlines():
            self.ops += 1
            m = _LINE.match(line)
            assert m, f"unexpected command {line!r}"
            verb, kind, _family, name, rest = m.groups()
            if kind == "table":
                assert verb == "add"
                self.table = line
            elif kind == "chain":
                if verb == "add":
                    self.chains.setdefault(name, (line, []))
                elif verb == "flush":
                    assert name in self.chains, f"flush of missing chain {name}"
                    self.chains[name][1].clear()
                else:
                    assert name in self.chains, f"delete of missing chain {name}"
                    referenced = [c for c, (_, rules) in self.chains.items() if any(name in r for r in rules)]
                    assert not referenced or name in {n for n, *_ in _BASE}, f"{name} still used by {referenced}"
                    del self.chains[name]
            elif kind == "rule":
                assert verb == "add" and name in self.chains, f"rule in missing chain: {line}"
                self.chains[name][1].append(line)
            elif kind in ("set", "map"):
                if verb == "add":
                    self.sets.setdefault(name, (line, {}))
                elif verb == "flush":
                    self.sets[name][1].clear()
                else:
                    del self.sets[name]
            else:
                key = rest.strip("{} ").split(" comment ")[0].split(" : ")[0]
                if verb == "add":
                    assert key not in self.sets[name][1], f"element exists: {line}"
                    self.sets[name][1][key] = line
                else:
                    assert key in self.sets[name][1], f"delete of missing element: {line}"
                    del self.sets[name][1][key]

    def dump(self) -> str:
        lines = [self.table or ""]
        lines += [header for header, _ in self.chains.values()]
        lines += [header for header, _ in self.sets.values()]
        for _, rules in self.chains.values():
            lines += rules
        for _, elements in self.sets.values():
            lines += elements.values()
        return "\n".join(lines)


_BASE = [("filter-prerouting-pre-dnat",), ("filter-output-pre-dnat",), ("filter-input",), ("filter-forward",),
         ("filter-output",), ("nat-prerouting",), ("nat-output",), ("nat-postrouting",)]  # fmt: skip

_OBJECT_ORDER = {"table": 10, "chain": 9, "rule": 8, "set": 7, "map": 6, "element": 5}


def sort_nftables_transaction(tx: str) -> str:
    """Port of upstream's sortNFTablesTransaction (helpers_test.go)."""
    lines = [line for line in tx.split("\n") if line and not line.startswith("#")]

    import functools

    def less(li: str, lj: str) -> bool:
        wi, wj = li.split(" "), lj.split(" ")
        if len(wi) < 5 or len(wj) < 5:
            return False
        if wi[1] != wj[1]:
            return _OBJECT_ORDER.get(wi[1], 0) >= _OBJECT_ORDER.get(wj[1], 0)
        if wi[4] != wj[4]:
            return wi[4] < wj[4]
        if wi[1] == "rule":
            return False
        return li < lj

    def cmp(a: tuple[int, str], b: tuple[int, str]) -> int:
        if less(a[1], b[1]):
            return -1
        if less(b[1], a[1]):
            return 1
        return a[0] - b[0]  # stable

    ordered = sorted(enumerate(lines), key=functools.cmp_to_key(cmp))
    return "\n".join(line for _, line in ordered)


def assert_dump_equal(expected: str, table: FakeTable) -> None:
    got = sort_nftables_transaction(table.dump().replace("0x00004000", "0x4000"))
    want = sort_nftables_transaction(textwrap.dedent(expected))
    assert got == want


class Proxier:
    """Drives plan_sync the way upstream's test drives syncProxyRules, against a FakeTable."""

    def __init__(self, family="IPv4") -> None:
        self.params = upstream_params(family)
        self.family = family
        self.nft = FakeTable()
        self.state: NftState | None = None
        self.services: dict[tuple[str, str], dict] = {}
        self.slices: dict[tuple[str, str], dict] = {}
        self.svc_map: dict = {}
        self.ep_map: dict = {}
        self.now = 1000.0
        self.last_ops = 0

    def set_services(self, *objs: dict) -> None:
        for o in objs:
            self.services[(o["metadata"]["namespace"], o["metadata"]["name"])] = o

    def delete_service(self, ns: str, name: str) -> None:
        del self.services[(ns, name)]

    def set_slices(self, *objs: dict) -> None:
        for o in objs:
            self.slices[(o["metadata"]["namespace"], o["metadata"]["name"])] = o

    def sync(self) -> None:
        svc_map = build_service_map(list(self.services.values()), self.family)
        ep_map = build_endpoints_map(list(self.slices.values()), TEST_NODE, self.family)
        changed = None
        if self.state is not None:
            changed = changed_services(self.svc_map, self.ep_map, svc_map, ep_map)
        plan = plan_sync(svc_map, ep_map, self.params, self.state, changed, self.now)
        self.nft.run(plan.cleanup.text())
        before = self.nft.ops
        self.nft.run(plan.tx.text())
        self.last_ops = self.nft.ops - before
        assert self.last_ops == len(plan.tx)
        self.state, self.svc_map, self.ep_map = plan.state, svc_map, ep_map
        self.now += 0.1

    def age_stale_chains(self) -> None:
        self.now += 2.0


BASE_RULES = """
    add table ip kube-proxy { comment "rules for kube-proxy" ; }

    add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
    add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }

    add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
    add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
    add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
    add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
    add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }

    add chain ip kube-proxy cluster-ips-check
    add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
    add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
    add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
    add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
    add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
    add chain ip kube-proxy firewall-check
    add chain ip kube-proxy mark-for-masquerade
    add chain ip kube-proxy masquerading
    add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
    add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
    add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
    add chain ip kube-proxy nodeport-endpoints-check
    add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
    add chain ip kube-proxy services
    add chain ip kube-proxy service-endpoints-check

    add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
    add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
    add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
    add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
    add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
    add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
    add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
    add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
    add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
    add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
    add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
    add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
    add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
    add rule ip kube-proxy masquerading mark set mark xor 0x4000
    add rule ip kube-proxy masquerading masquerade fully-random
    add rule ip kube-proxy nat-output jump services
    add rule ip kube-proxy nat-postrouting jump masquerading
    add rule ip kube-proxy nat-prerouting jump services
    add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
    add rule ip kube-proxy reject-chain reject
    add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
    add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports

    add element ip kube-proxy nodeport-ips { 192.168.0.2 }
    add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"""


def dedent(text: str) -> str:
    """Upstream's baseRules + dedent.Dedent(text), for text pieced together from indented parts."""
    return "\n".join(line.strip() for line in (BASE_RULES + "\n" + text).splitlines())


# ---------------------------------------------------------------------------------------------
# Names (Test_servicePortChainNameBase, Test_servicePortEndpointChainNameBase)
# ---------------------------------------------------------------------------------------------

LONG_NS = "very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx"
LONG_SVC = "very-long-service-name-why-would-you-even-do-this-i-mean-really"
LONG_PORT = "port-443-providing-the-hypertext-transmission-protocol-with-tls"


@pytest.mark.parametrize(
    ("spn", "expected"),
    [
        (ServicePortName("testing", "service", "http", "TCP"), "P4ZYZVCF-testing/service/tcp/http"),
        (ServicePortName("testing", "service", "https", "TCP"), "LZBRENCP-testing/service/tcp/https"),
        (ServicePortName(LONG_NS, LONG_SVC, LONG_PORT, "SCTP"), f"KR6NACJP-{LONG_NS}/{LONG_SVC}/sctp/{LONG_PORT}"),
    ],
)
def test_service_port_chain_name_base(spn: ServicePortName, expected: str) -> None:
    assert service_port_chain_base(spn) == expected


@pytest.mark.parametrize(
    ("spn", "endpoint", "expected"),
    [
        (ServicePortName("testing", "service", "http", "TCP"), "10.180.0.1:80",
         "JO2XBXZR-testing/service/tcp/http__10.180.0.1/80"),
        (ServicePortName("testing", "service", "http", "TCP"), "10.180.0.2:80",
         "5S6H3H22-testing/service/tcp/http__10.180.0.2/80"),
        (ServicePortName("testing", "service", "http", "TCP"), "[fd80:abcd:12::a1b2:c3d4:e5f6:9999]:80",
         "U7E2ET36-testing/service/tcp/http__fd80.abcd.12..a1b2.c3d4.e5f6.9999/80"),
        (ServicePortName(LONG_NS, LONG_SVC, LONG_PORT, "SCTP"), "[1234:5678:9abc:def0::abc:1234]:443",
         f"5YS7AFEA-{LONG_NS}/{LONG_SVC}/sctp/{LONG_PORT}__1234.5678.9abc.def0..abc.1234/443"),
        (ServicePortName(LONG_NS, LONG_SVC, LONG_PORT, "SCTP"), "[1234:5678:9abc:def0::abcd:1234:5678]:443",
         f"CI6C53Q3-{LONG_NS}/{LONG_SVC}/sctp/{LONG_PORT}__1234.5678.9abc.def0..abcd.1234..."),
        (ServicePortName(LONG_NS, LONG_SVC, LONG_PORT, "SCTP"), "[1234:5678:9abc:def0::abcd:1234:8765]:443",
         f"2FLXFK6X-{LONG_NS}/{LONG_SVC}/sctp/{LONG_PORT}__1234.5678.9abc.def0..abcd.1234..."),
    ],
)  # fmt: skip
def test_endpoint_chain_name_base(spn: ServicePortName, endpoint: str, expected: str) -> None:
    assert endpoint_chain_base(spn, endpoint) == expected


# ---------------------------------------------------------------------------------------------
# TestOverallNFTablesRules: ClusterIP, LoadBalancer with eTP Local (no local endpoints), NodePort,
# externalIPs, LoadBalancer with source ranges and ClientIP affinity, no endpoints.
# ---------------------------------------------------------------------------------------------

OVERALL_SERVICES = [
    svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)]),
    svc("ns2", "svc2", type="LoadBalancer", externalTrafficPolicy="Local", clusterIP="172.30.0.42",
        ports=[port("p80", 80, node_port=3001)], status=lb_status("1.2.3.4"), externalIPs=["192.168.99.22"],
        healthCheckNodePort=30000),
    svc("ns3", "svc3", type="NodePort", clusterIP="172.30.0.43", ports=[port("p80", 80, node_port=3003)]),
    svc("ns4", "svc4", type="NodePort", clusterIP="172.30.0.44", externalIPs=["192.168.99.33"],
        ports=[port("p80", 80)]),
    svc("ns5", "svc5", type="LoadBalancer", externalTrafficPolicy="Cluster", clusterIP="172.30.0.45",
        ports=[port("p80", 80, node_port=3002)], status=lb_status("5.6.7.8"), healthCheckNodePort=30000,
        loadBalancerSourceRanges=[" 203.0.113.0/25"], sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10800}}),
    svc("ns6", "svc6", type="ClusterIP", clusterIP="172.30.0.46", ports=[port("p80", 80)]),
]  # fmt: skip
OVERALL_SLICES = [
    eps("ns1", "svc1", [ep("10.180.0.1")], [port("p80", 80)]),
    eps("ns2", "svc2", [ep("10.180.0.2")], [port("p80", 80)]),
    eps("ns3", "svc3", [ep("10.180.0.3")], [port("p80", 80)]),
    eps("ns4", "svc4", [ep("10.180.0.4"), ep("10.180.0.5", TEST_NODE)], [port("p80", 80)]),
    eps("ns5", "svc5", [ep("10.180.0.3")], [port("p80", 80)]),
]

OVERALL_EXPECTED = """
    # svc1
    add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
    add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }

    add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
    add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80

    add element ip kube-proxy cluster-ips { 172.30.0.41 }
    add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }

    # svc2
    add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
    add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }
    add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
    add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
    add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
    add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
    add chain ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
    add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80

    add element ip kube-proxy cluster-ips { 172.30.0.42 }
    add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
    add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
    add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
    add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }

    add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
    add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
    add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }

    # svc3
    add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
    add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 }
    add chain ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
    add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
    add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
    add chain ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80
    add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

    add element ip kube-proxy cluster-ips { 172.30.0.43 }
    add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
    add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }

    # svc4
    add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
    add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
    add chain ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80
    add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 jump mark-for-masquerade
    add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80
    add chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80
    add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
    add chain ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80
    add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 ip saddr 10.180.0.4 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80

    add element ip kube-proxy cluster-ips { 172.30.0.44 }
    add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
    add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }

    # svc5
    add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
    add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
    add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
    add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
    add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
    add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
    add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80

    add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
    add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
    add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

    add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
    add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop

    add element ip kube-proxy cluster-ips { 172.30.0.45 }
    add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
    add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
    add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
    add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }

    # svc6
    add element ip kube-proxy cluster-ips { 172.30.0.46 }
    add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"""


def test_overall_nftables_rules() -> None:
    fp = Proxier()
    fp.set_services(*OVERALL_SERVICES)
    fp.set_slices(*OVERALL_SLICES)
    fp.sync()
    assert_dump_equal(dedent(OVERALL_EXPECTED), fp.nft)


def test_render_full_is_the_same_transaction() -> None:
    text = render_full(OVERALL_SERVICES, OVERALL_SLICES, UPSTREAM_CONFIG, TEST_NODE, TEST_NODE_IPS,
                       service_cidrs=["172.30.0.0/16"])  # fmt: skip
    nft = FakeTable()
    nft.run(text)
    assert_dump_equal(dedent(OVERALL_EXPECTED), nft)
    # Deterministic, and independent of the order of the input documents.
    assert text == render_full(list(reversed(OVERALL_SERVICES)), list(reversed(OVERALL_SLICES)), UPSTREAM_CONFIG,
                               TEST_NODE, TEST_NODE_IPS, service_cidrs=["172.30.0.0/16"])  # fmt: skip


def test_service_cidr_objects() -> None:
    cidr_objects = [
        {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": "kubernetes"},
         "spec": {"cidrs": ["172.30.0.0/16", "fd00:10:96::/112"]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": "extra"},
         "spec": {"cidrs": ["172.50.0.0/16"]}},
    ]  # fmt: skip
    text = render_full(OVERALL_SERVICES + cidr_objects, OVERALL_SLICES, UPSTREAM_CONFIG, TEST_NODE, TEST_NODE_IPS)
    assert (
        'add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16,172.50.0.0/16 } drop comment '
        '"Drop traffic to unallocated ClusterIPs"\n'
    ) in text
    v6 = render_full([], [], UPSTREAM_CONFIG, TEST_NODE, TEST_NODE_IPS, ip_family="IPv6",
                     service_cidrs=["172.30.0.0/16", "fd00:10:96::/112"])  # fmt: skip
    assert "ip6 daddr { fd00:10:96::/112 } drop" in v6 and "172.30" not in v6
    # No service CIDR known: no drop rule (upstream's serviceCIDRs == "").
    assert "Drop traffic" not in render_full([], [], UPSTREAM_CONFIG, TEST_NODE, TEST_NODE_IPS)


# ---------------------------------------------------------------------------------------------
# TestBadIPs: "bad" IPs and CIDRs are rewritten to good ones.
# ---------------------------------------------------------------------------------------------


def test_bad_ips() -> None:
    fp = Proxier()
    fp.set_services(
        svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.041", ports=[port("p80", 80, node_port=3001)],
            status=lb_status("1.2.3.004"), externalIPs=["192.168.099.022"],
            loadBalancerSourceRanges=["203.0.113.000/025"]),
    )  # fmt: skip
    fp.set_slices(eps("ns1", "svc1", [ep("10.180.00.001")], [port("p80", 80)]))
    fp.sync()
    assert_dump_equal(dedent("""
        # svc1
        add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
        add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
        add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }

        add chain ip kube-proxy external-ULMVA6XW-ns1/svc1/tcp/p80
        add rule ip kube-proxy external-ULMVA6XW-ns1/svc1/tcp/p80 jump mark-for-masquerade
        add rule ip kube-proxy external-ULMVA6XW-ns1/svc1/tcp/p80 goto service-ULMVA6XW-ns1/svc1/tcp/p80

        add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
        add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
        add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80

        add chain ip kube-proxy firewall-ULMVA6XW-ns1/svc1/tcp/p80
        add rule ip kube-proxy firewall-ULMVA6XW-ns1/svc1/tcp/p80 ip saddr != { 203.0.113.0/25 } drop

        add element ip kube-proxy cluster-ips { 172.30.0.41 }
        add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
        add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-ULMVA6XW-ns1/svc1/tcp/p80 }
        add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-ULMVA6XW-ns1/svc1/tcp/p80 }
        add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-ULMVA6XW-ns1/svc1/tcp/p80 }
        add element ip kube-proxy firewall-ips { 1.2.3.4 . tcp . 80 : goto firewall-ULMVA6XW-ns1/svc1/tcp/p80 }
    """), fp.nft)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# TestSyncProxyRulesRepeated: partial syncs write only what changed (dumps and operation counts).
# ---------------------------------------------------------------------------------------------

SVC1 = """
    add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
    add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 }
    add chain ip kube-proxy endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80
    add rule ip kube-proxy endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 ip saddr 10.0.1.1 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-5TPGNJF2-ns1/svc1/tcp/p80__10.0.1.1/80 meta l4proto tcp dnat to 10.0.1.1:80
"""
SVC2 = """
    add chain ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080
    add rule ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080 ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080 numgen random mod 1 vmap { 0 : goto endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080 }
    add chain ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080
    add rule ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080 ip saddr 10.0.2.1 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080 meta l4proto tcp dnat to 10.0.2.1:8080
"""
SVC3 = """
    add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
    add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80 }
    add chain ip kube-proxy endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80
    add rule ip kube-proxy endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80 ip saddr 10.0.3.1 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80 meta l4proto tcp dnat to 10.0.3.1:80
"""
SVC3_TWO = """
    add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
    add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 , 1 : goto endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80 }
    add chain ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80
    add rule ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 ip saddr 10.0.3.2 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 meta l4proto tcp dnat to 10.0.3.2:80
    add chain ip kube-proxy endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80
    add rule ip kube-proxy endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80 ip saddr 10.0.3.3 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80 meta l4proto tcp dnat to 10.0.3.3:80
"""
SVC4 = """
    add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
    add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
    add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-WAHRBT2B-ns4/svc4/tcp/p80__10.0.4.1/80 }
    add chain ip kube-proxy endpoint-WAHRBT2B-ns4/svc4/tcp/p80__10.0.4.1/80
    add rule ip kube-proxy endpoint-WAHRBT2B-ns4/svc4/tcp/p80__10.0.4.1/80 ip saddr 10.0.4.1 jump mark-for-masquerade
    add rule ip kube-proxy endpoint-WAHRBT2B-ns4/svc4/tcp/p80__10.0.4.1/80 meta l4proto tcp dnat to 10.0.4.1:80
"""


def _elements(*lines: str) -> str:
    return "\n".join(f"add element ip kube-proxy {line}" for line in lines) + "\n"


def test_sync_proxy_rules_repeated() -> None:
    fp = Proxier()
    fp.set_services(
        svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)]),
        svc("ns2", "svc2", clusterIP="172.30.0.42", ports=[port("p8080", 8080)]),
    )
    fp.set_slices(
        eps("ns1", "svc1", [ep("10.0.1.1")], [port("p80", 80)]),
        eps("ns2", "svc2", [ep("10.0.2.1")], [port("p8080", 8080)]),
    )
    fp.sync()
    assert_dump_equal(dedent(_elements(
        "cluster-ips { 172.30.0.41 }", "cluster-ips { 172.30.0.42 }",
        "service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }",
        "service-ips { 172.30.0.42 . tcp . 8080 : goto service-MHHHYRWA-ns2/svc2/tcp/p8080 }",
    ) + SVC1 + SVC2), fp.nft)  # fmt: skip

    # Add a new service and its endpoints.
    fp.set_services(svc("ns3", "svc3", clusterIP="172.30.0.43", ports=[port("p80", 80)]))
    eps3 = eps("ns3", "svc3", [ep("10.0.3.1")], [port("p80", 80)])
    fp.set_slices(eps3)
    fp.sync()
    assert_dump_equal(dedent(_elements(
        "cluster-ips { 172.30.0.41 }", "cluster-ips { 172.30.0.42 }", "cluster-ips { 172.30.0.43 }",
        "service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }",
        "service-ips { 172.30.0.42 . tcp . 8080 : goto service-MHHHYRWA-ns2/svc2/tcp/p8080 }",
        "service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }",
    ) + SVC1 + SVC2 + SVC3), fp.nft)  # fmt: skip
    # 1 element each in cluster-ips and service-ips; add+flush 2 chains and 2 rules in each.
    assert fp.last_ops == 10

    # Delete a service: its chains are flushed, not deleted yet.
    fp.delete_service("ns2", "svc2")
    fp.sync()
    svc2_flushed = """
        add chain ip kube-proxy service-MHHHYRWA-ns2/svc2/tcp/p8080
        add chain ip kube-proxy endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080
    """
    base13 = _elements(
        "cluster-ips { 172.30.0.41 }", "cluster-ips { 172.30.0.43 }",
        "service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }",
        "service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }",
    )  # fmt: skip
    assert_dump_equal(dedent(base13 + SVC1 + textwrap.dedent(svc2_flushed) + SVC3), fp.nft)
    assert fp.last_ops == 4

    # A second later the stale chains go, in a transaction of their own.
    fp.age_stale_chains()
    fp.sync()
    assert_dump_equal(dedent(base13 + SVC1 + SVC3), fp.nft)
    assert fp.last_ops == 0

    # Add a service, sync, then add its endpoints.
    fp.set_services(svc("ns4", "svc4", clusterIP="172.30.0.44", ports=[port("p80", 80)]))
    fp.sync()
    assert_dump_equal(dedent(base13 + _elements(
        "cluster-ips { 172.30.0.44 }",
        'no-endpoint-services { 172.30.0.44 . tcp . 80 comment "ns4/svc4:p80" : goto reject-chain }',
    ) + SVC1 + SVC3), fp.nft)  # fmt: skip
    assert fp.last_ops == 2

    fp.set_slices(eps("ns4", "svc4", [ep("10.0.4.1")], [port("p80", 80)]))
    fp.sync()
    base134 = base13 + _elements(
        "cluster-ips { 172.30.0.44 }",
        "service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }",
    )
    assert_dump_equal(dedent(base134 + SVC1 + SVC3 + SVC4), fp.nft)
    assert fp.last_ops == 10

    # Change an endpoint of an existing service: the old endpoint chain stays (flushed).
    eps3_update = eps("ns3", "svc3", [ep("10.0.3.2")], [port("p80", 80)])
    fp.set_slices(eps3_update)
    fp.sync()
    svc3_moved = """
        add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
        add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
        add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 }
        add chain ip kube-proxy endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80
        add chain ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80
        add rule ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 ip saddr 10.0.3.2 jump mark-for-masquerade
        add rule ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80 meta l4proto tcp dnat to 10.0.3.2:80
    """
    assert_dump_equal(dedent(base134 + SVC1 + textwrap.dedent(svc3_moved) + SVC4), fp.nft)
    assert fp.last_ops == 9

    # (The old svc3 chain goes in the next sync.) Add an endpoint to a service.
    fp.age_stale_chains()
    eps3_two = eps("ns3", "svc3", [ep("10.0.3.2"), ep("10.0.3.3")], [port("p80", 80)])
    fp.set_slices(eps3_two)
    fp.sync()
    assert_dump_equal(dedent(base134 + SVC1 + SVC3_TWO + SVC4), fp.nft)
    assert fp.last_ops == 12

    # Empty a service's endpoints: its chains are flushed, not deleted yet.
    fp.set_slices(eps("ns3", "svc3", [], [port("p80", 80)]))
    fp.sync()
    empty3 = base13.replace(
        "service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }",
        'no-endpoint-services { 172.30.0.43 . tcp . 80 comment "ns3/svc3:p80" : goto reject-chain }',
    ) + _elements(
        "cluster-ips { 172.30.0.44 }",
        "service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }",
    )
    svc3_flushed = """
        add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
        add chain ip kube-proxy endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80
        add chain ip kube-proxy endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80
    """
    assert_dump_equal(dedent(empty3 + SVC1 + textwrap.dedent(svc3_flushed) + SVC4), fp.nft)
    assert fp.last_ops == 5
    assert set(fp.state.stale_chains) == {
        "service-4AT6LBPK-ns3/svc3/tcp/p80",
        "endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80",
        "endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80",
    }

    # Restore the endpoints at once: the chains are refilled and no longer stale.
    fp.set_slices(eps3_two)
    fp.sync()
    assert_dump_equal(dedent(base134 + SVC1 + SVC3_TWO + SVC4), fp.nft)
    assert fp.last_ops == 14
    assert not fp.state.stale_chains

    # Empty and restore after the stale chains aged: deleted, then recreated.
    fp.set_slices(eps("ns3", "svc3", [], [port("p80", 80)]))
    fp.sync()
    fp.age_stale_chains()
    fp.set_slices(eps3_two)
    fp.sync()
    assert_dump_equal(dedent(base134 + SVC1 + SVC3_TWO + SVC4), fp.nft)

    # No change: nothing written.
    fp.sync()
    assert_dump_equal(dedent(base134 + SVC1 + SVC3_TWO + SVC4), fp.nft)
    assert fp.last_ops == 0


def test_full_resync_rewrites_everything_and_cleans_up() -> None:
    """A full sync over an existing table (upstream's periodic resync) converges to the same dump."""
    fp = Proxier()
    fp.set_services(*OVERALL_SERVICES)
    fp.set_slices(*OVERALL_SLICES)
    fp.sync()
    fp.delete_service("ns1", "svc1")
    plan = plan_sync(build_service_map(list(fp.services.values())),
                     build_endpoints_map(list(fp.slices.values()), TEST_NODE), fp.params, fp.state, None, fp.now)  # fmt: skip
    assert plan.full and "add chain ip kube-proxy filter-input {" in plan.tx.text()
    assert "delete chain ip kube-proxy filter-input\n" not in plan.tx.text()  # only once per process
    fp.nft.run(plan.tx.text())
    assert "service-ULMVA6XW" not in "\n".join(line for line in plan.tx.text().splitlines() if line.startswith("add"))
    assert "flush chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80\n" in plan.tx.text()


# ---------------------------------------------------------------------------------------------
# Other cases
# ---------------------------------------------------------------------------------------------


def test_nodeport_addresses_default_and_match_all() -> None:
    # nftables mode: unset nodePortAddresses means the node's primary IP; no localhost NodePorts.
    text = render_full([], [], KubeProxyConfig(cluster_cidr="10.244.0.0/16"), "n", ["172.18.0.2"])
    assert "add element ip kube-proxy nodeport-ips { 172.18.0.2 }\n" in text
    assert "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports" in text
    text = render_full([], [], KubeProxyConfig(node_port_addresses=("0.0.0.0/0",)), "n", ["172.18.0.2"])
    assert "delete set ip kube-proxy nodeport-ips\n" in text
    assert "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports" in text
    assert "nodeport-endpoints-check ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap" in text
    # 127.0.0.0/8 in nodePortAddresses: localhost is dropped, as upstream does.
    text = render_full([], [], KubeProxyConfig(node_port_addresses=("127.0.0.0/8", "172.18.0.0/16")), "n",
                       ["172.18.0.2"])  # fmt: skip
    assert "nodeport-ips { 127" not in text and "nodeport-ips { 172.18.0.2 }" in text


def test_no_local_detector_and_masquerade_all() -> None:
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)])]
    slices = [eps("ns1", "svc1", [ep("10.180.0.1")], [port("p80", 80)])]
    text = render_full(services, slices, KubeProxyConfig(), TEST_NODE, TEST_NODE_IPS)
    assert "jump mark-for-masquerade\n" in text and "ip daddr 172.30.0.41" not in text
    text = render_full(services, slices, KubeProxyConfig(masquerade_all=True), TEST_NODE, TEST_NODE_IPS)
    assert "service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 jump mark-for-masquerade\n" in text
    bridge = KubeProxyConfig(detect_local_mode="BridgeInterface", bridge_interface="cni0")
    text = render_full(services, slices, bridge, TEST_NODE, TEST_NODE_IPS)
    assert "ip daddr 172.30.0.41 iif != cni0 jump mark-for-masquerade\n" in text


def test_internal_traffic_policy_local_without_local_endpoints_drops() -> None:
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", internalTrafficPolicy="Local", ports=[port("p80", 80)])]
    slices = [eps("ns1", "svc1", [ep("10.180.0.1", "other")], [port("p80", 80)])]
    text = render_full(services, slices, UPSTREAM_CONFIG, TEST_NODE, TEST_NODE_IPS)
    assert 'add element ip kube-proxy no-endpoint-services { 172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : drop }\n' in text
    assert not [line for line in text.splitlines() if line.startswith("add chain") and "/svc1/" in line]


def test_ipv6() -> None:
    services = [svc("ns1", "svc1", clusterIP="fd00:172:30::41", ipFamilies=["IPv6"], ports=[port("p80", 80)])]
    slices = [eps("ns1", "svc1", [ep("fd00:10:180::1")], [port("p80", 80)], family="IPv6")]
    text = render_full(services, slices, UPSTREAM_CONFIG, TEST_NODE, TEST_NODE_IPS, ip_family="IPv6",
                       service_cidrs=SERVICE_CIDRS)  # fmt: skip
    assert text.startswith('add table ip6 kube-proxy { comment "rules for kube-proxy" ; }\n')
    assert "add set ip6 kube-proxy cluster-ips { type ipv6_addr ;" in text
    assert "add element ip6 kube-proxy nodeport-ips { 2001:db8::1 }\n" in text
    assert "ip6 daddr fd00:172:30::41 ip6 saddr != fd00:10::/64 jump mark-for-masquerade" in text
    assert "meta l4proto tcp dnat to [fd00:10:180::1]:80\n" in text
    assert "endpoint-" in text and "__fd00.10.180..1/80" in text


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _cli(*args: str, input: str | None = None):
    app = typer.Typer()
    app.add_typer(proxy_app, name="proxy")
    return CliRunner().invoke(app, ["proxy", *args], input=input)


def test_cli_render_nftables(tmp_path) -> None:
    import yaml

    docs = [*OVERALL_SERVICES, *OVERALL_SLICES]
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(docs))
    (tmp_path / "kp.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration", "mode": "nftables",
        "clusterCIDR": "10.0.0.0/8", "nodePortAddresses": ["192.168.0.2/32"],
    }))  # fmt: skip
    result = _cli("render", "--mode", "nftables", "--node", TEST_NODE, *sum((["--node-ip", i] for i in TEST_NODE_IPS), []),
                  "--config", str(tmp_path / "kp.yaml"), "--service-cidr", "172.30.0.0/16",
                  "-f", str(tmp_path / "all.yaml"))  # fmt: skip
    assert result.exit_code == 0, result.output
    nft = FakeTable()
    nft.run(result.stdout)
    assert_dump_equal(dedent(OVERALL_EXPECTED), nft)

    # ServiceCIDR objects in the input work as --service-cidr does.
    cidr = {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": "kubernetes"},
            "spec": {"cidrs": ["172.30.0.0/16"]}}  # fmt: skip
    (tmp_path / "cidr.yaml").write_text(yaml.safe_dump(cidr))
    result2 = _cli("render", "--mode", "nftables", "--node", TEST_NODE, *sum((["--node-ip", i] for i in TEST_NODE_IPS), []),
                   "--config", str(tmp_path / "kp.yaml"), "-f", str(tmp_path / "all.yaml"),
                   "-f", str(tmp_path / "cidr.yaml"))  # fmt: skip
    assert result2.exit_code == 0, result2.output
    assert result2.stdout == result.stdout


def test_cli_service_cidr_only_for_nftables() -> None:
    result = _cli("render", "--mode", "iptables", "--node", "n", "--service-cidr", "10.96.0.0/12", "-f", "-", input="")
    assert result.exit_code == 2
    result = _cli("render", "--mode", "nftables", "--node", "n", "--service-cidr", "nonsense", "-f", "-", input="")
    assert result.exit_code == 2


# ---------------------------------------------------------------------------------------------
# The applier's departures from upstream (off by default): chunks, diffed full resyncs.
# ---------------------------------------------------------------------------------------------


def _maps(services=OVERALL_SERVICES, slices=OVERALL_SLICES):
    return build_service_map(services), build_endpoints_map(slices, TEST_NODE)


def test_chunked_sync_ends_in_the_same_table() -> None:
    svc_map, ep_map = _maps()
    plan = plan_sync(svc_map, ep_map, upstream_params(), chunk=2)
    assert len(plan.txs) == 3  # 6 Services, 2 per transaction; the setup rides in the first
    nft = FakeTable()
    for tx in plan.txs:
        nft.run(tx.text())  # each transaction stands on its own
    assert_dump_equal(dedent(OVERALL_EXPECTED), nft)


def test_full_resync_sends_only_the_difference() -> None:
    svc_map, ep_map = _maps()
    params = upstream_params()
    first = plan_sync(svc_map, ep_map, params)
    nft = FakeTable()
    nft.run(first.tx.text())
    # Nothing changed: the setup is rewritten (its chains are flushed and refilled), nothing else.
    again = plan_sync(svc_map, ep_map, params, first.state, None, 10.0, flush_containers=False,
                      rewrite_unchanged=False)  # fmt: skip
    text = again.tx.text()
    assert "element" not in text.replace("add element ip kube-proxy nodeport-ips", "")
    assert not [line for line in text.splitlines() if "/tcp/" in line]  # no service chain touched
    nft.run(text)
    assert_dump_equal(dedent(OVERALL_EXPECTED), nft)

    # One Service changed and one deleted, seen by a full resync: only they are written.
    services = [s for s in OVERALL_SERVICES if s["metadata"]["name"] != "svc3"]
    slices = [s for s in OVERALL_SLICES if s["metadata"]["name"] != "svc3-1"]
    slices = [eps("ns1", "svc1", [ep("10.180.0.9")], [port("p80", 80)]) if s["metadata"]["name"] == "svc1-1" else s
              for s in slices]  # fmt: skip
    svc_map2, ep_map2 = _maps(services, slices)
    plan = plan_sync(svc_map2, ep_map2, params, again.state, None, 20.0, flush_containers=False,
                     rewrite_unchanged=False)  # fmt: skip
    written = {line.split(" ")[4] for line in plan.tx.text().splitlines() if line.startswith("add rule") and "/tcp/" in line}
    assert all("/svc1/" in name for name in written) and written
    nft.run(plan.tx.text())
    # The same table as a fresh full sync of the new state (stale svc3 and svc1 chains aside,
    # flushed and deleted a second later).
    fresh = FakeTable()
    fresh.run(plan_sync(svc_map2, ep_map2, params).tx.text())
    stale = set(plan.state.stale_chains)
    assert stale and all("svc3" in c or "10.180.0.1/" in c for c in stale)
    for c in stale:
        del nft.chains[c]
    assert sort_nftables_transaction(nft.dump()) == sort_nftables_transaction(fresh.dump())


def test_partial_sync_of_unchanged_state_is_empty() -> None:
    svc_map, ep_map = _maps()
    first = plan_sync(svc_map, ep_map, upstream_params())
    plan = plan_sync(svc_map, ep_map, upstream_params(), first.state, set(), 5.0)
    assert plan.operations == 0 and plan.services == 0
