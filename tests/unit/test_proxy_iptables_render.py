"""Byte-for-byte tests of the iptables kube-proxy planner against upstream's expectations.

Three kinds of checks:
  * upstream's literal expectations (kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go),
    compared the way upstream compares them: after sorting both sides with a port of its
    sortIPTablesRules, since upstream's own output order depends on Go map iteration;
  * upstream's packet-flow tests, replayed with a port of its iptables tracer;
  * exact payloads in write order, derived from syncProxyRules, for the cases upstream only
    checks by tracing.

Upstream's fake proxier hard-codes the mark "0x4000" where the real one writes "%#08x" of
1<<masqueradeBit ("0x00004000"), so upstream comparisons substitute the former for the latter.
"""

from __future__ import annotations

import ipaddress
import shlex
import textwrap
from dataclasses import dataclass, replace

import pytest
import typer
from typer.testing import CliRunner

from kubewire.cli.proxy_cmd import proxy_app
from kubewire.proxy.iptables import (
    compute_probability,
    endpoint_chain_name,
    jump_rules,
    plan_service_port,
    render_full,
    service_chain_name,
    service_external_chain_name,
    service_firewall_chain_name,
    service_local_chain_name,
)
from kubewire.proxy.iptables.render import node_params
from kubewire.proxy.model import (
    KubeProxyConfig,
    ProxyMaps,
    ServicePortName,
    build_endpoints_map,
    build_service_map,
    parse_cidr_sloppy,
    parse_ip_sloppy,
)
from kubewire.proxy.topology import categorize_endpoints

# ---------------------------------------------------------------------------------------------
# Upstream's test fixture (NewFakeProxier): node "test-node", node IP 192.168.0.2, pod CIDR
# 10.0.0.0/8 for local detection, localhost NodePorts on, both nfacct counters present, no
# --random-fully, mark 0x4000.
# ---------------------------------------------------------------------------------------------

TEST_NODE = "test-node"
TEST_NODE_IP = "192.168.0.2"
TEST_NODE_IP_ALT = "192.168.1.2"
TEST_EXTERNAL_IP = "192.168.99.11"
TEST_NODE_IPV6 = "2001:db8::1"
TEST_NODE_IPV6_ALT = "2001:db8:1::2"
TEST_EXTERNAL_CLIENT = "203.0.113.2"
TEST_EXTERNAL_CLIENT_BLOCKED = "203.0.113.130"
TEST_NODE_IPS = [TEST_NODE_IP, TEST_NODE_IP_ALT, TEST_EXTERNAL_IP, TEST_NODE_IPV6, TEST_NODE_IPV6_ALT]

UPSTREAM_CONFIG = KubeProxyConfig(cluster_cidr="10.0.0.0/8,fd00:10::/64", random_fully=False)


def render_upstream(services, slices, config=UPSTREAM_CONFIG, family="IPv4", node_labels=None) -> str:
    out = render_full(services, slices, config, TEST_NODE, TEST_NODE_IPS, node_labels, ip_family=family)
    return out.replace("0x00004000", "0x4000")


def svc(ns: str, name: str, **spec) -> dict:
    status = spec.pop("status", None)
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def lb_status(*ips: str) -> dict:
    return {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}


def eps(
    ns: str, service: str, endpoints: list[dict], ports: list[dict], num: int = 1, family: str = "IPv4"
) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": ns,
            "name": f"{service}-{num}",
            "labels": {"kubernetes.io/service-name": service},
        },
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


def port(name: str, number: int, protocol: str = "TCP") -> dict:
    return {"name": name, "port": number, "protocol": protocol}


# ---------------------------------------------------------------------------------------------
# Port of upstream's sortIPTablesRules (proxier_test.go): tables by name; chains with
# KUBE-NODEPORTS, KUBE-SERVICES first, then KUBE-* and others alphabetically; KUBE-NODEPORTS and
# KUBE-SERVICES rules stably sorted by the service name in their comment.
# ---------------------------------------------------------------------------------------------


def _comment(rule: str) -> str | None:
    words = shlex.split(rule)
    for i, word in enumerate(words[:-1]):
        if word == "--comment":
            return words[i + 1]
    return None


def _service_name(rule: str) -> str:
    comment = _comment(rule) or ""
    for i, ch in enumerate(comment):
        if ch in " :":
            return comment[:i]
    return comment


def sort_iptables_rules(data: str) -> str:
    tables: dict[str, tuple[list[str], dict[str, list[str]], list[str]]] = {}
    current = None
    for line in data.strip("\n").split("\n"):
        if line.startswith("*"):
            current = tables.setdefault(line[1:], ([], {}, []))
        elif line == "COMMIT":
            current = None
        elif line.startswith(":"):
            name = line[1:].split(" ")[0]
            current[0].append(name)
            current[1].setdefault(name, [])
        elif line.startswith("-A "):
            current[1].setdefault(line.split(" ")[1], []).append(line)
        elif line.startswith("-X "):
            current[2].append(line)
        else:
            raise AssertionError(f"unexpected line {line!r}")

    def chain_key(name: str) -> tuple:
        if name == "KUBE-NODEPORTS":
            return (0, "")
        if name == "KUBE-SERVICES":
            return (1, "")
        return (2 if name.startswith("KUBE-") else 3, name)

    out: list[str] = []
    for table in sorted(tables):
        chains, rules, deletes = tables[table]
        names = sorted(dict.fromkeys(chains), key=chain_key)
        if "KUBE-NODEPORTS" in rules:
            rules["KUBE-NODEPORTS"].sort(key=_service_name)
        if "KUBE-SERVICES" in rules:
            last = "must be the last rule"
            if table == "nat":
                rules["KUBE-SERVICES"].sort(key=lambda r: (last in (_comment(r) or ""), _service_name(r)))
            else:
                rules["KUBE-SERVICES"].sort(key=_service_name)
        out.append(f"*{table}")
        out.extend(f":{n} - [0:0]" for n in names)
        for n in names:
            out.extend(rules.get(n, []))
        out.extend(deletes)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def assert_rules_equal(expected: str, result: str) -> None:
    """upstream's assertIPTablesRulesEqual: the expectation is already in sorted form."""
    assert sort_iptables_rules(result) == textwrap.dedent(expected).lstrip("\n")


def chain_rules(result: str, table: str, chain: str) -> list[str]:
    rules: list[str] = []
    current = None
    for line in result.split("\n"):
        if line.startswith("*"):
            current = line[1:]
        elif current == table and line.startswith(f"-A {chain} "):
            rules.append(line)
    return rules


# ---------------------------------------------------------------------------------------------
# Port of upstream's iptablesTracer: follows a packet through nat KUBE-SERVICES and the filter
# chains; probabilistic jumps visit every branch; history checks (affinity, mark, ctstate) never
# match. Output is the DNAT destinations or the filter verdict, plus whether it was marked.
# ---------------------------------------------------------------------------------------------

_VALUE_OPTS = {
    "-A", "-s", "-d", "-p", "-m", "-j", "--dport", "--src-type", "--dst-type", "--comment", "--to-destination",
    "--probability", "--mode", "--name", "--seconds", "--mark", "--xor-mark", "--or-mark", "--ctstate",
    "--nfacct-name",
}  # fmt: skip


@dataclass
class TracedRule:
    raw: str
    opts: dict[str, tuple[bool, str]]
    flags: set[str]


def _parse_rule(raw: str) -> TracedRule:
    words = shlex.split(raw)
    opts: dict[str, tuple[bool, str]] = {}
    flags: set[str] = set()
    negate = False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "!":
            negate = True
            i += 1
            continue
        if word in _VALUE_OPTS:
            if word != "-m":
                opts[word] = (negate, words[i + 1])
            i += 2
        else:
            flags.add(word)
            i += 1
        negate = False
    return TracedRule(raw, opts, flags)


def _parse_tables(data: str) -> dict[str, dict[str, list[TracedRule]]]:
    tables: dict[str, dict[str, list[TracedRule]]] = {}
    current: dict[str, list[TracedRule]] | None = None
    for line in data.split("\n"):
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith("-A ") and current is not None:
            rule = _parse_rule(line)
            current.setdefault(rule.opts["-A"][1], []).append(rule)
    return tables


def _addr_matches(value: tuple[bool, str], ip: str) -> bool:
    negated, text = value
    addr = ipaddress.ip_address(ip)
    if "/" in text:
        net = ipaddress.ip_network(text)
        matches = addr.version == net.version and addr in net
    else:
        matches = addr == ipaddress.ip_address(text)
    return matches != negated


class Tracer:
    def __init__(self, data: str, node_ips: list[str]) -> None:
        self.tables = _parse_tables(data)
        self.local_ips = {"127.0.0.1", "::1", *node_ips}
        self.outputs: list[str] = []
        self.masq = False

    def _matches(self, rule: TracedRule, src: str, proto: str, dst: str, dport: str) -> bool:
        o = rule.opts
        if "-s" in o and not _addr_matches(o["-s"], src):
            return False
        if "--src-type" in o:
            neg, want = o["--src-type"]
            if (("LOCAL" if src in self.local_ips else "not-matched") == want) == neg:
                return False
        if "-p" in o and (o["-p"][1] == proto) == o["-p"][0]:
            return False
        if "-d" in o and not _addr_matches(o["-d"], dst):
            return False
        if "--dst-type" in o:
            neg, want = o["--dst-type"]
            if (("LOCAL" if dst in self.local_ips else "not-matched") == want) == neg:
                return False
        if "--dport" in o and (o["--dport"][1] == dport) == o["--dport"][0]:
            return False
        return not ("--rcheck" in rule.flags or "--mark" in o or "--ctstate" in o)

    def run(self, table: str, chain: str, src: str, proto: str, dst: str, dport: str) -> bool:
        for rule in self.tables.get(table, {}).get(chain, []):
            if "-j" not in rule.opts or not self._matches(rule, src, proto, dst, dport):
                continue
            target = rule.opts["-j"][1]
            if target == "KUBE-MARK-MASQ":
                self.masq = True
            elif target in ("ACCEPT", "REJECT", "DROP"):
                self.outputs.append(target)
                return True
            elif target == "DNAT":
                self.outputs.append(rule.opts["--to-destination"][1])
                return True
            elif self.run(table, target, src, proto, dst, dport) and "--probability" not in rule.opts:
                return True
        return False


def trace(data: str, src: str, dst: str, dport: int, proto: str = "tcp") -> tuple[str, bool]:
    tracer = Tracer(data, TEST_NODE_IPS)
    tracer.run("nat", "KUBE-SERVICES", src, proto, dst, str(dport))
    if tracer.outputs:
        out = tracer.outputs[0]
        dst = out[1 : out.index("]")] if out.startswith("[") else out.split(":")[0]
    for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"):
        tracer.run("filter", chain, src, proto, dst, str(dport))
    return ", ".join(tracer.outputs), tracer.masq


def assert_flows(data: str, flows: list[tuple]) -> None:
    """flows: (name, source, dest, port, output, masq[, protocol])."""
    for flow in flows:
        name, src, dst, dport, output, masq = flow[:6]
        proto = flow[6] if len(flow) > 6 else "tcp"
        got = trace(data, src, dst, dport, proto)
        assert got == (output, masq), (
            f"{name}: {src} -> {dst}:{dport}/{proto} gave {got}, want {(output, masq)}"
        )


# =============================================================================================
# Chain names and probabilities
# =============================================================================================


