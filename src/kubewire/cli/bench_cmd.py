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
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"machine": machine(), "results": as_rows(results)}, indent=2))
    con.print(f"wrote {out}")


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
                "ClusterIP 1st byte p50/p99 µs", "pod IP 1st byte p50/p99 µs", "upstream iptables p50 µs"):
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
                  f"{up * 1000:.0f}" if up else "")
    con.print(t)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"machine": machine(), **res}, indent=2))
    con.print(f"wrote {out}")
