"""NetworkPolicy enforcement for one node: plan the node's rules from the cluster state, apply what
changed as one `nft -f` transaction in the node's namespace.

Called by the control loop on every store change and every resync. The common case (a pod became
ready, a Service changed) is a fingerprint comparison and nothing else; the cluster-wide part of the
plan (who each policy selects, each rule's peers) is computed once per state and shared by all
nodes' agents. The first sync replaces whatever table a previous run left (atomically, so no
packet sees the node unprotected); later syncs send only the difference. If a transaction fails (the
table was removed by hand, say) the agent falls back to a full replace at once; if that fails too,
it retries with a growing pause (0.25 s doubling to 5 s) rather than on every step of the loop.
"""

from __future__ import annotations

import sys
import time
import weakref

from kubewire.cluster.addressing import NodePlan
from kubewire.controllers.types import Snapshot
from kubewire.kernel import nft
from kubewire.kernel.run import CommandError
from kubewire.policy.model import fingerprint, view_of_snapshot
from kubewire.policy.nftables import render_replace, render_update
from kubewire.policy.plan import NodeRuleset, Resolution, plan_node, resolve

RETRY_FIRST = 0.25
RETRY_MAX = 5.0

_memo: dict[str, object] = {"snap": None, "fp": "", "res": None, "res_fp": ""}


def snapshot_fingerprint(snap: Snapshot) -> str:
    ref = _memo["snap"]
    if ref is not None and ref() is snap:  # type: ignore[operator]
        return str(_memo["fp"])
    fp = fingerprint(snap.list("Pod"), snap.list("Namespace"), snap.list("NetworkPolicy"))
    _memo["snap"], _memo["fp"] = weakref.ref(snap), fp
    return fp


def resolution(snap: Snapshot, fp: str) -> Resolution:
    """Who each policy selects and each rule's peers: once per cluster state, for every node."""
    if _memo["res_fp"] != fp or _memo["res"] is None:
        _memo["res"], _memo["res_fp"] = resolve(view_of_snapshot(snap)), fp
    return _memo["res"]  # type: ignore[return-value]


class PolicyAgent:
    def __init__(self, node: NodePlan) -> None:
        self.node = node
        self.addresses = (node.ip, node.bridge_ip)
        self.applied: NodeRuleset | None = None  # what the kernel holds; None: unknown, replace it
        self.fingerprint = ""
        self.last_sync = 0.0
        self.last_duration = 0.0
        self.last_kind = ""
        self.failures = 0
        self.retry_at = 0.0

    def plan(self, snap: Snapshot) -> NodeRuleset:
        return plan_node(resolution(snap, snapshot_fingerprint(snap)), self.node.name, self.addresses)

    def sync(self, snap: Snapshot) -> bool:
        """Bring the node's table to what `snap` asks for. True when the kernel was changed."""
        if self.failures and time.monotonic() < self.retry_at:
            return False
        try:
            changed = self._sync(snap)
        except Exception:
            self.failures += 1
            self.retry_at = time.monotonic() + min(RETRY_MAX, RETRY_FIRST * 2 ** (self.failures - 1))
            raise
        self.failures = 0
        return changed

    def _sync(self, snap: Snapshot) -> bool:
        fp = snapshot_fingerprint(snap)
        if fp == self.fingerprint and self.applied is not None:
            return False
        t0 = time.perf_counter()
        rs = plan_node(resolution(snap, fp), self.node.name, self.addresses)
        changed = rs != self.applied
        if changed:
            text = render_update(self.applied, rs)
            self.last_kind = "replace" if self.applied is None else "update"
            try:
                nft.apply(self.node.netns, text)
            except CommandError as e:
                if self.applied is None:
                    raise
                print(f"{time.strftime('%H:%M:%S')} policy {self.node.name}: update failed, replacing the table: {e}",
                      file=sys.stderr, flush=True)
                self.applied = None
                nft.apply(self.node.netns, render_replace(rs))
                self.last_kind = "replace"
            self.applied = rs
            self.last_sync = time.time()
            self.last_duration = time.perf_counter() - t0
        self.fingerprint = fp
        return changed