@pytest.mark.parametrize(
    ("name", "protocol", "expected"),
    [
        # literal chain names in upstream's TestOverallIPTablesRules and TestSyncProxyRulesRepeated
        ("ns1/svc1:p80", "TCP", "KUBE-SVC-XPGD46QRK7WJZT7O"),
        ("ns2/svc2:p80", "TCP", "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
        ("ns3/svc3:p80", "TCP", "KUBE-SVC-X27LE4BHSL4DOUIK"),
        ("ns4/svc4:p80", "TCP", "KUBE-SVC-4SW47YFZTEDKD3PK"),
        ("ns5/svc5:p80", "TCP", "KUBE-SVC-NUKIZ6OKUXPJNT4C"),
        ("ns2/svc2:p8080", "TCP", "KUBE-SVC-2VJB64SDSIJUP5T6"),
        # TestSyncProxyRulesLargeClusterMode
        ("ns4/svc4:p8082", "TCP", "KUBE-SVC-EBDQOQU5SJFXRIL3"),
    ],
)
def test_service_chain_names_match_upstream(name: str, protocol: str, expected: str) -> None:
    assert service_chain_name(name, protocol) == expected
    suffix = expected.removeprefix("KUBE-SVC-")
    assert service_external_chain_name(name, protocol) == "KUBE-EXT-" + suffix
    assert service_firewall_chain_name(name, protocol) == "KUBE-FW-" + suffix
    assert service_local_chain_name(name, protocol) == "KUBE-SVL-" + suffix


@pytest.mark.parametrize(
    ("name", "endpoint", "expected"),
    [
        ("ns1/svc1:p80", "10.180.0.1:80", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
        ("ns2/svc2:p80", "10.180.0.2:80", "KUBE-SEP-RS4RBKLTHTF2IUXJ"),
        ("ns3/svc3:p80", "10.180.0.3:80", "KUBE-SEP-OYPFS5VJICHGATKP"),
        ("ns4/svc4:p80", "10.180.0.4:80", "KUBE-SEP-UKSFD7AGPMPPLUHC"),
        ("ns4/svc4:p80", "10.180.0.5:80", "KUBE-SEP-C6EBXVWJJZMIWKLZ"),
        ("ns5/svc5:p80", "10.180.0.3:80", "KUBE-SEP-I77PXRDZVX7PMWMN"),
        ("ns1/svc1:p80", "10.0.1.1:80", "KUBE-SEP-SNQ3ZNILQDEJNDQO"),
        ("ns2/svc2:p8080", "10.0.2.1:8080", "KUBE-SEP-UHEGFW77JX3KXTOV"),
        ("ns3/svc3:p80", "10.0.3.1:80", "KUBE-SEP-BSWRHOQ77KEXZLNL"),
        ("ns3/svc3:p80", "10.0.3.2:80", "KUBE-SEP-DKCFIS26GWF2WLWC"),
        ("ns3/svc3:p80", "10.0.3.3:80", "KUBE-SEP-JVVZVJ7BSEPPRNBS"),
        ("ns4/svc4:p80", "10.0.4.1:80", "KUBE-SEP-AYCN5HPXMIRJNJXU"),
        ("ns1/svc1:p80", "10.0.0.0:80", "KUBE-SEP-DKGQUZGBKLTPAR56"),
        ("ns3/svc3:p8081", "203.0.113.4:8081", "KUBE-SEP-RUVVH7YV3PHQBDOS"),
        ("ns4/svc4:p8082", "10.4.0.1:8082", "KUBE-SEP-SU5STNODRYEWJAUF"),
    ],
)
def test_endpoint_chain_names_match_upstream(name: str, endpoint: str, expected: str) -> None:
    assert endpoint_chain_name(name, "TCP", endpoint) == expected


def test_service_port_name_string() -> None:
    assert str(ServicePortName("ns1", "svc1", "p80", "TCP")) == "ns1/svc1:p80"
    assert str(ServicePortName("ns1", "svc1", "", "UDP")) == "ns1/svc1"


def test_compute_probability() -> None:
    # upstream TestComputeProbability
    expected = {
        1: "1.0000000000",
        2: "0.5000000000",
        3: "0.3333333333",
        10: "0.1000000000",
        100: "0.0100000000",
        1000: "0.0010000000",
        10000: "0.0001000000",
        100000: "0.0000100000",
        100001: "0.0000099999",
    }
    for n, text in expected.items():
        assert compute_probability(n) == text


def test_masquerade_mark_format() -> None:
    # fmt.Sprintf("%#08x", 1<<bit) zero-pads the digits: what real kube-proxy writes.
    assert KubeProxyConfig().masquerade_mark == "0x00004000"
    assert KubeProxyConfig(masquerade_bit=0).masquerade_mark == "0x00000001"
    assert KubeProxyConfig(masquerade_bit=31).masquerade_mark == "0x80000000"


# =============================================================================================
# Upstream literal expectations
# =============================================================================================


def overall_services() -> list[dict]:
    return [
        svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[{"name": "p80", "port": 80, "protocol": "TCP"}]),
        svc(
            "ns2", "svc2", type="LoadBalancer", externalTrafficPolicy="Local", clusterIP="172.30.0.42",
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}],
            externalIPs=["192.168.99.22"], healthCheckNodePort=30000, status=lb_status("1.2.3.4"),
        ),
        svc("ns3", "svc3", type="NodePort", clusterIP="172.30.0.43",
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3003}]),
        svc("ns4", "svc4", type="NodePort", clusterIP="172.30.0.44", externalIPs=["192.168.99.33"],
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 80}]),
        svc(
            "ns5", "svc5", type="LoadBalancer", externalTrafficPolicy="Cluster", clusterIP="172.30.0.45",
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3002}],
            healthCheckNodePort=30000, loadBalancerSourceRanges=[" 203.0.113.0/25"],
            sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10800}},
            status=lb_status("5.6.7.8"),
        ),
        svc("ns6", "svc6", type="ClusterIP", clusterIP="172.30.0.46",
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 80}]),
    ]  # fmt: skip


def overall_slices() -> list[dict]:
    p80 = [port("p80", 80)]
    return [
        eps("ns1", "svc1", [ep("10.180.0.1")], p80),
        eps("ns2", "svc2", [ep("10.180.0.2")], p80),  # no nodeName: not local
        eps("ns3", "svc3", [ep("10.180.0.3")], p80),
        eps("ns4", "svc4", [ep("10.180.0.4"), ep("10.180.0.5", TEST_NODE)], p80),
        eps("ns5", "svc5", [ep("10.180.0.3")], p80),
    ]


def test_overall_iptables_rules() -> None:
    # upstream TestOverallIPTablesRules
    result = render_upstream(overall_services(), overall_slices())
    assert_rules_equal(
        """
        *filter
        :KUBE-NODEPORTS - [0:0]
        :KUBE-SERVICES - [0:0]
        :KUBE-EXTERNAL-SERVICES - [0:0]
        :KUBE-FIREWALL - [0:0]
        :KUBE-FORWARD - [0:0]
        :KUBE-PROXY-FIREWALL - [0:0]
        -A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
        -A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
        -A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP
        -A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
        -A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP
        -A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
        -A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
        -A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
        -A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        -A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
        COMMIT
        *nat
        :KUBE-NODEPORTS - [0:0]
        :KUBE-SERVICES - [0:0]
        :KUBE-EXT-4SW47YFZTEDKD3PK - [0:0]
        :KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
        :KUBE-EXT-NUKIZ6OKUXPJNT4C - [0:0]
        :KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]
        :KUBE-FW-NUKIZ6OKUXPJNT4C - [0:0]
        :KUBE-MARK-MASQ - [0:0]
        :KUBE-POSTROUTING - [0:0]
        :KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]
        :KUBE-SEP-I77PXRDZVX7PMWMN - [0:0]
        :KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
        :KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
        :KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
        :KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]
        :KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
        :KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
        :KUBE-SVC-NUKIZ6OKUXPJNT4C - [0:0]
        :KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
        :KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
        -A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
        -A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
        -A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3003 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-X27LE4BHSL4DOUIK
        -A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK
        -A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3002 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-NUKIZ6OKUXPJNT4C
        -A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
        -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
        -A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
        -A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
        -A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
        -A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
        -A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK
        -A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-4SW47YFZTEDKD3PK
        -A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C
        -A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C
        -A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
        -A KUBE-EXT-4SW47YFZTEDKD3PK -m comment --comment "masquerade traffic for ns4/svc4:p80 external destinations" -j KUBE-MARK-MASQ
        -A KUBE-EXT-4SW47YFZTEDKD3PK -j KUBE-SVC-4SW47YFZTEDKD3PK
        -A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
        -A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
        -A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
        -A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
        -A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C
        -A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ
        -A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK
        -A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
        -A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"
        -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
        -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
        -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
        -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
        -A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ
        -A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80
        -A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
        -A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
        -A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
        -A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
        -A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
        -A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
        -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
        -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
        -A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ
        -A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80
        -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
        -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC
        -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ
        -A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
        -A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ
        -A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
        -A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN
        -A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN
        -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
        -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
        -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
        -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
        COMMIT
        """,
        result,
    )


def test_sync_proxy_rules_repeated_first_full_sync() -> None:
    # upstream TestSyncProxyRulesRepeated, first (full) sync
    services = [
        svc("ns1", "svc1", type="ClusterIP", clusterIP="172.30.0.41", ports=[port("p80", 80)]),
        svc("ns2", "svc2", type="ClusterIP", clusterIP="172.30.0.42", ports=[port("p8080", 8080)]),
    ]
    slices = [
        eps("ns1", "svc1", [ep("10.0.1.1")], [port("p80", 80)]),
        eps("ns2", "svc2", [ep("10.0.2.1")], [port("p8080", 8080)]),
    ]
    assert_rules_equal(
        """
        *filter
        :KUBE-NODEPORTS - [0:0]
        :KUBE-SERVICES - [0:0]
        :KUBE-EXTERNAL-SERVICES - [0:0]
        :KUBE-FIREWALL - [0:0]
        :KUBE-FORWARD - [0:0]
        :KUBE-PROXY-FIREWALL - [0:0]
        -A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
        -A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
        -A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
        -A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        COMMIT
        *nat
        :KUBE-NODEPORTS - [0:0]
        :KUBE-SERVICES - [0:0]
        :KUBE-MARK-MASQ - [0:0]
        :KUBE-POSTROUTING - [0:0]
        :KUBE-SEP-SNQ3ZNILQDEJNDQO - [0:0]
        :KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]
        :KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]
        :KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
        -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
        -A KUBE-SERVICES -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 -j KUBE-SVC-2VJB64SDSIJUP5T6
        -A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
        -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
        -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
        -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
        -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
        -A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -s 10.0.1.1 -j KUBE-MARK-MASQ
        -A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.1:80
        -A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -s 10.0.2.1 -j KUBE-MARK-MASQ
        -A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -m tcp -p tcp -j DNAT --to-destination 10.0.2.1:8080
        -A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
        -A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 -> 10.0.2.1:8080" -j KUBE-SEP-UHEGFW77JX3KXTOV
        -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
        -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -j KUBE-SEP-SNQ3ZNILQDEJNDQO
        COMMIT
        """,
        render_upstream(services, slices),
    )


def test_stale_chains_deleted_on_full_sync() -> None:
    # upstream TestSyncProxyRulesRepeated, last sync: chains of a deleted service are flushed
    # (chain line) and removed (-X); chains that are not kube-proxy's are left alone.
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)])]
    slices = [eps("ns1", "svc1", [ep("10.0.1.1")], [port("p80", 80)])]
    out = render_full(
        services, slices, UPSTREAM_CONFIG, TEST_NODE, TEST_NODE_IPS,
        existing_nat_chains=["KUBE-SVC-XPGD46QRK7WJZT7O", "KUBE-SVC-4SW47YFZTEDKD3PK", "KUBE-SEP-AYCN5HPXMIRJNJXU", "CNI-HOSTPORT"],
    )  # fmt: skip
    nat = out.split("*nat\n")[1]
    assert (
        ":KUBE-SEP-AYCN5HPXMIRJNJXU - [0:0]\n:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]\n-A KUBE-POSTROUTING" in nat
    )
    assert (
        '-X KUBE-SEP-AYCN5HPXMIRJNJXU\n-X KUBE-SVC-4SW47YFZTEDKD3PK\n-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports'
        in nat
    )
    assert "CNI-HOSTPORT" not in out
    assert "-X KUBE-SVC-XPGD46QRK7WJZT7O" not in out


