"""The policy planner and its nftables text, byte for byte; the planner against the semantics on
random policies; the agent's transactions."""

from __future__ import annotations

import random
import re
import textwrap

from policy_world import ALL, kernel_allows, namespace_object, pod_object, world

from kubewire.policy.nftables import render_replace, render_table, render_update
from kubewire.policy.plan import nft_comment, nft_name, plan_cluster, plan_node, resolve
from kubewire.policy.semantics import endpoint, evaluate


def tabs(text: str) -> str:
    """Expected nft text written with 4-space indents; nft -f gets tabs."""
    lines = textwrap.dedent(text).lstrip("\n").splitlines()
    return "\n".join(re.sub(r"^((?:    )+)", lambda m: "\t" * (len(m.group(1)) // 4), line) for line in lines) + "\n"


RICH = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}
    - ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.0/24]}
    ports:
    - port: serve-80-tcp
    - {port: 81, endPort: 90, protocol: UDP}
  - {}
  egress:
  - to: [{podSelector: {}}]
    ports:
    - {port: serve-81-udp, protocol: UDP}
    - protocol: SCTP
  - to: [{ipBlock: {cidr: 198.51.100.0/24}}]
    ports: [{port: 443}]
"""

RICH_N0 = """
table inet kubewire-policy {
    set node-addresses {
        type ipv4_addr
        elements = { 10.244.0.1, 172.18.1.10 }
    }
    set peers-1837dd2cdaa6 {
        type ipv4_addr
        flags interval
        comment "all pods in namespace x"
        elements = { 10.244.0.10, 10.244.1.11, 10.244.2.12 }
    }
    set peers-2129c3a6880d {
        type ipv4_addr
        flags interval
        comment "198.51.100.0/24"
        elements = { 198.51.100.0/24 }
    }
    set peers-8f25127b8653 {
        type ipv4_addr
        flags interval
        comment "pods pod notin (c) in namespaces ns=y; 10.244.0.0/16 except 10.244.1.0/24"
        elements = { 10.244.0.0/24, 10.244.1.14, 10.244.2.0-10.244.255.255 }
    }
    set ports-4dffa02fd678 {
        type ipv4_addr . inet_proto . inet_service
        comment "named ports serve-81-udp/UDP of all pods in namespace x"
        elements = { 10.244.0.10 . udp . 81, 10.244.1.11 . udp . 81, 10.244.2.12 . udp . 81 }
    }
    chain egress-rules-7d37d54e62f0 {
        ip daddr @peers-1837dd2cdaa6 meta l4proto sctp counter return comment "x/api egress[0]"
        ip daddr . meta l4proto . th dport @ports-4dffa02fd678 counter return comment "x/api egress[0]"
        ip daddr @peers-2129c3a6880d tcp dport 443 counter return comment "x/api egress[1]"
        counter drop comment "egress default deny: isolated by x/api"
    }
    chain ingress-rules-bb76b59f2b27 {
        ip saddr @peers-8f25127b8653 tcp dport 80 counter accept comment "x/api ingress[0]"
        ip saddr @peers-8f25127b8653 udp dport 81-90 counter accept comment "x/api ingress[0]"
        counter accept comment "x/api ingress[1]"
        counter drop comment "ingress default deny: isolated by x/api"
    }
    chain egress/x/a {
        ip daddr 10.244.0.10 return comment "a pod can always reach itself"
        goto egress-rules-7d37d54e62f0
    }
    chain ingress/x/a {
        ip saddr 10.244.0.10 accept comment "a pod can always reach itself"
        goto ingress-rules-bb76b59f2b27
    }
    map egress-pods {
        type ipv4_addr : verdict
        elements = { 10.244.0.10 : jump egress/x/a }
    }
    map ingress-pods {
        type ipv4_addr : verdict
        elements = { 10.244.0.10 : jump ingress/x/a }
    }
    chain pods-forward {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept comment "replies, and connections allowed when they started"
        ip saddr @node-addresses accept comment "from this node: kubelet probes, always allowed"
        ip saddr vmap @egress-pods
        ip daddr vmap @ingress-pods
    }
}
"""


def test_a_node_table_byte_for_byte() -> None:
    assert render_table(plan_cluster(world(RICH))["n0"]) == tabs(RICH_N0)


def test_nodes_without_isolated_pods_get_no_table_at_all() -> None:
    plan = plan_cluster(world(RICH))
    assert plan["n1"].empty and plan["n2"].empty  # x/a runs on n0
    # the first sync clears whatever an earlier run left, and leaves nothing
    assert render_replace(plan["n1"]) == "add table inet kubewire-policy\ndelete table inet kubewire-policy\n"
    assert render_update(plan["n1"], plan["n1"]) == ""
    assert render_update(plan["n0"], plan["n1"]) == "delete table inet kubewire-policy\n"


def test_a_full_load_replaces_the_table_in_one_transaction() -> None:
    rs = plan_cluster(world(RICH))["n0"]
    text = render_update(None, rs)
    assert text == "add table inet kubewire-policy\ndelete table inet kubewire-policy\n" + tabs(RICH_N0)


WEB = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: 80}]
"""

