"""`kubewire bench ...`: benchmarks as commands that print a table and write JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kubewire.cli.context import need_root

bench_app = typer.Typer(help="Benchmarks: measured side by side, printed as a table, written as JSON.",
                        no_args_is_help=True)
DEMO_DIR = Path(__file__).resolve().parent.parent / "manifests" / "demo"


def write_results(con: Console, out: str, doc: dict) -> None:
    """Every bench's JSON, where --out says, and the line saying so."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(doc, indent=2))
    con.print(f"wrote {out}")


def machine() -> dict:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu": cpu, "mem_mib": mem,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@bench_app.command("up")
def bench_up(
    sizes: str = typer.Option("100,500,1000", "--pods", help="Pod counts (over 10 nodes), comma-separated."),
    out: str = typer.Option("bench-results/up.json", "--out", help="Where to write the JSON results."),
) -> None:
    """Time from `up` to all pods Ready (demo; 100/500/1000 pods over 10 nodes), memory per pod, `down`."""
    from kubewire.bench.up import as_rows, run_scenario, scenarios

    need_root()
    con = Console(width=160)
    results = []
    for label, cfg, docs in scenarios([int(s) for s in sizes.split(",") if s], str(DEMO_DIR)):
        con.print(f"[dim]running: {label} ...[/dim]")
        results.append(run_scenario(label, cfg, docs))
    t = Table(title="kubewire bench up")
    for col in ("scenario", "nodes", "pods Ready", "up → Ready (s)", "pods/s", "MemAvailable drop (MiB)",
                "KiB/pod (total)", "PSS KiB/pod", "down (s)"):
        t.add_column(col, justify="right")
    for r in results:
        t.add_row(r.scenario, str(r.nodes), str(r.pods), f"{r.up_to_ready_s:.2f}", f"{r.pods_per_s:.0f}",
                  f"{r.mem_available_drop_mib:.0f}", f"{r.kib_per_pod_total:.0f}", f"{r.pss_kib_per_pod:.0f}",
                  f"{r.down_s:.2f}")
    con.print(t)
    con.print("published times to a working cluster (for comparison): k3d 19.9 s, kind 33.0 s, minikube 50.8 s")
    write_results(con, out, {"machine": machine(), "results": as_rows(results)})


@bench_app.command("services")
def bench_services(
    services: str = typer.Option("1,1000,5000,10000,30000", "--services", help="Service counts, comma-separated."),
    samples: int = typer.Option(2000, "--samples", help="New connections per target and count."),
    out: str = typer.Option("bench-results/services.json", "--out"),
) -> None:
    """New-connection latency through a ClusterIP vs the pod IP, and sync times, as Services grow."""
    from kubewire.bench.services import run_bench

    need_root()
    con = Console(width=220)
    res = run_bench([int(x) for x in services.split(",") if x], samples, log=lambda m: con.print(f"[dim]{m}[/dim]"))
    t = Table(title=f"kubewire bench services (iptables mode, {samples} new connections per target)")
    for col in ("Services", "nat rules", "full sync s (render+restore)", "partial sync s (render+restore)",
                "ClusterIP connect p50/p90/p99 µs", "pod IP connect p50/p90/p99 µs", "overhead p50 µs",
                "ClusterIP 1st byte p50/p99 µs", "pod IP 1st byte p50/p99 µs", "upstream iptables p50 µs",
                "iptables-legacy restore s full/partial"):
        t.add_column(col, justify="right")
    for r in res["rows"]:
        up = res["upstream_iptables_first_packet_p50_ms"].get(r["services"])
        t.add_row(str(r["services"]), str(r["nat_rules"]),
                  f"{r['render_full_s']:.3f}+{r['restore_full_s']:.3f}", f"{r['render_partial_s']:.3f}+{r['restore_partial_s']:.3f}",
                  f"{r['vip_connect_p50_us']:.0f}/{r['vip_connect_p90_us']:.0f}/{r['vip_connect_p99_us']:.0f}",
                  f"{r['direct_connect_p50_us']:.0f}/{r['direct_connect_p90_us']:.0f}/{r['direct_connect_p99_us']:.0f}",
                  f"{r['overhead_connect_p50_us']:.0f}",
                  f"{r['vip_first_byte_p50_us']:.0f}/{r['vip_first_byte_p99_us']:.0f}",
                  f"{r['direct_first_byte_p50_us']:.0f}/{r['direct_first_byte_p99_us']:.0f}",
                  f"{up * 1000:.0f}" if up else "",
                  "" if r["legacy_restore_full_s"] is None
                  else f"{r['legacy_restore_full_s']:.3f}/{r['legacy_restore_partial_s']:.3f}")
    con.print(t)
    for tg in res["targets"]:
        con.print(f"target: {tg['target']} ≤ {tg['limit']}: {tg['measured']} — {'met' if tg['met'] else 'NOT met'}")
    write_results(con, out, {"machine": machine(), **res})