def test_bad_ips() -> None:
    # upstream TestBadIPs: leading zeros and host bits are normalised as Go's sloppy parsers do.
    services = [
        svc(
            "ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.041",
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}],
            status=lb_status("1.2.3.004"), externalIPs=["192.168.099.022"],
            loadBalancerSourceRanges=["203.0.113.000/025"],
        )
    ]  # fmt: skip
    slices = [eps("ns1", "svc1", [ep("10.180.00.001")], [port("p80", 80)])]
    assert_rules_equal(
        """
        *filter
        :KUBE-NODEPORTS - [0:0]
        :KUBE-SERVICES - [0:0]
        :KUBE-EXTERNAL-SERVICES - [0:0]
        :KUBE-FIREWALL - [0:0]
        :KUBE-FORWARD - [0:0]
        :KUBE-PROXY-FIREWALL - [0:0]
        -A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
        -A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
        -A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
        -A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        -A KUBE-PROXY-FIREWALL -m comment --comment "ns1/svc1:p80 traffic not accepted by KUBE-FW-XPGD46QRK7WJZT7O" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
        COMMIT
        *nat
        :KUBE-NODEPORTS - [0:0]
        :KUBE-SERVICES - [0:0]
        :KUBE-EXT-XPGD46QRK7WJZT7O - [0:0]
        :KUBE-FW-XPGD46QRK7WJZT7O - [0:0]
        :KUBE-MARK-MASQ - [0:0]
        :KUBE-POSTROUTING - [0:0]
        :KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
        :KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
        -A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-XPGD46QRK7WJZT7O
        -A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-XPGD46QRK7WJZT7O
        -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
        -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-XPGD46QRK7WJZT7O
        -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-FW-XPGD46QRK7WJZT7O
        -A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
        -A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "masquerade traffic for ns1/svc1:p80 external destinations" -j KUBE-MARK-MASQ
        -A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVC-XPGD46QRK7WJZT7O
        -A KUBE-FW-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-XPGD46QRK7WJZT7O
        -A KUBE-FW-XPGD46QRK7WJZT7O -m comment --comment "other traffic to ns1/svc1:p80 will be dropped by KUBE-PROXY-FIREWALL"
        -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
        -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
        -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
        -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
        -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
        -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
        -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
        -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
        COMMIT
        """,
        render_upstream(services, slices),
    )


FORWARD_ACCEPT_RULES = [
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
]


@pytest.mark.parametrize(
    ("nfacct", "tcp_liberal", "drop_rule"),
    [
        (False, False, ["-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"]),
        (True, False, ["-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP"]),
        (False, True, []),
    ],
)  # fmt: skip
def test_drop_invalid_rule(nfacct: bool, tcp_liberal: bool, drop_rule: list[str]) -> None:
    # upstream TestDropInvalidRule
    config = replace(UPSTREAM_CONFIG, nfacct_ct_state_invalid=nfacct, tcp_be_liberal=tcp_liberal)
    result = render_upstream([], [], config)
    assert chain_rules(result, "filter", "KUBE-FORWARD") == drop_rule + FORWARD_ACCEPT_RULES


@pytest.mark.parametrize("random_fully", [False, True])
def test_masquerade_rule(random_fully: bool) -> None:
    # upstream TestMasqueradeRule
    result = render_upstream([], [], replace(UPSTREAM_CONFIG, random_fully=random_fully))
    assert chain_rules(result, "nat", "KUBE-POSTROUTING") == [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
        + (" --random-fully" if random_fully else ""),
    ]


def test_large_cluster_mode_drops_endpoint_comments() -> None:
    # upstream TestSyncProxyRulesLargeClusterMode (full syncs only)
    config = replace(UPSTREAM_CONFIG, masquerade_all=True)
    half = 1000 // 2 - 1
    services = [
        svc("ns1", "svc1", type="ClusterIP", clusterIP="172.30.0.41", ports=[port("p80", 80)]),
        svc("ns2", "svc2", type="ClusterIP", clusterIP="172.30.0.42", ports=[port("p8080", 8080)]),
        svc("ns3", "svc3", type="ClusterIP", clusterIP="172.30.0.43", ports=[port("p8081", 8081)]),
    ]
    slices = [
        eps("ns1", "svc1", [ep(f"10.0.{i % 256}.{i // 256}") for i in range(half)], [port("p80", 80)]),
        eps("ns2", "svc2", [ep(f"10.1.{i % 256}.{i // 256}") for i in range(half)], [port("p8080", 8080)]),
    ]

    def dnat_lines(out: str) -> list[str]:
        return [line for line in out.split("\n") if line.startswith("-A KUBE-SEP-") and "-j DNAT" in line]

    small = dnat_lines(render_upstream(services, slices, config))
    assert len(small) == 2 * half and all("--comment" in line for line in small)
    assert (
        "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80"
        in small
    )

    slices.append(
        eps("ns3", "svc3", [ep("203.0.113.4"), ep("203.0.113.8"), ep("203.0.113.12")], [port("p8081", 8081)])
    )
    large = render_upstream(services, slices, config)
    lines = dnat_lines(large)
    assert len(lines) == 2 * half + 3 and not any("--comment" in line for line in lines)
    assert "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80" in lines
    assert "-A KUBE-SEP-RUVVH7YV3PHQBDOS -m tcp -p tcp -j DNAT --to-destination 203.0.113.4:8081" in lines
    # Only the per-endpoint comments go; the service-level ones stay.
    assert '-A KUBE-SERVICES -m comment --comment "ns3/svc3:p8081 cluster IP"' in large
    assert "-A KUBE-SVC-" in large and '--comment "ns1/svc1:p80 ->' not in large


# =============================================================================================
# Upstream packet-flow tests, replayed with the tracer
# =============================================================================================


def test_no_endpoints_reject() -> None:
    # upstream TestNoEndpointsReject
    services = [
        svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", externalIPs=["192.168.99.11"],
            ports=[{"name": "p80", "protocol": "TCP", "port": 80, "nodePort": 3001}], status=lb_status("1.2.3.4"))
    ]  # fmt: skip
    result = render_upstream(services, [])
    assert_flows(
        result,
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, "REJECT", False),
            ("external to external IP", TEST_EXTERNAL_CLIENT, "192.168.99.11", 80, "REJECT", False),
            ("pod to NodePort", "10.0.0.2", TEST_NODE_IP, 3001, "REJECT", False),
            ("external to NodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, "REJECT", False),
            ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, "REJECT", False),
            ("external to LB IP", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, "REJECT", False),
        ],
    )


def test_cluster_ip_general() -> None:
    # upstream TestClusterIPGeneral
    services = [
        svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("http", 80)]),
        svc(
            "ns2", "svc2", clusterIP="172.30.0.42",
            ports=[
                port("http", 80),
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443},
                port("dns-udp", 53, "UDP"),
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
                port("dns-sctp", 53, "SCTP"),
            ],
        ),
    ]  # fmt: skip
    slices = [
        eps("ns1", "svc1", [ep("10.180.0.1", TEST_NODE)], [port("http", 80)]),
        eps(
            "ns2", "svc2", [ep("10.180.0.1", TEST_NODE), ep("10.180.2.1", "node2")],
            [port("http", 80), port("https", 8443), port("dns-udp", 53, "UDP"), port("dns-tcp", 5353),
             port("dns-sctp", 53, "SCTP")],
        ),
    ]  # fmt: skip
    result = render_upstream(services, slices)
    assert_flows(
        result,
        [
            ("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80", False),
            ("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
            ("multiple endpoints", "10.180.0.2", "172.30.0.42", 80, "10.180.0.1:80, 10.180.2.1:80", False),
            ("TargetPort", "10.180.0.2", "172.30.0.42", 443, "10.180.0.1:8443, 10.180.2.1:8443", False),
            ("TCP", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353", False, "tcp"),
            ("UDP", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False, "udp"),
            ("SCTP", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False, "sctp"),
            ("TCP-only port", "10.180.0.2", "172.30.0.42", 80, "", False, "udp"),
            ("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, "", False),
        ],
    )


def test_load_balancer_source_ranges() -> None:
    # upstream TestLoadBalancer
    services = [
        svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41",
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}],
            status=lb_status("1.2.3.4", "5.6.7.8"),
            loadBalancerSourceRanges=["192.168.0.0/24", " 203.0.113.0/25"])
    ]  # fmt: skip
    slices = [eps("ns1", "svc1", [ep("10.180.0.1")], [port("p80", 80)])]
    result = render_upstream(services, slices)
    target = "10.180.0.1:80"
    assert_flows(
        result,
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, target, False),
            ("external to nodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, target, True),
            (
                "nodePort bypasses source ranges",
                TEST_EXTERNAL_CLIENT_BLOCKED,
                TEST_NODE_IP,
                3001,
                target,
                True,
            ),
            ("accepted external to LB1", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, target, True),
            ("accepted external to LB2", TEST_EXTERNAL_CLIENT, "5.6.7.8", 80, target, True),
            ("blocked external to LB1", TEST_EXTERNAL_CLIENT_BLOCKED, "1.2.3.4", 80, "DROP", False),
            ("blocked external to LB2", TEST_EXTERNAL_CLIENT_BLOCKED, "5.6.7.8", 80, "DROP", False),
            ("pod to LB1 (blocked)", "10.0.0.2", "1.2.3.4", 80, "DROP", False),
            ("pod to LB2 (blocked)", "10.0.0.2", "5.6.7.8", 80, "DROP", False),
            ("node to LB1", TEST_NODE_IP, "1.2.3.4", 80, target, True),
            ("node to LB2", TEST_NODE_IP, "5.6.7.8", 80, target, True),
            ("same node to LB1, SNATted to LB1", "1.2.3.4", "1.2.3.4", 80, target, True),
            ("same node to LB2, SNATted to LB2", "5.6.7.8", "5.6.7.8", 80, target, True),
        ],
    )


NODEPORT_CASES = [
    # (name, family, localhost_nodeports, node_port_addresses, allow_alt_node_ip, expect_firewall)
    ("ipv4, localhost-nodeports enabled", "IPv4", True, (), True, True),
    ("ipv4, localhost-nodeports disabled", "IPv4", False, (), True, False),
    ("ipv4, localhost in nodeport-addresses", "IPv4", False, ("192.168.0.0/24", "127.0.0.1/32"), False, False),
    ("ipv4, multiple nodeport-addresses", "IPv4", False, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), True, False),
    ("ipv6, localhost-nodeports enabled", "IPv6", True, (), True, False),
    ("ipv6, localhost-nodeports disabled", "IPv6", False, (), True, False),
    ("ipv6, multiple nodeport-addresses", "IPv6", False, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), False, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "family", "localhost", "addresses", "allow_alt", "firewall"), NODEPORT_CASES
)
def test_node_ports(name, family, localhost, addresses, allow_alt, firewall) -> None:
    # upstream TestNodePorts
    if family == "IPv4":
        svc_ip, ep1, ep2 = "172.30.0.41", "10.180.0.1", "10.180.2.1"
        pod, client, node_ip, alt_ip, lo = (
            "10.0.0.2",
            TEST_EXTERNAL_CLIENT,
            TEST_NODE_IP,
            TEST_NODE_IP_ALT,
            "127.0.0.1",
        )
    else:
        svc_ip, ep1, ep2 = "fd00:172:30::41", "fd00:10:180::1", "fd00:10:180::2:1"
        pod, client, node_ip, alt_ip, lo = (
            "fd00:10::2",
            "2600:5200::1",
            TEST_NODE_IPV6,
            TEST_NODE_IPV6_ALT,
            "::1",
        )
    config = replace(UPSTREAM_CONFIG, localhost_nodeports=localhost, node_port_addresses=addresses)
    services = [
        svc("ns1", "svc1", type="NodePort", clusterIP=svc_ip,
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}])
    ]  # fmt: skip
    slices = [eps("ns1", "svc1", [ep(ep1), ep(ep2, TEST_NODE)], [port("p80", 80)], family=family)]
    result = render_upstream(services, slices, config, family)
    output = ", ".join(f"[{ip}]:80" if ":" in ip else f"{ip}:80" for ip in (ep1, ep2))
    flows = [
        ("pod to cluster IP", pod, svc_ip, 80, output, False),
        ("external to nodePort", client, node_ip, 3001, output, True),
        ("node to nodePort", node_ip, node_ip, 3001, output, True),
    ]
    if family == "IPv4" and localhost:
        flows.append(("localhost to nodePort gets masqueraded", lo, lo, 3001, output, True))
    else:
        flows.append(("localhost to nodePort is ignored", lo, lo, 3001, "", False))
    if allow_alt:
        flows.append(("external to nodePort on secondary IP", client, alt_ip, 3001, output, True))
    else:
        flows.append(("secondary nodeIP ignores NodePorts", client, alt_ip, 3001, "", False))
    assert_flows(result, flows)
    expected = (
        ['-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 '
         "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"]
        if firewall
        else []
    )  # fmt: skip
    assert chain_rules(result, "filter", "KUBE-FIREWALL") == expected


