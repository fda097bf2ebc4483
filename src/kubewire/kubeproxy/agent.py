"""kube-proxy in iptables mode for one node: a full sync with iptables-restore in the node's
namespace at start, partial syncs for changes, stale UDP conntrack entries flushed, and the
health-check NodePorts served.

What a sync costs at 10k Services (× 5 endpoints), and why it is done this way:

* The maps are kept object by object (ProxyMaps): only changed Services and EndpointSlices are
  parsed again, so finding out what changed costs milliseconds, not the second that rebuilding
  both maps costs.
* Rendering reuses each unchanged service port's lines (RenderCache): a partial sync renders the
  changed service ports only, and its payload is still what rendering everything gives.
* A partial sync is one `iptables-restore --noflush` holding the filter table (if it changed),
  the nat base chains that changed, and the changed service ports' chains (trim_unchanged).
* A full sync is one flushing iptables-restore of the filter and nat tables that carries over
  what others keep there (replace_tables): iptables-nft-restore with --noflush is super-linear
  in the size of what it loads.

The backend is iptables-nft, as everything else in the node's namespace (the topology's
masquerade and NodeLocal DNS rules, `kubewire rules`). iptables-legacy-restore loads a full sync
about twice as fast here, but every later change swaps the whole table through the kernel
(0.75-0.87 s for one endpoint at 10k Services, against 0.15-0.23 s with iptables-nft, most of which
is the kernel re-validating the table), and its rules would be invisible to iptables-save (nft)
and evaluated beside the nft ones: see docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterable, Mapping

from kubewire.cluster.addressing import NodePlan
from kubewire.controllers.types import Snapshot
from kubewire.kernel import netfilter
from kubewire.kernel.nsswitch import entered
from kubewire.kubeproxy.conntrack import stale_filters
from kubewire.proxy.bulk import gc_paused
from kubewire.proxy.iptables.render import (
    KUBE_PROXY_CANARY,
    RenderCache,
    jump_rules,
    node_params,
    plan_full,
    replace_tables,
    trim_unchanged,
)
from kubewire.proxy.model import Endpoint, KubeProxyConfig, ProxyMaps, ServicePort, ServicePortName

CANARY_TABLES = ("mangle", "nat", "filter")
FULL_SYNC_PERIOD = 3600.0  # upstream's proxyutil.FullSyncPeriod


class ProxyAgent:
    def __init__(self, node: NodePlan, cluster_cidr: str, sync_period: float = 30.0) -> None:
        self.node = node
        self.sync_period = sync_period
        self._canary_due = 0.0
        self._full_due = 0.0  # upstream resyncs everything once an hour (FullSyncPeriod) whatever changed
        self.config = KubeProxyConfig(cluster_cidr=cluster_cidr)
        self.fingerprint = ""
        self.active_chains: set[str] = set()
        self.last_payload = None
        self.labels: dict = {}
        self.last_kind = ""
        self.services: dict = {}
        self.endpoints: dict = {}
        self.ready = False
        self.last_sync = 0.0
        self.last_duration = 0.0
        self.health: dict[int, tuple[str, str, int]] = {}  # healthCheckNodePort -> (ns, name, local endpoints)
        self.servers: dict[int, asyncio.base_events.Server] = {}
        self._health_svcs: set = set()  # service ports with a health-check NodePort
        self.maps = ProxyMaps(node.name, "IPv4", self.config.prefer_same_traffic_distribution)
        self.render_cache = RenderCache()
        self.synced_once = False

    def _prepare(self) -> None:
        """Once per node: the jump rules kube-proxy inserts outside its restore, the canary chains,
        and the nfacct counters its payload matches on (without them, no nfacct matches)."""
        if not netfilter.nfacct_ensure(self.node.netns, ["localhost_nps_accepted_pkts", "ct_state_invalid_dropped_pkts"]):
            self.config = KubeProxyConfig(cluster_cidr=self.config.cluster_cidr, nfacct_ct_state_invalid=False,
                                          nfacct_localhost_nodeports=False)
        netfilter.ensure_jumps(self.node.netns, [(j.table, j.chain, list(j.args)) for j in jump_rules()])
        self.ready = True

    def _canaries_alive(self) -> bool:
        """Upstream's iptables monitor, every syncPeriod: when someone flushed the tables (a
        firewall reload, `iptables -t nat -X`), the KUBE-PROXY-CANARY chains are gone with the
        rest, and kube-proxy writes everything again."""
        self._canary_due = time.monotonic() + self.sync_period
        return all(netfilter.chain_exists(self.node.netns, t, KUBE_PROXY_CANARY) for t in CANARY_TABLES)

    def sync(self, snap: Snapshot) -> bool:
        """Bring the node's rules to the snapshot; False when nothing changed. The first sync is a
        bulk pass, run with the garbage collector paused (kubewire.proxy.bulk)."""
        with gc_paused(not self.synced_once):
            changed = self._sync(snap)
        self.synced_once = True
        return changed

    def _sync(self, snap: Snapshot) -> bool:
        t0 = time.perf_counter()
        node = snap.get("Node", "", self.node.name) or {}
        labels = node.get("metadata", {}).get("labels", {})
        changed_names, old_svcs, old_eps = self.maps.sync(snap)
        if self.last_payload is not None and time.monotonic() >= self._canary_due and not self._canaries_alive():
            self.ready = False  # the jumps from the built-in chains again, and everything else
            self.last_payload = None
        full = self.last_payload is None or labels != self.labels or time.monotonic() >= self._full_due
        if not full and not changed_names:
            return False
        if not self.ready:
            self._prepare()
        svc_map, eps_map = self.maps.service_map, self.maps.endpoints_map
        params = node_params(self.config, self.node.name, [self.node.ip], labels, "IPv4", ())
        ports = self.maps.ports_of(changed_names)
        changed = None if full else {k for k in ports if k in svc_map}
        try:
            if full:
                # one flushing restore carrying over what others keep in these tables: --noflush is
                # super-linear in iptables-nft (see replace_tables)
                payload = plan_full(svc_map, eps_map, params, (), None, self.render_cache)
                saved = {t: netfilter.save(self.node.netns, t) for t in ("filter", "nat")}
                netfilter.restore(self.node.netns, replace_tables(saved, payload), noflush=False)
            else:
                payload = plan_full(svc_map, eps_map, params, self.active_chains, changed, self.render_cache)
                netfilter.restore(self.node.netns, trim_unchanged(payload, self.last_payload))
        except Exception:
            self.last_payload = None  # the kernel's rules are unknown now: the next sync is full
            raise
        if full:
            self._canary_due = time.monotonic() + self.sync_period
            self._full_due = time.monotonic() + FULL_SYNC_PERIOD
        self.active_chains = payload.active_nat_chains
        self.last_payload = payload
        self.labels = labels
        self.last_kind = "full" if full else f"partial ({len(changed or ())} service ports)"
        self._after_sync(ports, old_svcs, old_eps, labels, full)
        self.last_sync = time.time()
        self.last_duration = time.perf_counter() - t0
        return True

    def _after_sync(self, ports: set, old_svcs: dict, old_eps: dict, labels: dict, full: bool) -> None:
        """What every mode does once its rules are in: stale UDP conntrack entries of the changed
        service `ports` flushed (as upstream), the maps kept for the health servers, and those
        servers brought up to date (all of them after a `full` sync)."""
        svc_map, eps_map = self.maps.service_map, self.maps.endpoints_map
        new_svcs = {k: svc_map[k] for k in ports if k in svc_map}
        new_eps = {k: eps_map[k] for k in ports if k in eps_map}
        for args in stale_filters(old_svcs, old_eps, new_svcs, new_eps):
            netfilter.conntrack_delete(self.node.netns, args)
        self.services, self.endpoints = svc_map, eps_map
        self._health_ports(None if full else ports | old_svcs.keys())

    # ---- health checks ---------------------------------------------------------------------
    def _health_ports(self, changed: set | None = None) -> None:
        """`changed`: the service ports that changed (None: all may have); only Services with a
        health-check NodePort are looked at again, not every Service."""
        if changed is None:
            self._health_svcs = {k for k, s in self.services.items() if getattr(s, "health_check_node_port", 0)}
        else:
            for k in changed:
                if getattr(self.services.get(k), "health_check_node_port", 0):
                    self._health_svcs.add(k)
                else:
                    self._health_svcs.discard(k)
        want = self.health = health_answers(self.services, self.endpoints, self._health_svcs)
        loop = asyncio.get_event_loop()
        for port in [p for p in self.servers if p not in want and p != 10256]:
            server = self.servers.pop(port)
            if server is not None:
                server.close()
        for port in want:
            if port not in self.servers and loop.is_running():
                loop.create_task(self._serve(port))
        if 10256 not in self.servers and loop.is_running():
            loop.create_task(self._serve(10256))

    async def _serve(self, port: int) -> None:
        self.servers[port] = None  # type: ignore[assignment]  # claimed while starting
        with entered(self.node.netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            s.close()
            self.servers.pop(port, None)
            return
        s.listen(128)
        s.setblocking(False)
        self.servers[port] = await asyncio.start_server(lambda r, w: self._answer(port, r, w), sock=s)

    async def _answer(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Upstream's answers: the service health server (200 with the local endpoint count, or 503)
        and kube-proxy's own /healthz on 10256."""
        try:
            line = await asyncio.wait_for(reader.readline(), 2)
            while (await asyncio.wait_for(reader.readline(), 2)) not in (b"\r\n", b"\n", b""):
                pass
            path = line.split()[1].decode() if len(line.split()) > 1 else "/"
            if port == 10256:
                body = json.dumps({"lastUpdated": _ts(self.last_sync), "currentTime": _ts(time.time()),
                                   "nodeName": self.node.name, "nodeHealthy": True, "nodeEligible": True})
                code, extra = (200, "") if path in ("/healthz", "/livez") else (404, "")
            else:
                ns, name, n = self.health.get(port, ("", "", 0))
                body = _health_body(ns, name, n)
                code, extra = (200 if n > 0 else 503), f"X-Load-Balancing-Endpoint-Weight: {n}\r\n"
            reason = {200: "OK", 503: "Service Unavailable", 404: "Not Found"}[code]
            writer.write((f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
                          f"X-Content-Type-Options: nosniff\r\n{extra}Content-Length: {len(body)}\r\n"
                          f"Connection: close\r\n\r\n{body}").encode())
            await writer.drain()
        except (OSError, TimeoutError, IndexError):
            pass
        finally:
            writer.close()