@bench_app.command("dns")
def bench_dns(
    services: int = typer.Option(1000, "--services", help="Services in the bench cluster (the cluster names asked)."),
    seconds: float = typer.Option(10.0, "--seconds", help="Length of each saturating dnsperf run."),
    latency_seconds: float = typer.Option(5.0, "--latency-seconds", help="Length of each latency (-v) run."),
    latency_qps: float = typer.Option(2000.0, "--latency-qps",
                                      help="Offered load of the latency runs (capped at half the saturating rate)."),
    clients: int = typer.Option(8, "--clients", help="dnsperf -c: client sockets."),
    outstanding: int = typer.Option(100, "--outstanding", help="dnsperf -q: queries in flight."),
    out: str = typer.Option("bench-results/dns.json", "--out"),
) -> None:
    """Cluster DNS with dnsperf from a pod: kubewire's server vs unbound (same records, one core each),
    cluster names and external names through the ndots:5 search list, via the kube-dns VIP and NodeLocal DNSCache."""
    from kubewire.bench.dns import run_bench

    need_root()
    con = Console(width=240)
    res = run_bench(services, seconds, latency_seconds, latency_qps, clients, outstanding,
                    log=lambda m: con.print(f"[dim]{m}[/dim]"))
    t = Table(title=f"kubewire bench dns ({res['services']} Services; servers pinned to CPU {res['server_cpu']}, "
                    f"dnsperf to CPU {res['dnsperf_cpu']}; dnsperf -c {clients} -q {outstanding}, {seconds:g} s per row)")
    for col in ("client", "queries", "server", "address", "QPS", "server CPU %", "QPS per CPU-s", "lookups/s", "lost",
                "rcodes", "avg ± sd ms", "p50 / p99 ms", "at q/s"):
        t.add_column(col, justify="left" if col in ("client", "queries", "server", "address") else "right")
    for r in res["rows"]:
        rcodes = " ".join(f"{k} {v * 100 / max(1, r['completed']):.0f}%" for k, v in sorted(r["rcodes"].items()))
        t.add_row(r["client"], r["mix"], r["server"], r["address"], f"{r['qps']:,.0f}", f"{r['server_cpu_pct']:.0f}",
                  f"{r['qps_per_core']:,.0f}",
                  f"{r['lookups_per_s']:,.0f}" if r["queries_per_lookup"] > 1 else "", str(r["lost"]), rcodes,
                  f"{r['avg_ms']:.2f} ± {r['stddev_ms']:.2f}", f"{r['p50_ms']:.3f} / {r['p99_ms']:.3f}",
                  f"{r['latency_offered_qps']:,.0f}")
    con.print(t)
    con.print(f"target: ≥ {res['target_qps_per_core']:,} QPS per core for cluster names; CoreDNS publishes "
              f"≈ {res['coredns_published_qps_per_core']:,} QPS per core (2 vCPUs, internal names)")
    for r in res["rows"]:
        if r["mix"] == "cluster names" and r["server"] in ("kubewire dns", "unbound"):
            con.print(f"  {r['server']}, cluster names, {r['client']}: {r['qps']:,.0f} QPS with the server at "
                      f"{r['server_cpu_pct']:.0f}% of its core = {r['qps_per_core']:,.0f} QPS per CPU-second")
    for line in (
            "QPS, lost, rcodes, avg ± sd: dnsperf's own summary of a saturating run (-l, -c, -q as above).",
            "server CPU %: the server processes' CPU time (utime+stime) over that run, 100 = one core; QPS per "
            "CPU-s: replies per CPU-second of the server processes, the per-core rate whether or not the server "
            "was the bottleneck (on 2 CPUs dnsperf and the kernel's packet path often are).",
            "p50 / p99: every reply's latency printed by `dnsperf -v` in a second run offering the load in 'at q/s' (-Q).",
            "lookups/s: QPS / 8 for external names (A and AAAA for 3 search-list expansions and the name itself, "
            "what glibc sends in a pod with ndots:5).",
            "Other processes on this machine add noise: compare rows of one run."):
        con.print(line)
    write_results(con, out, {"machine": machine(), **res})