def test_health_check_node_port() -> None:
    # upstream TestHealthCheckNodePort (nodePortAddresses 127.0.0.0/8)
    config = replace(UPSTREAM_CONFIG, node_port_addresses=("127.0.0.0/8",))
    services = [
        svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.42", externalTrafficPolicy="Local",
            healthCheckNodePort=30000, ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}])
    ]  # fmt: skip
    result = render_upstream(services, [], config)
    assert_flows(
        result, [("firewall accepts HealthCheckNodePort", "1.2.3.4", TEST_NODE_IP, 30000, "ACCEPT", False)]
    )
    assert "30000" not in render_upstream([], [], config)


def _etp_fixture(policy: str) -> tuple[list[dict], list[dict]]:
    spec: dict = dict(
        type="LoadBalancer", clusterIP="172.30.0.41", externalIPs=["192.168.99.11"],
        ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001, "targetPort": 80}],
        status=lb_status("1.2.3.4"), externalTrafficPolicy=policy,
    )  # fmt: skip
    if policy == "Local":
        spec["healthCheckNodePort"] = 30000
    slices = [eps("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", TEST_NODE)], [port("p80", 80)])]
    return [svc("ns1", "svc1", **spec)], slices


def test_external_traffic_policy_local() -> None:
    # upstream TestExternalTrafficPolicyLocal
    result = render_upstream(*_etp_fixture("Local"))
    both, local = "10.180.0.1:80, 10.180.2.1:80", "10.180.2.1:80"
    assert_flows(
        result,
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both, False),
            ("pod to external IP", "10.0.0.2", "192.168.99.11", 80, both, False),
            ("external to external IP", TEST_EXTERNAL_CLIENT, "192.168.99.11", 80, local, False),
            ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, both, False),
            ("external to LB IP", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, local, False),
            ("pod to NodePort", "10.0.0.2", TEST_NODE_IP, 3001, both, False),
            ("external to NodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, local, False),
        ],
    )


def test_external_traffic_policy_cluster() -> None:
    # upstream TestExternalTrafficPolicyCluster
    result = render_upstream(*_etp_fixture("Cluster"))
    both = "10.180.0.1:80, 10.180.2.1:80"
    assert_flows(
        result,
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both, False),
            ("pod to external IP", "10.0.0.2", "192.168.99.11", 80, both, True),
            ("external to external IP", TEST_EXTERNAL_CLIENT, "192.168.99.11", 80, both, True),
            ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, both, True),
            ("external to LB IP", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, both, True),
            ("pod to NodePort", "10.0.0.2", TEST_NODE_IP, 3001, both, True),
            ("external to NodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, both, True),
        ],
    )


ITP_CASES = [
    # upstream TestInternalTrafficPolicy: (name, policy, endpoints, output)
    ("cluster", "Cluster", [("10.0.1.1", TEST_NODE), ("10.0.1.2", "node1"), ("10.0.1.3", "node2")],
     "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80"),
    ("local, one local endpoint", "Local", [("10.0.1.1", TEST_NODE), ("10.0.1.2", "node1"), ("10.0.1.3", "node2")],
     "10.0.1.1:80"),
    ("local, several local endpoints", "Local",
     [("10.0.1.1", TEST_NODE), ("10.0.1.2", TEST_NODE), ("10.0.1.3", "node2")], "10.0.1.1:80, 10.0.1.2:80"),
    ("local, no local endpoints", "Local", [("10.0.1.1", "node0"), ("10.0.1.2", "node1"), ("10.0.1.3", "node2")],
     "DROP"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "policy", "endpoints", "output"), ITP_CASES)
def test_internal_traffic_policy(name, policy, endpoints, output) -> None:
    services = [svc("ns1", "svc1", clusterIP="172.30.1.1", selector={"foo": "bar"}, internalTrafficPolicy=policy,
                    ports=[{"name": "", "port": 80, "protocol": "TCP"}])]  # fmt: skip
    slices = [eps("ns1", "svc1", [ep(ip, node, ready=True) for ip, node in endpoints], [port("", 80)])]
    assert_flows(
        render_upstream(services, slices), [("pod to ClusterIP", "10.0.0.2", "172.30.1.1", 80, output, False)]
    )
    assert_flows(
        render_upstream(services, []), [("endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT", False)]
    )


def _terminating_service(policy: str) -> dict:
    return svc(
        "ns1", "svc1", clusterIP="172.30.1.1", type="LoadBalancer", externalTrafficPolicy=policy,
        healthCheckNodePort=30000, ports=[{"name": "", "targetPort": 80, "port": 80, "protocol": "TCP"}],
        status=lb_status("1.2.3.4"),
    )  # fmt: skip


READY = {"ready": True, "serving": True, "terminating": False}
SERVING_TERMINATING = {"ready": False, "serving": True, "terminating": True}
TERMINATING = {"ready": False, "serving": False, "terminating": True}

TERMINATING_LOCAL_CASES = [
    # upstream TestTerminatingEndpointsTrafficPolicyLocal: (name, endpoints, pod->clusterIP, external->LB)
    ("ready endpoints exist",
     [("10.0.1.1", TEST_NODE, READY), ("10.0.1.2", TEST_NODE, READY), ("10.0.1.3", TEST_NODE, SERVING_TERMINATING),
      ("10.0.1.4", TEST_NODE, TERMINATING), ("10.0.1.5", "node-1", READY)],
     "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", "10.0.1.1:80, 10.0.1.2:80"),
    ("only terminating endpoints exist",
     [("10.0.1.2", TEST_NODE, SERVING_TERMINATING), ("10.0.1.3", TEST_NODE, SERVING_TERMINATING),
      ("10.0.1.4", TEST_NODE, TERMINATING), ("10.0.1.5", "node-1", READY)],
     "10.0.1.5:80", "10.0.1.2:80, 10.0.1.3:80"),
    ("terminating endpoints on remote node", [("10.0.1.5", "node-1", SERVING_TERMINATING)], "10.0.1.5:80", "DROP"),
    ("no usable endpoints on any node",
     [("10.0.1.5", TEST_NODE, TERMINATING), ("10.0.1.5", "node-1", TERMINATING)], "REJECT", "REJECT"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "endpoints", "internal", "external"), TERMINATING_LOCAL_CASES)