def health_answers(
    services: Mapping[ServicePortName, ServicePort], endpoints: Mapping[ServicePortName, list[Endpoint]],
    with_health_port: Iterable[ServicePortName],
) -> dict[int, tuple[str, str, int]]:
    """healthCheckNodePort -> (namespace, name, local endpoints), the count as upstream's
    LocalReadyEndpoints: the distinct IPs of the Service's ready endpoints on this node over all its
    ports (10.0.0.1:80 and 10.0.0.1:443 are one), whatever topology would pick."""
    out: dict[int, tuple[str, str, int]] = {}
    ips: dict[int, set[str]] = {}
    for name in with_health_port:
        port = services[name].health_check_node_port
        out[port] = (name.namespace, name.name, 0)
        ips.setdefault(port, set()).update(e.ip for e in endpoints.get(name, ()) if e.is_local and e.ready)
    return {port: (ns, nm, len(ips[port])) for port, (ns, nm, _) in out.items()}


def _health_body(namespace: str, name: str, local: int) -> str:
    """The service health server's body, as upstream's (a dedented, tab-indented template)."""
    return (f'{{\n\t"service": {{\n\t\t"namespace": {json.dumps(namespace)},\n\t\t"name": {json.dumps(name)}\n\t}},\n'
            f'\t"localEndpoints": {local},\n\t"serviceProxyHealthy": true\n}}')


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else ""