OUT = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: out, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: serve-81-udp, protocol: UDP}]
"""


def test_relabelling_a_namespace_rewrites_set_elements_only() -> None:
    namespaces = [namespace_object("x"), namespace_object("y", {"ns": "other"}), namespace_object("z", {"ns": "y"})]
    before, after = plan_cluster(world(WEB))["n0"], plan_cluster(world(WEB, namespaces=namespaces))["n0"]
    assert render_update(before, after) == (
        "flush set inet kubewire-policy peers-ae10bacf3e9e\n"
        "add element inet kubewire-policy peers-ae10bacf3e9e { 10.244.0.16, 10.244.1.17, 10.244.2.18 }\n")


def test_adding_and_deleting_a_policy() -> None:
    one, two = plan_cluster(world(WEB))["n0"], plan_cluster(world(WEB, OUT))["n0"]
    t = "inet kubewire-policy"
    assert render_update(one, two) == "".join(line + "\n" for line in (
        f'add set {t} ports-bb0b8f006d4f {{ type ipv4_addr . inet_proto . inet_service; comment "named ports '
        'serve-81-udp/UDP of pods pod=b in namespace x"; }',
        f"add element {t} ports-bb0b8f006d4f {{ 10.244.1.11 . udp . 81 }}",
        f"add chain {t} egress-rules-cdce0ca8adfd",
        f"add chain {t} egress/x/a",
        f'add rule {t} egress-rules-cdce0ca8adfd ip daddr . meta l4proto . th dport @ports-bb0b8f006d4f counter '
        'return comment "x/out egress[0]"',
        f'add rule {t} egress-rules-cdce0ca8adfd counter drop comment "egress default deny: isolated by x/out"',
        f'add rule {t} egress/x/a ip daddr 10.244.0.10 return comment "a pod can always reach itself"',
        f"add rule {t} egress/x/a goto egress-rules-cdce0ca8adfd",
        f"add element {t} egress-pods {{ 10.244.0.10 : jump egress/x/a }}",
    ))
    # deleting: map entries first, then the pod chain, the rules chain it jumped to, and its set
    assert render_update(two, one) == "".join(line + "\n" for line in (
        f"delete element {t} egress-pods {{ 10.244.0.10 }}",
        f"delete chain {t} egress/x/a",
        f"delete chain {t} egress-rules-cdce0ca8adfd",
        f"delete set {t} ports-bb0b8f006d4f",
    ))


def test_a_policy_update_flushes_and_refills_the_changed_chain() -> None:
    one = plan_cluster(world(WEB))["n0"]
    two = plan_cluster(world(WEB.replace("port: 80", "port: 8080")))["n0"]
    text = render_update(one, two)
    assert "add chain inet kubewire-policy ingress-rules-" in text
    assert "flush chain inet kubewire-policy ingress/x/a\n" in text
    assert text.index("add rule inet kubewire-policy ingress/x/a") > text.index("add chain inet kubewire-policy ingress-rules-")
    assert text.rstrip().splitlines()[-1].startswith("delete chain inet kubewire-policy ingress-rules-")


def test_pods_with_the_same_policies_share_one_rules_chain_and_sets_are_shared_by_meaning() -> None:
    every = WEB.replace("name: web", "name: every").replace("{matchLabels: {pod: a}}", "{}")
    pods = [pod_object(k) for k in ALL]
    for p in pods:
        if p["metadata"]["namespace"] == "x":
            p["spec"]["nodeName"] = "n0"  # x/a, x/b, x/c all on n0
    rs = plan_cluster(world(WEB, every, pods=pods))["n0"]
    rules = [c.name for c in rs.chains if "-rules-" in c.name]
    pod_chains = {c.name: c.rules[-1] for c in rs.chains if "-rules-" not in c.name}
    assert len(rules) == 2  # x/a: web and every; x/b and x/c: every alone, one chain for both
    assert pod_chains["ingress/x/b"] == pod_chains["ingress/x/c"] != pod_chains["ingress/x/a"]
    assert [s.name for s in rs.sets] == ["peers-ae10bacf3e9e"]  # two policies, one meaning, one set


def test_long_names_and_comments_are_cut_with_a_hash() -> None:
    long = "p" * 300
    name = nft_name("ingress", "ns", long)
    assert len(name) == 240 and name.startswith("ingress/ns/ppp")
    assert nft_name("ingress", "ns", long) == name != nft_name("ingress", "ns", long + "q")
    assert len(nft_comment("c" * 500)) == 128
    assert nft_comment("short") == "short"


def test_hand_made_policies_with_a_bad_block_match_nothing_rather_than_break_the_node() -> None:
    bad = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "bad", "namespace": "x"},
           "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]}}
    view = world(bad)
    plan = plan_cluster(view)
    assert not kernel_allows(plan, view, "y/a", "x/a", 80)
    assert not evaluate(view, endpoint(view, "y/a"), endpoint(view, "x/a"), 80).allowed


# --- the planner against the semantics, on random policies ------------------------------------------------


def _random_selector(rng: random.Random, key: str, values: list[str]) -> dict:
    roll = rng.random()
    if roll < 0.2:
        return {}
    if roll < 0.5:
        return {"matchLabels": {key: rng.choice(values)}}
    op = rng.choice(["In", "NotIn", "Exists", "DoesNotExist"])
    expr: dict = {"key": rng.choice([key, "env"]), "operator": op}
    if op in ("In", "NotIn"):
        expr["values"] = rng.sample(values, rng.randint(1, 2))
    return {"matchExpressions": [expr]}


def _random_peer(rng: random.Random) -> dict:
    roll = rng.random()
    if roll < 0.15:
        cidr = rng.choice(["10.244.0.0/16", "10.244.1.0/24", "10.244.0.0/23"])
        block: dict = {"cidr": cidr}
        if cidr == "10.244.0.0/16" and rng.random() < 0.7:
            block["except"] = [rng.choice(["10.244.1.0/24", "10.244.2.0/28", "10.244.0.12/32"])]
        return {"ipBlock": block}
    peer: dict = {}
    if roll < 0.6:
        peer["podSelector"] = _random_selector(rng, "pod", ["a", "b", "c"])
    if roll > 0.4:
        peer["namespaceSelector"] = _random_selector(rng, "ns", ["x", "y", "z"])
    return peer


def _random_port(rng: random.Random) -> dict:
    proto = rng.choice(["TCP", "TCP", "UDP", "SCTP"])
    roll = rng.random()
    if roll < 0.2:
        return {"protocol": proto}
    if roll < 0.5:
        return {"port": rng.choice([80, 81]), "protocol": proto}
    if roll < 0.7:
        return {"port": 80, "endPort": 81, "protocol": proto}
    return {"port": f"serve-{rng.choice([80, 81])}-{proto.lower()}", "protocol": proto}


def _random_policy(rng: random.Random, i: int) -> dict:
    spec: dict = {"podSelector": _random_selector(rng, "pod", ["a", "b", "c"])}
    spec["policyTypes"] = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        rules = []
        for _ in range(rng.randint(0, 2)):
            rule: dict = {}
            if rng.random() < 0.8:
                rule[peers] = [_random_peer(rng) for _ in range(rng.randint(1, 2))]
            if rng.random() < 0.7:
                rule["ports"] = [_random_port(rng) for _ in range(rng.randint(1, 2))]
            rules.append(rule)
        spec[direction] = rules
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"r{i}", "namespace": rng.choice(["x", "y", "z"])}, "spec": spec}


def test_the_planned_rules_agree_with_the_semantics_on_random_policies() -> None:
    rng = random.Random(20240605)
    namespaces = [namespace_object("x"), namespace_object("y", {"ns": "y", "env": "prod"}), namespace_object("z")]
    pods = [pod_object(k, {"pod": k[-1], **({"env": "dev"} if k.startswith("z") else {})}) for k in ALL]
    checked = 0
    for trial in range(40):
        policies = [_random_policy(rng, i) for i in range(rng.randint(1, 4))]
        view = world(*policies, pods=pods, namespaces=namespaces)
        plan = plan_cluster(view)
        for src in ALL:
            for dst in ALL:
                for port, proto in ((80, "TCP"), (81, "TCP"), (81, "UDP"), (80, "SCTP")):
                    want = evaluate(view, endpoint(view, src), endpoint(view, dst), port, proto).allowed
                    got = kernel_allows(plan, view, src, dst, port, proto)
                    assert got == want, (trial, src, dst, port, proto, policies)
                    checked += 1
    assert checked == 40 * 81 * 4


def test_a_thousand_policies_over_a_hundred_pods_stay_a_small_table() -> None:
    pods, namespaces = [], [namespace_object(f"n{i}", {"team": f"t{i % 3}"}) for i in range(10)]
    for i in range(100):
        p = pod_object("x/a", {"app": f"app-{i // 10}"})
        p["metadata"].update(name=f"p{i}", namespace=f"n{i % 10}", uid=f"u{i}")
        p["spec"]["nodeName"] = "n0"
        p["status"]["podIP"] = f"10.244.0.{10 + i}"
        pods.append(p)
    policies = []
    for k in range(1000):
        policies.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                         "metadata": {"name": f"p{k}", "namespace": f"n{k % 10}"},
                         "spec": {"podSelector": {"matchLabels": {"app": f"app-{(k // 10) % 10}"}},
                                  "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": f"t{k % 3}"}}}],
                                               "ports": [{"port": 8000 + k % 50}]}]}})
    view = world(*policies, pods=pods, namespaces=namespaces)
    rs = plan_node(resolve(view), "n0", ("172.18.1.10", "10.244.0.1"))
    counts = rs.counts()
    assert counts["sets"] == 3  # one per distinct peer meaning, however many policies share it
    assert counts["rules"] < 1500
    assert len(dict(rs.ingress)) == 100
