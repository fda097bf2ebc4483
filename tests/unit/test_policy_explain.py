"""`kubewire policy explain`, the pure half: packets walked through a table as the kernel lists it.

policy_table.json is `nft -j list table inet kubewire-policy` of a real kernel (nft 1.0.6) after
loading test_policy_plan.RICH's table for node n0 (x/a is 10.244.0.10 there), with one counter set
to non-zero by hand."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kubewire.policy.explain import NotUnderstood, Packet, rule_text, walk_node

DOC = json.loads((Path(__file__).with_name("policy_table.json")).read_text())
XA = "10.244.0.10"


def walk(pkt: Packet, doc: dict | None = DOC):  # noqa: ANN201
    return walk_node(doc, "n0", pkt)


def test_egress_allowed_by_a_rule_then_no_ingress_chain_on_this_node() -> None:
    w = walk(Packet(XA, "198.51.100.7", "TCP", 443))
    assert w.verdict == "accept"
    [step] = w.steps
    assert (step.direction, step.verdict, step.comment) == ("egress", "return", "x/api egress[1]")
    assert step.path == ["egress/x/a", "egress-rules-7d37d54e62f0"]
    assert (step.packets, step.bytes) == (3, 180)
    assert step.rule == ("ip daddr @peers-2129c3a6880d tcp dport 443 counter packets 3 bytes 180 return "
                         'comment "x/api egress[1]"')


def test_egress_dropped_by_the_default_deny_of_the_chain() -> None:
    w = walk(Packet(XA, "198.51.100.7", "TCP", 80))
    assert w.verdict == "drop"
    assert w.steps[-1].comment == "egress default deny: isolated by x/api"
    assert not w.steps[-1].allowed


@pytest.mark.parametrize(("dst", "proto", "port", "verdict", "comment"), [
    ("10.244.1.11", "UDP", 81, "accept", "x/api egress[0]"),  # x/b's named port serve-81-udp
    ("10.244.1.11", "UDP", 80, "drop", "egress default deny: isolated by x/api"),
    ("10.244.1.11", "SCTP", 9, "accept", "x/api egress[0]"),  # any SCTP port to pods of x
    ("10.244.0.13", "SCTP", 9, "drop", "egress default deny: isolated by x/api"),  # y/a is not in x
])
def test_egress_sets_ranges_and_concatenations(dst: str, proto: str, port: int, verdict: str, comment: str) -> None:
    w = walk(Packet(XA, dst, proto, port))
    assert w.verdict == verdict
    assert w.steps[0].comment == comment


def test_ingress_chain_rules() -> None:
    w = walk(Packet("10.244.0.13", XA, "TCP", 80))  # y/a, in the ipBlock/selector set, named port 80
    assert w.verdict == "accept"
    assert [(s.direction, s.comment) for s in w.steps] == [("ingress", "x/api ingress[0]")]
    w = walk(Packet("192.0.2.9", XA, "UDP", 85))  # outside every set: the empty rule ingress[1] allows all
    assert w.steps[0].comment == "x/api ingress[1]"


def test_a_pod_reaching_itself_and_the_node_reaching_its_pods() -> None:
    w = walk(Packet(XA, XA, "TCP", 1))
    assert w.verdict == "accept"
    assert [s.comment for s in w.steps] == ["a pod can always reach itself", "a pod can always reach itself"]
    w = walk(Packet("10.244.0.1", XA, "TCP", 1))
    assert w.verdict == "accept" and not w.steps
    assert "kubelet probes" in w.note


def test_replies_pass_before_any_pod_chain() -> None:
    w = walk(Packet(XA, "198.51.100.7", "TCP", 80, ct_state="established"))
    assert w.verdict == "accept" and not w.steps
    assert w.note.startswith("pods-forward: ct state established,related")


def test_no_table_and_no_local_isolated_pod() -> None:
    assert walk(Packet(XA, "10.244.1.11", "TCP", 80), None).note.startswith("no kubewire-policy table")
    w = walk(Packet("10.244.1.11", "10.244.2.12", "TCP", 80))
    assert w.verdict == "accept" and not w.steps and "neither end" in w.note


def test_rules_it_does_not_understand_are_reported_not_guessed() -> None:
    doc = copy.deepcopy(DOC)
    for item in doc["nftables"]:
        if "rule" in item and item["rule"].get("comment") == "x/api egress[1]":
            item["rule"]["expr"].insert(0, {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}})
    with pytest.raises(NotUnderstood):
        walk(Packet(XA, "198.51.100.7", "TCP", 443), doc)


def test_rule_text_reads_like_nft() -> None:
    rules = [i["rule"] for i in DOC["nftables"] if "rule" in i and i["rule"]["chain"] == "pods-forward"]
    assert [rule_text(r) for r in rules] == [
        'ct state established,related accept comment "replies, and connections allowed when they started"',
        'ip saddr @node-addresses accept comment "from this node: kubelet probes, always allowed"',
        "ip saddr vmap @egress-pods",
        "ip daddr vmap @ingress-pods",
    ]
