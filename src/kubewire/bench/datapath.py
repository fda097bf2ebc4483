"""`kubewire bench datapath`: the Service datapaths side by side — iptables, nftables (upstream's
layout, and the optional flat layout) and eBPF — on the same topology, in one run.

For each proxy mode a 3-node cluster comes up in that mode (client pod on node 1; the probed
Service's only endpoint, an echo pod, on node 2; a reference client pod on node 3). Once they are
Ready the control loop is paused and the bench drives that mode's own agent for the client's
node, with a Snapshot holding n - 1 synthetic Services (5 endpoints each, on addresses nothing
answers) plus the real probe Service, which sorts last; node 3 keeps what the loop wrote (the
probe Service and the cluster's own few). For each count n of Services:

* sync times: the agent's first (full) sync of all n, on a node just reset to the probe Service
  alone (nftables: to no table); then one endpoint of one synthetic EndpointSlice is replaced (new
  resourceVersion) and the agent syncs again (for n = 1, a not-ready endpoint is added to the
  probe's slice); then a new agent's first sync over what the first left (a restarted kube-proxy);
* new-connection latency, connect and first response byte, through the ClusterIP and straight
  to the pod IP, interleaved (kubewire/bench/latency_probe.py in the client pod's network
  namespace and its node's cgroup, where the eBPF socket load balancer is attached), and the same
  from the reference client on node 3, in turns with it round by round: "flat" is judged against
  the node with one Service at the same moment, which the machine's load moves alike;
* CPU per 10k new connections, through the ClusterIP and to the pod IP, in interleaved chunks:
  machine-wide busy time from /proc/stat (user+nice+system+irq+softirq, every CPU, so other work
  on the machine is in it), the client process's own rusage (user+sys), and the echo server's
  utime+stime.

Also runnable as `python -m kubewire.bench.datapath cpu N CHUNK SERVER_PID HOST:PORT...`: the
CPU probe, run inside the client pod (stdlib only on that path).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import socket
import sys
import time
from pathlib import Path

PROBE = Path(__file__).with_name("latency_probe.py")
UPSTREAM_P50_MS = {5000: 0.049, 10000: 0.063, 30000: 0.274}  # upstream's published iptables first-packet p50
VARIANTS = ("iptables", "nftables", "nftables-flat", "ebpf")
CLUSTER_MODE = {"iptables": "iptables", "nftables": "nftables", "nftables-flat": "nftables", "ebpf": "ebpf"}
SLOW_SYNC_S = 120.0  # a first sync slower than this: larger counts of that variant are skipped
TARGETS = {
    "flat_within": 0.10,  # nftables and eBPF ClusterIP latency flat from 1 to 30k Services
    "ebpf_overhead_us": 10.0,  # eBPF ClusterIP over direct pod IP, p50
    "nft_full_sync_10k_s": 1.0,
    "one_endpoint_s": 0.050,  # nftables and eBPF
}


# ---- pure helpers ----------------------------------------------------------------------------
def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank, as `kubewire bench services`), 0.0 for no samples."""
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1) if xs else 0.0