def test_terminating_endpoints_traffic_policy_local(name, endpoints, internal, external) -> None:
    slices = [eps("ns1", "svc1", [ep(ip, node, **c) for ip, node, c in endpoints], [port("", 80)])]
    result = render_upstream([_terminating_service("Local")], slices)
    assert_flows(
        result,
        [
            ("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, internal, False),
            ("external to LB", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, external, False),
        ],
    )


TERMINATING_CLUSTER_CASES = [
    # upstream TestTerminatingEndpointsTrafficPolicyCluster: (name, endpoints, output)
    ("ready endpoints exist",
     [("10.0.1.1", TEST_NODE, READY), ("10.0.1.2", TEST_NODE, READY), ("10.0.1.3", "another-node", SERVING_TERMINATING),
      ("10.0.1.4", "another-node", TERMINATING), ("10.0.1.5", "another-node", READY)],
     "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80"),
    ("only terminating endpoints exist",
     [("10.0.1.2", TEST_NODE, SERVING_TERMINATING), ("10.0.1.3", TEST_NODE, SERVING_TERMINATING),
      ("10.0.1.4", "another-node", TERMINATING), ("10.0.1.5", "another-node", SERVING_TERMINATING)],
     "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80"),
    ("terminating endpoints on remote node", [("10.0.1.5", "node-1", SERVING_TERMINATING)], "10.0.1.5:80"),
    ("no usable endpoints on any node",
     [("10.0.1.5", TEST_NODE, TERMINATING), ("10.0.1.5", "node-1", TERMINATING)], "REJECT"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "endpoints", "output"), TERMINATING_CLUSTER_CASES)
def test_terminating_endpoints_traffic_policy_cluster(name, endpoints, output) -> None:
    slices = [eps("ns1", "svc1", [ep(ip, node, **c) for ip, node, c in endpoints], [port("", 80)])]
    result = render_upstream([_terminating_service("Cluster")], slices)
    assert_flows(
        result,
        [
            ("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, output, False),
            ("external to LB", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, output, output != "REJECT"),
        ],
    )


def _masquerade_fixture() -> tuple[list[dict], list[dict]]:
    def lb(ns: str, name: str, ip: str, node_port: int, hc: int, lb_ip: str, **extra) -> dict:
        return svc(ns, name, type="LoadBalancer", clusterIP=ip, healthCheckNodePort=hc, status=lb_status(lb_ip),
                   ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": node_port}], **extra)  # fmt: skip

    services = [
        lb("ns1", "svc1", "172.30.0.41", 3001, 30001, "1.2.3.4"),
        lb("ns2", "svc2", "172.30.0.42", 3002, 30002, "5.6.7.8", externalTrafficPolicy="Local"),
        lb("ns3", "svc3", "172.30.0.43", 3003, 30003, "9.10.11.12", internalTrafficPolicy="Local"),
    ]
    slices = [
        eps(
            f"ns{i}",
            f"svc{i}",
            [ep(f"10.180.0.{i}", TEST_NODE), ep(f"10.180.1.{i}", "remote")],
            [port("p80", 80)],
        )
        for i in (1, 2, 3)
    ]
    return services, slices


MASQ_FLOWS = {
    # upstream TestInternalExternalMasquerade base flows: name -> (src, dst, port, output, masq)
    "pod to ClusterIP": ("10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80, 10.180.1.1:80", False),
    "pod to NodePort": ("10.0.0.2", TEST_NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    "pod to LB": ("10.0.0.2", "1.2.3.4", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    "node to ClusterIP": (TEST_NODE_IP, "172.30.0.41", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    "node to NodePort": (TEST_NODE_IP, TEST_NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    "localhost to NodePort": ("127.0.0.1", "127.0.0.1", 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    "node to LB": (TEST_NODE_IP, "1.2.3.4", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    "external to ClusterIP": (TEST_EXTERNAL_CLIENT, "172.30.0.41", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    "external to NodePort": (TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    "external to LB": (TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    "pod to ClusterIP with eTP:Local": ("10.0.0.2", "172.30.0.42", 80, "10.180.0.2:80, 10.180.1.2:80", False),
    "pod to NodePort with eTP:Local": ("10.0.0.2", TEST_NODE_IP, 3002, "10.180.0.2:80, 10.180.1.2:80", False),
    "pod to LB with eTP:Local": ("10.0.0.2", "5.6.7.8", 80, "10.180.0.2:80, 10.180.1.2:80", False),
    "node to ClusterIP with eTP:Local": (TEST_NODE_IP, "172.30.0.42", 80, "10.180.0.2:80, 10.180.1.2:80", True),
    "node to NodePort with eTP:Local": (TEST_NODE_IP, TEST_NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    "localhost to NodePort with eTP:Local": ("127.0.0.1", "127.0.0.1", 3002, "10.180.0.2:80, 10.180.1.2:80", True),
    "node to LB with eTP:Local": (TEST_NODE_IP, "5.6.7.8", 80, "10.180.0.2:80, 10.180.1.2:80", True),
    "external to ClusterIP with eTP:Local": (TEST_EXTERNAL_CLIENT, "172.30.0.42", 80, "10.180.0.2:80, 10.180.1.2:80", True),
    "external to NodePort with eTP:Local": (TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3002, "10.180.0.2:80", False),
    "external to LB with eTP:Local": (TEST_EXTERNAL_CLIENT, "5.6.7.8", 80, "10.180.0.2:80", False),
    "pod to ClusterIP with iTP:Local": ("10.0.0.2", "172.30.0.43", 80, "10.180.0.3:80", False),
    "pod to NodePort with iTP:Local": ("10.0.0.2", TEST_NODE_IP, 3003, "10.180.0.3:80, 10.180.1.3:80", True),
    "pod to LB with iTP:Local": ("10.0.0.2", "9.10.11.12", 80, "10.180.0.3:80, 10.180.1.3:80", True),
    "node to ClusterIP with iTP:Local": (TEST_NODE_IP, "172.30.0.43", 80, "10.180.0.3:80", True),
    "node to NodePort with iTP:Local": (TEST_NODE_IP, TEST_NODE_IP, 3003, "10.180.0.3:80, 10.180.1.3:80", True),
    "localhost to NodePort with iTP:Local": ("127.0.0.1", "127.0.0.1", 3003, "10.180.0.3:80, 10.180.1.3:80", True),
    "node to LB with iTP:Local": (TEST_NODE_IP, "9.10.11.12", 80, "10.180.0.3:80, 10.180.1.3:80", True),
    "external to ClusterIP with iTP:Local": (TEST_EXTERNAL_CLIENT, "172.30.0.43", 80, "10.180.0.3:80", True),
    "external to NodePort with iTP:Local": (TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3003, "10.180.0.3:80, 10.180.1.3:80", True),
    "external to LB with iTP:Local": (TEST_EXTERNAL_CLIENT, "9.10.11.12", 80, "10.180.0.3:80, 10.180.1.3:80", True),
}  # fmt: skip

NO_DETECTOR_OVERRIDES = {
    "node to ClusterIP": {"masq": False},
    "node to ClusterIP with eTP:Local": {"masq": False},
    "node to ClusterIP with iTP:Local": {"masq": False},
    "external to ClusterIP": {"masq": False},
    "external to ClusterIP with eTP:Local": {"masq": False},
    "external to ClusterIP with iTP:Local": {"masq": False},
    "pod to NodePort with eTP:Local": {"output": "10.180.0.2:80"},
    "pod to LB with eTP:Local": {"output": "10.180.0.2:80"},
}
MASQUERADE_ALL_OVERRIDES = {
    "pod to ClusterIP": {"masq": True},
    "pod to ClusterIP with eTP:Local": {"masq": True},
    "pod to ClusterIP with iTP:Local": {"masq": True},
}


@pytest.mark.parametrize(
    ("masquerade_all", "detector", "overrides"),
    [
        (False, True, {}),
        (False, False, NO_DETECTOR_OVERRIDES),
        (True, True, MASQUERADE_ALL_OVERRIDES),
        (
            True,
            False,
            {
                **MASQUERADE_ALL_OVERRIDES,
                "pod to NodePort with eTP:Local": {"output": "10.180.0.2:80"},
                "pod to LB with eTP:Local": {"output": "10.180.0.2:80"},
            },
        ),
    ],
    ids=["base", "no LocalTrafficDetector", "masqueradeAll", "masqueradeAll, no LocalTrafficDetector"],
)
def test_internal_external_masquerade(masquerade_all: bool, detector: bool, overrides: dict) -> None:
    # upstream TestInternalExternalMasquerade; "no LocalTrafficDetector" = no clusterCIDR set
    config = replace(
        UPSTREAM_CONFIG,
        masquerade_all=masquerade_all,
        cluster_cidr=UPSTREAM_CONFIG.cluster_cidr if detector else "",
    )
    result = render_upstream(*_masquerade_fixture(), config=config)
    flows = []
    for name, (src, dst, dport, output, masq) in MASQ_FLOWS.items():
        o = overrides.get(name, {})
        flows.append((name, src, dst, dport, o.get("output", output), o.get("masq", masq)))
    assert_flows(result, flows)


def test_load_balancer_ingress_ip_mode_proxy() -> None:
    # upstream TestLoadBalancerIngressRouteTypeProxy (LoadBalancerIPMode enabled, GA since 1.32)
    def one(ip_mode: str | None) -> str:
        ingress = {"ip": "1.2.3.4"} if ip_mode is None else {"ip": "1.2.3.4", "ipMode": ip_mode}
        services = [svc("ns1", "svc1", type="LoadBalancer", clusterIP="10.20.30.41",
                        ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}],
                        status={"loadBalancer": {"ingress": [ingress]}})]  # fmt: skip
        return render_upstream(services, [eps("ns1", "svc1", [ep("10.180.0.1")], [port("p80", 80)])])

    assert "-d 1.2.3.4 " not in one("Proxy")
    assert "-d 1.2.3.4 " in one("VIP")
    assert "-d 1.2.3.4 " in one(None)


# =============================================================================================
# Exact payloads in write order (syncProxyRules order; services sorted by name)
# =============================================================================================

NODE = "node-a"
NODE_IPS = ["172.18.0.2"]
KIND_CONFIG = KubeProxyConfig(cluster_cidr="10.244.0.0/16")

FILTER_HEAD = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
"""
FILTER_TAIL = """\
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""
NAT_HEAD = """\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
"""
NAT_PRELUDE = """\
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
"""
NAT_TAIL = """\
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"""


def payload(filter_rules: str, nat_chains: str, nat_rules: str) -> str:
    """The fixed frame of a default full sync around one test's own lines (each ending in \\n)."""
    return (
        FILTER_HEAD + filter_rules + FILTER_TAIL + NAT_HEAD + nat_chains + NAT_PRELUDE + nat_rules + NAT_TAIL
    )


def render_kind(services: list[dict], slices: list[dict], config: KubeProxyConfig = KIND_CONFIG, **kw) -> str:
    return render_full(services, slices, config, NODE, NODE_IPS, **kw)


def test_empty_cluster_payload_exactly() -> None:
    assert render_kind([], []) == (
        "*filter\n"
        ":KUBE-SERVICES - [0:0]\n"
        ":KUBE-EXTERNAL-SERVICES - [0:0]\n"
        ":KUBE-FORWARD - [0:0]\n"
        ":KUBE-NODEPORTS - [0:0]\n"
        ":KUBE-PROXY-FIREWALL - [0:0]\n"
        ":KUBE-FIREWALL - [0:0]\n"
        '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n'
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP\n"
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT\n'
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n'
        "COMMIT\n"
        "*nat\n"
        ":KUBE-SERVICES - [0:0]\n"
        ":KUBE-NODEPORTS - [0:0]\n"
        ":KUBE-POSTROUTING - [0:0]\n"
        ":KUBE-MARK-MASQ - [0:0]\n"
        "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN\n"
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000\n"
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully\n'
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000\n"
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n'
        "COMMIT\n"
    )
    assert render_kind([], []) == payload("", "", "")


def test_cluster_ip_one_endpoint_exactly() -> None:
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)])]
    slices = [eps("ns1", "svc1", [ep("10.180.0.1", "node-b")], [port("p80", 80)])]
    assert render_kind(services, slices) == payload(
        "",
        ":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]\n:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]\n",
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O\n'
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ\n'
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ\n"
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80\n",
    )


def test_several_endpoints_ordering_and_probabilities_exactly() -> None:
    # Endpoints are ordered by their "ip:port" string (10.0.1.10 < 10.0.1.2 < 10.0.1.9), not by
    # slice order or numerically; rule i of n matches with probability 1/(n-i).
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)])]
    slices = [eps("ns1", "svc1", [ep("10.0.1.9"), ep("10.0.1.2"), ep("10.0.1.10")], [port("p80", 80)])]
    name = "ns1/svc1:p80"
    seps = {ip: endpoint_chain_name(name, "TCP", f"{ip}:80") for ip in ("10.0.1.10", "10.0.1.2", "10.0.1.9")}
    a, b, c = seps["10.0.1.10"], seps["10.0.1.2"], seps["10.0.1.9"]
    assert render_kind(services, slices) == payload(
        "",
        f":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]\n:{a} - [0:0]\n:{b} - [0:0]\n:{c} - [0:0]\n",
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O\n'
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        f'-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.10:80" -m statistic --mode random --probability 0.3333333333 -j {a}\n'
        f'-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.2:80" -m statistic --mode random --probability 0.5000000000 -j {b}\n'
        f'-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.9:80" -j {c}\n'
        f"-A {a} -m comment --comment ns1/svc1:p80 -s 10.0.1.10 -j KUBE-MARK-MASQ\n"
        f"-A {a} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.10:80\n"
        f"-A {b} -m comment --comment ns1/svc1:p80 -s 10.0.1.2 -j KUBE-MARK-MASQ\n"
        f"-A {b} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.2:80\n"
        f"-A {c} -m comment --comment ns1/svc1:p80 -s 10.0.1.9 -j KUBE-MARK-MASQ\n"
        f"-A {c} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.9:80\n",
    )


def test_two_services_sorted_and_interleaved_exactly() -> None:
    # Each service writes its KUBE-SERVICES rule and then its own chains, as upstream's loop does;
    # services come in name order whatever the input order.
    services = [
        svc("ns2", "svc2", clusterIP="172.30.0.42", ports=[port("p8080", 8080)]),
        svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)]),
    ]
    slices = [
        eps("ns2", "svc2", [ep("10.0.2.1")], [port("p8080", 8080)]),
        eps("ns1", "svc1", [ep("10.0.1.1")], [port("p80", 80)]),
    ]
    assert render_kind(services, slices) == payload(
        "",
        ":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]\n:KUBE-SEP-SNQ3ZNILQDEJNDQO - [0:0]\n"
        ":KUBE-SVC-2VJB64SDSIJUP5T6 - [0:0]\n:KUBE-SEP-UHEGFW77JX3KXTOV - [0:0]\n",
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O\n'
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -j KUBE-SEP-SNQ3ZNILQDEJNDQO\n'
        "-A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -s 10.0.1.1 -j KUBE-MARK-MASQ\n"
        "-A KUBE-SEP-SNQ3ZNILQDEJNDQO -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.1:80\n"
        '-A KUBE-SERVICES -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 -j KUBE-SVC-2VJB64SDSIJUP5T6\n'
        '-A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 8080 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        '-A KUBE-SVC-2VJB64SDSIJUP5T6 -m comment --comment "ns2/svc2:p8080 -> 10.0.2.1:8080" -j KUBE-SEP-UHEGFW77JX3KXTOV\n'
        "-A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -s 10.0.2.1 -j KUBE-MARK-MASQ\n"
        "-A KUBE-SEP-UHEGFW77JX3KXTOV -m comment --comment ns2/svc2:p8080 -m tcp -p tcp -j DNAT --to-destination 10.0.2.1:8080\n",
    )


def test_no_endpoints_reject_exactly() -> None:
    # A service without endpoints has no nat chains at all, only REJECTs in filter: the ClusterIP in
    # KUBE-SERVICES, external IPs, LB IPs and the NodePort in KUBE-EXTERNAL-SERVICES.
    services = [
        svc("ns1", "svc1", type="LoadBalancer", clusterIP="172.30.0.41", externalIPs=["192.168.99.11"],
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30001}], status=lb_status("1.2.3.4"))
    ]  # fmt: skip
    comment = '"ns1/svc1:p80 has no endpoints"'
    assert render_kind(services, []) == payload(
        f"-A KUBE-SERVICES -m comment --comment {comment} -m tcp -p tcp -d 172.30.0.41 --dport 80 -j REJECT\n"
        f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {comment} -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT\n"
        f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {comment} -m tcp -p tcp -d 1.2.3.4 --dport 80 -j REJECT\n"
        f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {comment} -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30001 -j REJECT\n",
        "",
        "",
    )


def test_node_port_exactly() -> None:
    services = [
        svc("ns3", "svc3", type="NodePort", clusterIP="172.30.0.43",
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30003}])
    ]  # fmt: skip
    slices = [eps("ns3", "svc3", [ep("10.0.3.1")], [port("p80", 80)])]
    assert render_kind(services, slices) == payload(
        "",
        ":KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]\n:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]\n:KUBE-SEP-BSWRHOQ77KEXZLNL - [0:0]\n",
        '-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK\n'
        "-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 30003 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-X27LE4BHSL4DOUIK\n"
        "-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 30003 -j KUBE-EXT-X27LE4BHSL4DOUIK\n"
        '-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        '-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ\n'
        "-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK\n"
        '-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.0.3.1:80" -j KUBE-SEP-BSWRHOQ77KEXZLNL\n'
        "-A KUBE-SEP-BSWRHOQ77KEXZLNL -m comment --comment ns3/svc3:p80 -s 10.0.3.1 -j KUBE-MARK-MASQ\n"
        "-A KUBE-SEP-BSWRHOQ77KEXZLNL -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.3.1:80\n",
    )


