"""The cloud load balancer: the agent behind the cloud-lb namespace (the "cloud controller manager"
and the provider's network load balancer in one).

Every step it allocates LoadBalancer addresses (status.loadBalancer.ingress), keeps those addresses on
cloud-lb's public interface, health-checks every node for every frontend from inside cloud-lb, and
programs the forwarding rules (kubewire.ingress.lb) as one nft transaction whenever the Services, the
ready endpoints of a container-native port (no nodePort) or the health of a node change. Once that
table (with its guard: only DNATed traffic may reach a pod address) is in place, cloud-lb routes the
pod CIDR via the fabric, for the container-native frontends. It also plays the provider's DNS (and
external-dns): the internet zone maps Ingress hosts (from the Ingresses' published status) and load
balancer names to their addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import sys
import time
from dataclasses import dataclass

from kubewire.controllers.events import SERVICE_CONTROLLER, Event, event_ops, stale
from kubewire.controllers.types import Op, Snapshot
from kubewire.ingress import lb
from kubewire.kernel import ip as kip
from kubewire.kernel import nft, probe
from kubewire.northsouth.zone import write_zone

INTERVAL = 1.0  # seconds between health checks of a target
TIMEOUT = 1.0
RISE = 2  # consecutive successes before an unhealthy node gets traffic again
FALL = 2  # consecutive failures before a healthy node stops getting new connections
PUBLIC_IF = "kwi0"
LB_DOMAIN = "lb.kubewire.test"
EXTERNAL_DNS_ANNOTATION = "external-dns.alpha.kubernetes.io/hostname"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} cloud-lb: {msg}", file=sys.stderr, flush=True)


@dataclass
class Health:
    healthy: bool | None = None  # None: never checked
    streak: int = 0  # consecutive results that disagree with `healthy`
    last: str = ""
    checked: float = 0.0


class CloudLB:
    def __init__(self, ctx) -> None:  # noqa: ANN001 - kubewire.daemon.loop.EdgeContext (a layer above)
        self.cfg, self.topo, self.dir = ctx.cfg, ctx.topo, ctx.state_dir
        self.pool = getattr(ctx.cfg, "load_balancer_pool", None) or lb.DEFAULT_POOL
        self.netns = ctx.topo.cloudlb_ns
        self.nodes = [lb.Node(n.name, n.ip) for n in ctx.topo.nodes]
        self.fronts: list[lb.Frontend] = []
        self.health: dict[tuple[str, int], Health] = {}
        self.applied = ""
        self.addresses: set[str] | None = None
        self.problems: set[str] = set()
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()
        self.zone: dict[str, list[str]] | None = None
        self.pod_cidrs = (ctx.topo.pod_subnet,)
        self.pod_routes = [f"route replace {c} via {ctx.topo.transit_fabric_ip}" for c in self.pod_cidrs]
        self.routed = False

    # ---- the loop step ----------------------------------------------------------------------
    def sync(self, snap: Snapshot) -> list[Op]:
        # only LoadBalancer Services matter here (this sync over all 10k took 0.12 s a step under cProfile, 16:0xZ)
        services = [s for s in snap.list("Service") if lb.is_load_balancer(s)]
        ips, problems = lb.allocate(services, self.pool)
        ops: list[Op] = []
        events: list[Event] = []
        for s in services:
            if not lb.is_load_balancer(s):
                continue
            want = lb.status_for(ips.get(lb.key_of(s)))["loadBalancer"]
            status = dict(s.get("status") or {})
            if status.get("loadBalancer") != want:
                if want.get("ingress") and not (status.get("loadBalancer") or {}).get("ingress"):
                    events += [Event(s, "Normal", "EnsuringLoadBalancer", "Ensuring load balancer", SERVICE_CONTROLLER),
                               Event(s, "Normal", "EnsuredLoadBalancer", "Ensured load balancer", SERVICE_CONTROLLER)]
                status["loadBalancer"] = want
                m = s["metadata"]
                ops.append(Op("status", {"apiVersion": "v1", "kind": "Service", "status": status,
                                         "metadata": {"name": m["name"], "namespace": m.get("namespace"),
                                                      "uid": m.get("uid")}}))
        slices = snap.list("EndpointSlice") if lb.wants_endpoints(services) else []
        fronts, p = lb.frontends(services, ips, slices)
        problems += p
        for msg in sorted(set(problems) - self.problems):
            log(msg)
        by_key = {f"service {lb.key_of(s)[0]}/{lb.key_of(s)[1]}: ": s for s in services}
        now = snap.now or time.time()
        for msg in sorted(set(problems)):
            svc = next((obj for prefix, obj in by_key.items() if msg.startswith(prefix)), None)
            if svc is None or msg.endswith("; ignored"):  # an ignored source range: logged, the LB still works
                continue
            # shown by `describe service`, as the service controller's; said again while it lasts
            failed = Event(svc, "Warning", "SyncLoadBalancerFailed",
                           f"Error syncing load balancer: failed to ensure load balancer: {msg.split(': ', 1)[1]}",
                           SERVICE_CONTROLLER)  # fmt: skip
            if msg not in self.problems or stale(snap, failed, now):
                events.append(failed)
        self.problems = set(problems)
        ops += event_ops(snap, events, now)
        if fronts != self.fronts:
            self.fronts = fronts
            self.wake.set()
        self._ensure_checker()
        self.program()
        self._zone(snap, services, ips)
        return ops

    # ---- kernel state ------------------------------------------------------------------------
    def healthy(self, ip: str, port: int) -> bool:
        h = self.health.get((ip, port))
        return bool(h and h.healthy)

    def program(self) -> None:
        """Addresses on the public interface, then the rules (one nft transaction), then the pod
        route (never before the table that guards it), then stale addresses away: a frontend's
        address exists before traffic is forwarded for it."""
        want = {f.ip for f in self.fronts}
        if self.addresses is None:
            self.addresses = self._pool_addresses()
        add = sorted(want - self.addresses, key=ipaddress.IPv4Address)
        if add:
            kip.batch([f"addr add {a}/32 dev {PUBLIC_IF}" for a in add], self.netns)
            self.addresses |= set(add)
        rules = lb.render(self.fronts, self.nodes, self.healthy, self.pod_cidrs)
        if rules != self.applied:
            nft.apply(self.netns, rules)
            self.applied = rules
        if not self.routed:
            kip.batch(self.pod_routes, self.netns)
            self.routed = True
        drop = sorted(self.addresses - want, key=ipaddress.IPv4Address)
        if drop:
            kip.batch([f"addr del {a}/32 dev {PUBLIC_IF}" for a in drop], self.netns, force=True)
            self.addresses -= set(drop)

    def _pool_addresses(self) -> set[str]:
        net = ipaddress.IPv4Network(self.pool, strict=False)
        out: set[str] = set()
        for link in json.loads(kip.json_of(self.netns, "addr", "show", "dev", PUBLIC_IF) or "[]"):
            for a in link.get("addr_info", []):
                if a.get("family") == "inet" and ipaddress.IPv4Address(a["local"]) in net:
                    out.add(a["local"])
        return out

    # ---- health checks -----------------------------------------------------------------------
    def _ensure_checker(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._check_forever())

    async def _check_forever(self) -> None:
        while True:
            self.wake.clear()
            targets = lb.health_targets(self.fronts, self.nodes)
            for k in [k for k in self.health if k not in {(ip, port) for ip, port, _ in targets}]:
                del self.health[k]
            results = await asyncio.gather(*(self._check(ip, port, kind) for ip, port, kind in targets))
            changed = False
            for (ip, port, _kind), (ok, msg) in zip(targets, results, strict=True):
                changed |= self._record(ip, port, ok, msg)
            if changed:
                try:
                    self.program()
                except Exception as e:  # noqa: BLE001 - keep checking; the next step retries
                    log(f"programming rules failed: {e}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), INTERVAL)

    async def _check(self, ip: str, port: int, kind: str) -> tuple[bool, str]:
        try:
            if kind == "tcp":
                return await probe.tcp(self.netns, ip, port, TIMEOUT)
            return await probe.http_get(self.netns, ip, port, "/healthz", "HTTP", [], TIMEOUT)
        except Exception as e:  # noqa: BLE001
            return False, str(e)

    def _record(self, ip: str, port: int, ok: bool, msg: str) -> bool:
        h = self.health.setdefault((ip, port), Health())
        h.last, h.checked = msg, time.time()
        if h.healthy is None:
            h.healthy, h.streak = ok, 0
            return True
        if ok == h.healthy:
            h.streak = 0
            return False
        h.streak += 1
        if h.streak >= (RISE if ok else FALL):
            h.healthy, h.streak = ok, 0
            node = next((n.name for n in self.nodes if n.ip == ip), ip)
            log(f"node {node} ({ip}:{port}) is now {'healthy' if ok else 'unhealthy'}" + (f": {msg}" if msg else ""))
            return True
        return False

    # ---- public DNS -------------------------------------------------------------------------
    def _zone(self, snap: Snapshot, services: list[dict], ips: dict[tuple[str, str], str]) -> None:
        names: dict[str, list[str]] = {}

        def add(name: str, addrs: list[str]) -> None:
            name = name.strip().lower().rstrip(".")
            if name and not name.startswith("*.") and addrs:
                names[name] = sorted(set(names.get(name, [])) | set(addrs), key=ipaddress.IPv4Address)

        for s in services:
            ip = ips.get(lb.key_of(s))
            if ip is None:
                continue
            ns, name = lb.key_of(s)
            add(f"{name}.{ns}.{LB_DOMAIN}", [ip])
            for h in ((s["metadata"].get("annotations") or {}).get(EXTERNAL_DNS_ANNOTATION) or "").split(","):
                add(h, [ip])
        for ing in snap.list("Ingress"):
            addrs = [i["ip"] for i in ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                     if isinstance(i, dict) and i.get("ip")]
            for rule in (ing.get("spec") or {}).get("rules") or []:
                if rule.get("host"):
                    add(str(rule["host"]), addrs)
            for h in ((ing["metadata"].get("annotations") or {}).get(EXTERNAL_DNS_ANNOTATION) or "").split(","):
                add(h, addrs)
        if names != self.zone:
            write_zone(self.dir, self.cfg, names)
            self.zone = names
