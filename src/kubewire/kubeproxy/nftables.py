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

Measured with `python -m kubewire.bench.nftsync 1000,2000,10000` (Services with 5 endpoints
each; wall-clock with everything included: parsing the objects, planning, `nft -f`; 2 vCPUs
shared with other work at load 3.5-5, so ranges over three runs), seconds:

| Services | upstream, one transaction | upstream layout: first sync (chunked) / full resync / one endpoint / add Service | flat: first / full / one endpoint / add Service |
|---|---|---|---|
| 1 000 | 0.65–2.3 | 0.78–1.96 / 0.18–0.39 / 0.044–0.067 / 0.032–0.049 | 0.19–0.27 / 0.04–0.23 / 0.022–0.027 / 0.012–0.047 |
| 2 000 | 1.9–4.5 | 1.85 / 0.40 / 0.087 / 0.068 | 0.39 / 0.07 / 0.031 / 0.012 |
| 10 000 | 141 | 17–33 / 1.6–2.5 / 0.42–1.1 / 0.67–1.6 | 1.9–3.7 / 1.0–1.5 / 0.058–0.24 / 0.05–0.15 |

At 10k, one endpoint change in the flat layout is ~50 ms of CPU: ~30 ms to see which objects
changed (MapCache), 2 ms to plan, 17–19 ms for `nft -f` (4 element operations).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubewire.cluster.addressing import NodePlan
from kubewire.controllers.types import Snapshot
from kubewire.kernel import netfilter, nft
from kubewire.kernel.run import CommandError
from kubewire.kubeproxy.agent import ProxyAgent
from kubewire.kubeproxy.conntrack import stale_filters
from kubewire.proxy.model import (
    Endpoint,
    ServicePort,
    ServicePortName,
    build_endpoints_map,
    build_service_map,
)
from kubewire.proxy.nftables import NftParams, NftState, SyncPlan, changed_services, nft_params, plan_sync
from kubewire.proxy.nftables.flat import FLAT_TABLE, FlatState, FlatUnsupported, plan_flat
from kubewire.proxy.nftables.render import TABLE, Tx, service_cidrs_from_objects

CHUNK = 1000  # Services per transaction when many change at once (see kubewire.bench.nftsync)
LAYOUTS = ("upstream", "flat")


@dataclass
class SyncResult:
    kind: str  # "initial", "full", "partial" or "none"
    seconds: float  # planning + applying
    apply_seconds: float
    transactions: int
    operations: int
    services_written: int


class NftSyncer:
    """The kernel side: plans with kubewire.proxy.nftables and applies in one namespace.

    `layout="upstream"` (default) writes upstream's table; `layout="flat"` the optional flat
    layout (kubewire.proxy.nftables.flat), one transaction per sync whatever the change."""

    def __init__(self, netns: str, chunk: int = CHUNK, layout: str = "upstream") -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown nftables layout {layout!r} ({' | '.join(LAYOUTS)})")
        self.netns = netns
        self.chunk = chunk
        self.layout = layout
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
        changed: set[tuple[str, str]] | None = None,
    ) -> SyncResult:
        """Bring the table to these Services. `changed` (the namespace/name of every Service
        whose ports or endpoints changed since the last call) saves comparing the maps."""
        t0 = time.perf_counter()
        if self.layout == "flat":
            return self._sync_flat(service_map, endpoints_map, params, full, t0, changed)
        now = time.monotonic()
        if self.state is None:
            kind = "initial"
            plan = plan_sync(service_map, endpoints_map, params, None, None, now, chunk=self.chunk)
            if nft.list_table(self.netns, params.ipx, FLAT_TABLE):
                delete_table(self.netns, params.ipx, FLAT_TABLE)  # the flat layout, from an earlier run
            if nft.list_table(self.netns, params.ipx, TABLE):
                # A previous run's table: replaced in the same transaction as the new setup.
                first = Tx(params.ipx)
                first.lines += [f"add table {params.ipx} {TABLE}\n", f"delete table {params.ipx} {TABLE}\n"]
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
        self, service_map, endpoints_map, params, full: bool, t0: float, changed=None
    ) -> SyncResult:  # noqa: ANN001
        first = self.flat_state is None
        kind = "initial" if first else ("full" if full or params != self.flat_state.params else "partial")
        if first and nft.list_table(self.netns, params.ipx, TABLE):
            delete_table(self.netns, params.ipx, TABLE)  # upstream's layout, from an earlier run
        if kind == "partial" and changed is None:
            changed = changed_services(self.services, self.endpoints, service_map, endpoints_map)
        # A full resync with the same node parameters recomputes every Service and sends the
        # difference; new parameters (or the first sync) rebuild the table in one transaction.
        state = None if kind == "initial" or params != self.flat_state.params else self.flat_state
        try:
            tx, state = plan_flat(
                service_map, endpoints_map, params, state, changed if kind == "partial" else None
            )
            if len(tx):
                t1 = time.perf_counter()
                nft.apply(self.netns, tx.text())
            else:
                t1 = time.perf_counter()
        except (CommandError, FlatUnsupported):
            self.flat_state = None
            raise
        self.flat_state, self.params = state, params
        self.services, self.endpoints = service_map, endpoints_map
        return SyncResult(kind if len(tx) else "none", time.perf_counter() - t0, time.perf_counter() - t1,
                          1 if len(tx) else 0, len(tx), len(changed or ()) if kind == "partial" else len(service_map))  # fmt: skip

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


