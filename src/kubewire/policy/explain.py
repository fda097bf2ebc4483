"""`kubewire policy explain`, the pure half: walk a packet through the rules a node's kernel holds
(its `nft -j list table` output), the way netfilter would, and say which rule decided.

Only the vocabulary plan.py writes is understood (address, set, protocol and port matches, the
address . protocol . port concatenation, ct state, verdict maps, counters); anything else is
reported as not understood rather than guessed at.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from kubewire.policy.plan import BASE_CHAIN, EGRESS_MAP, INGRESS_MAP

PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}


class NotUnderstood(ValueError):
    pass


@dataclass(frozen=True)
class Packet:
    saddr: str
    daddr: str
    protocol: str  # TCP | UDP | SCTP
    dport: int
    ct_state: str = "new"


@dataclass
class Step:
    """One pod chain entered on one node, and the rule that ended it."""

    node: str
    direction: str  # egress | ingress
    chain: str
    verdict: str  # accept | return | drop | (end of chain)
    rule: str  # the deciding rule, as nft prints it
    comment: str
    packets: int | None = None  # the rule's counter, as read
    bytes: int | None = None
    path: list[str] = field(default_factory=list)  # the chains walked, ending with `chain`

    @property
    def allowed(self) -> bool:
        return self.verdict in ("accept", "return")


@dataclass
class NodeWalk:
    node: str
    verdict: str  # accept | drop
    steps: list[Step] = field(default_factory=list)
    note: str = ""  # when no pod chain was entered: why the base chain let it through


class Table:
    """A table as `nft -j list table` shows it."""

    def __init__(self, doc: dict) -> None:
        self.sets: dict[str, list] = {}
        self.maps: dict[str, list] = {}
        self.chains: dict[str, list[dict]] = {}
        for item in doc.get("nftables", []):
            if "set" in item:
                self.sets[item["set"]["name"]] = item["set"].get("elem", [])
            elif "map" in item:
                self.maps[item["map"]["name"]] = item["map"].get("elem", [])
            elif "chain" in item:
                self.chains.setdefault(item["chain"]["name"], [])
            elif "rule" in item:
                self.chains.setdefault(item["rule"]["chain"], []).append(item["rule"])


# --- values ---------------------------------------------------------------------------------------------


def _value(pkt: Packet, expr: Any) -> Any:
    if isinstance(expr, dict):
        if "payload" in expr:
            proto, fld = expr["payload"]["protocol"], expr["payload"]["field"]
            if proto == "ip":
                return pkt.saddr if fld == "saddr" else pkt.daddr if fld == "daddr" else _unknown(expr)
            if fld == "dport" and proto in ("tcp", "udp", "sctp", "th"):
                if proto != "th" and proto != pkt.protocol.lower():
                    return None  # a tcp header match on a udp packet: no match
                return pkt.dport
        if "meta" in expr and expr["meta"].get("key") == "l4proto":
            return pkt.protocol.lower()
        if "ct" in expr and expr["ct"].get("key") == "state":
            return pkt.ct_state
        if "concat" in expr:
            parts = [_value(pkt, e) for e in expr["concat"]]
            return None if any(p is None for p in parts) else parts
    return _unknown(expr)


def _unknown(expr: Any) -> Any:
    raise NotUnderstood(f"expression not understood: {expr}")


def _addr(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _element_matches(elem: Any, value: Any) -> bool:
    if isinstance(elem, dict) and "elem" in elem:  # an element carrying a counter or comment
        elem = elem["elem"]["val"]
    if isinstance(value, list):  # a concatenation
        if not (isinstance(elem, dict) and "concat" in elem):
            return False
        return all(_element_matches(e, v) for e, v in zip(elem["concat"], value, strict=True))
    if isinstance(value, str) and _is_ip(value):
        v = _addr(value)
        if isinstance(elem, str):
            return _is_ip(elem) and _addr(elem) == v
        if isinstance(elem, dict) and "prefix" in elem:
            net = ipaddress.IPv4Network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")
            return int(net.network_address) <= v <= int(net.broadcast_address)
        if isinstance(elem, dict) and "range" in elem:
            lo, hi = elem["range"]
            return _addr(lo) <= v <= _addr(hi)
        return False
    if isinstance(value, int):
        if isinstance(elem, int):
            return elem == value
        if isinstance(elem, dict) and "range" in elem:
            lo, hi = elem["range"]
            return lo <= value <= hi
        return False
    if isinstance(value, str):
        if isinstance(elem, int):
            return PROTO_NUMBERS.get(value) == elem
        return elem == value
    return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def _match(table: Table, pkt: Packet, m: dict) -> bool:
    value = _value(pkt, m["left"])
    if value is None:
        return False
    right = m["right"]
    if isinstance(right, str) and right.startswith("@"):
        elems = table.sets.get(right[1:])
        if elems is None:
            raise NotUnderstood(f"set {right} is not in the table")
        hit = any(_element_matches(e, value) for e in elems)
    elif isinstance(right, list):  # ct state in { established, related }
        hit = any(_element_matches(e, value) for e in right)
    elif isinstance(right, dict) and "set" in right:
        hit = any(_element_matches(e, value) for e in right["set"])
    else:
        hit = _element_matches(right, value)
    op = m.get("op", "==")
    if op in ("==", "in"):
        return hit
    if op == "!=":
        return not hit
    raise NotUnderstood(f"operator not understood: {op}")


# --- rules and chains ----------------------------------------------------------------------------------


def rule_text(rule: dict) -> str:
    """A rule as nft prints it, for the subset plan.py writes."""
    words: list[str] = []
    for e in rule.get("expr", []):
        if "match" in e:
            words.append(_text(e["match"]["left"]) + ("" if e["match"].get("op", "==") in ("==", "in") else " !=")
                         + " " + _text(e["match"]["right"]))
        elif "vmap" in e:
            words.append(f"{_text(e['vmap']['key'])} vmap {e['vmap']['data']}")
        elif "counter" in e:
            words.append(f"counter packets {e['counter'].get('packets', 0)} bytes {e['counter'].get('bytes', 0)}")
        elif "jump" in e:
            words.append(f"jump {e['jump']['target']}")
        else:
            words.append(next(iter(e)))
    if rule.get("comment"):
        words.append(f'comment "{rule["comment"]}"')
    return " ".join(words)


def _text(x: Any) -> str:
    if isinstance(x, dict):
        if "payload" in x:
            p = x["payload"]
            return f"{p['protocol']} {p['field']}"
        if "meta" in x:
            return f"meta {x['meta']['key']}"
        if "ct" in x:
            return f"ct {x['ct']['key']}"
        if "concat" in x:
            return " . ".join(_text(e) for e in x["concat"])
        if "range" in x:
            return f"{x['range'][0]}-{x['range'][1]}"
        if "prefix" in x:
            return f"{x['prefix']['addr']}/{x['prefix']['len']}"
        if "set" in x:
            return "{ " + ", ".join(_text(e) for e in x["set"]) + " }"
    if isinstance(x, list):
        return ",".join(_text(e) for e in x)
    return str(x)


def _verdict(e: dict) -> tuple[str, str] | None:
    for v in ("accept", "drop", "return"):
        if v in e:
            return v, ""
    if "jump" in e:
        return "jump", e["jump"]["target"]
    if "goto" in e:
        return "goto", e["goto"]["target"]
    return None


def run_chain(table: Table, node: str, direction: str, chain: str, pkt: Packet, depth: int = 0) -> Step:
    """A chain as netfilter runs it: the first matching rule with a verdict decides; `jump` comes
    back on return, `goto` does not (its return goes to whoever called this chain)."""
    if depth > 8:
        raise NotUnderstood(f"chains nested deeper than kubewire writes them, at {chain}")
    for rule in table.chains.get(chain, []):
        verdict = None
        counter: dict = {}
        matched = True
        for e in rule.get("expr", []):
            if "match" in e:
                if not _match(table, pkt, e["match"]):
                    matched = False
                    break
            elif "counter" in e:
                counter = e["counter"]
            elif _verdict(e):
                verdict = _verdict(e)
            else:
                raise NotUnderstood(f"statement not understood in {chain}: {e}")
        if not matched or verdict is None:
            continue
        kind, target = verdict
        if kind in ("jump", "goto"):
            step = run_chain(table, node, direction, target, pkt, depth + 1)
            if kind == "jump" and step.verdict == "return":
                continue
            step.path = [chain, *step.path]
            return step
        return Step(node, direction, chain, kind, rule_text(rule), rule.get("comment", ""),
                    counter.get("packets"), counter.get("bytes"), [chain])
    return Step(node, direction, chain, "return", "(end of chain)", "", path=[chain])


def walk_node(doc: dict | None, node: str, pkt: Packet) -> NodeWalk:
    """The node's base chain on the forward hook, with the pod chains its verdict maps lead to."""
    if doc is None:
        return NodeWalk(node, "accept", note="no kubewire-policy table on this node: no local pod is isolated")
    table = Table(doc)
    walk = NodeWalk(node, "accept")
    if BASE_CHAIN not in table.chains:
        walk.note = f"the table has no {BASE_CHAIN} chain"
        return walk
    for rule in table.chains[BASE_CHAIN]:
        exprs = rule.get("expr", [])
        vmap = next((e["vmap"] for e in exprs if "vmap" in e), None)
        if vmap is not None:
            key = _value(pkt, vmap["key"])
            name = vmap["data"].lstrip("@")
            target = None
            for k, v in table.maps.get(name, []):
                if _element_matches(k, key):
                    target = (v.get("jump") or v.get("goto") or {}).get("target")
                    break
            if target is None:
                continue
            direction = "egress" if name == EGRESS_MAP else "ingress" if name == INGRESS_MAP else name
            step = run_chain(table, node, direction, target, pkt)
            walk.steps.append(step)
            if step.verdict in ("accept", "drop"):
                walk.verdict = step.verdict
                return walk
            continue
        matched = True
        verdict = None
        for e in exprs:
            if "match" in e:
                if not _match(table, pkt, e["match"]):
                    matched = False
                    break
            elif _verdict(e):
                verdict = _verdict(e)
        if matched and verdict and verdict[0] in ("accept", "drop"):
            walk.verdict = verdict[0]
            walk.note = f"{BASE_CHAIN}: {rule_text(rule)}"
            return walk
    if not walk.steps:
        walk.note = "neither end is a pod this node isolates: the base chain's policy (accept) lets it through"
    return walk