def test_load_balancer_source_ranges_exactly() -> None:
    # The FW chain accepts the source ranges and, since one of them holds the node IP, the LB IPs
    # themselves (hairpin from the node); everything else falls through to KUBE-PROXY-FIREWALL.
    services = [
        svc("ns5", "svc5", type="LoadBalancer", clusterIP="172.30.0.45",
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30002}],
            loadBalancerSourceRanges=["203.0.113.0/25", "172.18.0.0/16"], status=lb_status("5.6.7.8"))
    ]  # fmt: skip
    slices = [eps("ns5", "svc5", [ep("10.180.0.3")], [port("p80", 80)])]
    fw, ext, svc_chain, sep = (
        "KUBE-FW-NUKIZ6OKUXPJNT4C",
        "KUBE-EXT-NUKIZ6OKUXPJNT4C",
        "KUBE-SVC-NUKIZ6OKUXPJNT4C",
        "KUBE-SEP-I77PXRDZVX7PMWMN",
    )
    assert render_kind(services, slices) == payload(
        f'-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by {fw}" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP\n',
        f":{ext} - [0:0]\n:{fw} - [0:0]\n:{svc_chain} - [0:0]\n:{sep} - [0:0]\n",
        f'-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j {svc_chain}\n'
        f'-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j {fw}\n'
        f"-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 30002 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j {ext}\n"
        f"-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 30002 -j {ext}\n"
        f'-A {svc_chain} -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        f'-A {ext} -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ\n'
        f"-A {ext} -j {svc_chain}\n"
        f'-A {fw} -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j {ext}\n'
        f'-A {fw} -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 172.18.0.0/16 -j {ext}\n'
        f'-A {fw} -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 5.6.7.8 -j {ext}\n'
        f'-A {fw} -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"\n'
        f'-A {svc_chain} -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j {sep}\n'
        f"-A {sep} -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ\n"
        f"-A {sep} -m comment --comment ns5/svc5:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80\n",
    )


def test_external_traffic_policy_local_exactly() -> None:
    # eTP=Local: KUBE-EXT short-circuits pod and node traffic to KUBE-SVC and sends the rest to
    # KUBE-SVL (local endpoints only, no masquerade); the health check port is opened in filter.
    services = [
        svc("ns2", "svc2", type="LoadBalancer", externalTrafficPolicy="Local", clusterIP="172.30.0.42",
            healthCheckNodePort=32000, ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30001}],
            status=lb_status("1.2.3.4"))
    ]  # fmt: skip
    slices = [eps("ns2", "svc2", [ep("10.180.0.2", NODE), ep("10.180.1.2", "node-b")], [port("p80", 80)])]
    h = "GNZBNJ2PO5MGZ6GT"
    local_sep = endpoint_chain_name("ns2/svc2:p80", "TCP", "10.180.0.2:80")
    remote_sep = endpoint_chain_name("ns2/svc2:p80", "TCP", "10.180.1.2:80")
    assert render_kind(services, slices) == payload(
        '-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 32000 -j ACCEPT\n',
        f":KUBE-EXT-{h} - [0:0]\n:KUBE-SVC-{h} - [0:0]\n:KUBE-SVL-{h} - [0:0]\n:{local_sep} - [0:0]\n:{remote_sep} - [0:0]\n",
        f'-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-{h}\n'
        f'-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-{h}\n'
        f"-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 30001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-{h}\n"
        f"-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 30001 -j KUBE-EXT-{h}\n"
        f'-A KUBE-SVC-{h} -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        f'-A KUBE-EXT-{h} -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.244.0.0/16 -j KUBE-SVC-{h}\n'
        f'-A KUBE-EXT-{h} -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n'
        f'-A KUBE-EXT-{h} -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-{h}\n'
        f"-A KUBE-EXT-{h} -j KUBE-SVL-{h}\n"
        f'-A KUBE-SVC-{h} -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -m statistic --mode random --probability 0.5000000000 -j {local_sep}\n'
        f'-A KUBE-SVC-{h} -m comment --comment "ns2/svc2:p80 -> 10.180.1.2:80" -j {remote_sep}\n'
        f'-A KUBE-SVL-{h} -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j {local_sep}\n'
        f"-A {local_sep} -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ\n"
        f"-A {local_sep} -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80\n"
        f"-A {remote_sep} -m comment --comment ns2/svc2:p80 -s 10.180.1.2 -j KUBE-MARK-MASQ\n"
        f"-A {remote_sep} -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.1.2:80\n",
    )


def test_external_traffic_policy_local_without_local_endpoints_exactly() -> None:
    # No local endpoint: external traffic is DROPped in filter, but the EXT chain still exists for
    # the pod/node short-circuit, and there is no KUBE-SVL chain.
    services = [
        svc("ns2", "svc2", type="NodePort", externalTrafficPolicy="Local", clusterIP="172.30.0.42",
            ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30001}])
    ]  # fmt: skip
    slices = [eps("ns2", "svc2", [ep("10.180.1.2", "node-b")], [port("p80", 80)])]
    h = "GNZBNJ2PO5MGZ6GT"
    sep = endpoint_chain_name("ns2/svc2:p80", "TCP", "10.180.1.2:80")
    assert render_kind(services, slices) == payload(
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30001 -j DROP\n',
        f":KUBE-EXT-{h} - [0:0]\n:KUBE-SVC-{h} - [0:0]\n:{sep} - [0:0]\n",
        f'-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-{h}\n'
        f"-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 30001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-{h}\n"
        f"-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 30001 -j KUBE-EXT-{h}\n"
        f'-A KUBE-SVC-{h} -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        f'-A KUBE-EXT-{h} -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.244.0.0/16 -j KUBE-SVC-{h}\n'
        f'-A KUBE-EXT-{h} -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n'
        f'-A KUBE-EXT-{h} -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-{h}\n'
        f'-A KUBE-SVC-{h} -m comment --comment "ns2/svc2:p80 -> 10.180.1.2:80" -j {sep}\n'
        f"-A {sep} -m comment --comment ns2/svc2:p80 -s 10.180.1.2 -j KUBE-MARK-MASQ\n"
        f"-A {sep} -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.1.2:80\n",
    )


def test_internal_traffic_policy_local_exactly() -> None:
    # iTP=Local: the ClusterIP jumps to KUBE-SVL, which holds the masquerade rule and only local
    # endpoints; no KUBE-SVC chain since nothing uses Cluster policy.
    services = [
        svc("ns1", "svc1", clusterIP="172.30.1.1", internalTrafficPolicy="Local", ports=[port("", 80)])
    ]
    slices = [eps("ns1", "svc1", [ep("10.0.1.1", NODE), ep("10.0.1.2", "node-b")], [port("", 80)])]
    svl = service_local_chain_name("ns1/svc1", "TCP")
    sep = endpoint_chain_name("ns1/svc1", "TCP", "10.0.1.1:80")
    assert render_kind(services, slices) == payload(
        "",
        f":{svl} - [0:0]\n:{sep} - [0:0]\n",
        f'-A KUBE-SERVICES -m comment --comment "ns1/svc1 cluster IP" -m tcp -p tcp -d 172.30.1.1 --dport 80 -j {svl}\n'
        f'-A {svl} -m comment --comment "ns1/svc1 cluster IP" -m tcp -p tcp -d 172.30.1.1 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        f'-A {svl} -m comment --comment "ns1/svc1 -> 10.0.1.1:80" -j {sep}\n'
        f"-A {sep} -m comment --comment ns1/svc1 -s 10.0.1.1 -j KUBE-MARK-MASQ\n"
        f"-A {sep} -m comment --comment ns1/svc1 -m tcp -p tcp -j DNAT --to-destination 10.0.1.1:80\n",
    )
    # Without a local endpoint, the ClusterIP is dropped (not rejected): other nodes still serve it.
    drop = render_kind(services, [eps("ns1", "svc1", [ep("10.0.1.2", "node-b")], [port("", 80)])])
    assert drop == payload(
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1 has no local endpoints" -m tcp -p tcp -d 172.30.1.1 --dport 80 -j DROP\n',
        "",
        "",
    )


def test_client_ip_affinity_exactly() -> None:
    services = [
        svc("ns1", "svc1", clusterIP="172.30.0.41", sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 300}}, ports=[port("p80", 80)])
    ]  # fmt: skip
    slices = [eps("ns1", "svc1", [ep("10.0.1.1"), ep("10.0.1.2")], [port("p80", 80)])]
    s1 = endpoint_chain_name("ns1/svc1:p80", "TCP", "10.0.1.1:80")
    s2 = endpoint_chain_name("ns1/svc1:p80", "TCP", "10.0.1.2:80")
    c = "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert render_kind(services, slices) == payload(
        "",
        f":{c} - [0:0]\n:{s1} - [0:0]\n:{s2} - [0:0]\n",
        f'-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j {c}\n'
        f'-A {c} -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        f'-A {c} -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -m recent --name {s1} --rcheck --seconds 300 --reap -j {s1}\n'
        f'-A {c} -m comment --comment "ns1/svc1:p80 -> 10.0.1.2:80" -m recent --name {s2} --rcheck --seconds 300 --reap -j {s2}\n'
        f'-A {c} -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -m statistic --mode random --probability 0.5000000000 -j {s1}\n'
        f'-A {c} -m comment --comment "ns1/svc1:p80 -> 10.0.1.2:80" -j {s2}\n'
        f"-A {s1} -m comment --comment ns1/svc1:p80 -s 10.0.1.1 -j KUBE-MARK-MASQ\n"
        f"-A {s1} -m comment --comment ns1/svc1:p80 -m recent --name {s1} --set -m tcp -p tcp -j DNAT --to-destination 10.0.1.1:80\n"
        f"-A {s2} -m comment --comment ns1/svc1:p80 -s 10.0.1.2 -j KUBE-MARK-MASQ\n"
        f"-A {s2} -m comment --comment ns1/svc1:p80 -m recent --name {s2} --set -m tcp -p tcp -j DNAT --to-destination 10.0.1.2:80\n",
    )


def test_terminating_fallback_exactly() -> None:
    # No ready endpoint anywhere: the serving-terminating ones are used; not-serving ones never.
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80, "UDP")])]
    slices = [
        eps("ns1", "svc1", [ep("10.0.1.1", **SERVING_TERMINATING), ep("10.0.1.2", **TERMINATING),
                            ep("10.0.1.3", ready=False)], [port("p80", 80, "UDP")])
    ]  # fmt: skip
    c = service_chain_name("ns1/svc1:p80", "UDP")
    s1 = endpoint_chain_name("ns1/svc1:p80", "UDP", "10.0.1.1:80")
    assert render_kind(services, slices) == payload(
        "",
        f":{c} - [0:0]\n:{s1} - [0:0]\n",
        f'-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m udp -p udp -d 172.30.0.41 --dport 80 -j {c}\n'
        f'-A {c} -m comment --comment "ns1/svc1:p80 cluster IP" -m udp -p udp -d 172.30.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n'
        f'-A {c} -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -j {s1}\n'
        f"-A {s1} -m comment --comment ns1/svc1:p80 -s 10.0.1.1 -j KUBE-MARK-MASQ\n"
        f"-A {s1} -m comment --comment ns1/svc1:p80 -m udp -p udp -j DNAT --to-destination 10.0.1.1:80\n",
    )
    # A ready endpoint, even remote, takes precedence over terminating ones.
    slices[0]["endpoints"].append(ep("10.0.1.4", "node-b"))
    assert "10.0.1.1" not in render_kind(services, slices)