def delete_table(netns: str, family: str = "ip", table: str = TABLE) -> None:
    """Remove the table if it is there (add+delete: a plain delete fails on a missing table)."""
    nft.apply(netns, f"add table {family} {table}\ndelete table {family} {table}\n")


class MapCache:
    """kube-proxy's service and endpoints maps, kept up to date object by object.

    Rebuilding both maps from every object costs seconds at 10k Services; here only Services and
    EndpointSlices whose resourceVersion changed are parsed again (EndpointSlices per Service), and
    `update` says which Services changed, as upstream's change trackers do."""

    def __init__(self, node_name: str, prefer_same_node: bool = True) -> None:
        self.node_name = node_name
        self.prefer_same_node = prefer_same_node
        self.service_map: dict[ServicePortName, ServicePort] = {}
        self.endpoints_map: dict[ServicePortName, list[Endpoint]] = {}
        self._svc_sig: dict[tuple[str, str], object] = {}
        self._svc_keys: dict[tuple[str, str], list[ServicePortName]] = {}
        self._slice_sig: dict[tuple[str, str], tuple[object, object]] = {}  # slice -> (service, sig)
        self._slices: dict[tuple[str, str], dict[str, dict]] = {}  # service -> slice name -> object
        self._eps_keys: dict[tuple[str, str], list[ServicePortName]] = {}

    @staticmethod
    def _sig(obj: dict) -> object:
        rv = obj["metadata"].get("resourceVersion")
        return rv if rv is not None else json.dumps(obj, sort_keys=True, default=str)

    def update(self, services: list[dict], slices: list[dict]) -> tuple[set[tuple[str, str]], dict, dict]:
        """Apply the current objects; returns the changed Services and, for them, the old entries
        of both maps (what stale-conntrack cleanup compares with)."""
        changed: set[tuple[str, str]] = set()
        old_svcs: dict = {}
        old_eps: dict = {}

        def replace(table: dict, keys: dict, nsn: tuple[str, str], new: dict, old_out: dict) -> None:
            before = {k: table[k] for k in keys.get(nsn, ())}
            if before != new:
                changed.add(nsn)
                old_out.update(before)
            for k in before:
                del table[k]
            table.update(new)
            keys[nsn] = list(new)

        sig = self._sig
        svc_objs = {((o["metadata"].get("namespace") or "default"), str(o["metadata"].get("name"))): o
                    for o in services}  # fmt: skip
        svc_sigs = {nsn: o["metadata"].get("resourceVersion") or sig(o) for nsn, o in svc_objs.items()}
        old_sigs = self._svc_sig
        for nsn, value in svc_sigs.items():
            if old_sigs.get(nsn) != value:
                replace(self.service_map, self._svc_keys, nsn, build_service_map([svc_objs[nsn]]), old_svcs)
        for nsn in old_sigs.keys() - svc_sigs.keys():
            replace(self.service_map, self._svc_keys, nsn, {}, old_svcs)
        self._svc_sig = svc_sigs

        slice_objs: dict[tuple[str, str], dict] = {}
        slice_sigs: dict[tuple[str, str], tuple[object, object]] = {}
        for o in slices:
            meta = o["metadata"]
            key = (meta.get("namespace") or "default", str(meta.get("name") or ""))
            slice_objs[key] = o
            slice_sigs[key] = (
                (meta.get("labels") or {}).get("kubernetes.io/service-name"),
                meta.get("resourceVersion") or sig(o),
            )
        dirty: set[tuple[str, str]] = set()
        old_slices = self._slice_sig
        for key, value in slice_sigs.items():
            before = old_slices.get(key)
            if before != value:
                for svc in {before[0] if before else None, value[0]}:
                    if isinstance(svc, str):
                        dirty.add((key[0], svc))
                if before and isinstance(before[0], str):
                    self._slices.get((key[0], before[0]), {}).pop(key[1], None)
                if isinstance(value[0], str):
                    self._slices.setdefault((key[0], value[0]), {})[key[1]] = slice_objs[key]
        for key in old_slices.keys() - slice_sigs.keys():
            svc = old_slices[key][0]
            if isinstance(svc, str):
                dirty.add((key[0], svc))
                self._slices.get((key[0], svc), {}).pop(key[1], None)
        self._slice_sig = slice_sigs
        for nsn in dirty:
            group = list(self._slices.get(nsn, {}).values())
            if not group:
                self._slices.pop(nsn, None)
            new = build_endpoints_map(group, self.node_name, "IPv4", self.prefer_same_node) if group else {}
            replace(self.endpoints_map, self._eps_keys, nsn, new, old_eps)
        return changed, old_svcs, old_eps


