"""kube-proxy replacement in eBPF mode for one node: a socket-level load balancer for ClusterIP
traffic, and kube-proxy's iptables rules for what a socket hook cannot see.

The node's cgroup (every container, `kubewire exec` and probe on the node runs in it) gets four
programs (kubewire.proxy.ebpf.programs): connect4 and sendmsg4 translate a Service VIP:port to a
backend before the first packet exists; getpeername4 and recvmsg4 show the VIP back to the
application. The maps are updated in place, only where a Service's entry changed.

Netfilter keeps (through the iptables agent, fed only these Services): NodePort, LoadBalancer and
externalIPs traffic arriving from outside the node (it has no socket on this node to hook), and the
REJECT / DROP of Services without (local) endpoints, so those answer exactly as upstream's. A
ClusterIP-only Service with endpoints is not in netfilter at all: a pod's new connection walks no
per-Service rule, whatever the number of Services.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kubewire.cluster.addressing import NodePlan, pod_netns
from kubewire.controllers.types import Snapshot
from kubewire.kernel import bpf
from kubewire.kernel import cgroup as kcgroup
from kubewire.kernel.sockdiag import destroy_udp_to
from kubewire.kubeproxy.agent import ProxyAgent
from kubewire.proxy.bulk import gc_paused
from kubewire.proxy.ebpf import maps as M
from kubewire.proxy.ebpf.programs import MapFds, connect, reverse
from kubewire.proxy.ebpf.view import Change, NodeView
from kubewire.proxy.model import ServicePortName

HOOKS = ((bpf.CGROUP_INET4_CONNECT, "connect"), (bpf.CGROUP_UDP4_SENDMSG, "connect"),
         (bpf.CGROUP_INET4_GETPEERNAME, "reverse"), (bpf.CGROUP_UDP4_RECVMSG, "reverse"))
MAX_SERVICES, MAX_BACKENDS, MAX_AFFINITY, MAX_REVNAT = 65536, 262144, 16384, 65536


@dataclass
class Maps:
    services: bpf.Map
    backends: bpf.Map
    affinity: bpf.Map
    revnat: bpf.Map

    @classmethod
    def create(cls, node: str) -> Maps:
        tag = "".join(c if c.isalnum() else "_" for c in node)[-6:]  # object names: [A-Za-z0-9_.] only
        return cls(bpf.Map(bpf.MAP_HASH, M.SVC_KEY, M.SVC_VAL, MAX_SERVICES, f"kw_svc_{tag}", bpf.NO_PREALLOC),
                   bpf.Map(bpf.MAP_HASH, M.BE_KEY, M.BE_VAL, MAX_BACKENDS, f"kw_be_{tag}", bpf.NO_PREALLOC),
                   bpf.Map(bpf.MAP_LRU_HASH, M.AFF_KEY, M.AFF_VAL, MAX_AFFINITY, f"kw_aff_{tag}"),
                   bpf.Map(bpf.MAP_LRU_HASH, M.REV_KEY, M.REV_VAL, MAX_REVNAT, f"kw_rev_{tag}"))

    @property
    def fds(self) -> MapFds:
        return MapFds(self.services.fd, self.backends.fd, self.affinity.fd, self.revnat.fd)


class EbpfProxyAgent:
    def __init__(self, node: NodePlan, cluster_cidr: str, cgroup_dir: str, cluster: str = "") -> None:
        self.node = node
        self.cluster = cluster  # names the node's pod namespaces (for UDP socket termination)
        self.cgroup = cgroup_dir
        self.netfilter = ProxyAgent(node, cluster_cidr)
        self.maps: Maps | None = None
        self.view = NodeView(node.name, self.netfilter.config.prefer_same_traffic_distribution)
        self.ids: dict[ServicePortName, int] = {}
        self.free: list[int] = []
        self.last_kind = ""
        self.last_duration = 0.0
        self.last_map_seconds = 0.0
        self.last_operations = 0
        self.last_sync = 0.0

    def _load(self) -> None:
        """Maps, programs, and their attachment to the node's cgroup (replacing a previous run's)."""
        kcgroup.ensure(self.cgroup)
        self.maps = Maps.create(self.node.name)
        progs = {"connect": connect(self.maps.fds), "reverse": reverse(self.maps.fds)}
        for attach, kind in HOOKS:
            fd = bpf.load_program(bpf.PROG_CGROUP_SOCK_ADDR, attach, progs[kind], f"kw_{kind}")
            try:
                bpf.attach_cgroup(self.cgroup, fd, attach)
            finally:
                bpf.close(fd)  # the attachment holds the program, the program its maps

    def sync(self, snap: Snapshot) -> bool:
        """As ProxyAgent.sync: the first one with the garbage collector paused."""
        with gc_paused(self.maps is None):
            return self._sync(snap)

    def _sync(self, snap: Snapshot) -> bool:
        t0 = time.perf_counter()
        services = snap.index("Service")
        node = snap.get("Node", "", self.node.name) or {}
        labels = node.get("metadata", {}).get("labels", {})
        first = self.maps is None
        if first:
            self._load()
        ch = self.view.sync(snap, labels)
        if not ch.services and not first:
            return False
        writes = M.plan_writes(ch.old, ch.new, self.ids, self.free)
        t1 = time.perf_counter()
        self.apply(writes, ch)
        self.last_map_seconds = time.perf_counter() - t1
        self._terminate_stale_udp(snap, ch)
        self.last_operations = writes.operations
        # netfilter: the Services the socket hooks do not fully serve on this node
        keep = [services[k] for k in self.view.netfilter if k in services]
        keep += [s for k in self.view.netfilter for s in self.view.maps.slices_of(k)]
        if node:
            keep.append(node)
        self.netfilter.sync(Snapshot.of(keep, snap.now))
        self.last_kind = "initial" if first else f"partial ({len(ch.services)} Services, {writes.operations} map operations)"
        self.last_duration = time.perf_counter() - t0
        self.last_sync = time.time()
        return True

    def _terminate_stale_udp(self, snap: Snapshot, ch: Change) -> None:
        """Connected UDP sockets of this node's pods that point at a backend which left: aborted
        (upstream flushes the conntrack entries instead; here nothing is NATed, the socket itself
        holds the stale choice)."""
        gone = {b for n, o in ch.old.items() if o.protocol == "UDP"
                for b in set(o.backends) - set(ch.new[n].backends if n in ch.new else ())}
        if not gone or not self.cluster:
            return
        netnses = [self.node.netns] + [pod_netns(self.cluster, p["metadata"]["uid"]) for p in snap.index("Pod").values()
                                       if p["spec"].get("nodeName") == self.node.name and not p["spec"].get("hostNetwork")
                                       and p["metadata"].get("uid")]
        for ns in netnses:
            try:
                destroy_udp_to(ns, gone)
            except OSError:  # a pod namespace removed meanwhile
                continue

    def apply(self, w: M.MapWrites, ch: Change) -> None:
        assert self.maps is not None
        m = self.maps
        m.backends.update_many(w.backends)
        m.services.update_many(w.services)
        for k in w.delete_backends:
            m.backends.delete(k)
        for k in w.delete_services:
            m.services.delete(k)
        sticky = any(e.affinity_seconds for e in ch.old.values())
        if w.changed_ids and sticky:  # affinity to a backend that left must not outlive it
            live = {(self.ids[n], b) for n, e in ch.new.items() if n in self.ids for b in e.backends}
            for k, v in list(m.affinity.items()):
                sid = int.from_bytes(k[8:12], "little")
                if sid in w.changed_ids and (sid, M.decode_backend(v[8:16])) not in live:
                    m.affinity.delete(k)
