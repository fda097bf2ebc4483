"""What a kube-proxy sync costs in nftables mode, as the number of Services grows.

Run in a scratch network namespace of its own (`kw-nftbench-<pid>`, removed at the end); the
Services are the same synthetic ones as `kubewire bench services` (one TCP port, 5 endpoints each).
For each count N, wall-clock, everything included (seeing which objects changed and parsing
them into kube-proxy's maps, planning, `nft -f`), timed as NftProxyAgent runs a sync: from a
Snapshot made by a SnapshotCache (untimed, as the control loop's store makes it before calling the agents):

* `upstream_single`: upstream's full sync as one transaction (what `proxy render --mode
  nftables` prints) into an empty table; only up to `upstream_max` Services (super-linear:
  see kubeproxy/nftables.py).
* per layout (`upstream`: upstream's table as the applier writes it, chunked; `flat`: the
  optional flat layout):
  - `initial`: the first sync, from the objects, into an empty namespace (the flat layout from
    LOAD_IN_PARTS_AT Services on: part by part, as NftProxyAgent loads an empty node; its
    `initial_apply` is then the time spent waiting for nft, the rest overlapped);
  - `full`: a full resync of the same objects after the node's zone label changed (every
    Service is recomputed; without topology hints nothing changes, so the flat layout writes
    nothing);
  - `one_endpoint`: one endpoint of one Service replaced (one EndpointSlice changed);
  - `add_service`: one Service and its EndpointSlice added;
  - `*_apply`: of which `nft -f`; `*_maps`: of which seeing what changed and parsing it.
"""

from __future__ import annotations

import copy
import gc
import os
import time

from kubewire.bench.services import filler
from kubewire.controllers.types import SnapshotCache
from kubewire.daemon import GC_THRESHOLDS
from kubewire.kernel import ip
from kubewire.kernel.run import in_netns, run
from kubewire.kubeproxy.nftables import (
    CHUNK,
    LOAD_IN_PARTS_AT,
    NftSyncer,
    SyncResult,
    delete_table,
)
from kubewire.proxy.model import KubeProxyConfig, ProxyMaps, build_endpoints_map, build_service_map
from kubewire.proxy.nftables import nft_params, plan_sync
from kubewire.proxy.nftables.flat import FLAT_TABLE
from kubewire.proxy.nftables.render import TABLE

NODE = "bench-node"
NODE_IP = "172.18.0.2"
NODE_POD_CIDR = "10.244.0.0/24"  # the filler's endpoints (172.16.0.0/12, no nodeName) are not in it
CONFIG = KubeProxyConfig(cluster_cidr="10.244.0.0/16")
SERVICE_CIDRS = ["10.96.0.0/12"]


def _apply_all(netns: str, texts: list[str]) -> float:
    t0 = time.perf_counter()
    for text in texts:
        if text:
            # not nft.apply: upstream's single transaction can take minutes at 10k Services
            run(in_netns(netns, ["nft", "-f", "-"]), stdin=text, timeout=1800)
    return round(time.perf_counter() - t0, 3)


def _bump(obj: dict, rv: str) -> dict:
    obj["metadata"]["resourceVersion"] = rv
    return obj


def measure_layout(netns: str, n: int, layout: str, chunk: int) -> dict:
    """The applier's syncs for n Services in one layout, timed as the agent runs them."""
    params = nft_params(CONFIG, NODE, [NODE_IP], {}, "IPv4", (), SERVICE_CIDRS)
    services, slices = filler(n)
    for o in services + slices:
        _bump(o, "1")
    gc.collect()
    gc.freeze()  # the objects are long-lived, as in the control loop (which freezes its heap too)
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)  # and the loop's collector settings
    out: dict = {}
    maps = ProxyMaps(NODE)
    cache = SnapshotCache()
    syncer = NftSyncer(netns, chunk, layout, [NODE_POD_CIDR])

    def sync(label: str, written: list[dict]) -> SyncResult:
        snap = cache.apply(written, ())  # as the control loop's store cache does, untimed
        t0 = time.perf_counter()
        changed, _, _ = maps.sync(snap)
        t1 = time.perf_counter()
        r = syncer.sync(maps.service_map, maps.endpoints_map, params, changed=changed, ports_of=maps.ports_by_service)
        out[label] = round(time.perf_counter() - t0, 3)
        out[f"{label}_maps"] = round(t1 - t0, 3)
        out[f"{label}_apply"] = round(r.apply_seconds, 3)
        out[f"{label}_operations"] = r.operations
        return r

    if layout == "flat" and n >= LOAD_IN_PARTS_AT:
        # as NftProxyAgent loads an empty node: part by part, parsing overlapping nft
        snap = cache.apply(services + slices, ())
        t0 = time.perf_counter()
        r = syncer.load_flat(maps, snap, params)
        out["initial"] = round(time.perf_counter() - t0, 3)
        out["initial_apply"] = round(r.apply_seconds, 3)  # waiting for nft, parsing and planning overlapped
        out["initial_operations"] = r.operations
    else:
        r = sync("initial", services + slices)
    out["initial_transactions"] = r.transactions
    # the node's zone label changed: every Service is recomputed
    params = nft_params(CONFIG, NODE, [NODE_IP], {"topology.kubernetes.io/zone": "z1"}, "IPv4", (), SERVICE_CIDRS)
    sync("full", [])
    changed = copy.deepcopy(slices[n // 2])
    changed["endpoints"][0]["addresses"] = ["172.31.255.254"]
    sync("one_endpoint", [_bump(changed, "2")])
    more_svcs, more_slices = filler(n + 1)
    sync("add_service", [_bump(more_svcs[-1], "1"), _bump(more_slices[-1], "1")])
    delete_table(netns, "ip", TABLE)
    delete_table(netns, "ip", FLAT_TABLE)
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    return out


def measure(netns: str, n: int, chunk: int, upstream: bool, log=print) -> dict:  # noqa: ANN001
    """One row: every measurement for n Services, in the empty namespace `netns`."""
    row: dict = {"services": n}
    if upstream:
        params = nft_params(CONFIG, NODE, [NODE_IP], {}, "IPv4", (), SERVICE_CIDRS)
        services, slices = filler(n)
        t0 = time.perf_counter()
        text = plan_sync(build_service_map(services), build_endpoints_map(slices, NODE), params).tx.text()
        row["upstream_single"] = round(time.perf_counter() - t0 + _apply_all(netns, [text]), 3)
        delete_table(netns, "ip", TABLE)
        log(f"{n}: upstream single transaction {row['upstream_single']} s")
    for layout in ("upstream", "flat"):
        row[layout] = measure_layout(netns, n, layout, chunk)
        log(f"{n}: {layout}: {row[layout]}")
    return row


def run_bench(counts: list[int], chunk: int = CHUNK, upstream_max: int = 2000, log=print) -> dict:  # noqa: ANN001
    netns = f"kw-nftbench-{os.getpid()}"
    results: dict = {"chunk": chunk, "endpoints_per_service": 5, "rows": []}
    ip.batch([f"netns add {netns}"])
    try:
        for n in counts:
            results["rows"].append(measure(netns, n, chunk, n <= upstream_max, log))
    finally:
        ip.delete_netns([netns])
    return results


if __name__ == "__main__":
    import json
    import sys

    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "1000,10000").split(",")]
    print(json.dumps(run_bench(sizes, upstream_max=int(os.environ.get("UPSTREAM_MAX", "2000"))), indent=1))
