"""`kubewire bench ingress`: what the north-south path costs a request, hop by hop, side by side.

One cluster (3 nodes, 2 zones), one echo pod behind a ClusterIP Service, a LoadBalancer Service and an
Ingress (host bench.test). wrk, in the internet namespace, drives each target in turn with the same
load, with keep-alive connections and with a new connection per request:

  pod           the echo pod's address, routed from the internet (the bench adds a route for the pod
                network in cloud-lb: the path without any translation)
  nodeport      a node's address and the Service's NodePort (+ kube-proxy's DNAT on the node)
  lb            the LoadBalancer address (+ the cloud load balancer's DNAT to a healthy node)
  nginx pod     an ingress-nginx pod's address, port 80 (+ nginx, without LB and NodePort)
  ingress       the ingress controller's LoadBalancer address, port 80: the full path
                (internet -> cloud-lb -> NodePort -> nginx -> pod)

Latency is wrk's per-request latency distribution (p50/p99), throughput its requests per second.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

from kubewire.api.loader import load_text
from kubewire.cluster.config import ClusterConfig, NodeConfig
from kubewire.daemon import lifecycle
from kubewire.kernel import ip as kip
from kubewire.kernel.nsswitch import write_sysctls
from kubewire.kernel.run import in_netns, run
from kubewire.store.apply import apply_documents

HOST = "bench.test"
MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: bench}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      containers:
      - name: echo
        image: registry.k8s.io/e2e-test-images/agnhost:2.52
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: bench}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 8080, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo-lb, namespace: bench}}
spec:
  type: LoadBalancer
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: echo, namespace: bench}}
spec:
  ingressClassName: nginx
  rules:
  - host: {HOST}
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: echo
            port: {{number: 8080}}
"""

WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format('{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}\\n', summary.requests, summary.duration,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


@dataclass
class Row:
    target: str
    hops: str
    mode: str  # keepalive | new
    connections: int
    requests: int
    rps: float
    p50_us: int
    p90_us: int
    p99_us: int
    errors: int


def _ready(h: lifecycle.Handle) -> bool:
    pods = [p for p in h.store.list("Pod") if p["metadata"].get("namespace") in ("bench", "ingress-nginx")]
    return len(pods) == 3 and all(any(c["type"] == "Ready" and c["status"] == "True"
                                      for c in p.get("status", {}).get("conditions", [])) for p in pods)


def _lb_ip(h: lifecycle.Handle, ns: str, name: str) -> str | None:
    s = h.store.get("Service", ns, name) or {}
    ing = s.get("status", {}).get("loadBalancer", {}).get("ingress") or []
    return ing[0]["ip"] if ing else None


def _curl_ok(netns: str, url: str) -> bool:
    r = run(in_netns(netns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", "-H", f"Host: {HOST}",
                             url]), check=False)
    return r.stdout.strip() == "200"


def wrk(netns: str, url: str, mode: str, connections: int, seconds: float, script: str) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", script, "-H", f"Host: {HOST}"]
    if mode == "new":
        argv += ["-H", "Connection: close"]
    r = run(in_netns(netns, [*argv, url]), timeout=seconds + 30)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_bench(seconds: float = 5.0, connections: int = 4, modes: tuple[str, ...] = ("keepalive", "new"),
              log=print) -> dict:  # noqa: ANN001
    name = f"kwbi{int(time.time()) % 100000}"
    cfg = ClusterConfig(name=name, nodes=[NodeConfig(f"{name}-worker", "us-east-1a", "us-east-1"),
                                          NodeConfig(f"{name}-worker2", "us-east-1b", "us-east-1"),
                                          NodeConfig(f"{name}-worker3", "us-east-1a", "us-east-1")])
    rows: list[Row] = []
    try:
        log(f"cluster {name}: up, ingress-nginx and an echo pod ...")
        h = lifecycle.up(cfg)
        apply_documents(h.store, load_text(MANIFESTS, "<bench ingress>"), service_cidr=cfg.service_subnet)
        deadline = time.time() + 90
        while time.time() < deadline and not (_ready(h) and _lb_ip(h, "ingress-nginx", "ingress-nginx-controller")
                                               and _lb_ip(h, "bench", "echo-lb")):
            time.sleep(0.2)
        if not _ready(h):
            raise RuntimeError("the bench pods did not become ready within 90 s")
        t = h.topo
        # the "direct" baseline: the pod network routed from the edge (kubewire's own edge never does this)
        kip.batch([f"route add {cfg.pod_subnet} via {t.transit_fabric_ip}"], t.cloudlb_ns)
        write_sysctls(t.internet_ns, {"net/ipv4/ip_local_port_range": "10000 65000", "net/ipv4/tcp_tw_reuse": "1"})
        echo = next(p for p in h.store.list("Pod", "bench"))
        nginx_pod = next(p for p in h.store.list("Pod", "ingress-nginx"))
        svc = h.store.get("Service", "bench", "echo-lb") or {}
        node_port = svc["spec"]["ports"][0]["nodePort"]
        node_ip = t.node(echo["spec"]["nodeName"]).ip
        targets = [
            ("pod", "internet → pod (routed, no translation)", f"http://{echo['status']['podIP']}:8080/"),
            ("nodeport", "internet → node:NodePort → pod (kube-proxy DNAT)", f"http://{node_ip}:{node_port}/"),
            ("lb", "internet → cloud LB → node:NodePort → pod", f"http://{_lb_ip(h, 'bench', 'echo-lb')}/"),
            ("nginx pod", "internet → nginx pod → pod", f"http://{nginx_pod['status']['podIP']}:80/"),
            ("ingress", "internet → cloud LB → node:NodePort → nginx → pod (full path)",
             f"http://{_lb_ip(h, 'ingress-nginx', 'ingress-nginx-controller')}/"),
        ]
        deadline = time.time() + 30
        while time.time() < deadline and not all(_curl_ok(t.internet_ns, u) for _, _, u in targets):
            time.sleep(0.3)
        script = f"{h.dir}/tmp/wrk-report.lua"
        os.makedirs(os.path.dirname(script), exist_ok=True)
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)
        for mode in modes:
            for label, hops, url in targets:
                wrk(t.internet_ns, url, mode, connections, 1.0, script)  # warm-up: connections, caches
                log(f"  {mode:9} {label:9} {url} ...")
                r = wrk(t.internet_ns, url, mode, connections, seconds, script)
                errors = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
                if mode == "new":  # wrk counts the server closing the connection as a read error
                    errors -= r["read"]
                rows.append(Row(label, hops, mode, connections, r["requests"],
                                round(r["requests"] / (r["duration_us"] / 1e6), 1), r["p50"], r["p90"], r["p99"],
                                errors))
    finally:
        log(f"cluster {name}: down")
        lifecycle.down(name)
    by = {(r.mode, r.target): r for r in rows}
    overhead = {m: by[(m, "ingress")].p50_us - by[(m, "pod")].p50_us for m in modes
                if (m, "ingress") in by and (m, "pod") in by}
    return {"seconds": seconds, "connections": connections, "rows": [asdict(r) for r in rows],
            "ingress_overhead_p50_us": overhead}