class NftProxyAgent(ProxyAgent):
    """ProxyAgent's interface (constructed per node, `sync(snap) -> bool`) in nftables mode.

    `layout` is "upstream" (upstream's table, the default) or "flat" (the optional flat layout).
    Health-check NodePorts and kube-proxy's /healthz are served as ProxyAgent serves them; stale
    UDP conntrack entries are flushed the same way."""

    def __init__(self, node: NodePlan, cluster_cidr: str, service_cidrs: str | Sequence[str] = (),
                 layout: str = "upstream", chunk: int = CHUNK) -> None:  # fmt: skip
        super().__init__(node, cluster_cidr)
        self.mode = "nftables"
        self.service_cidrs = [service_cidrs] if isinstance(service_cidrs, str) else list(service_cidrs)
        self.syncer = NftSyncer(node.netns, chunk, layout)
        self.cache = MapCache(node.name, self.config.prefer_same_traffic_distribution)
        self.last_result: SyncResult | None = None

    def sync(self, snap: Snapshot) -> bool:
        node = snap.get("Node", "", self.node.name) or {}
        labels = node.get("metadata", {}).get("labels", {})
        cidr_objects = snap.list("ServiceCIDR")
        cidrs = self.service_cidrs + [
            c for c in service_cidrs_from_objects(cidr_objects) if c not in self.service_cidrs
        ]
        params = nft_params(self.config, self.node.name, [self.node.ip], labels, "IPv4", (), cidrs)
        t0 = time.perf_counter()
        changed, old_svcs, old_eps = self.cache.update(snap.list("Service"), snap.list("EndpointSlice"))
        first = self.syncer.state is None and self.syncer.flat_state is None
        if not changed and not first and params == self.syncer.params and not self._stale_pending():
            return False
        svc_map, ep_map = self.cache.service_map, self.cache.endpoints_map
        try:
            result = self.syncer.sync(svc_map, ep_map, params, changed=changed)
        except CommandError as e:
            print(f"{time.strftime('%H:%M:%S')} kube-proxy (nftables) {self.node.name}: sync failed, "
                  f"the next one starts over: {e}", file=sys.stderr, flush=True)  # fmt: skip
            raise
        self.last_result = result
        self.last_kind = (
            result.kind if result.kind != "partial" else f"partial ({result.services_written} service ports)"
        )
        new_svcs = {k: v for k, v in svc_map.items() if (k.namespace, k.name) in changed}
        new_eps = {k: v for k, v in ep_map.items() if (k.namespace, k.name) in changed}
        for args in stale_filters(old_svcs, old_eps, new_svcs, new_eps):
            netfilter.conntrack_delete(self.node.netns, args)
        self.services, self.endpoints = svc_map, ep_map
        self.labels = labels
        self._health_ports(labels)
        self.ready = True
        self.last_sync = time.time()
        self.last_duration = time.perf_counter() - t0
        return True

    def _stale_pending(self) -> bool:
        """Stale chains wait for a later sync to be deleted."""
        state = self.syncer.state
        return state is not None and bool(state.stale_chains) and self.last_sync < time.time() - 1.0
