"""A node's policy rules as `nft -f` text: the whole table, or one transaction from what the kernel
holds to what it should hold.

Both are single transactions (`nft -f` commits a file atomically): a packet sees the old rules or
the new ones, never a half-written table. A full load replaces the table (add + delete + create, so
it works whether or not the table exists); an update touches only what changed: set elements are
flushed and refilled, changed chains flushed and refilled, map entries swapped, and what is gone
deleted last, once nothing references it.
"""

from __future__ import annotations

from kubewire.policy.plan import (
    BASE_CHAIN,
    EGRESS_MAP,
    FAMILY,
    INGRESS_MAP,
    NODE_SET,
    TABLE,
    NftChain,
    NftSet,
    NodeRuleset,
)

T = f"{FAMILY} {TABLE}"

BASE_RULES = (
    'ct state established,related accept comment "replies, and connections allowed when they started"',
    f'ip saddr @{NODE_SET} accept comment "from this node: kubelet probes, always allowed"',
    f"ip saddr vmap @{EGRESS_MAP}",
    f"ip daddr vmap @{INGRESS_MAP}",
)


def _set_block(s: NftSet) -> list[str]:
    out = [f"\tset {s.name} {{", f"\t\ttype {s.type}"]
    if s.interval:
        out.append("\t\tflags interval")
    if s.comment:
        out.append(f'\t\tcomment "{s.comment}"')
    if s.elements:
        out.append(f"\t\telements = {{ {', '.join(s.elements)} }}")
    out.append("\t}")
    return out


def _map_block(name: str, entries: tuple[tuple[str, str], ...]) -> list[str]:
    out = [f"\tmap {name} {{", "\t\ttype ipv4_addr : verdict"]
    if entries:
        out.append("\t\telements = { " + ", ".join(f"{ip} : jump {chain}" for ip, chain in entries) + " }")
    out.append("\t}")
    return out


def render_table(rs: NodeRuleset) -> str:
    """The whole table, in an order with no forward references: sets, pod chains, maps, base chain."""
    lines = [f"table {T} {{"]
    lines += _set_block(NftSet(NODE_SET, "ipv4_addr", False, rs.node_addresses))
    for s in rs.sets:
        lines += _set_block(s)
    for c in rs.chains:
        lines += [f"\tchain {c.name} {{", *(f"\t\t{r}" for r in c.rules), "\t}"]
    lines += _map_block(EGRESS_MAP, rs.egress)
    lines += _map_block(INGRESS_MAP, rs.ingress)
    lines += [f"\tchain {BASE_CHAIN} {{", "\t\ttype filter hook forward priority filter; policy accept;",
              *(f"\t\t{r}" for r in BASE_RULES), "\t}", "}"]
    return "\n".join(lines) + "\n"


def render_replace(rs: NodeRuleset) -> str:
    """Replace whatever table is there (none, a stale one from an earlier run) in one transaction."""
    head = f"add table {T}\ndelete table {T}\n"
    return head + (render_table(rs) if not rs.empty else "")


def _elements(name: str, elements: tuple[str, ...]) -> str:
    return f"add element {T} {name} {{ {', '.join(elements)} }}"


def render_update(old: NodeRuleset | None, new: NodeRuleset) -> str:
    """The transaction taking the kernel from `old` (what was applied; None: unknown) to `new`.
    Empty text: nothing to do."""
    if old is None:
        return render_replace(new)
    if new.empty:
        return "" if old.empty else f"delete table {T}\n"
    if old.empty:
        return render_replace(new)
    out: list[str] = []
    if old.node_addresses != new.node_addresses:
        out.append(f"flush set {T} {NODE_SET}")
        if new.node_addresses:
            out.append(_elements(NODE_SET, new.node_addresses))
    old_sets = {s.name: s for s in old.sets}
    new_sets = {s.name: s for s in new.sets}
    for s in new.sets:
        prev = old_sets.get(s.name)
        if prev is None:
            flags = " flags interval;" if s.interval else ""
            comment = f' comment "{s.comment}";' if s.comment else ""
            out.append(f"add set {T} {s.name} {{ type {s.type};{flags}{comment} }}")
        elif prev.elements == s.elements:
            continue
        else:
            out.append(f"flush set {T} {s.name}")
        if s.elements:
            out.append(_elements(s.name, s.elements))
    old_chains = {c.name: c for c in old.chains}
    new_chains = {c.name: c for c in new.chains}
    out += [f"add chain {T} {c.name}" for c in new.chains if c.name not in old_chains]
    for c in new.chains:  # every chain exists now: rules may goto any of them
        prev_c: NftChain | None = old_chains.get(c.name)
        if prev_c is not None and prev_c.rules == c.rules:
            continue
        if prev_c is not None:
            out.append(f"flush chain {T} {c.name}")
        out += [f"add rule {T} {c.name} {r}" for r in c.rules]
    for name, old_map, new_map in ((EGRESS_MAP, dict(old.egress), dict(new.egress)),
                                   (INGRESS_MAP, dict(old.ingress), dict(new.ingress))):
        gone = [ip for ip in old_map if new_map.get(ip) != old_map[ip]]
        came = [(ip, ch) for ip, ch in new_map.items() if old_map.get(ip) != ch]
        if gone:
            out.append(f"delete element {T} {name} {{ {', '.join(gone)} }}")
        if came:
            out.append(_elements(name, tuple(f"{ip} : jump {ch}" for ip, ch in came)))
    # pod chains (last in order) go before the shared rule chains they goto
    out += [f"delete chain {T} {name}" for name in reversed(old_chains) if name not in new_chains]
    out += [f"delete set {T} {name}" for name in old_sets if name not in new_sets]
    return "\n".join(out) + "\n" if out else ""
