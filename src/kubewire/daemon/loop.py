"""The control loop: controllers and node agents, level-triggered, in one single-threaded process.

One thread on purpose: containers are forked from this process (sharing the interpreter's pages),
and fork is only safe where no other thread can hold a lock. Work is driven by store changes
(SQLite's data_version), child exits and probe results, with a slow periodic resync.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubewire.cluster.addressing import Topology, cluster_dns_ip, plan_topology, state_dir
from kubewire.cluster.config import ClusterConfig, parse_config
from kubewire.controllers import lifecycle
from kubewire.controllers.endpoints import EndpointsMemo
from kubewire.controllers.endpointslice import EndpointSliceMemo
from kubewire.controllers.endpointslicemirroring import MirroringMemo
from kubewire.controllers.types import Op, Since, Snapshot
from kubewire.daemon import GC_THRESHOLDS
from kubewire.daemon.dnsfeed import RecordsFeed
from kubewire.daemon.lifecycle import node_cgroup
from kubewire.kernel import ip as kip
from kubewire.kernel import process as kproc
from kubewire.kubelet.agent import AgentConfig, NodeAgent
from kubewire.kubelet.files import NodeDNS
from kubewire.kubeproxy.agent import ProxyAgent
from kubewire.store.db import Store
from kubewire.topology.plan import NODE_LOCAL_DNS_IP
from kubewire.workload import echo  # imported before any fork: its pages are shared by every container

RESYNC = 1.0
TICK = 0.02


def workload_factory(ports: list[tuple[int, str]]) -> Callable[[], object]:
    return lambda: echo.run(ports)


def proxy_agents(cfg: ClusterConfig, topo: Topology) -> list[ProxyAgent]:
    """One kube-proxy per node in the cluster's mode (never two: each would DNAT)."""
    if cfg.proxy_mode == "nftables":
        from kubewire.kubeproxy.nftables import NftProxyAgent

        return [NftProxyAgent(n, cfg.pod_subnet, cfg.service_subnet, layout=cfg.nftables_layout) for n in topo.nodes]
    if cfg.proxy_mode == "ebpf":
        from kubewire.kubeproxy.ebpf import EbpfProxyAgent

        return [EbpfProxyAgent(n, cfg.pod_subnet, node_cgroup(cfg, n.name), cfg.name) for n in topo.nodes]
    return [ProxyAgent(n, cfg.pod_subnet, cfg.kube_proxy_sync_period) for n in topo.nodes]


def policy_agents(nodes: tuple) -> list:  # noqa: ANN001
    """NetworkPolicy enforcement, one agent per node (kubewire.netpol), when that package is present."""
    try:
        from kubewire.netpol.agent import PolicyAgent
    except ImportError:
        return []
    return [PolicyAgent(n) for n in nodes]


@dataclass
class EdgeContext:
    """What the north-south agents (cloud load balancer, ingress controller) get from the loop."""

    cfg: ClusterConfig
    topo: Topology
    state_dir: str


def edge_agents(ctx: EdgeContext) -> list:
    """The north-south path (kubewire.northsouth), when that package is present: objects with
    `sync(snap) -> list[Op]` (status writes such as LoadBalancer ingress IPs)."""
    try:
        from kubewire.northsouth.plugin import make
    except ImportError:
        return []
    return make(ctx)


@dataclass
class ControllerMemos:
    """What the controllers remember between the loop's passes, so that a pass costs what changed
    (each reads the snapshots' change log; see their memos)."""

    endpointslices: EndpointSliceMemo = field(default_factory=EndpointSliceMemo)
    services: Since = field(default_factory=Since)
    garbage: lifecycle.GarbageMemo = field(default_factory=lifecycle.GarbageMemo)
    endpoints: EndpointsMemo = field(default_factory=EndpointsMemo)
    events_expired_at: float = 0.0  # Events expire by the hour: looked at once a minute
    mirroring: MirroringMemo = field(default_factory=MirroringMemo)


def run_controllers(snap: Snapshot, rng: random.Random, memos: ControllerMemos | None = None) -> list[Op]:
    """One pass of every controller; with memos (the loop keeps them), over what changed."""
    from kubewire.controllers.deployment import reconcile_deployments
    from kubewire.controllers.endpoints import reconcile_endpoints
    from kubewire.controllers.endpointslice import reconcile_endpointslices
    from kubewire.controllers.endpointslicemirroring import mirror_endpoints
    from kubewire.controllers.events import expire_events
    from kubewire.controllers.replicaset import reconcile_replicasets
    from kubewire.controllers.scheduler import schedule
    from kubewire.controllers.serviceip import reconcile_services

    ops: list[Op] = []
    ops += lifecycle.finish_namespaces(snap)
    ops += lifecycle.collect_garbage(snap, memos.garbage if memos else None)
    if memos is None or snap.now - memos.events_expired_at >= 60:
        ops += expire_events(snap)
        if memos is not None:
            memos.events_expired_at = snap.now
    ops += reconcile_deployments(snap, rng)
    ops += reconcile_replicasets(snap, rng)
    ops += schedule(snap)
    ops += reconcile_services(snap, memos.services if memos else None)
    slice_ops = reconcile_endpointslices(snap, memo=memos.endpointslices if memos else None)
    ops += slice_ops
    ops += reconcile_endpoints(snap, memos.endpoints if memos else None, slice_ops)
    ops += mirror_endpoints(snap, memos.mirroring if memos else None)
    return ops


