"""kube-proxy in nftables mode for one node: upstream's table (`ip kube-proxy`) written into the
node's namespace with `nft -f`, kept up to date by incremental transactions; or, optionally, a flat
layout (`ip kube-proxy-flat`, kubewire.proxy.nftables.flat) that stays cheap at scale.

The planner (kubewire.proxy.nftables) writes exactly what upstream writes; this applier decides
which of its transactions to send, and remembers what it sent (`NftState`), so that:

* the first sync loads the whole table, cut into transactions of `CHUNK` Services each (the
  first also holds the static setup, and replaces a table a previous run left behind);
* every later sync is partial: only the Services whose ports or endpoints changed get their
  chains flushed and rewritten and their map elements added or deleted, as upstream's partial
  syncs do (same operations, same counts: see tests/unit/test_proxy_nftables_render.py);
* a full resync (node labels, node IP or service CIDRs changed) recomputes everything but sends
  only the difference: map elements are diffed instead of flushed and refilled, and a Service's
  chains are rewritten only if their content changed. The table ends as after upstream's full
  sync.

Why not upstream's single full-sync transaction: on this kernel (6.18) its cost grows with the
square of the number of Services, in the kernel (sys time). Every Service's `numgen random mod N
vmap { ... }` is an anonymous set, and creating one scans all the sets of the table to allocate
its `__set%d` name and to find it again by name (nf_tables_newset, nft_set_lookup_global); within
one transaction every such bind also walks the whole transaction (__nft_set_trans_bind). Cutting
the load into transactions removes the last term only. And any later transaction pays for the
whole table: nft lists every chain before it runs (nf_tables_dump_chains) and the kernel
revalidates every chain at commit (nft_table_validate). The flat layout has neither per-Service
chains nor per-Service sets, so its transactions cost what they change.

The flat layout's applier does as little as the change: the agent's ProxyMaps (shared with the
iptables and eBPF agents) reads what changed from the snapshot's change log (or, from a snapshot
without one, compares resourceVersions) and parses only that; the planner keeps
each Service's elements and reuses them while the very same ServicePort/endpoint objects come
back (a full resync recomputes only when the node parameters Services depend on changed: name,
IP, zone label); elements go out in `add element` statements of 1000; nothing is listed from
the kernel before a transaction (a table is dropped with add+delete: with the flat table of
10k Services loaded, `nft list tables` took 0.5-0.9 s; `nft list chains`, which `nft.tables`
reads, 4 ms). Every sync is one transaction, but one: a large first load (LOAD_IN_PARTS_AT
Services or more) on a node that no table of ours serves yet goes in parts of LOAD_PART Services,
each parsed, planned and sent as a sync of its own while nft applies the part before
(NftSyncer.load_flat): parsing in Python and nft's own parsing of the elements, the two halves
of such a load, then share the two cores. Not atomic as a whole, so a restarted agent, whose
table serves, replaces it in one transaction. `layout="auto"` (NftProxyAgent) writes upstream's
table below AUTO_FLAT_AT Services and the flat one from there on.

Measured 2026-11-26 13:2xZ with `UPSTREAM_MAX=0 python -m kubewire.bench.nftsync 1000,10000`
(Services with 5 endpoints each, no nodeName; wall-clock from a snapshot that says what changed:
parsing what changed, planning, `nft -f`; "full resync" = the node's zone label changed, every
Service recomputed). 2 vCPUs, nothing else running (load 1.4-1.8), ranges over three runs,
seconds:

| Services | upstream layout: first sync (chunked) / full resync / one endpoint / add Service | flat: first / full resync / one endpoint / add Service |
|---|---|---|
| 1 000 | 0.63–0.67 / 0.115–0.139 / 0.036–0.047 / 0.024–0.030 | 0.11–0.12 / 0.016–0.019 / 0.016–0.020 / 0.004–0.005 |
| 10 000 | 14.0–15.3 / 1.16–1.24 / 0.32–0.36 / 0.31–0.37 | 0.97–1.08 / 0.29–0.36 / 0.013–0.023 / 0.004–0.005 |

Flat, 10k, first sync: 0.44–0.50 s parsing 10k Services and 10k EndpointSlices
(kubewire.proxy.model), 0.21–0.28 s planning, 0.31–0.32 s of `nft -f` in three transactions (one nft
took 0.57–0.79 s before parallel parts). After that run, with the control loop's GC thresholds in
the bench and one parse call per batch: 0.91–1.08 s in nine runs (maps 0.45–0.56, nft 0.28–0.31).
Part by part (15:0xZ, three runs): 0.68–0.73 s, of which 0.07–0.09 s waiting for nft; the rest
is parsing and planning, with nft applying the part before on the other core. One endpoint
change: no time to see what changed (the snapshot's change log), 12–33 ms of `nft -f` (2 element
operations). The same morning, before the change log and the parsing work: first 1.45–1.59, one
endpoint 0.044–0.064 (15–20 ms of it finding the changed objects among 20k).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from kubewire.cluster.addressing import NodePlan
from kubewire.controllers.types import Snapshot
from kubewire.kernel import nft
from kubewire.kernel.run import CommandError
from kubewire.kubeproxy.agent import ProxyAgent
from kubewire.proxy.model import (
    Endpoint,
    ProxyMaps,
    ServicePort,
    ServicePortName,
)
from kubewire.proxy.nftables import NftParams, NftState, SyncPlan, changed_services, nft_params, plan_sync
from kubewire.proxy.nftables.flat import FLAT_TABLE, FlatState, plan_flat
from kubewire.proxy.nftables.render import TABLE, Tx, service_cidrs_from_objects

CHUNK = 1000  # Services per transaction when many change at once (see kubewire.bench.nftsync)
LAYOUTS = ("upstream", "flat", "auto")
LOAD_IN_PARTS_AT = 2000  # flat layout: a first load of this many Services on an empty node goes in
LOAD_PART = 1250  # Services per part of such a load, each applied while the next is parsed (NftSyncer.load_flat)
AUTO_FLAT_AT = 1000  # layout "auto": the flat layout from this many Services (upstream's below)

NamespacedName = tuple[str, str]


@dataclass
class SyncResult:
    kind: str  # "initial", "full", "partial" or "none"
    seconds: float  # planning + applying
    apply_seconds: float  # waiting for nft (a part-by-part load overlaps some of it with planning)
    transactions: int
    operations: int
    services_written: int


def _drop_table(family: str, table: str) -> list[str]:
    """Lines that remove a table if it is there (a plain delete fails on a missing one), without
    asking nft first: listing a table of 10k Services costs a second."""
    return [f"add table {family} {table}\n", f"delete table {family} {table}\n"]


class NftSyncer:
    """The kernel side: plans with kubewire.proxy.nftables and applies in one namespace.

    `layout="upstream"` (default) writes upstream's table; `layout="flat"` the optional flat
    layout (kubewire.proxy.nftables.flat), one transaction per sync whatever the change.
    `pod_cidrs`: the node's pod CIDRs (the flat layout's hairpin set; see flat.py)."""

    def __init__(self, netns: str, chunk: int = CHUNK, layout: str = "upstream",
                 pod_cidrs: Sequence[str] | None = None) -> None:  # fmt: skip
        if layout not in ("upstream", "flat"):
            raise ValueError(f"unknown nftables layout {layout!r} (upstream | flat)")
        self.netns = netns
        self.chunk = chunk
        self.layout = layout
        self.pod_cidrs = pod_cidrs
        self.flat_state: FlatState | None = None
        self.state: NftState | None = None
        self.params: NftParams | None = None
        self.services: Mapping[ServicePortName, ServicePort] = {}
        self.endpoints: Mapping[ServicePortName, Sequence[Endpoint]] = {}

    def sync(
        self,
        service_map: Mapping[ServicePortName, ServicePort],
        endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
        params: NftParams,
        full: bool = False,
        changed: set[NamespacedName] | None = None,
        ports_of: Mapping[NamespacedName, Sequence[ServicePortName]] | None = None,
    ) -> SyncResult:
        """Bring the table to these Services. `changed` (the namespace/name of every Service
        whose ports or endpoints changed since the last call) saves comparing the maps;
        `ports_of` (the keys of `service_map` per Service) a pass over it (flat layout)."""
        t0 = time.perf_counter()
        if self.layout == "flat":
            return self._sync_flat(service_map, endpoints_map, params, full, t0, changed, ports_of)
        now = time.monotonic()
        if self.state is None:
            kind = "initial"
            plan = plan_sync(service_map, endpoints_map, params, None, None, now, chunk=self.chunk)
            # The flat layout and a previous run's table, if there: replaced in the same
            # transaction as the new setup.
            first = Tx(params.ipx)
            first.lines += _drop_table(params.ipx, FLAT_TABLE) + _drop_table(params.ipx, TABLE)
            first.extend(plan.txs[0])
            plan.txs[0] = first
        elif full or params != self.params:
            kind = "full"
            plan = plan_sync(service_map, endpoints_map, params, self.state, None, now, chunk=self.chunk,
                             flush_containers=False, rewrite_unchanged=False, in_place=True)  # fmt: skip
        else:
            if changed is None:
                changed = changed_services(self.services, self.endpoints, service_map, endpoints_map)
            if not changed and not self.state.stale_chains:
                self.services, self.endpoints = service_map, endpoints_map
                return SyncResult("none", time.perf_counter() - t0, 0.0, 0, 0, 0)
            kind = "partial"
            plan = plan_sync(service_map, endpoints_map, params, self.state, changed, now, chunk=self.chunk,
                             in_place=True)  # fmt: skip
        applied = self._apply(plan)
        self.state, self.params = plan.state, params
        self.services, self.endpoints = service_map, endpoints_map
        txs = [tx for tx in plan.txs if len(tx)]
        return SyncResult(kind, time.perf_counter() - t0, applied, len(txs), plan.operations, plan.services)

    def _sync_flat(
        self,
        service_map: Mapping[ServicePortName, ServicePort],
        endpoints_map: Mapping[ServicePortName, Sequence[Endpoint]],
        params: NftParams,
        full: bool,
        t0: float,
        changed: set[NamespacedName] | None,
        ports_of: Mapping[NamespacedName, Sequence[ServicePortName]] | None,
    ) -> SyncResult:
        state = self.flat_state
        if state is None:
            kind = "initial"
        elif full or params != state.params:
            kind, changed = "full", None
        else:
            kind = "partial"
            if changed is None:
                changed = changed_services(self.services, self.endpoints, service_map, endpoints_map)
        try:
            tx, state = plan_flat(service_map, endpoints_map, params, state, changed, self.pod_cidrs, ports_of)
            if kind == "initial":
                # upstream's layout, from an earlier run: gone in the same transaction
                tx.lines[:0] = _drop_table(params.ipx, TABLE)
            t1 = time.perf_counter()
            if len(tx):
                nft.apply(self.netns, tx.text())
        except CommandError:
            self.flat_state = None  # unknown: the next sync starts over
            raise
        t2 = time.perf_counter()
        self.flat_state, self.params = state, params
        self.services, self.endpoints = service_map, endpoints_map
        return SyncResult(kind if len(tx) else "none", t2 - t0, t2 - t1, 1 if len(tx) else 0, len(tx),
                          state.written)  # fmt: skip

    def load_flat(self, maps: ProxyMaps, snap: Snapshot, params: NftParams) -> SyncResult:
        """The flat layout's first load, part by part, for a node that no table of ours serves
        yet: empty `maps` take in the snapshot in parts of LOAD_PART Services
        (ProxyMaps.sync_in_parts); each part is planned as plan_flat plans a sync (the first
        makes the table) and applied in its own transaction while the next part is parsed and
        planned (kernel.nft.apply_in_order). Not atomic as a whole: each Service appears,
        complete, when its part commits. So a restarted agent, whose table serves, replaces it
        in one transaction instead."""
        if self.layout != "flat" or self.synced:
            raise RuntimeError("load_flat is the flat layout's first load")
        t0 = time.perf_counter()
        state: FlatState | None = None
        operations = 0

        service_map, endpoints_map = maps.service_map, maps.endpoints_map
        parts = maps.sync_in_parts(snap, -(-len(snap.index("Service")) // LOAD_PART))

        def payloads() -> Iterator[str]:
            nonlocal state, operations
            for changed in parts:
                tx, state = plan_flat(service_map, endpoints_map, params, state, None if state is None else changed,
                                      self.pod_cidrs, maps.ports_by_service)  # fmt: skip
                operations += len(tx)
                yield tx.text()

        txs, waited = nft.apply_in_order(self.netns, payloads())  # on failure: still not synced
        self.flat_state, self.params = state, params
        self.services, self.endpoints = service_map, endpoints_map
        return SyncResult("initial", time.perf_counter() - t0, waited, txs, operations,
                          len(state.records) if state is not None else 0)  # fmt: skip

    def _apply(self, plan: SyncPlan) -> float:
        t0 = time.perf_counter()
        if len(plan.cleanup):
            # Upstream tolerates a failure here: the chains stay stale and are flushed again.
            with contextlib.suppress(CommandError):
                nft.apply(self.netns, plan.cleanup.text())
        try:
            for tx in plan.txs:
                if len(tx):
                    nft.apply(self.netns, tx.text())
        except CommandError:
            self.state = None  # unknown: the next sync starts over
            raise
        return time.perf_counter() - t0

    def reset(self) -> None:
        self.state = None
        self.flat_state = None

    @property
    def synced(self) -> bool:
        return self.state is not None or self.flat_state is not None


def delete_table(netns: str, family: str = "ip", table: str = TABLE) -> None:
    """Remove the table if it is there."""
    nft.apply(netns, "".join(_drop_table(family, table)))


class NftProxyAgent(ProxyAgent):
    """ProxyAgent's interface (constructed per node, `sync(snap) -> bool`) in nftables mode.

    `layout` is "upstream" (upstream's table, the default), "flat" (the optional flat layout) or
    "auto" (upstream's below AUTO_FLAT_AT Services, flat from there on; the table is switched in
    one transaction when the count crosses it, with some hysteresis). Health-check NodePorts and
    kube-proxy's /healthz are served as ProxyAgent serves them; stale UDP conntrack entries are
    flushed the same way."""

    def __init__(self, node: NodePlan, cluster_cidr: str, service_cidrs: str | Sequence[str] = (),
                 layout: str = "upstream", chunk: int = CHUNK) -> None:  # fmt: skip
        super().__init__(node, cluster_cidr)
        if layout not in LAYOUTS:
            raise ValueError(f"unknown nftables layout {layout!r} ({' | '.join(LAYOUTS)})")
        self.mode = "nftables"
        self.layout = layout
        self.service_cidrs = [service_cidrs] if isinstance(service_cidrs, str) else list(service_cidrs)
        pod_cidrs = [node.pod_cidr] if getattr(node, "pod_cidr", None) else None
        self.syncer = NftSyncer(node.netns, chunk, "upstream" if layout == "auto" else layout, pod_cidrs)
        self.last_result: SyncResult | None = None

    def _layout_for(self, services: int) -> str:
        if self.layout != "auto":
            return self.layout
        if not self.syncer.synced:
            return "flat" if services >= AUTO_FLAT_AT else "upstream"
        current = self.syncer.layout
        if current == "upstream" and services >= AUTO_FLAT_AT:
            return "flat"
        if current == "flat" and services < AUTO_FLAT_AT // 2:
            return "upstream"
        return current

    def _sync(self, snap: Snapshot) -> bool:
        t0 = time.perf_counter()
        node = snap.get("Node", "", self.node.name) or {}
        labels = node.get("metadata", {}).get("labels", {})
        cidrs = self.service_cidrs + [
            c for c in service_cidrs_from_objects(snap.index("ServiceCIDR").values()) if c not in self.service_cidrs
        ]
        params = nft_params(self.config, self.node.name, [self.node.ip], labels, "IPv4", (), cidrs)
        first = not self.syncer.synced
        try:
            loaded = self._load_in_parts(snap, params) if first else None
            if loaded is not None:
                result = loaded
                ports: set = set()  # nothing was there before: no stale conntrack entries
                old_svcs: dict = {}
                old_eps: dict = {}
            else:
                changed, old_svcs, old_eps = self.maps.sync(snap)
                layout = self._layout_for(self.maps.service_count)
                if layout != self.syncer.layout:
                    # the other layout's first sync replaces this one's table in its transaction
                    self.syncer = NftSyncer(self.node.netns, self.syncer.chunk, layout, self.syncer.pod_cidrs)
                    first = True
                if not changed and not first and params == self.syncer.params and not self._stale_pending():
                    return False
                result = self.syncer.sync(self.maps.service_map, self.maps.endpoints_map, params, changed=changed,
                                          ports_of=self.maps.ports_by_service)  # fmt: skip
                ports = self.maps.ports_of(changed)
        except CommandError as e:
            print(f"{time.strftime('%H:%M:%S')} kube-proxy (nftables) {self.node.name}: sync failed, "
                  f"the next one starts over: {e}", file=sys.stderr, flush=True)  # fmt: skip
            raise
        self.last_result = result
        what = "service ports" if self.syncer.layout == "upstream" else "Services"
        self.last_kind = result.kind if result.kind != "partial" else f"partial ({result.services_written} {what})"
        self._after_sync(ports, old_svcs, old_eps, labels, first)
        self.labels = labels
        self.ready = True
        self.last_sync = time.time()
        self.last_duration = time.perf_counter() - t0
        return True

    def _load_in_parts(self, snap: Snapshot, params: NftParams) -> SyncResult | None:
        """A large first load of the flat layout on a node that no table of ours serves yet goes
        part by part (NftSyncer.load_flat), parsing overlapping nft; None: not that case."""
        services = len(snap.index("Service"))
        if (services < LOAD_IN_PARTS_AT or not self.maps.empty or self._layout_for(services) != "flat"
                or nft.tables(self.node.netns, params.ipx) & {TABLE, FLAT_TABLE}):  # fmt: skip
            return None
        if self.syncer.layout != "flat":
            self.syncer = NftSyncer(self.node.netns, self.syncer.chunk, "flat", self.syncer.pod_cidrs)
        return self.syncer.load_flat(self.maps, snap, params)

    def _stale_pending(self) -> bool:
        """Stale chains wait for a later sync to be deleted."""
        state = self.syncer.state
        return state is not None and bool(state.stale_chains) and self.last_sync < time.time() - 1.0