def test_masquerade_all_and_external_ips_exactly() -> None:
    # masqueradeAll marks every ClusterIP connection, no local-detector match; externalIPs go
    # through KUBE-EXT with Cluster policy (masquerade, then KUBE-SVC).
    config = replace(KIND_CONFIG, masquerade_all=True)
    services = [svc("ns4", "svc4", clusterIP="172.30.0.44", externalIPs=["192.168.99.33", "2001:db8::9"],
                    ports=[port("p80", 80)])]  # fmt: skip
    slices = [eps("ns4", "svc4", [ep("10.0.4.1")], [port("p80", 80)])]
    h = "4SW47YFZTEDKD3PK"
    sep = "KUBE-SEP-AYCN5HPXMIRJNJXU"
    assert render_kind(services, slices, config) == payload(
        "",
        f":KUBE-EXT-{h} - [0:0]\n:KUBE-SVC-{h} - [0:0]\n:{sep} - [0:0]\n",
        f'-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-{h}\n'
        f'-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-{h}\n'
        f'-A KUBE-SVC-{h} -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-MARK-MASQ\n'
        f'-A KUBE-EXT-{h} -m comment --comment "masquerade traffic for ns4/svc4:p80 external destinations" -j KUBE-MARK-MASQ\n'
        f"-A KUBE-EXT-{h} -j KUBE-SVC-{h}\n"
        f'-A KUBE-SVC-{h} -m comment --comment "ns4/svc4:p80 -> 10.0.4.1:80" -j {sep}\n'
        f"-A {sep} -m comment --comment ns4/svc4:p80 -s 10.0.4.1 -j KUBE-MARK-MASQ\n"
        f"-A {sep} -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.4.1:80\n",
    )


def test_no_local_detector_without_cluster_cidr() -> None:
    # Without clusterCIDR (ClusterCIDR mode) upstream's detector is a no-op: no masquerade rule in
    # KUBE-SVC and no pod short-circuit in KUBE-EXT.
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)])]
    slices = [eps("ns1", "svc1", [ep("10.0.1.1")], [port("p80", 80)])]
    out = render_kind(services, slices, KubeProxyConfig())
    assert "KUBE-MARK-MASQ\n-A KUBE-SVC" not in out
    assert not [line for line in out.split("\n") if line.startswith("-A KUBE-SVC-") and "cluster IP" in line]


def test_local_detector_modes() -> None:
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)])]
    slices = [eps("ns1", "svc1", [ep("10.0.1.1")], [port("p80", 80)])]
    cases = {
        KubeProxyConfig(detect_local_mode="NodeCIDR"): "! -s 10.244.1.0/24 -j KUBE-MARK-MASQ",
        KubeProxyConfig(detect_local_mode="BridgeInterface", bridge_interface="cni0"): "! -i cni0 -j KUBE-MARK-MASQ",
        KubeProxyConfig(detect_local_mode="InterfaceNamePrefix", interface_name_prefix="veth"): "! -i veth+ -j KUBE-MARK-MASQ",
        KubeProxyConfig(cluster_cidr="fd00::/48,10.244.0.5/16"): "! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
    }  # fmt: skip
    for config, expected in cases.items():
        assert expected in render_kind(services, slices, config, node_pod_cidrs=["10.244.1.0/24"])


def test_node_port_addresses_per_ip_exactly() -> None:
    # With nodePortAddresses, KUBE-SERVICES jumps to KUBE-NODEPORTS per matching node IP; without
    # 127.0.0.0/8 in them localhost NodePorts (and KUBE-FIREWALL) are off.
    config = replace(KIND_CONFIG, node_port_addresses=("172.18.0.0/16", "10.99.0.0/16"))
    out = render_full([], [], config, NODE, ["172.18.0.2", "10.99.0.7", "192.168.5.5"])
    assert out == (
        "*filter\n"
        ":KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\n:KUBE-FORWARD - [0:0]\n"
        ":KUBE-NODEPORTS - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n"
        + FILTER_TAIL
        + NAT_HEAD
        + NAT_PRELUDE
        + '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -d 172.18.0.2 -j KUBE-NODEPORTS\n'
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -d 10.99.0.7 -j KUBE-NODEPORTS\n'
        "COMMIT\n"
    )
    # "primary" means the node's primary IP only.
    primary = render_full(
        [], [], replace(KIND_CONFIG, node_port_addresses=("primary",)), NODE, ["172.18.0.2", "10.99.0.7"]
    )
    assert "-d 172.18.0.2 -j KUBE-NODEPORTS" in primary and "10.99.0.7" not in primary
    # localhostNodePorts off, all addresses: localhost is excluded from the NodePort jump.
    off = render_kind([], [], replace(KIND_CONFIG, localhost_nodeports=False))
    assert (
        "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS\n" in off
        and "KUBE-FIREWALL" not in off
    )


def test_ipv6_payload() -> None:
    services = [svc("ns1", "svc1", clusterIP="fd00:172:30::41", ipFamilies=["IPv6"],
                    ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30001}], type="NodePort")]  # fmt: skip
    slices = [eps("ns1", "svc1", [ep("fd00:10:180::1")], [port("p80", 80)], family="IPv6")]
    out = render_full(services, slices, replace(KIND_CONFIG, cluster_cidr="10.244.0.0/16,fd00:10::/56"), NODE,
                      ["172.18.0.2", "fc00:f853:ccd:e793::2"], ip_family="IPv6")  # fmt: skip
    assert "KUBE-FIREWALL" not in out and "localhost_nps_accepted_pkts" not in out
    assert "--to-destination [fd00:10:180::1]:80\n" in out
    assert "! -s fd00:10::/56 -j KUBE-MARK-MASQ" in out
    assert "-m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS" in out
    # and the IPv4 proxier ignores the IPv6-only service entirely
    assert "ns1/svc1" not in render_kind(services, slices)


# =============================================================================================
# Model: what kube-proxy keeps and skips
# =============================================================================================


def test_headless_and_external_name_services_are_skipped() -> None:
    services = [
        svc("ns", "headless", clusterIP="None", ports=[port("p", 80)]),
        svc("ns", "no-ip", ports=[port("p", 80)]),
        svc(
            "ns",
            "ext",
            type="ExternalName",
            externalName="example.com",
            clusterIP="172.30.0.9",
            ports=[port("p", 80)],
        ),
        svc("ns", "v6only", clusterIP="fd00::1", ports=[port("p", 80)]),
        {"kind": "ConfigMap", "metadata": {"name": "x"}},
    ]
    assert build_service_map(services) == {}


def test_services_and_slices_kube_proxy_does_not_watch_get_no_rules() -> None:
    """kube-proxy lists Services and EndpointSlices with the selector
    !service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless: a Service handed to
    another proxy, or a slice carrying either label, is as if it did not exist."""
    plain = svc("ns", "plain", clusterIP="172.30.0.41", ports=[port("p", 80)])
    other = svc("ns", "other", clusterIP="172.30.0.42", ports=[port("p", 80)])
    other["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "cilium"}
    labelled_slice = eps("ns", "plain", [ep("10.180.0.1")], [port("p", 80)], num=2)
    labelled_slice["metadata"]["labels"]["service.kubernetes.io/headless"] = ""
    slices = [eps("ns", "plain", [ep("10.180.0.2")], [port("p", 80)]), eps("ns", "other", [ep("10.180.0.3")], [port("p", 80)])]
    expected = render_upstream([plain], slices[:1])
    assert render_upstream([plain, other], slices + [labelled_slice]) == expected
    assert "172.30.0.42" not in expected and "10.180.0.1" not in expected and "10.180.0.2" in expected
    # a Service that gains the label leaves the maps of a running kube-proxy, and comes back without it
    maps = ProxyMaps(TEST_NODE)
    maps.update([plain, other], slices)
    assert ServicePortName("ns", "other", "p", "TCP") not in maps.service_map
    relabelled = {**plain, "metadata": {**plain["metadata"], "resourceVersion": "2", "labels": other["metadata"]["labels"]}}
    changed, _, _ = maps.update([relabelled, other], slices)
    assert changed == {("ns", "plain")} and maps.service_map == {}
    changed, _, _ = maps.update([plain, other], slices)
    assert changed == {("ns", "plain")} and list(maps.service_map) == [ServicePortName("ns", "plain", "p", "TCP")]


def test_service_defaults_and_family_filtering() -> None:
    s = svc(
        "ns", "s", clusterIP="10.96.0.10", clusterIPs=["10.96.0.10", "fd00::10"], ipFamilies=["IPv4", "IPv6"],
        type="LoadBalancer", externalIPs=["1.1.1.1", "2001:db8::1", "bogus"], loadBalancerSourceRanges=["10.0.0.0/8", "::/0"],
        sessionAffinity="ClientIP", ports=[{"port": 53, "protocol": "UDP"}, {"name": "x", "port": 80}],
        status={"loadBalancer": {"ingress": [{"ip": "2.2.2.2"}, {"ip": "3.3.3.3", "ipMode": "Proxy"}, {"hostname": "lb"}]}},
    )  # fmt: skip
    v4 = build_service_map([s])
    udp = v4[ServicePortName("ns", "s", "", "UDP")]
    assert udp.cluster_ip == "10.96.0.10" and udp.external_ips == ("1.1.1.1",)
    assert udp.load_balancer_vips == ("2.2.2.2",) and udp.load_balancer_source_ranges == ("10.0.0.0/8",)
    assert udp.sticky_max_age_seconds == 10800 and udp.external_traffic_policy == "Cluster"
    assert v4[ServicePortName("ns", "s", "x", "TCP")].port == 80
    v6 = build_service_map([s], "IPv6")
    assert v6[ServicePortName("ns", "s", "", "UDP")].cluster_ip == "fd00::10"
    assert v6[ServicePortName("ns", "s", "", "UDP")].external_ips == ("2001:db8::1",)


def test_endpoint_slices_kube_proxy_skips() -> None:
    good = eps("ns", "s", [ep("10.0.0.1")], [port("p", 80)])
    no_label = eps("ns", "s", [ep("10.0.0.2")], [port("p", 80)], num=2)
    del no_label["metadata"]["labels"]
    wrong_family = eps("ns", "s", [ep("10.0.0.3")], [port("p", 80)], num=3, family="IPv6")
    fqdn = eps("ns", "s", [ep("10.0.0.4")], [port("p", 80)], num=4, family="FQDN")
    no_port = eps("ns", "s", [ep("10.0.0.5")], [{"name": "p"}], num=5)
    no_address = eps("ns", "s", [{"addresses": []}], [port("p", 80)], num=6)
    m = build_endpoints_map([good, no_label, wrong_family, fqdn, no_port, no_address])
    assert [str(e) for e in m[ServicePortName("ns", "s", "p", "TCP")]] == ["10.0.0.1:80"]


def test_endpoint_defaults_and_duplicates() -> None:
    # A port without name/protocol gets the API defaults ("" / TCP); a duplicate endpoint prefers
    # the non-terminating copy; conditions default to ready/serving, not terminating.
    a = eps(
        "ns", "s", [ep("10.0.0.1", "n1", ready=False, serving=True, terminating=True)], [{"port": 80}], num=1
    )
    b = eps("ns", "s", [ep("10.0.0.1", "n1"), ep("10.0.0.2", "me")], [{"port": 80}], num=2)
    m = build_endpoints_map([a, b], node_name="me")
    e1, e2 = m[ServicePortName("ns", "s", "", "TCP")]
    assert (str(e1), e1.ready, e1.terminating, e1.is_local) == ("10.0.0.1:80", True, False, False)
    assert (str(e2), e2.is_local) == ("10.0.0.2:80", True)


def test_sloppy_parsing() -> None:
    assert str(parse_ip_sloppy("010.000.000.001")) == "10.0.0.1"
    assert str(parse_ip_sloppy("::ffff:1.2.3.4")) == "1.2.3.4"
    assert parse_ip_sloppy("1.2.3.256") is None and parse_ip_sloppy("") is None
    assert str(parse_cidr_sloppy("203.0.113.000/025")) == "203.0.113.0/25"
    assert str(parse_cidr_sloppy("10.1.2.3/8")) == "10.0.0.0/8"
    assert parse_cidr_sloppy("10.0.0.0") is None


def test_kube_proxy_configuration_parsing() -> None:
    config = KubeProxyConfig.from_dict(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clusterCIDR": "10.244.0.0/16,fd00:10::/56",
            "iptables": {"masqueradeAll": True, "masqueradeBit": 15, "localhostNodePorts": False},
            "nodePortAddresses": ["172.18.0.0/16"],
            "detectLocalMode": "ClusterCIDR",
            "conntrack": {"tcpBeLiberal": True},
        }
    )
    assert config.cluster_cidrs == ("10.244.0.0/16", "fd00:10::/56")
    assert config.masquerade_all and config.masquerade_mark == "0x00008000"
    assert not config.localhost_nodeports and config.tcp_be_liberal
    assert config.node_port_addresses == ("172.18.0.0/16",)
    defaults = KubeProxyConfig.from_dict({"kind": "KubeProxyConfiguration"})
    assert defaults == KubeProxyConfig()


