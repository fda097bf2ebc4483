"""`kubewire bench services`: what a Service costs a new connection, and what a sync costs, as the
number of Services grows — iptables mode, measured on one node of a real cluster.

The probed Service is real (its endpoint is an echo pod on another node) and sorts last, so every
new connection walks past all the others in KUBE-SERVICES. The other Services are synthetic (5
endpoints each on addresses nothing answers), rendered by the same planner as kube-proxy's and
loaded into the client's node with iptables-restore. The control loop is paused meanwhile, so its
own kube-proxy does not rewrite the table under the measurement.

The syncs are timed as the agent (kubewire.kubeproxy.agent) does them. Full: every object parsed
into the maps and every service port rendered, then iptables-save of what is there and one
flushing iptables-restore. Partial, one endpoint leaving one Service: finding the changed slice
among all objects, rendering its service port (the others come from the render cache), the
trimmed payload; then `iptables-restore --noflush`.

Beside them, the same two payloads restored with iptables-legacy-restore into a scratch namespace
of the cluster's (one per count, empty at first like the node's): the other iptables backend
upstream's kube-proxy can run on, measured on the same text in the same run.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kubewire.api.loader import Document
from kubewire.cluster.addressing import netns_prefix
from kubewire.cluster.config import ClusterConfig, NodeConfig
from kubewire.daemon import lifecycle
from kubewire.kernel import ip as kip
from kubewire.kernel import netfilter
from kubewire.kernel.nsswitch import write_sysctls
from kubewire.kernel.run import CommandError, run_in_pod
from kubewire.proxy.iptables.render import RenderCache, node_params, plan_full, replace_tables, trim_unchanged
from kubewire.proxy.model import SERVICE_NAME_LABEL, KubeProxyConfig, ProxyMaps
from kubewire.store.apply import apply_documents

PROBE = Path(__file__).with_name("latency_probe.py")
UPSTREAM_P50_MS = {5000: 0.049, 10000: 0.063, 30000: 0.274}  # published iptables first-packet p50


@dataclass
class Row:
    services: int
    render_full_s: float
    restore_full_s: float
    render_partial_s: float
    restore_partial_s: float
    nat_rules: int
    vip_connect_p50_us: float
    vip_connect_p90_us: float
    vip_connect_p99_us: float
    vip_first_byte_p50_us: float
    vip_first_byte_p99_us: float
    direct_connect_p50_us: float
    direct_connect_p90_us: float
    direct_connect_p99_us: float
    direct_first_byte_p50_us: float
    direct_first_byte_p99_us: float
    overhead_connect_p50_us: float
    legacy_restore_full_s: float | None = None  # the same payloads, iptables-legacy-restore
    legacy_restore_partial_s: float | None = None


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1) if xs else 0.0


def filler(n: int) -> tuple[list[dict], list[dict]]:
    """n synthetic Services (one TCP port) with 5 endpoints each, named to sort before the probe."""
    svcs, slices = [], []
    for i in range(n):
        ip = f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        name = f"svc-{i:05d}"
        svcs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": "bench", "resourceVersion": str(2 * i + 1)},
                     "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                              "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
        eps = [{"addresses": [f"172.{16 + (i * 5 + k) // 65536}.{(i * 5 + k) // 256 % 256}.{(i * 5 + k) % 256}"],
                "conditions": {"ready": True, "serving": True, "terminating": False}} for k in range(5)]
        slices.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                       "metadata": {"name": f"{name}-x", "namespace": "bench", "resourceVersion": str(2 * i + 2),
                                    "labels": {"kubernetes.io/service-name": name}},
                       "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    return svcs, slices


MANIFESTS = """
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  nodeName: NODE1
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: zzzz, labels: {app: server}}
spec:
  nodeName: NODE2
  containers: [{name: s, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: zzzz-probe, namespace: zzzz}
spec:
  selector: {app: server}
  ports: [{port: 8080, targetPort: 8080}]
"""


def apply_probe_pair(h: lifecycle.Handle, cfg: ClusterConfig) -> None:
    """The client pod (first node), the server pod (second node) and the probe Service, in one apply."""
    import yaml

    text = MANIFESTS.replace("NODE1", cfg.nodes[0].name).replace("NODE2", cfg.nodes[1].name)
    ns_doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "zzzz"}}
    docs = [Document("<bench>", 0, ns_doc)] + [Document("<bench>", i + 1, d) for i, d in enumerate(yaml.safe_load_all(text))]
    apply_documents(h.store, docs, service_cidr=cfg.service_subnet)


def legacy_restores(netns: str, full: str, partial: str, log=print) -> tuple[float | None, float | None]:  # noqa: ANN001
    """Seconds for iptables-legacy-restore of the full payload into an empty namespace, then of
    the partial one on top; None for both where the host has no iptables-legacy."""
    kip.batch([f"netns add {netns}"])
    try:
        names = sorted(set(re.findall(r"--nfacct-name (\S+)", full)))
        if names and not netfilter.nfacct_ensure(netns, names):
            full = re.sub(r" -m nfacct --nfacct-name \S+", "", full)
            partial = re.sub(r" -m nfacct --nfacct-name \S+", "", partial)
        t0 = time.perf_counter()
        try:
            netfilter.restore(netns, full, noflush=False, legacy=True)
        except CommandError as e:
            log(f"  iptables-legacy-restore: {e}: legacy column left empty")
            return None, None
        t1 = time.perf_counter()
        netfilter.restore(netns, partial, legacy=True)
        t2 = time.perf_counter()
        return round(t1 - t0, 3), round(t2 - t1, 3)
    finally:
        kip.delete_netns([netns])


def run_bench(counts: list[int], samples: int, log=print) -> dict:  # noqa: ANN001

    name = f"kwbs{int(time.time()) % 100000}"
    cfg = ClusterConfig(name=name, nodes=[NodeConfig(f"{name}-a", "zone-a", "bench"),
                                          NodeConfig(f"{name}-b", "zone-a", "bench")])
    rows: list[Row] = []
    try:
        h = lifecycle.up(cfg)
        apply_probe_pair(h, cfg)
        deadline = time.time() + 60
        while time.time() < deadline:
            pods = h.store.list("Pod")
            slices = h.store.list("EndpointSlice")
            if len(pods) == 2 and all(p.get("status", {}).get("podIP") and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
                    for p in pods) and any(s.get("endpoints") for s in slices):
                break
            time.sleep(0.1)
        time.sleep(0.5)  # the loop's kube-proxy writes the probe Service's rules
        lifecycle.stop_daemon(h)  # pause the control loop: our tables stay as we load them
        client = h.store.get("Pod", "default", "client")
        server = h.store.get("Pod", "zzzz", "server")
        probe_svc = h.store.get("Service", "zzzz", "zzzz-probe")
        probe_slices = h.store.list("EndpointSlice", "zzzz")
        if not any(s.get("endpoints") for s in probe_slices):
            raise RuntimeError("the probe Service has no endpoints: the server pod did not become ready")
        rec = h.store.runtime_get(f"pod/{cfg.nodes[0].name}/{client['metadata']['uid']}")
        client_pid = rec["containers"]["c"]["pid"]
        client_ns = rec["netns"]
        write_sysctls(client_ns, {"net/ipv4/ip_local_port_range": "10000 65000", "net/ipv4/tcp_tw_reuse": "1"})
        node = h.topo.nodes[0]
        kp = KubeProxyConfig(cluster_cidr=cfg.pod_subnet)
        params = node_params(kp, node.name, [node.ip], {}, "IPv4", ())
        vip = f"{probe_svc['spec']['clusterIP']}:8080"
        direct = f"{server['status']['podIP']}:8080"
        for n in counts:
            log(f"  {n} Services: render, load, probe ...")
            fs, fsl = filler(n - 1)
            # the objects as a Snapshot indexes them, which is what the agent hands its maps
            svc_objs = {("Service", o["metadata"]["namespace"], o["metadata"]["name"]): o for o in fs + [probe_svc]}
            slice_objs = {("EndpointSlice", o["metadata"]["namespace"], o["metadata"]["name"]): o
                          for o in fsl + probe_slices}  # fmt: skip
            # A full sync as the agent's first: parse every object, render every service port,
            # then one flushing restore carrying over the others' rules (see kubeproxy.agent).
            maps, cache = ProxyMaps(node.name), RenderCache()
            t0 = time.perf_counter()
            maps.update(svc_objs, slice_objs)
            payload = plan_full(maps.service_map, maps.endpoints_map, params, (), None, cache)
            t1 = time.perf_counter()
            saved = {t: netfilter.save(node.netns, t) for t in ("filter", "nat")}
            netfilter.restore(node.netns, replace_tables(saved, payload), noflush=False)
            t2 = time.perf_counter()
            nat_rules = sum(1 for line in payload.text().splitlines() if line.startswith("-A"))
            # One endpoint leaves one Service (its slice gets a new resourceVersion): a partial
            # sync as the agent's, from finding the change among all objects to the trimmed text.
            changed_key = next(k for k in sorted(slice_objs) if slice_objs[k].get("endpoints"))
            slice_objs2 = dict(slice_objs)
            moved = slice_objs2[changed_key] = copy.deepcopy(slice_objs[changed_key])
            moved["metadata"]["resourceVersion"] = "changed"
            if len(moved["endpoints"]) > 1:  # the probe alone (1 Service): rewrite its chains unchanged
                moved["endpoints"] = moved["endpoints"][:-1]
            t3 = time.perf_counter()
            names, _, _ = maps.update(svc_objs, slice_objs2)
            changed = {k for k in maps.ports_of(names) if k in maps.service_map}
            if not changed:
                changed = {k for k in maps.service_map if k.name == moved["metadata"]["labels"][SERVICE_NAME_LABEL]}
            after = plan_full(maps.service_map, maps.endpoints_map, params, payload.active_nat_chains, changed, cache)
            partial = trim_unchanged(after, payload)
            t4 = time.perf_counter()
            netfilter.restore(node.netns, partial)
            t5 = time.perf_counter()
            legacy_full, legacy_partial = legacy_restores(
                f"{netns_prefix(name)}legacy", replace_tables(saved, payload), partial, log)
            res = run_in_pod(client_pid, [sys.executable, str(PROBE), str(samples), vip, direct], net_only=True,
                             timeout=600)
            data = json.loads(res.stdout)["samples"]
            v, d = data[vip], data[direct]
            rows.append(Row(
                n, round(t1 - t0, 3), round(t2 - t1, 3), round(t4 - t3, 3), round(t5 - t4, 3), nat_rules,
                pct(v["connect"], 50), pct(v["connect"], 90), pct(v["connect"], 99),
                pct(v["first_byte"], 50), pct(v["first_byte"], 99),
                pct(d["connect"], 50), pct(d["connect"], 90), pct(d["connect"], 99),
                pct(d["first_byte"], 50), pct(d["first_byte"], 99),
                round(statistics.median(v["connect"]) - statistics.median(d["connect"]), 1),
                legacy_full, legacy_partial,
            ))
    finally:
        lifecycle.down(name)
    return {"mode": "iptables", "samples": samples, "rows": [asdict(r) for r in rows],
            "upstream_iptables_first_packet_p50_ms": UPSTREAM_P50_MS, "targets": targets(rows)}


def targets(rows: list[Row]) -> list[dict]:
    """The issue's targets against this run's rows (a target whose row was not measured is left out):
    ClusterIP overhead over direct <= 20 µs p50 at 1 Service; full sync (render + restore) of 10k
    Services <= 2 s; a partial sync <= 100 ms (at every count measured)."""
    by_n = {r.services: r for r in rows}
    out: list[dict] = []
    if 1 in by_n:
        v = by_n[1].overhead_connect_p50_us
        out.append({"target": "ClusterIP overhead over direct, p50 at 1 Service", "limit": "20 µs", "measured": f"{v:.0f} µs", "met": v <= 20})
    if 10000 in by_n:
        v = by_n[10000].render_full_s + by_n[10000].restore_full_s
        out.append({"target": "full sync of 10k Services", "limit": "2 s", "measured": f"{v:.2f} s", "met": v <= 2})
    for r in rows:
        v = (r.render_partial_s + r.restore_partial_s) * 1000
        out.append({"target": f"partial sync, one endpoint, {r.services} Services", "limit": "100 ms", "measured": f"{v:.0f} ms", "met": v <= 100})
    return out
