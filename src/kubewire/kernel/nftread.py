"""Reading nftables back from a namespace as JSON (`nft -j`): sets with their elements, maps,
chains, and rules with their counters and comments, as the kernel holds them now."""

from __future__ import annotations

import json

from kubewire.kernel.run import in_netns, run


def table_json(netns: str, family: str, table: str) -> dict | None:
    """`nft -j list table FAMILY TABLE`, or None when the namespace has no such table."""
    r = run(in_netns(netns, ["nft", "-j", "list", "table", family, table]), check=False)
    if r.code != 0:
        if "No such file or directory" in r.stderr:
            return None
        raise RuntimeError(f"nft -j list table {family} {table} in {netns}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def table_text(netns: str, family: str, table: str) -> str | None:
    r = run(in_netns(netns, ["nft", "list", "table", family, table]), check=False)
    return r.stdout if r.code == 0 else None