@bench_app.command("ingress")
def bench_ingress(
    seconds: float = typer.Option(5.0, "--seconds", help="Seconds of load per target and mode."),
    connections: int = typer.Option(4, "--connections", "-c", help="Concurrent connections (wrk -c)."),
    out: str = typer.Option("bench-results/ingress.json", "--out"),
) -> None:
    """The north-south path vs straight to the pod, hop by hop: wrk from the internet namespace, with
    keep-alive and with a new connection per request; latency p50/p99 and throughput."""
    from kubewire.bench.ingress import run_bench

    need_root()
    con = Console(width=200)
    res = run_bench(seconds, connections, log=lambda m: con.print(f"[dim]{m}[/dim]"))
    t = Table(title=f"kubewire bench ingress (wrk, {connections} connections, {seconds:g} s per target)")
    for col in ("mode", "target", "hops", "req/s", "p50 µs", "p90 µs", "p99 µs", "errors"):
        t.add_column(col, justify="left" if col in ("mode", "target", "hops") else "right")
    for r in res["rows"]:
        t.add_row(r["mode"], r["target"], r["hops"], f"{r['rps']:.0f}", str(r["p50_us"]), str(r["p90_us"]),
                  str(r["p99_us"]), str(r["errors"]))
    con.print(t)
    for mode, us in res["ingress_overhead_p50_us"].items():
        con.print(f"full ingress path over direct to the pod, p50 ({mode}): {us} µs")
    write_results(con, out, {"machine": machine(), **res})


@bench_app.command("controllers")
def bench_controllers(
    services: str = typer.Option("1000,10000,30000", "--services", help="Service counts, comma-separated."),
    pods: int = typer.Option(500, "--pods", help="Pods (one for each of the first Services)."),
    flips: int = typer.Option(20, "--flips", help="Readiness changes timed per count."),
    out: str = typer.Option("bench-results/controllers.json", "--out"),
) -> None:
    """The control loop's controllers as Services grow: a steady pass, and a pod's readiness change
    to its EndpointSlice; with the controllers' memos (as the loop keeps them) and without. No root."""
    from kubewire.bench.controllers import run_bench

    con = Console(width=160)
    res = run_bench([int(x) for x in services.split(",") if x], pods, flips, log=lambda m: con.print(f"[dim]{m}[/dim]"))
    t = Table(title=f"kubewire bench controllers ({pods} pods, {flips} readiness changes per count)")
    for col in ("Services", "apply s", "EndpointSlices", "controllers", "steady pass ms",
                "readiness → EndpointSlice ms p50 / max", "passes"):
        t.add_column(col, justify="right")
    for r in res["rows"]:
        t.add_row(str(r["services"]), f"{r['apply_s']:.2f}", str(r["slices"]), r["controllers"], f"{r['steady_pass_s'] * 1000:.1f}",
                  f"{r['readiness_to_slice_ms']['p50']:.1f} / {r['readiness_to_slice_ms']['max']:.1f}", str(r["passes"]))
    con.print(t)
    write_results(con, out, {"machine": machine(), **res})