# =============================================================================================
# Topology
# =============================================================================================


def test_topology_zone_hints() -> None:
    s = build_service_map([svc("ns", "s", clusterIP="10.96.0.5", ports=[port("p", 80)])])[
        ServicePortName("ns", "s", "p")
    ]

    def hinted(ip: str, zone: str) -> dict:
        return {**ep(ip, "other"), "zone": zone, "hints": {"forZones": [{"name": zone}]}}

    slices = [
        eps(
            "ns",
            "s",
            [hinted("10.0.0.1", "a"), hinted("10.0.0.2", "b"), hinted("10.0.0.3", "a")],
            [port("p", 80)],
        )
    ]
    endpoints = build_endpoints_map(slices, "me")[s.key]
    zone_a = categorize_endpoints(endpoints, s, "me", {"topology.kubernetes.io/zone": "a"})
    assert [str(e) for e in zone_a.cluster] == ["10.0.0.1:80", "10.0.0.3:80"]
    # a zone nobody hints for, or a node without the label, ignores hints
    for labels in ({"topology.kubernetes.io/zone": "c"}, {}):
        assert len(categorize_endpoints(endpoints, s, "me", labels).cluster) == 3
    # one ready endpoint without hints disables them all
    slices[0]["endpoints"].append(ep("10.0.0.4"))
    endpoints = build_endpoints_map(slices, "me")[s.key]
    assert len(categorize_endpoints(endpoints, s, "me", {"topology.kubernetes.io/zone": "a"}).cluster) == 4
    # and through the renderer, on a node in zone b, only 10.0.0.2 is used
    slices[0]["endpoints"].pop()
    out = render_full([svc("ns", "s", clusterIP="10.96.0.5", ports=[port("p", 80)])], slices, KIND_CONFIG, "me",
                      NODE_IPS, {"topology.kubernetes.io/zone": "b"})  # fmt: skip
    assert "--to-destination 10.0.0.2:80" in out and "10.0.0.1" not in out


def test_topology_node_hints_prefer_same_node() -> None:
    s = build_service_map([svc("ns", "s", clusterIP="10.96.0.5", ports=[port("p", 80)])])[
        ServicePortName("ns", "s", "p")
    ]
    raw = [{**ep(f"10.0.0.{i}", n), "hints": {"forNodes": [{"name": n}], "forZones": [{"name": "z"}]}}
           for i, n in ((1, "me"), (2, "other"))]  # fmt: skip
    endpoints = build_endpoints_map([eps("ns", "s", raw, [port("p", 80)])], "me")[s.key]
    assert [str(e) for e in categorize_endpoints(endpoints, s, "me", {}).cluster] == ["10.0.0.1:80"]
    endpoints = build_endpoints_map([eps("ns", "s", raw, [port("p", 80)])], "me", prefer_same_node=False)[
        s.key
    ]
    assert len(categorize_endpoints(endpoints, s, "me", {}).cluster) == 2


# =============================================================================================
# Reusable pieces and CLI
# =============================================================================================


def test_plan_service_port_separates_always_written_rules() -> None:
    services = [svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)])]
    slices = [eps("ns1", "svc1", [ep("10.0.1.1")], [port("p80", 80)])]
    key = ServicePortName("ns1", "svc1", "p80")
    params = node_params(KIND_CONFIG, NODE, NODE_IPS)
    rules = plan_service_port(
        build_service_map(services)[key], build_endpoints_map(slices, NODE)[key], params
    )
    assert [r.split(" -m ")[0] for r in rules.nat_rules] == ["-A KUBE-SERVICES"]
    assert rules.active_nat_chains == ["KUBE-SVC-XPGD46QRK7WJZT7O", "KUBE-SEP-SNQ3ZNILQDEJNDQO"]
    assert all(r.startswith(("-A KUBE-SVC-", "-A KUBE-SEP-")) for r in rules.nat_chain_rules)


def test_jump_rules() -> None:
    rules = jump_rules()
    assert rules[0].args == ("-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment",
                             "kubernetes externally-visible service portals", "-j", "KUBE-EXTERNAL-SERVICES")  # fmt: skip
    assert ("nat", "PREROUTING") in {(r.table, r.chain) for r in rules}
    assert rules[-1].args == ("-j", "KUBE-FIREWALL")


def test_render_is_deterministic_and_order_independent() -> None:
    services, slices = overall_services(), overall_slices()
    first = render_upstream(services, slices)
    assert render_upstream(list(reversed(services)), list(reversed(slices))) == first


def _cli(*args: str, input: str | None = None):
    app = typer.Typer()
    app.add_typer(proxy_app, name="proxy")
    return CliRunner().invoke(app, ["proxy", *args], input=input)


def test_cli_render(tmp_path) -> None:
    import yaml

    docs = [
        svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)]),
        eps("ns1", "svc1", [ep("10.180.0.1", "node-b")], [port("p80", 80)]),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}},
    ]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "all.yaml").write_text(yaml.safe_dump_all(docs))
    (tmp_path / "kp.yaml").write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n"
    )
    result = _cli("render", "--mode", "iptables", "--node", NODE, "--node-ip", "172.18.0.2",
                  "--config", str(tmp_path / "kp.yaml"), "-f", str(tmp_path / "m"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == render_kind(docs[:1], docs[1:2])

    # stdin, the config given as a document, and the host-capability switches
    stdin = yaml.safe_dump_all([*docs, yaml.safe_load((tmp_path / "kp.yaml").read_text())])
    result = _cli(
        "render",
        "--node",
        NODE,
        "--node-ip",
        "172.18.0.2",
        "--no-random-fully",
        "--no-nfacct",
        "-f",
        "-",
        input=stdin,
    )
    assert result.exit_code == 0, result.output
    expected = render_kind(docs[:1], docs[1:2], replace(KIND_CONFIG, random_fully=False, nfacct_ct_state_invalid=False,
                                                         nfacct_localhost_nodeports=False))  # fmt: skip
    assert result.stdout == expected and "--random-fully" not in expected and "nfacct" not in expected


def test_cli_render_several_files_node_ips_and_local_detection_from_yaml(tmp_path) -> None:
    """`-f a.yaml b.yaml` (as the shell expands `-f dir/*.yaml`), several --node-ip matched against
    nodePortAddresses, and detectLocalMode / detectLocal read from the KubeProxyConfiguration."""
    import yaml

    (tmp_path / "a.yaml").write_text(yaml.safe_dump(svc("shop", "web", type="NodePort", clusterIP="10.96.0.20",
                                                        ports=[{"name": "http", "port": 80, "nodePort": 30080}])))  # fmt: skip
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(eps("shop", "web", [ep("10.244.1.5", "n1")], [port("http", 8080)])))

    def render(config: str, *args: str) -> list[str]:
        (tmp_path / "kp.yaml").write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                                          "clusterCIDR: 10.244.0.0/16\n" + config)  # fmt: skip
        result = _cli("render", "--node", "n1", "--config", str(tmp_path / "kp.yaml"), *args,
                      "-f", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))  # fmt: skip
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    lines = render("detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cni0}\nnodePortAddresses: [172.18.0.0/16]\n",
                   "--node-ip", "172.18.1.2", "--node-ip", "172.18.2.2", "--node-ip", "192.168.0.9")  # fmt: skip
    assert "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -d 172.18.1.2 -j KUBE-NODEPORTS" in lines
    assert sum("-j KUBE-NODEPORTS" in line for line in lines) == 2 and not any("192.168.0.9" in line for line in lines)
    masq = [line for line in lines if line.startswith("-A KUBE-SVC-") and "KUBE-MARK-MASQ" in line]
    assert len(masq) == 1 and masq[0].endswith("--dport 80 ! -i cni0 -j KUBE-MARK-MASQ")  # the endpoint and the NodePort rules come from both files
    assert any("DNAT --to-destination 10.244.1.5:8080" in line for line in lines)
    masq = [line for line in render("detectLocalMode: NodeCIDR\n", "--node-ip", "172.18.1.2", "--pod-cidr", "10.244.1.0/24")
            if line.startswith("-A KUBE-SVC-") and "KUBE-MARK-MASQ" in line]  # fmt: skip
    assert len(masq) == 1 and masq[0].endswith("--dport 80 ! -s 10.244.1.0/24 -j KUBE-MARK-MASQ")
    masq = [line for line in render("detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: veth}\n",
                                    "--node-ip", "172.18.1.2") if line.startswith("-A KUBE-SVC-") and "KUBE-MARK-MASQ" in line]  # fmt: skip
    assert len(masq) == 1 and masq[0].endswith("--dport 80 ! -i veth+ -j KUBE-MARK-MASQ")


def test_cli_render_names_bad_input_and_services_without_a_cluster_ip(tmp_path) -> None:
    """Input is read as `kubewire apply` reads it: broken YAML, a document that is not a manifest, a
    missing file are errors naming file, document and line; a hand-written Service without a
    clusterIP renders nothing (as kube-proxy would) and says so on stderr."""
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a\nspec: {}\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "no-ip.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
                                         "spec: {ports: [{port: 80}]}\n")  # fmt: skip
    for name, message in [("broken.yaml", "document 0: yaml: line 4: did not find expected ',' or '}'"),
                          ("list.yaml", "document 0: a manifest must be a mapping with apiVersion and kind, not a list"),
                          ("missing.yaml", "does not exist")]:  # fmt: skip
        result = _cli("render", "--node", NODE, "-f", str(tmp_path / name))
        assert result.exit_code == 1 and message in result.output and result.stdout.count("*nat") == 0, result.output
    result = _cli("render", "--node", NODE, "-f", str(tmp_path / "no-ip.yaml"))
    assert result.exit_code == 0 and "KUBE-SVC-" not in result.stdout
    assert "no-ip.yaml: document 0: Service shop/web has no spec.clusterIP" in result.output


def test_cli_cluster_cidr_flag_is_the_configurations_cluster_cidr(tmp_path) -> None:
    import yaml

    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all([svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("p80", 80)]),
                                                         eps("ns1", "svc1", [ep("10.180.0.1", "node-b")], [port("p80", 80)])]))  # fmt: skip
    (tmp_path / "kp.yaml").write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                                      "clusterCIDR: 10.244.0.0/16\n")  # fmt: skip
    by_flag = _cli("render", "--node", NODE, "--cluster-cidr", "10.244.0.0/16", "-f", str(tmp_path / "m.yaml"))
    by_config = _cli("render", "--node", NODE, "--config", str(tmp_path / "kp.yaml"), "-f", str(tmp_path / "m.yaml"))
    assert by_flag.exit_code == 0 and by_flag.stdout == by_config.stdout and "! -s 10.244.0.0/16" in by_flag.stdout
    bad = _cli("render", "--node", NODE, "--cluster-cidr", "bogus", "-f", str(tmp_path / "m.yaml"))
    assert bad.exit_code == 2 and "--cluster-cidr: not a CIDR" in bad.output


def test_cli_other_modes() -> None:
    # --mode nftables is tested in test_proxy_nftables_render.py; unknown modes are refused.
    result = _cli("render", "--mode", "nftables", "--node", NODE, "-f", "-", input="")
    assert result.exit_code == 0 and result.stdout.startswith("add table ip kube-proxy")
    result = _cli("render", "--mode", "ipvs", "--node", NODE, "-f", "-", input="")
    assert result.exit_code == 2
