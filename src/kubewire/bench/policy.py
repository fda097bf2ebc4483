"""`kubewire bench policy`: what NetworkPolicy enforcement costs, measured on a real 3-node cluster.

- Programming: 10, 100 and 1000 policies over 100 pods (10 namespaces, every pod selected by a
  tenth of its namespace's policies, half of them isolating egress too; peers by pod and namespace
  selectors, ipBlocks with excepts, numeric, ranged and named ports). With the control loop paused,
  each node's agent (the very class the loop runs) syncs from scratch: the cluster-wide resolution
  once, then per node the plan and its `nft -f` transaction. Then one policy changes and each node
  syncs again (an update transaction). Then, with the loop running, the time from the store commit
  of all the policies to the last node enforcing them (a sentinel pod on the last node the loop
  visits, denied by a policy committed in the same apply, probed every 10 ms).
- Probing: `kubewire probe` (the CLI, start-up included) over the 9-pod x 2-port matrix of
  namespaces x, y, z (pods a, b, c; one port denied to some) and over the 100 bench pods.
- New-connection latency (connect and first byte, HTTP to the echo server on another node) from a
  client pod to a server pod: no policy at all; the 1000 policies, the allowing rule last in both
  pods' chains; and 1000 policies that all select the server (its chain ~1000 rules long).
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubewire.api.loader import Document
from kubewire.cluster.addressing import pod_netns
from kubewire.cluster.config import ClusterConfig, NodeConfig
from kubewire.daemon import lifecycle
from kubewire.kernel import nft
from kubewire.kernel.nsswitch import entered
from kubewire.kernel.run import in_netns, run
from kubewire.netpol.agent import PolicyAgent
from kubewire.policy.model import view_of_snapshot
from kubewire.policy.nftables import render_update
from kubewire.policy.plan import NodeRuleset, plan_node, resolve
from kubewire.store.apply import apply_documents, delete_objects

PROBE = Path(__file__).with_name("latency_probe.py")
NAMESPACES = 10
PODS = 100
TIERS = ("web", "api", "db")
BENCH_PORT = 8080


# --- the cluster's objects --------------------------------------------------------------------------


def _pod(name: str, ns: str, labels: dict, node: str, ports: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "agnhost", "ports": ports}]}}


def workload(nodes: list[str]) -> list[dict]:
    """100 bench pods (pod i: namespace bench-(i % 10), app app-(i // 10), on node i % 3), the 9 probe
    pods x/a..z/c, the latency client and server, and the sentinel on the last node."""
    docs: list[dict] = []
    http = [{"name": "http", "containerPort": BENCH_PORT}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]
    for i in range(NAMESPACES):
        docs.append({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": f"bench-{i}", "labels": {"team": f"t{i % 7}"}}})
    for i in range(PODS):
        docs.append(_pod(f"p{i:03d}", f"bench-{i % NAMESPACES}", {"app": f"app-{i // NAMESPACES}", "tier": TIERS[i % 3]},
                         nodes[i % len(nodes)], http))
    for j, ns in enumerate("xyz"):
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"ns": ns}}})
        for k, p in enumerate("abc"):
            docs.append(_pod(p, ns, {"pod": p}, nodes[(j * 3 + k) % len(nodes)],
                             [{"name": "serve-80-tcp", "containerPort": 80}, {"name": "serve-81-tcp", "containerPort": 81}]))
    docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lat"}})
    docs.append(_pod("client", "bench-1", {"app": "app-0", "tier": "web", "role": "client"}, nodes[1], http))
    docs.append(_pod("server", "bench-0", {"app": "app-0", "tier": "db", "role": "server"}, nodes[0], http))
    docs.append(_pod("sentinel", "lat", {"role": "sentinel"}, nodes[-1], http))
    return docs


def policies(n: int, worst: bool = False) -> list[dict]:
    """n policies over the bench pods, and the two that let the latency client reach the server (named
    to sort last in their namespaces: every new connection walks every rule before them). worst:
    all n select the server."""
    out = []
    for k in range(n):
        ns = "bench-0" if worst else f"bench-{k % NAMESPACES}"
        selector = {"matchLabels": {"role": "server"}} if worst else {"matchLabels": {"app": f"app-{(k // NAMESPACES) % 10}"}}
        spec: dict = {
            "podSelector": selector,
            "policyTypes": ["Ingress", "Egress"] if k % 2 else ["Ingress"],
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"tier": TIERS[k % 3]}}},
                         {"namespaceSelector": {"matchLabels": {"team": f"t{k % 7}"}},
                          "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}}],
                "ports": [{"port": 9000 + k % 100, "protocol": "TCP"},
                          {"port": 10000 + k % 50, "endPort": 10100 + k % 50, "protocol": "TCP"},
                          {"port": "dns", "protocol": "UDP"}],
            }],
        }
        if k % 2:
            spec["egress"] = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [f"10.{k % 200}.0.0/16"]}}],
                               "ports": [{"port": 53, "protocol": "UDP"}, {"port": "dns", "protocol": "UDP"}]}]
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": f"pol-{k:04d}", "namespace": ns}, "spec": spec})
    if n:
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "zz-server-from-client", "namespace": "bench-0"},
                    "spec": {"podSelector": {"matchLabels": {"role": "server"}},
                             "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}],
                                          "ports": [{"port": "http"}]}]}})
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "zz-client-to-server", "namespace": "bench-1"},
                    "spec": {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                             "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "server"}}}],
                                         "ports": [{"port": BENCH_PORT}]}]}})
    return out


PROBE_POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "probe-81", "namespace": "x"},
                "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]},
                                                        {"from": [{"podSelector": {}}], "ports": [{"port": 81}]}]}}
SENTINEL = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "sentinel", "namespace": "lat"}, "spec": {"podSelector": {}}}


# --- results ------------------------------------------------------------------------------------------------


@dataclass
class ProgramRow:
    policies: int
    resolve_s: float  # cluster-wide: who each policy selects, each rule's peers (once per change, all nodes)
    node_plan_s: list[float]  # per node: that node's rules
    node_nft_s: list[float]  # per node: the whole-table `nft -f` transaction
    node_total_s: list[float]  # per node, alone: resolve + plan + render + nft (what one agent's sync costs)
    update_s: list[float]  # per node: one policy's port changed, whole sync (fingerprint ... nft)
    update_lines: int
    chains: int  # on the busiest node
    rules: int
    sets: int
    elements: int
    payload_bytes: int
    apply_to_enforced_s: float | None = None  # control loop: store commit -> the last node enforces

    @property
    def per_node_max_s(self) -> float:
        return max(self.node_total_s)


@dataclass
class ProbeRow:
    matrix: str
    connections: int
    connected: int
    cli_wall_s: float  # the whole `kubewire probe` process, Python start-up included
    connect_s: float  # as the probe reports it: planning to last answer


@dataclass
class LatencyRow:
    scenario: str
    server_chain_rules: int
    client_chain_rules: int
    connect_p50_us: float
    connect_p90_us: float
    connect_p99_us: float
    first_byte_p50_us: float
    first_byte_p99_us: float
    errors: int


@dataclass
class Results:
    program: list[ProgramRow] = field(default_factory=list)
    probe: list[ProbeRow] = field(default_factory=list)
    latency: list[LatencyRow] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"program": [asdict(r) | {"per_node_max_s": r.per_node_max_s} for r in self.program],
                "probe": [asdict(r) for r in self.probe], "latency": [asdict(r) for r in self.latency]}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1) if xs else 0.0


# --- steps -------------------------------------------------------------------------------------------------


def _commit(h, docs: list[dict]) -> float:  # noqa: ANN001
    apply_documents(h.store, [Document("<bench>", i, d) for i, d in enumerate(docs)])
    return time.perf_counter()


def _set_policies(h, docs: list[dict]) -> float:  # noqa: ANN001
    """Exactly these bench policies (the probe policy stays): one delete, one apply."""
    want = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs}
    gone = [("NetworkPolicy", o["metadata"]["namespace"], o["metadata"]["name"]) for o in h.store.list("NetworkPolicy")
            if (o["metadata"]["namespace"], o["metadata"]["name"]) not in want and o["metadata"]["name"] != "probe-81"]
    if gone:
        delete_objects(h.store, gone)
    return _commit(h, docs) if docs else time.perf_counter()


def _wait_ready(h, n: int, timeout: float = 180) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        pods = h.store.list("Pod")
        ready = [p for p in pods if p.get("status", {}).get("podIP") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
        if len(ready) >= n:
            return
        time.sleep(0.2)
    raise RuntimeError(f"only {len(ready)} of {n} pods became ready")


def program(h, n: int, log) -> ProgramRow:  # noqa: ANN001
    """With the control loop paused: every node's agent syncs from nothing, then after one change."""
    _set_policies(h, policies(n))
    snap = h.store.snapshot()
    nodes = list(h.topo.nodes)
    # a clean slate in every node (what a fresh agent finds after `down`/`up`)
    for node in nodes:
        nft.apply(node.netns, render_update(None, NodeRuleset(node.name)))
    t0 = time.perf_counter()
    res = resolve(view_of_snapshot(snap))
    resolve_s = time.perf_counter() - t0
    plans, nfts, totals, sizes = [], [], [], []
    busiest: NodeRuleset | None = None
    for node in nodes:
        t1 = time.perf_counter()
        rs = plan_node(res, node.name, (node.ip, node.bridge_ip))
        text = render_update(None, rs)
        t2 = time.perf_counter()
        nft.apply(node.netns, text)
        t3 = time.perf_counter()
        plans.append(round(t2 - t1, 4))
        nfts.append(round(t3 - t2, 4))
        totals.append(round(resolve_s + t3 - t1, 4))
        sizes.append(len(text))
        if busiest is None or rs.counts()["rules"] > busiest.counts()["rules"]:
            busiest = rs
    # the agents themselves (fingerprint, view, resolution shared through the memo, plan, transaction):
    # adopt the tables just loaded, then one policy's port changes
    agents = [PolicyAgent(node) for node in nodes]
    for a in agents:
        a.sync(snap)
    changed = policies(n)[0]
    changed["spec"]["ingress"][0]["ports"][0]["port"] = 9999
    _commit(h, [changed])
    snap2 = h.store.snapshot()
    updates, lines = [], 0
    for a in agents:  # the first one pays the cluster-wide part (once per change, shared through the memo)
        t0 = time.perf_counter()
        old = a.applied
        a.sync(snap2)
        updates.append(round(time.perf_counter() - t0, 4))
        if old is not None and a.applied is not None:
            lines = max(lines, len(render_update(old, a.applied).splitlines()))
    counts = busiest.counts() if busiest else {"chains": 0, "rules": 0, "sets": 0, "elements": 0}
    log(f"  {n} policies: resolve {resolve_s:.3f}s, per node plan {plans} nft {nfts}; update {updates}")
    return ProgramRow(n, round(resolve_s, 4), plans, nfts, totals, updates, lines, counts["chains"], counts["rules"],
                      counts["sets"], counts["elements"], max(sizes))


def _connects(netns: str, ip: str, port: int, timeout: float = 0.05) -> bool:
    import socket

    with entered(netns):
        s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def apply_to_enforced(h, n: int, timeout: float = 30.0) -> float:  # noqa: ANN001
    """Control loop running: commit n policies and the sentinel's deny in one apply; seconds until the
    sentinel (on the node the loop visits last) refuses new connections from x/a (which no policy
    isolates for egress, so only the sentinel's node can refuse)."""
    sentinel = h.store.get("Pod", "lat", "sentinel")
    client = h.store.get("Pod", "x", "a")
    src, ip = pod_netns(h.cfg.name, client["metadata"]["uid"]), sentinel["status"]["podIP"]
    _set_policies(h, [])
    deadline = time.time() + timeout
    while not _connects(src, ip, BENCH_PORT, 0.5):
        if time.time() > deadline:
            raise RuntimeError("the sentinel is not reachable with no policy")
        time.sleep(0.05)
    time.sleep(1.5)  # the loop settles (a commit during a step waits for the next resync)
    t0 = _commit(h, policies(n) + [SENTINEL])
    while _connects(src, ip, BENCH_PORT):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{n} policies not enforced within {timeout}s")
        time.sleep(0.01)
    return round(time.perf_counter() - t0, 3)


_CONNECTIONS = re.compile(r"^(\d+) connections in ([\d.]+)s", re.M)
_CONNECTED = re.compile(r"^(\d+)/(\d+) connected", re.M)


def probe(h, label: str, args: list[str]) -> ProbeRow:  # noqa: ANN001
    t0 = time.perf_counter()
    r = run([sys.executable, "-m", "kubewire.cli.main", "--name", h.cfg.name, "probe", *args], timeout=600)
    wall = time.perf_counter() - t0
    m, c = _CONNECTIONS.search(r.stdout), _CONNECTED.search(r.stdout)
    if m is None or c is None:
        raise RuntimeError(f"kubewire probe printed no summary:\n{r.stdout[-2000:]}")
    return ProbeRow(label, int(m.group(1)), int(c.group(1)), round(wall, 3), float(m.group(2)))


def _chain_rules(rs: NodeRuleset | None, ip: str, direction: str) -> int:
    """Rules a new connection can walk in a pod's chain (its own and the rules chain it jumps to)."""
    if rs is None:
        return 0
    chains = {c.name: c for c in rs.chains}
    name = dict(rs.ingress if direction == "ingress" else rs.egress).get(ip)
    if name is None:
        return 0
    own = chains[name]
    target = own.rules[-1].split()[-1]
    return len(own.rules) - 1 + len(chains[target].rules) if target in chains else len(own.rules)


def latency(h, scenario: str, docs: list[dict], samples: int, log) -> LatencyRow:  # noqa: ANN001
    """Control loop paused: program every node from `docs`, then time new connections."""
    _set_policies(h, docs)
    snap = h.store.snapshot()
    res = resolve(view_of_snapshot(snap))
    plans = {}
    for node in h.topo.nodes:
        rs = plan_node(res, node.name, (node.ip, node.bridge_ip))
        nft.apply(node.netns, render_update(None, rs))
        plans[node.name] = rs
    client, server = h.store.get("Pod", "bench-1", "client"), h.store.get("Pod", "bench-0", "server")
    target = f"{server['status']['podIP']}:{BENCH_PORT}"
    src = pod_netns(h.cfg.name, client["metadata"]["uid"])
    r = run(in_netns(src, [sys.executable, str(PROBE), str(samples), target]), timeout=900)
    data = json.loads(r.stdout)
    s = data["samples"][target]
    row = LatencyRow(scenario,
                     _chain_rules(plans.get(server["spec"]["nodeName"]), server["status"]["podIP"], "ingress"),
                     _chain_rules(plans.get(client["spec"]["nodeName"]), client["status"]["podIP"], "egress"),
                     pct(s["connect"], 50), pct(s["connect"], 90), pct(s["connect"], 99),
                     pct(s["first_byte"], 50), pct(s["first_byte"], 99), data["errors"])
    log(f"  latency, {scenario}: connect p50 {row.connect_p50_us} us, p99 {row.connect_p99_us} us")
    return row


def run_bench(counts: list[int], samples: int, big_matrix: bool = True, log=print) -> dict:  # noqa: ANN001
    name = f"kwbp{int(time.time()) % 100000}"
    cfg = ClusterConfig(name=name, nodes=[NodeConfig(f"{name}-{z}", "zone-a", "bench") for z in ("a", "b", "c")])
    out = Results()
    try:
        log(f"cluster {name}: 3 nodes, {PODS} bench pods + 9 probe pods + client, server, sentinel")
        h = lifecycle.up(cfg)
        docs = workload([n.name for n in cfg.nodes])
        _commit(h, docs)
        _wait_ready(h, sum(1 for d in docs if d["kind"] == "Pod"))
        _commit(h, [PROBE_POLICY])
        # 1. programming, control loop paused
        lifecycle.stop_daemon(h)
        for n in counts:
            out.program.append(program(h, n, log))
        # 2. latency, control loop still paused (the tables stay as loaded)
        biggest = max(counts)
        out.latency.append(latency(h, "no policy", [], samples, log))
        out.latency.append(latency(h, f"{biggest} policies (the allowing rule last)", policies(biggest), samples, log))
        out.latency.append(latency(h, f"{biggest} policies all selecting the server", policies(biggest, worst=True),
                                   samples, log))
        # 3. with the control loop: apply -> enforced, then the probes
        lifecycle.start_daemon(h)
        for row in out.program:
            row.apply_to_enforced_s = apply_to_enforced(h, row.policies)
            log(f"  {row.policies} policies: store commit -> enforced on the last node {row.apply_to_enforced_s}s")
        time.sleep(1.5)
        out.probe.append(probe(h, "9 pods x 2 ports", ["-n", "x", "-n", "y", "-n", "z", "--port", "80", "--port", "81"]))
        log(f"  probe 9x2: {out.probe[-1]}")
        if big_matrix:
            bench_ns = [a for i in range(NAMESPACES) for a in ("-n", f"bench-{i}")]
            out.probe.append(probe(h, f"{PODS} bench pods x 1 port ({biggest} policies)",
                                   [*bench_ns, "-l", "app,!role", "--port", str(BENCH_PORT)]))
            log(f"  probe {PODS}: {out.probe[-1]}")
    finally:
        lifecycle.down(name)
    return {"cluster": {"nodes": 3, "bench_pods": PODS, "namespaces": NAMESPACES}, **out.as_dict()}