@bench_app.command("policy")
def bench_policy(
    policies: str = typer.Option("10,100,1000", "--policies", help="Policy counts over 100 pods, comma-separated."),
    samples: int = typer.Option(2000, "--samples", help="New connections per latency scenario."),
    big_matrix: bool = typer.Option(True, "--big-matrix/--no-big-matrix", help="Also probe the 100-pod matrix."),
    out: str = typer.Option("bench-results/policy.json", "--out"),
) -> None:
    """NetworkPolicy: time to program 10/100/1000 policies per node, apply -> enforced, probe matrices,
    new-connection latency with 1000 policies vs none."""
    from kubewire.bench.policy import run_bench

    need_root()
    con = Console(width=200)
    res = run_bench([int(x) for x in policies.split(",") if x], samples, big_matrix,
                    log=lambda m: con.print(f"[dim]{m}[/dim]"))
    t = Table(title="kubewire bench policy: programming (3 nodes, 100 pods; per node: resolve + plan + nft -f)")
    for col in ("policies", "resolve s (cluster)", "plan s (per node)", "nft -f s (per node)", "per node, max s",
                "update s (per node)", "busiest node: chains / rules / sets / elements", "commit → enforced s"):
        t.add_column(col, justify="right")
    for r in res["program"]:
        t.add_row(str(r["policies"]), f"{r['resolve_s']:.3f}", " ".join(f"{x:.3f}" for x in r["node_plan_s"]),
                  " ".join(f"{x:.3f}" for x in r["node_nft_s"]), f"{r['per_node_max_s']:.3f}",
                  " ".join(f"{x:.3f}" for x in r["update_s"]),
                  f"{r['chains']} / {r['rules']} / {r['sets']} / {r['elements']}", f"{r['apply_to_enforced_s']}")
    con.print(t)
    t = Table(title="kubewire probe (the CLI process, start-up included)")
    for col in ("matrix", "connections", "connected", "wall s", "connections s"):
        t.add_column(col, justify="right")
    for r in res["probe"]:
        t.add_row(r["matrix"], str(r["connections"]), str(r["connected"]), f"{r['cli_wall_s']:.2f}", f"{r['connect_s']:.2f}")
    con.print(t)
    t = Table(title=f"new-connection latency, client pod -> server pod on another node ({samples} connections, µs)")
    for col in ("scenario", "server chain rules", "client chain rules", "connect p50", "p90", "p99",
                "first byte p50", "p99", "errors"):
        t.add_column(col, justify="right")
    for r in res["latency"]:
        t.add_row(r["scenario"], str(r["server_chain_rules"]), str(r["client_chain_rules"]), str(r["connect_p50_us"]),
                  str(r["connect_p90_us"]), str(r["connect_p99_us"]), str(r["first_byte_p50_us"]),
                  str(r["first_byte_p99_us"]), str(r["errors"]))
    con.print(t)
    con.print("targets: 1000 policies programmed in ≤ 1 s per node; the 9-pod × 2-port matrix probed in ≤ 3 s")
    write_results(con, out, {"machine": machine(), **res})


@bench_app.command("datapath")
def bench_datapath(
    services: str = typer.Option("1,1000,5000,10000,30000", "--services", help="Service counts, comma-separated."),
    samples: int = typer.Option(500, "--samples", help="New connections per target and count (latency)."),
    modes: str = typer.Option("iptables,nftables,nftables-flat,ebpf", "--modes",
                              help="Datapaths: iptables, nftables (upstream's layout), nftables-flat, ebpf."),
    connections: int = typer.Option(10000, "--connections", help="New connections per target for the CPU measure."),
    max_nftables: int = typer.Option(10000, "--max-services-nftables",
                                     help="Skip larger counts in nftables mode, upstream's layout (its first sync is "
                                          "super-linear: minutes above 10k)."),
    out: str = typer.Option("bench-results/datapath.json", "--out"),
    plot_path: str = typer.Option("bench-results/datapath.png", "--plot"),
) -> None:
    """All Service datapaths on one topology: new-connection latency via ClusterIP vs pod IP, CPU per 10k
    new connections, full and one-endpoint sync times, as Services grow."""
    from kubewire.bench.datapath import TABLE_COLUMNS, plot, run_bench, table_rows

    need_root()
    con = Console(width=260)
    res = run_bench([int(x) for x in services.split(",") if x], samples, [m for m in modes.split(",") if m],
                    connections, {"nftables": max_nftables}, log=lambda m: con.print(f"[dim]{m}[/dim]"))
    res = {"machine": {**machine(), "load_average_start": res["load_average_start"]}, **res}
    t = Table(title=f"kubewire bench datapath ({samples} new connections per target for latency, "
                    f"{connections} for CPU; CPU-s per 10k new connections)")
    for col in TABLE_COLUMNS:
        t.add_column(col, justify="left" if col == "mode" else "right")
    for cells in table_rows(res["rows"]):
        t.add_row(*cells)
    con.print(t)
    for tg in res["targets"]:
        con.print(f"target {tg['target']}: [bold]{tg['status']}[/bold] {tg['value']}")
    write_results(con, out, res)
    plot(res, plot_path)
    con.print(f"wrote {plot_path}")
