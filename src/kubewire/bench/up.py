"""`kubewire bench up`: time from `up` to every pod Ready, memory per pod, time for `down`.

Each scenario is a fresh cluster of its own (unique name), removed at the end. Memory is measured
two ways: the machine's MemAvailable drop (kernel + processes, what a pod really costs) and the
containers' proportional set size (their own share of user-space pages).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from kubewire.api.loader import Document, load_paths
from kubewire.cluster.config import ClusterConfig, NodeConfig, default_nodes
from kubewire.daemon import lifecycle
from kubewire.store.apply import apply_documents


@dataclass
class UpResult:
    scenario: str
    nodes: int
    pods: int
    up_to_ready_s: float
    pods_per_s: float
    mem_available_drop_mib: float
    kib_per_pod_total: float
    pss_kib_per_pod: float
    down_s: float


def _mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def deployment_doc(name: str, replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "echo", "image": "agnhost",
                                                       "ports": [{"containerPort": 8080}]}]}}},
    }


def run_scenario(label: str, cfg: ClusterConfig, docs: list[Document], timeout: float = 300) -> UpResult:
    try:
        return _run(label, cfg, docs, timeout)
    finally:
        lifecycle.down(cfg.name)  # a failed scenario leaves nothing behind either


def _run(label: str, cfg: ClusterConfig, docs: list[Document], timeout: float) -> UpResult:
    mem0 = _mem_available_kib()
    t0 = time.perf_counter()
    h = lifecycle.up(cfg)
    apply_documents(h.store, docs, service_cidr=cfg.service_subnet)
    ready = 0
    while time.perf_counter() - t0 < timeout:
        # every pod of the cluster, the add-ons (cluster DNS, ingress-nginx) included
        want = sum(int(d["spec"].get("replicas", 1)) for d in h.store.list("Deployment"))
        pods = h.store.list("Pod")
        ready = sum(1 for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                           for c in p.get("status", {}).get("conditions", [])))
        if ready >= want:
            break
        time.sleep(0.02)
    took = time.perf_counter() - t0
    time.sleep(0.5)
    mem1 = _mem_available_kib()
    recs = h.store.runtime_items("pod/")
    pids = [c["pid"] for r in recs.values() for c in r["containers"].values() if c.get("pid")]
    pss = sum(_pss_kib(p) for p in pids)
    t1 = time.perf_counter()
    lifecycle.down(cfg.name)
    down_s = time.perf_counter() - t1
    n = max(ready, 1)
    return UpResult(label, len(cfg.nodes), ready, round(took, 3), round(ready / took, 1),
                    round((mem0 - mem1) / 1024, 1), round((mem0 - mem1) / n, 1), round(pss / max(len(pids), 1), 1),
                    round(down_s, 3))


def scenarios(sizes: list[int], demo_dir: str) -> list[tuple[str, ClusterConfig, list[Document]]]:
    out = []
    name = f"kwb{os.getpid() % 10000}"
    out.append(("demo", ClusterConfig(name=f"{name}d", nodes=default_nodes(f"{name}d")), load_paths([demo_dir])))
    for n in sizes:
        cn = f"{name}p{n}"
        nodes = [NodeConfig(f"{cn}-w{i}", f"zone-{'ab'[i % 2]}", "bench", pods=min(250, max(110, n // 10 + 10)))
                 for i in range(10)]
        docs = [Document("<bench>", i, deployment_doc(f"echo{i}", n // 10)) for i in range(10)]
        out.append((f"{n} pods / 10 nodes", ClusterConfig(name=cn, nodes=nodes), docs))
    return out


def as_rows(results: list[UpResult]) -> list[dict]:
    return [asdict(r) for r in results]