class Daemon:
    def __init__(self, cluster: str) -> None:
        self.dir = state_dir(cluster)
        with open(f"{self.dir}/cluster.json") as f:
            self.cfg = parse_config(json.load(f), cluster)
        self.topo = plan_topology(self.cfg)
        self.store = Store(f"{self.dir}/state.db")
        self.rng = random.Random()
        self.memos = ControllerMemos()
        self.event = asyncio.Event()
        self.stopping = False
        dns = NODE_LOCAL_DNS_IP if self.cfg.node_local_dns else cluster_dns_ip(self.cfg)
        self.agents = []
        for n in self.topo.nodes:
            acfg = AgentConfig(cluster=cluster, state_dir=self.dir, domain=self.cfg.dns_domain, cluster_dns=[dns],
                               node_dns=NodeDNS([self.topo.internet_dns_ip]), zone=n.zone,
                               backoff=self.cfg.restart_backoff_seconds, cgroup=node_cgroup(self.cfg, n.name))
            a = NodeAgent(self.store, acfg, n, workload_factory)
            a.wake = self.event.set
            self.agents.append(a)
        self.proxies = proxy_agents(self.cfg, self.topo)
        self.policies = policy_agents(self.topo.nodes)
        self.edge = edge_agents(EdgeContext(self.cfg, self.topo, self.dir))
        self.dns = RecordsFeed(f"{self.dir}/dns/records.json", self.cfg.dns_domain, self.cfg.dns_ttl)
        self._remove_stray_pod_namespaces(cluster)

    def _remove_stray_pod_namespaces(self, cluster: str) -> None:
        known: set[str] = set()
        for a in self.agents:
            known |= a.known_netns()
        stray = [n for n in kip.list_netns(f"kw-{cluster}-pod-") if n not in known]
        kproc.kill_netns_processes(stray)
        kip.delete_netns(stray)

    def step(self) -> None:
        snap = self.store.snapshot()
        for _ in range(5):  # let controllers settle before the agents look
            ops = run_controllers(snap, self.rng, self.memos)
            if not ops:
                break
            self.store.write(ops)
            snap = self.store.snapshot()
        # kube-proxy first: an endpoint the controllers just marked terminating leaves the rules
        # before its kubelet sends SIGTERM, as closely as one process can order it
        self._sync_proxies(snap)
        agent_ops: list[Op] = []
        for a in self.agents:
            agent_ops += a.sync(snap)
        if agent_ops:
            self.store.write(agent_ops)
            snap = self.store.snapshot()
            for _ in range(3):  # EndpointSlices follow readiness at once, not on the next change
                ops = run_controllers(snap, self.rng, self.memos)
                if not ops:
                    break
                self.store.write(ops)
                snap = self.store.snapshot()
            self._sync_proxies(snap)  # the new endpoints in the rules before the rest of the step
        self.dns.sync(snap)
        edge_ops: list[Op] = []
        for ea in self.edge:
            try:
                edge_ops += ea.sync(snap)
            except Exception as e:  # noqa: BLE001
                print(f"{time.strftime('%H:%M:%S')} {type(ea).__name__}: {e}", file=sys.stderr, flush=True)
        if edge_ops:
            self.store.write(edge_ops)
            snap = self.store.snapshot()
        for pa in self.policies:
            try:
                pa.sync(snap)
            except Exception as e:  # noqa: BLE001 - one node's failure must not stop the others
                print(f"{time.strftime('%H:%M:%S')} policy {pa.node.name}: {e}", file=sys.stderr, flush=True)
        self._sync_proxies(snap)

    def _sync_proxies(self, snap: Snapshot) -> None:
        for p in self.proxies:
            try:
                p.sync(snap)
            except Exception as e:  # noqa: BLE001 - one node's failure must not stop the others
                print(f"{time.strftime('%H:%M:%S')} kube-proxy {p.node.name}: {e}", file=sys.stderr, flush=True)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, self._stop)
        loop.add_signal_handler(signal.SIGUSR1, self._teardown)
        gc.freeze()  # keep the garbage collector from un-sharing pages with forked containers
        # The first snapshot parses every stored object (later ones only what was written since).
        # With the default threshold (700) the collector runs every few hundred of them and its
        # older generations rescan what is alive, doubling or tripling the cost of a full read at
        # 10k Services (0.6-0.9 s vs 0.27 s, measured); a larger young generation keeps the cost
        # linear and still collects cycles.
        gc.set_threshold(*GC_THRESHOLDS)
        last_dv, last_sync = -1, 0.0
        while not self.stopping:
            dv = self.store.data_version()
            now = time.time()
            if dv != last_dv or self.event.is_set() or now - last_sync > RESYNC:
                self.event.clear()
                try:
                    self.step()
                except Exception as e:  # noqa: BLE001 - the loop must outlive one bad step
                    print(f"{time.strftime('%H:%M:%S')} step failed: {e!r}", file=sys.stderr, flush=True)
                # the version seen before the step: a commit made while it ran gets a step of its own
                last_dv, last_sync = dv, now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), TICK if dv == last_dv else 0)

    def _teardown(self) -> None:
        """`down`: end every container here, so they are reaped by their parent, not orphaned."""
        for a in self.agents:
            a.shutdown_all()
        self._stop()

    def _stop(self) -> None:
        self.stopping = True
        self.event.set()


def main() -> None:
    ap = argparse.ArgumentParser(prog="kubewire-daemon")
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    if sys.version_info < (3, 12):
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())  # no helper threads: fork stays safe
    d = Daemon(args.name)
    asyncio.run(d.run())
