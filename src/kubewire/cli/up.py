"""`kubewire up`: build or converge the cluster, apply manifests, wait until every pod is Ready."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from kubewire.api.errors import ManifestError
from kubewire.api.loader import load_paths
from kubewire.cli.context import err_console, fail
from kubewire.cluster.config import load_config
from kubewire.daemon import lifecycle
from kubewire.kernel.run import CommandError
from kubewire.store.apply import apply_documents


def pods_ready(pods: list[dict]) -> int:
    return sum(1 for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                      for c in p.get("status", {}).get("conditions", [])))


def wait_ready(h: lifecycle.Handle, timeout: float, progress: Progress | None = None) -> tuple[int, int]:
    deadline = time.time() + timeout
    task = progress.add_task("pods Ready", total=None) if progress else None
    ready = total = 0
    while time.time() < deadline:
        pods = [p for p in h.store.list("Pod") if "deletionTimestamp" not in p["metadata"]]
        want = sum(int(d["spec"].get("replicas", 1)) for d in h.store.list("Deployment"))
        total = max(len(pods), want)
        ready = pods_ready(pods)
        if progress is not None and task is not None:
            progress.update(task, total=total or 1, completed=ready, description=f"pods Ready {ready}/{total}")
        if ready == total and len(pods) >= want:
            return ready, total
        time.sleep(0.05)
    return ready, total


def run_up(name: str, config: str | None, files: list[str], proxy_mode: str | None, wait: float, demo: bool,
           demo_dir: Path) -> None:
    t0 = time.time()
    try:
        cfg = load_config(config, name)
        if proxy_mode:
            cfg.proxy_mode = proxy_mode
            cfg = lifecycle.parse_config(lifecycle.to_doc(cfg), name)
        if cfg.proxy_mode == "ebpf":
            from kubewire.kernel.ebpfcheck import unsupported

            why = unsupported()
            if why:
                fail(f"--proxy-mode ebpf: {why} (see `kubewire doctor`)")
        paths = files or ([str(demo_dir)] if demo else [])
        docs = load_paths(paths, sys.stdin) if paths else []
    except ManifestError as e:
        fail(str(e))
    quiet = not sys.stderr.isatty()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err_console, disable=quiet, transient=True) as progress:
        t = progress.add_task(f'cluster "{name}": namespaces, bridges, routes', total=None)
        try:
            h = lifecycle.up(cfg)
        except lifecycle.ClusterError as e:
            fail(str(e))
        except CommandError as e:
            fail(f"building the cluster failed: {e} (run `kubewire doctor`; `kubewire down --name {name}` removes what was built)")
        progress.update(t, description=f'cluster "{name}": {len(h.topo.nodes)} nodes in {len(h.topo.zones)} zones')
        if docs:
            try:
                res = apply_documents(h.store, docs, service_cidr=h.cfg.service_subnet)
            except ManifestError as e:
                fail(str(e))
            for r in res:
                if r.action != "unchanged":
                    progress.console.print(f"{r.obj['kind'].lower()}/{r.obj['metadata']['name']} {r.action}", markup=False)
        ready, total = wait_ready(h, wait, progress) if wait > 0 else (0, 0)
    took = time.time() - t0
    err_console.print(f'Cluster "{name}" is up: {len(h.topo.nodes)} nodes, {len(h.topo.zones)} zones, '
                      f"{ready}/{total} pods Ready in {took:.2f}s", markup=False)
    if wait > 0 and ready < total:
        fail(f"{total - ready} pods not Ready after {wait:.0f}s (see `kubewire get pods -A`)")