def summary(xs: list[float]) -> dict:
    return {"p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99), "n": len(xs)}


def busy_ticks(stat_text: str) -> int:
    """Machine-wide busy time in clock ticks from /proc/stat: user+nice+system+irq+softirq."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:]]
            return f[0] + f[1] + f[2] + f[5] + f[6]
    raise ValueError("no cpu line in /proc/stat")


def delta_pct(value: float, base: float) -> float:
    return round((value - base) * 100 / base, 1) if base else 0.0


def per_10k(value: float, connections: int) -> float | None:
    return round(value * 10000 / connections, 3) if connections else None


def changed_slice(slices: list[dict], new_ip: str = "172.31.255.254") -> dict:
    """One endpoint changed in the first synthetic slice (namespace `bench`): a new object, new
    resourceVersion (the agents keep references to the old one); with none, a not-ready endpoint
    added to the first slice given (the probe's)."""
    synthetic = [s for s in slices if s["metadata"].get("namespace") == "bench"]
    old = synthetic[0] if synthetic else slices[0]
    meta = dict(old["metadata"])
    meta["resourceVersion"] = str(int(meta.get("resourceVersion") or 0) + 1000000)
    eps = [dict(e) for e in old.get("endpoints", [])]
    if synthetic:
        eps[0]["addresses"] = [new_ip]
    else:
        eps.append({"addresses": [new_ip], "conditions": {"ready": False, "serving": False, "terminating": False}})
    return {**old, "metadata": meta, "endpoints": eps}


def stamp(objs: list[dict], kind: str) -> list[dict]:
    """resourceVersion and uid on synthetic objects: the agents compare resourceVersions."""
    for i, o in enumerate(objs):
        o["metadata"]["resourceVersion"] = "1"
        o["metadata"]["uid"] = f"bench-{kind}-{i}"
    return objs


def evaluate_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, each met / not met / not measured, from the rows measured."""
    ok = [r for r in rows if r["status"] == "ok"]

    def of(variant: str) -> list[dict]:
        return sorted((r for r in ok if r["variant"] == variant), key=lambda r: r["services"])

    out: list[dict] = []
    for v in ("nftables", "nftables-flat", "ebpf"):
        rs = [r for r in of(v) if "vs_reference_pct" in r]
        if not rs:
            out.append({"target": f"{v}: ClusterIP connect p50 flat from 1 Service (within 10%)", "status": "not measured",
                        "value": ""})
            continue
        worst = max(rs, key=lambda r: abs(r["vs_reference_pct"]))
        out.append({"target": f"{v}: ClusterIP connect p50 flat up to {rs[-1]['services']} Services (within 10% of a "
                              "node with 1 Service, measured in turns with it)",
                    "status": "met" if abs(worst["vs_reference_pct"]) <= TARGETS["flat_within"] * 100 else "not met",
                    "value": ", ".join(f"{r['services']}: {r['vs_reference_pct']:+.0f}%" for r in rs)})
    rs = of("ebpf")
    if rs:
        over = [r["overhead_connect_p50_us"] for r in rs]
        out.append({"target": "ebpf: ClusterIP over direct pod IP ≤ 10 µs p50 (every count)",
                    "status": "met" if max(over) <= TARGETS["ebpf_overhead_us"] else "not met",
                    "value": ", ".join(f"{o:+.0f}" for o in over) + " µs"})
    for v in ("nftables", "nftables-flat"):
        r10 = [r for r in of(v) if r["services"] == 10000]
        out.append({"target": f"{v}: full sync of 10k Services ≤ 1 s",
                    "status": ("met" if r10[0]["full_sync_s"] <= TARGETS["nft_full_sync_10k_s"] else "not met") if r10
                    else "not measured",
                    "value": (f"{r10[0]['full_sync_s']:.3f} s (a restarted agent over the live table: "
                              f"{r10[0].get('restart_sync_s', 0):.3f} s)") if r10 else ""})
    for v in ("nftables", "nftables-flat", "ebpf"):
        rs = of(v)
        if not rs:
            continue
        worst = max(rs, key=lambda r: r["one_endpoint_sync_s"])
        out.append({"target": f"{v}: one-endpoint change ≤ 50 ms (every count)",
                    "status": "met" if worst["one_endpoint_sync_s"] <= TARGETS["one_endpoint_s"] else "not met",
                    "value": ", ".join(f"{r['one_endpoint_sync_s'] * 1000:.0f}" for r in rs) + " ms"})
    return out


def fmt3(s: dict) -> str:
    return f"{s['p50']:.0f}/{s['p90']:.0f}/{s['p99']:.0f}"


def table_rows(rows: list[dict]) -> list[list[str]]:
    """The printed table's cells (also what docs/benchmarks.md shows)."""
    out = []
    for r in rows:
        up = UPSTREAM_P50_MS.get(r["services"])
        upc = f"{up * 1000:.0f}" if up else ""
        if r["status"] != "ok":
            out.append([r["variant"], str(r["services"]), f"skipped: {r['reason']}"] + [""] * 9 + [upc])
            continue
        c = r["cpu_per_10k"]

        def cpu(t: str, c: dict = c) -> str:
            x = c.get(t) or {}
            return "/".join("—" if x.get(k) is None else f"{x[k]:.2f}" for k in ("machine_busy_s", "client_s", "server_s"))

        restart = r.get("restart_sync_s")
        out.append([r["variant"], str(r["services"]), f"{r['full_sync_s']:.3f}",
                    "" if restart is None else f"{restart:.3f}", f"{r['one_endpoint_sync_s'] * 1000:.1f}",
                    fmt3(r["vip"]["connect"]), f"{r['reference']['vip']['connect']['p50']:.0f} ({r['vs_reference_pct']:+.0f}%)",
                    fmt3(r["direct"]["connect"]), f"{r['overhead_connect_p50_us']:+.0f}",
                    f"{r['vip']['first_byte']['p50']:.0f}/{r['direct']['first_byte']['p50']:.0f}",
                    cpu("vip"), cpu("direct"), upc])
    return out


TABLE_COLUMNS = ("mode", "Services", "full sync s", "restart sync s", "1-endpoint sync ms", "ClusterIP connect p50/p90/p99 µs",
                 "ClusterIP p50 µs from a node with 1 Service, in turns (change)",
                 "pod IP connect p50/p90/p99 µs", "ClusterIP − pod IP p50 µs", "1st byte p50 µs ClusterIP/pod IP",
                 "CPU-s per 10k via ClusterIP: machine/client/server", "CPU-s per 10k to pod IP: machine/client/server",
                 "upstream iptables p50 µs")


def plot(result: dict, path: str) -> None:
    """VIP connect p50 vs Services, one line per mode; pod IP dashed; upstream's published anchors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colors = {"iptables": "tab:red", "nftables": "tab:blue", "nftables-flat": "tab:cyan", "ebpf": "tab:green"}
    for v in result["variants"]:
        rs = sorted((r for r in result["rows"] if r["variant"] == v and r["status"] == "ok"), key=lambda r: r["services"])
        if not rs:
            continue
        xs = [r["services"] for r in rs]
        ax.plot(xs, [r["vip"]["connect"]["p50"] for r in rs], "o-", color=colors.get(v), label=f"{v}: ClusterIP")
        ax.plot(xs, [r["direct"]["connect"]["p50"] for r in rs], "s--", color=colors.get(v), alpha=0.5,
                label=f"{v}: pod IP")
    ux = sorted(UPSTREAM_P50_MS)
    ax.plot(ux, [UPSTREAM_P50_MS[x] * 1000 for x in ux], "kx:", markersize=9, label="upstream iptables p50 (published)")
    ax.set_xscale("log")
    ax.set_xlabel("Services installed")
    ax.set_ylabel("new-connection connect() p50 (µs)")
    ax.set_title(f"kubewire bench datapath — {result['machine'].get('date', '')}, {result['samples']} connections per point")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---- the CPU probe (inside the client pod) ----------------------------------------------------
def _proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0


def cpu_probe(n: int, chunk: int, server_pid: int, targets: list[str]) -> dict:
    """n new connections per target (connect, request, first byte, close), in chunks interleaved
    across targets; CPU deltas per target."""
    hz = os.sysconf("SC_CLK_TCK")
    req = b"GET /hostname HTTP/1.1\r\nHost: bench\r\n\r\n"
    out = {t: {"connections": 0, "errors": 0, "machine_busy_s": 0.0, "client_s": 0.0, "server_s": 0.0, "wall_s": 0.0}
           for t in targets}
    addrs = {t: (t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in targets}
    done = 0
    while done < n:
        k = min(chunk, n - done)
        for t in targets:
            o = out[t]
            with open("/proc/stat") as f:
                b0 = busy_ticks(f.read())
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            s0 = _proc_ticks(server_pid)
            w0 = time.perf_counter()
            for _ in range(k):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(2)
                try:
                    s.connect(addrs[t])
                    s.sendall(req)
                    s.recv(1)
                    o["connections"] += 1
                except OSError:
                    o["errors"] += 1
                finally:
                    s.close()
            o["wall_s"] += time.perf_counter() - w0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            with open("/proc/stat") as f:
                o["machine_busy_s"] += (busy_ticks(f.read()) - b0) / hz
            o["client_s"] += (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            o["server_s"] += (_proc_ticks(server_pid) - s0) / hz if s0 else 0.0
        done += k
    return out


# ---- the bench --------------------------------------------------------------------------------
def _ready(pod: dict | None) -> bool:
    st = (pod or {}).get("status", {})
    return bool(st.get("podIP")) and any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))


def make_agent(variant: str, cfg, node):  # noqa: ANN001, ANN201
    if variant == "iptables":
        from kubewire.kubeproxy.agent import ProxyAgent

        return ProxyAgent(node, cfg.pod_subnet)
    if variant in ("nftables", "nftables-flat"):
        from kubewire.kubeproxy.nftables import NftProxyAgent

        return NftProxyAgent(node, cfg.pod_subnet, cfg.service_subnet,
                             layout="flat" if variant == "nftables-flat" else "upstream")
    if variant == "ebpf":
        from kubewire.kernel.cgroup import node_dir
        from kubewire.kubeproxy.ebpf import EbpfProxyAgent

        return EbpfProxyAgent(node, cfg.pod_subnet, node_dir(cfg.name, node.name))
    raise ValueError(f"unknown mode {variant!r} ({' | '.join(VARIANTS)})")


def release(agent) -> None:  # noqa: ANN001
    """An eBPF agent's map fds closed (the attached programs keep what is live)."""
    from kubewire.kernel.bpf import Map

    maps = getattr(agent, "maps", None)
    for m in list(getattr(maps, "__dict__", {}).values()):
        if isinstance(m, Map):
            m.close()


def sync_detail(agent) -> dict:  # noqa: ANN001
    d: dict = {"kind": getattr(agent, "last_kind", ""), "agent_s": round(getattr(agent, "last_duration", 0.0), 4)}
    res = getattr(agent, "last_result", None)
    if res is not None:
        d.update(apply_s=round(res.apply_seconds, 4), transactions=res.transactions, operations=res.operations)
    if hasattr(agent, "last_map_seconds"):
        d.update(map_s=round(agent.last_map_seconds, 4), operations=agent.last_operations)
    return d


def run_variant_count(variant: str, n: int, ctx: dict, samples: int, connections: int, log) -> dict:  # noqa: ANN001
    """One variant at one count, on the cluster in ctx: reset, full sync, one-endpoint sync, probes."""
    from kubewire.bench.services import filler
    from kubewire.controllers.types import Snapshot, SnapshotCache
    from kubewire.kernel import netfilter
    from kubewire.kernel.run import run_in_pod

    cfg, node = ctx["cfg"], ctx["node"]
    base = [ctx["probe_svc"], *ctx["probe_slices"], ctx["node_obj"]]
    # reset the node (untimed), so each first sync starts from a small table: the probe Service
    # alone; in nftables mode no table at all (a node kube-proxy has not written to yet: the flat
    # layout loads part by part only there, see kubeproxy/nftables.py)
    if variant.startswith("nftables"):
        from kubewire.kubeproxy.nftables import delete_table
        from kubewire.proxy.nftables.flat import FLAT_TABLE
        from kubewire.proxy.nftables.render import TABLE

        delete_table(node.netns, "ip", TABLE)
        delete_table(node.netns, "ip", FLAT_TABLE)
    else:
        reset = make_agent(variant, cfg, node)
        reset.sync(Snapshot.of(base, time.time()))
        release(reset)
        del reset
    fs, fsl = filler(n - 1)
    stamp(fs, "svc")
    stamp(fsl, "slice")
    slices = fsl + ctx["probe_slices"]
    objs = fs + base + fsl
    del fs
    cache = SnapshotCache()  # as the control loop's store: the next snapshot says what changed
    snap = cache.apply(objs, (), time.time())
    gc.collect()
    agent = make_agent(variant, cfg, node)
    restarted = None
    try:
        log(f"  {variant}, {n} Services: full sync ...")
        t0 = time.perf_counter()
        agent.sync(snap)
        full_s = time.perf_counter() - t0
        full_detail = sync_detail(agent)
        # what a new connection may walk in netfilter: iptables nat rules (the eBPF mode keeps some there)
        full_detail["nat_rules"] = sum(1 for line in netfilter.save(node.netns, "nat").splitlines()
                                       if line.startswith("-A"))
        new = changed_slice(slices)
        old_key = (new["metadata"].get("namespace"), new["metadata"]["name"])
        snap2 = cache.apply([new], (), time.time())
        if snap2.get("EndpointSlice", *old_key) is not new:
            raise RuntimeError(f"the changed EndpointSlice {old_key} is not in the snapshot")
        del objs, slices, fsl
        gc.collect()
        t0 = time.perf_counter()
        changed = agent.sync(snap2)
        one_s = time.perf_counter() - t0
        one_detail = sync_detail(agent)
        if not changed:
            raise RuntimeError("the one-endpoint change was not seen by the agent")
        # a restarted kube-proxy: a new agent's first sync over what the previous one left
        restarted = make_agent(variant, cfg, node)
        t0 = time.perf_counter()
        restarted.sync(snap2)
        restart_s = time.perf_counter() - t0
        restart_detail = sync_detail(restarted)
        log(f"  {variant}, {n} Services: full {full_s:.3f} s, one endpoint {one_s * 1000:.1f} ms, restart "
            f"{restart_s:.3f} s; probing ...")
        pid = ctx["client_pid"]
        vip, direct = ctx["vip"], ctx["direct"]
        lat = latency(ctx, samples)
        cpu_res = run_in_pod(pid, [sys.executable, "-m", "kubewire.bench.datapath", "cpu", str(connections), "1000",
                                   str(ctx["server_pid"]), vip, direct], net_only=True, timeout=1800)
        cpu = json.loads(cpu_res.stdout)
    finally:
        release(agent)
        if restarted is not None:
            release(restarted)
    v, d = lat["samples"][vip], lat["samples"][direct]
    rv, rd = lat["peer"]["samples"][vip], lat["peer"]["samples"][direct]
    row = {"variant": variant, "services": n, "status": "ok", "reason": "",
           "full_sync_s": round(full_s, 4), "one_endpoint_sync_s": round(one_s, 4),
           "restart_sync_s": round(restart_s, 4),
           "full_sync_detail": full_detail, "one_endpoint_detail": one_detail, "restart_sync_detail": restart_detail,
           "vip": {"connect": summary(v["connect"]), "first_byte": summary(v["first_byte"])},
           "direct": {"connect": summary(d["connect"]), "first_byte": summary(d["first_byte"])},
           "reference": {"vip": {"connect": summary(rv["connect"]), "first_byte": summary(rv["first_byte"])},
                         "direct": {"connect": summary(rd["connect"]), "first_byte": summary(rd["first_byte"])}},
           "probe_errors": lat.get("errors", 0) + lat["peer"].get("errors", 0),
           "cpu_per_10k": {}, "cpu_raw": cpu}
    row["overhead_connect_p50_us"] = round(row["vip"]["connect"]["p50"] - row["direct"]["connect"]["p50"], 1)
    row["vs_reference_pct"] = delta_pct(row["vip"]["connect"]["p50"], row["reference"]["vip"]["connect"]["p50"])
    for key, t in (("vip", vip), ("direct", direct)):
        c = cpu[t]
        row["cpu_per_10k"][key] = {k: per_10k(c[k], c["connections"]) for k in ("machine_busy_s", "client_s", "server_s")}
        row["cpu_per_10k"][key]["errors"] = c["errors"]
    return row


def latency(ctx: dict, samples: int) -> dict:
    """kubewire/bench/latency_probe.py in the client pod's network namespace and its node's cgroup,
    in turns with the reference client's (its `peer`)."""
    from kubewire.kernel.run import run_in_pod

    pid = ctx["client_pid"]
    res = run_in_pod(pid, [sys.executable, str(PROBE), "--peer", str(ctx["ref_pid"]), str(samples), ctx["vip"],
                           ctx["direct"]], net_only=True, timeout=900)
    return json.loads(res.stdout)


def skipped(variant: str, n: int, reason: str) -> dict:
    return {"variant": variant, "services": n, "status": "skipped", "reason": reason}


def run_mode(mode: str, variants: list[str], counts: list[int], samples: int, connections: int,
             caps: dict[str, int], log) -> list[dict]:  # noqa: ANN001
    """One cluster in `mode`, every variant of it at every count; torn down whatever happens."""
    from kubewire.bench.services import apply_probe_pair  # the same pods and probe as `bench services`
    from kubewire.cluster.config import ClusterConfig, NodeConfig
    from kubewire.daemon import lifecycle
    from kubewire.kernel.nsswitch import write_sysctls
    from kubewire.kernel.run import CommandError

    name = f"kwbd{os.getpid()}{mode[0]}"
    # kind's node names
    cfg = ClusterConfig(name=name, nodes=[NodeConfig(f"{name}-worker", "zone-a", "bench"),
                                          NodeConfig(f"{name}-worker2", "zone-a", "bench"),
                                          NodeConfig(f"{name}-worker3", "zone-a", "bench")], proxy_mode=mode)
    rows: list[dict] = []
    try:
        log(f"{mode}: cluster {name} up ...")
        h = lifecycle.up(cfg)
        apply_probe_pair(h, cfg)
        apply_reference_client(h, cfg.nodes[2].name)
        deadline = time.time() + 90
        while time.time() < deadline:
            if (_ready(h.store.get("Pod", "default", "client")) and _ready(h.store.get("Pod", "zzzz", "server"))
                    and _ready(h.store.get("Pod", "default", "reference"))
                    and any(s.get("endpoints") for s in h.store.list("EndpointSlice", "zzzz"))):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        lifecycle.stop_daemon(h)  # pause the control loop: the bench's agent owns the node's tables
        client = h.store.get("Pod", "default", "client")
        server = h.store.get("Pod", "zzzz", "server")
        reference = h.store.get("Pod", "default", "reference")
        probe_slices = h.store.list("EndpointSlice", "zzzz")
        if not (_ready(client) and _ready(server) and _ready(reference)) or not any(s.get("endpoints") for s in probe_slices):
            raise RuntimeError("client/server/reference pods not Ready or the probe Service has no endpoints after 90 s")
        crec = h.store.runtime_get(f"pod/{cfg.nodes[0].name}/{client['metadata']['uid']}")
        srec = h.store.runtime_get(f"pod/{cfg.nodes[1].name}/{server['metadata']['uid']}")
        probe_svc = h.store.get("Service", "zzzz", "zzzz-probe")
        rrec = h.store.runtime_get(f"pod/{cfg.nodes[2].name}/{reference['metadata']['uid']}")
        for rec in (crec, rrec):
            write_sysctls(rec["netns"], {"net/ipv4/ip_local_port_range": "10000 65000", "net/ipv4/tcp_tw_reuse": "1"})
        ctx = {"cfg": cfg, "node": h.topo.nodes[0], "probe_svc": probe_svc, "probe_slices": probe_slices,
               "node_obj": h.store.get("Node", "", cfg.nodes[0].name), "client_pid": crec["containers"]["c"]["pid"],
               "server_pid": srec["containers"]["s"]["pid"], "ref_pid": rrec["containers"]["c"]["pid"], "vip": f"{probe_svc['spec']['clusterIP']}:8080",
               "direct": f"{server['status']['podIP']}:8080"}
        for variant in variants:
            slow = ""
            for n in counts:
                cap = caps.get(variant)
                if cap is not None and n > cap:
                    rows.append(skipped(variant, n, f"above --max-services-{variant} {cap}"))
                elif slow:
                    rows.append(skipped(variant, n, slow))
                else:
                    try:
                        rows.append(run_variant_count(variant, n, ctx, samples, connections, log))
                    except (CommandError, RuntimeError, ValueError, OSError) as e:
                        rows.append(skipped(variant, n, f"failed: {str(e)[:200]}"))
                    if rows[-1].get("full_sync_s", 0) > SLOW_SYNC_S:
                        slow = f"first sync at {n} took {rows[-1]['full_sync_s']:.0f} s (> {SLOW_SYNC_S:.0f} s)"
                log(f"  {variant}, {n}: {rows[-1]['status']} {rows[-1].get('reason', '')}")
                gc.collect()
    finally:
        lifecycle.down(name)
    return rows


def apply_reference_client(h, node: str) -> None:  # noqa: ANN001
    """The reference client: `bench services`' client pod, named "reference", on the node the bench
    leaves alone."""
    import yaml

    from kubewire.api.loader import Document
    from kubewire.bench.services import MANIFESTS
    from kubewire.store.apply import apply_documents

    pod = next(d for d in yaml.safe_load_all(MANIFESTS) if d["metadata"]["name"] == "client")
    pod["metadata"]["name"], pod["spec"]["nodeName"] = "reference", node
    apply_documents(h.store, [Document("<bench>", 0, pod)], service_cidr=h.cfg.service_subnet)


def load_average() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def run_bench(counts: list[int], samples: int, variants: list[str], connections: int = 10000,
              caps: dict[str, int] | None = None, log=print) -> dict:  # noqa: ANN001
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown mode {v!r} ({' | '.join(VARIANTS)})")
    from kubewire.daemon import GC_THRESHOLDS

    caps = caps or {}
    load0 = load_average()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows: list[dict] = []
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)  # the agents are timed here as the control loop runs them
    try:
        for mode in dict.fromkeys(CLUSTER_MODE[v] for v in variants):
            rows += run_mode(mode, [v for v in variants if CLUSTER_MODE[v] == mode], counts, samples, connections,
                             caps, log)  # fmt: skip
    finally:
        gc.set_threshold(*thresholds)
    return {"started": started, "load_average_start": load0, "load_average_end": load_average(),
            "samples": samples, "cpu_connections": connections, "variants": variants, "counts": counts,
            "caps": caps, "rows": rows, "targets": evaluate_targets(rows),
            "upstream_iptables_first_packet_p50_ms": UPSTREAM_P50_MS}


def main(argv: list[str]) -> None:
    if argv[:1] == ["cpu"]:
        n, chunk, server_pid = int(argv[1]), int(argv[2]), int(argv[3])
        print(json.dumps(cpu_probe(n, chunk, server_pid, argv[4:])))
        return
    raise SystemExit("usage: python -m kubewire.bench.datapath cpu N CHUNK SERVER_PID HOST:PORT...")


if __name__ == "__main__":
    main(sys.argv[1:])
