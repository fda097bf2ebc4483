"""What the control loop's controllers cost as a cluster grows, and how long a pod's readiness
change takes to reach its EndpointSlice.

No root, no kernel: a store in a scratch directory (the daemon's own Store, SQLite), n Services
each selecting its own pods (one pod for each of the first `pods` Services, spread over three nodes
in two zones), and the controllers as the daemon runs them (`run_controllers`), two ways side by
side: with the controllers' memos, as the loop keeps them (ControllerMemos: a pass looks at what
the snapshot's change log says changed), and without (every object, every pass). For each count:

* `apply_s`: the n Services applied as `kubewire apply` applies them (validated, defaulted,
  ClusterIPs allocated, one transaction);

then, after the controllers have settled (untimed):

* `steady_pass_s`: one pass of every controller over a fresh snapshot in which nothing changed
  (median of 5);
* `readiness_to_slice_ms`: a pod's Ready condition flipped (written as its kubelet writes it),
  then what the loop does after an agent write: snapshot, controller passes until one has nothing
  to write, each pass's writes stored; median and worst of `flips` flips, alternating
  ready/not-ready over different pods. The daemon does the same work after every status write
  (daemon/loop.py), before kube-proxy sees the slice.
"""

from __future__ import annotations

import copy
import gc
import random
import statistics
import tempfile
import time
from pathlib import Path

from kubewire.api.loader import Document
from kubewire.controllers.types import Op
from kubewire.daemon import GC_THRESHOLDS
from kubewire.daemon.loop import ControllerMemos, run_controllers
from kubewire.store.apply import apply_documents
from kubewire.store.db import Store

NAMESPACE = "bench"


def objects(n: int, pods: int) -> list[dict]:
    """Nodes, the namespace, n Services (one TCP port, selector app=<name>) and their pods."""
    out: list[dict] = []
    for i, zone in enumerate(("zone-a", "zone-a", "zone-b")):
        out.append({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": f"node-{i + 1}", "labels": {"topology.kubernetes.io/zone": zone}},
                    "status": {"allocatable": {"cpu": "2", "pods": "110"},
                               "conditions": [{"type": "Ready", "status": "True"}]}})  # fmt: skip
    out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for i in range(n):
        name = f"svc-{i:05d}"
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"type": "ClusterIP", "selector": {"app": name},
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})  # fmt: skip
    for i in range(min(pods, n)):
        name = f"svc-{i:05d}"
        ip = f"10.244.{i // 250}.{i % 250 + 2}"
        out.append({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"{name}-pod", "namespace": NAMESPACE, "labels": {"app": name}},
                    "spec": {"nodeName": f"node-{i % 3 + 1}",
                             "containers": [{"name": "c", "image": "agnhost", "ports": [{"containerPort": 8080}]}]},
                    "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                               "conditions": [{"type": "Ready", "status": "True"}]}})  # fmt: skip
    return out


def settle(store: Store, rng: random.Random, memo: ControllerMemos | None, passes: int = 20) -> int:
    """Controller passes, each one's writes stored, until one has nothing to write: the passes run."""
    for i in range(1, passes + 1):
        ops = run_controllers(store.snapshot(), rng, memo)
        if not ops:
            return i
        store.write(ops)
    raise RuntimeError(f"the controllers did not settle in {passes} passes")


def measure(n: int, pods: int, flips: int, memo: ControllerMemos | None) -> dict:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="kw-bench-controllers-") as d:
        store = Store(str(Path(d) / "state.db"))
        try:
            objs = objects(n, pods)
            store.write([Op("create", o) for o in objs if o["kind"] != "Service"])
            docs = []
            for i, o in enumerate(o for o in objs if o["kind"] == "Service"):
                docs.append(Document("<bench>", i, o))  # ClusterIPs allocated, as `kubewire apply` does
            t0 = time.perf_counter()
            apply_documents(store, docs)  # validation, defaulting, allocation, one transaction
            apply_s = time.perf_counter() - t0
            settle(store, rng, memo)
            slices = len(store.snapshot().index("EndpointSlice"))
            gc.collect()
            steady = []
            for _ in range(5):
                t0 = time.perf_counter()
                ops = run_controllers(store.snapshot(), rng, memo)
                steady.append(time.perf_counter() - t0)
                if ops:
                    raise RuntimeError(f"a settled cluster wrote {len(ops)} objects")
            flip_ms, passes = [], []
            for k in range(flips):
                pod = copy.deepcopy(store.get("Pod", NAMESPACE, f"svc-{(k * 7919) % min(pods, n):05d}-pod"))
                cond = pod["status"]["conditions"][0]
                cond["status"] = "False" if cond["status"] == "True" else "True"
                store.write([Op("status", pod)])  # as the kubelet writes it
                t0 = time.perf_counter()
                passes.append(settle(store, rng, memo))
                flip_ms.append((time.perf_counter() - t0) * 1000)
            return {"services": n, "pods": min(pods, n), "slices": slices, "apply_s": round(apply_s, 3),
                    "steady_pass_s": round(statistics.median(steady), 4),
                    "readiness_to_slice_ms": {"p50": round(statistics.median(flip_ms), 1), "max": round(max(flip_ms), 1)},
                    "passes": max(passes)}  # fmt: skip
        finally:
            store.close()


def run_bench(counts: list[int], pods: int = 500, flips: int = 20, log=print) -> dict:  # noqa: ANN001
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)  # the loop's collector settings
    try:
        rows = []
        for n in counts:
            for label, memo in (("incremental (the loop's)", ControllerMemos()), ("every object every pass", None)):
                log(f"{n} Services, {label} ...")
                rows.append({"controllers": label, **measure(n, pods, flips, memo)})
    finally:
        gc.set_threshold(*thresholds)
    return {"started": started, "pods": pods, "flips": flips,
            "rows": rows}
