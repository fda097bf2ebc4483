"""`kubewire bench dns`: queries per second and latency of cluster DNS, measured with dnsperf in
the namespaces of a real cluster.

Servers under test, each pinned to one CPU (the last one; dnsperf gets CPU 0):
- kubewire's DNS server and unbound side by side, as host processes in one pod namespace of the
  bench cluster, serving the same records: ours reads the cluster's records file (as the coredns
  pods do), unbound gets a `local-data` line per Service A record of that same file. Both forward
  other names to the internet's public DNS and cache what they forward (unbound always caches;
  ours runs with --cache, as kubeadm's Corefile has `cache 30`). No query logs. Measured twice:
  with dnsperf in their own namespace over loopback (the server alone), and from a client pod on
  the same node (pod -> cni0 bridge and the node's netfilter -> pod), as a pod would ask.
- the cluster path as deployed, from the client pod: the two coredns pods behind the kube-dns VIP
  (through kube-proxy's DNAT; they write a query log line per query), and the NodeLocal DNSCache on
  the client's node (169.254.20.10, NOTRACK; misses forwarded over TCP to the VIP).

On a 2-CPU machine the client side (dnsperf plus the kernel's forwarding of every packet) often
saturates first: each row also reports the server processes' CPU use over the run and the replies
per CPU-second of the server, which is the per-core rate whether or not the server was the limit.

Two query mixes: cluster names (the A record of every Service, shuffled) and external names through
the search list (what glibc sends for `getaddrinfo("api.stripe.com")` in a pod with ndots:5: A and
AAAA for the three search-domain expansions, then for the name itself: 8 queries per lookup).

Each row is three dnsperf runs: a short warm-up (discarded), a saturating run (queries/s, lost,
average and standard deviation of latency as dnsperf reports them) and a latency run at a fixed
offered load with `-v` (every reply's latency), from which p50 and p99 are computed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from kubewire.api.loader import Document
from kubewire.cluster.config import ClusterConfig, ExternalHost, NodeConfig
from kubewire.daemon import lifecycle
from kubewire.kernel import background
from kubewire.kernel.nsswitch import entered
from kubewire.kernel.process import proc_stats
from kubewire.kernel.run import in_netns, run
from kubewire.store.apply import apply_documents
from kubewire.topology.plan import NODE_LOCAL_DNS_IP

COREDNS_PUBLISHED_QPS_PER_CORE = 16_800  # CoreDNS's published figure: internal names, 2 vCPUs
TARGET_QPS_PER_CORE = 17_000
EXTERNAL = ("api.stripe.com", "hooks.stripe.com", "api.github.com", "s3.amazonaws.com")
UNBOUND_PORT = 5353


@dataclass
class Row:
    client: str  # "loopback (server alone)" | "pod -> pod" | "pod -> cluster DNS"
    mix: str  # "cluster names" | "external via search list"
    server: str
    address: str
    cpus: str
    queries_per_lookup: int
    qps: float = 0.0
    lookups_per_s: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    avg_ms: float = 0.0  # dnsperf's average latency in the saturating run
    stddev_ms: float = 0.0  # dnsperf's latency standard deviation in the saturating run
    latency_offered_qps: float = 0.0  # -Q of the latency run
    latency_achieved_qps: float = 0.0
    latency_samples: int = 0
    p50_ms: float = 0.0  # from every reply's latency (-v) in the latency run
    p99_ms: float = 0.0
    latency_timeouts: int = 0
    server_cpu_s: float = 0.0  # CPU time the server process(es) used during the saturating run
    server_cpu_pct: float = 0.0  # ... as a share of one core over the run
    qps_per_core: float = 0.0  # replies per CPU-second of the server: the per-core rate, noise or not


# ---------------------------------------------------------------------------------------------
# dnsperf
# ---------------------------------------------------------------------------------------------


def parse_summary(text: str) -> dict:
    """dnsperf's statistics block."""
    def num(label: str) -> float:
        m = re.search(rf"^\s*{re.escape(label)}:\s+([0-9.]+)", text, re.M)
        return float(m.group(1)) if m else 0.0

    rcodes: dict[str, int] = {}
    m = re.search(r"^\s*Response codes:\s+(.*)$", text, re.M)
    if m:
        for code, n in re.findall(r"([A-Z]+) (\d+) \(", m.group(1)):
            rcodes[code] = int(n)
    avg = re.search(r"^\s*Average Latency \(s\):\s+([0-9.]+)", text, re.M)
    return {"sent": int(num("Queries sent")), "completed": int(num("Queries completed")),
            "lost": int(num("Queries lost")), "qps": num("Queries per second"), "rcodes": rcodes,
            "avg_s": float(avg.group(1)) if avg else 0.0, "stddev_s": num("Latency StdDev (s)"),
            "runtime_s": num("Run time (s)")}


def parse_verbose(text: str) -> tuple[list[float], int]:
    """Every reply's latency in seconds from `dnsperf -v` lines (`> RCODE name type latency`), and
    the number of timeouts (`> T ...`)."""
    lat: list[float] = []
    timeouts = 0
    for line in text.splitlines():
        if not line.startswith("> "):
            continue
        parts = line.split()
        if parts[1] == "T":
            timeouts += 1
            continue
        try:
            lat.append(float(parts[-1]))
        except ValueError:
            continue
    return lat, timeouts


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else 0.0


@dataclass
class Dnsperf:
    netns: str  # the client pod's network namespace
    cpu: int
    clients: int
    outstanding: int

    def argv(self, server: str, port: int, datafile: str, seconds: float, extra: list[str]) -> list[str]:
        return in_netns(self.netns, ["taskset", "-c", str(self.cpu), "dnsperf", "-s", server, "-p", str(port),
                                     "-d", datafile, "-l", f"{seconds:g}", "-c", str(self.clients),
                                     "-q", str(self.outstanding), "-t", "2", *extra])

    def run(self, server: str, port: int, datafile: str, seconds: float, extra: tuple[str, ...] = ()) -> str:
        r = run(self.argv(server, port, datafile, seconds, list(extra)), check=False, timeout=seconds + 60)
        if r.code != 0:
            raise RuntimeError(f"dnsperf exited {r.code}: {r.stderr.strip()[:500]}")
        return r.stdout + r.stderr


def cpu_seconds(pids: list[int]) -> float:
    return sum(proc_stats(p)[1] for p in pids)


def measure(perf: Dnsperf, row: Row, server: str, port: int, datafile: str, seconds: float,
            latency_seconds: float, latency_qps: float, pids: list[int]) -> Row:
    perf.run(server, port, datafile, 1.0)  # warm-up: templates rendered, caches filled, ARP resolved
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    s = parse_summary(perf.run(server, port, datafile, seconds))
    used = cpu_seconds(pids) - cpu0
    row.server_cpu_s = round(used, 2)
    row.server_cpu_pct = round(100 * used / max(1e-9, s.get("runtime_s") or time.monotonic() - t0), 1)
    row.qps_per_core = round(s["completed"] / used, 1) if used > 0 else 0.0
    row.qps, row.sent, row.completed, row.lost, row.rcodes = round(s["qps"], 1), s["sent"], s["completed"], s["lost"], s["rcodes"]
    row.lookups_per_s = round(s["qps"] / row.queries_per_lookup, 1)
    row.avg_ms, row.stddev_ms = round(s["avg_s"] * 1000, 3), round(s["stddev_s"] * 1000, 3)
    offered = max(100.0, min(latency_qps, s["qps"] * 0.5))
    out = perf.run(server, port, datafile, latency_seconds, ("-v", "-Q", f"{offered:.0f}"))
    lat, timeouts = parse_verbose(out)
    row.latency_offered_qps = round(offered)
    row.latency_achieved_qps = round(parse_summary(out)["qps"], 1)
    row.latency_samples, row.latency_timeouts = len(lat), timeouts
    row.p50_ms, row.p99_ms = round(percentile(lat, 50) * 1000, 3), round(percentile(lat, 99) * 1000, 3)
    return row


# ---------------------------------------------------------------------------------------------
# the bench cluster
# ---------------------------------------------------------------------------------------------


def bench_config(name: str) -> ClusterConfig:
    hosts = [ExternalHost(n, f"198.51.100.{20 + i}", [80]) for i, n in enumerate(EXTERNAL)]
    return ClusterConfig(name=name, nodes=[NodeConfig(f"{name}-a", "zone-a", "bench"),
                                           NodeConfig(f"{name}-b", "zone-a", "bench")],
                         external_hosts=hosts, node_local_dns=True)


def bench_documents(node: str, services: int) -> list[Document]:
    docs: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}]
    for i in range(services):
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i:05d}", "namespace": "bench"},
                     "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    for pod in ("dnsperf", "dns-servers"):
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": "bench"},
                     "spec": {"nodeName": node, "containers": [{"name": "sh", "image": "busybox",
                                                                 "command": ["sleep", "infinity"]}]}})
    return [Document("<bench dns>", i, d) for i, d in enumerate(docs)]


def cluster_names(records: dict) -> list[tuple[str, str]]:
    """(FQDN, ClusterIP) of every Service with a ClusterIP in a records file."""
    domain = records.get("domain", "cluster.local")
    out = []
    for s in records["services"]:
        ip = s.get("spec", {}).get("clusterIP")
        if ip and ip != "None" and s.get("spec", {}).get("type", "ClusterIP") != "ExternalName":
            out.append((f"{s['metadata']['name']}.{s['metadata'].get('namespace', 'default')}.svc.{domain}", ip))
    return sorted(out)


def search_list_queries(name: str, namespace: str, domain: str = "cluster.local") -> list[str]:
    """What glibc asks for `name` (fewer dots than ndots:5) in a pod of `namespace`, in order: each
    search domain, then the name as given; A and AAAA together for each."""
    names = [f"{name}.{namespace}.svc.{domain}", f"{name}.svc.{domain}", f"{name}.{domain}", name]
    return [f"{n} {t}" for n in names for t in ("A", "AAAA")]


def unbound_conf(workdir: str, listen: list[str], port: int, names: list[tuple[str, str]], upstream: str,
                 domain: str, ttl: int) -> str:
    lines = [
        "server:",
        "  verbosity: 0",
        "  num-threads: 1",
        *[f"  interface: {addr}@{port}" for addr in listen],
        f"  port: {port}",
        "  do-ip6: no",
        "  do-daemonize: no",
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{workdir}"',
        f'  pidfile: "{workdir}/unbound.pid"',
        "  use-syslog: no",
        '  logfile: ""',
        "  access-control: 0.0.0.0/0 allow",
        '  module-config: "iterator"',
        "  so-reuseport: no",
        "  qname-minimisation: no",
        f'  local-zone: "{domain}." static',
        f'  local-data: "{domain}. {ttl} IN SOA ns.dns.{domain}. hostmaster.{domain}. 1 7200 1800 86400 {ttl}"',
    ]
    lines += [f'  local-data: "{n}. {ttl} IN A {ip}"' for n, ip in names]
    lines += ["remote-control:", "  control-enable: no", "forward-zone:", '  name: "."', f"  forward-addr: {upstream}"]
    return "\n".join(lines) + "\n"


def answers(netns: str, server: str, port: int, name: str) -> bool:
    """One query from inside `netns`: does `server` answer NOERROR for name's A record?"""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)  # dnspython waits with a timeout only on a nonblocking socket
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), server, port=port, timeout=0.5, sock=sock)
        return r.rcode() == dns.rcode.NOERROR and bool(r.answer)
    except (OSError, dns.exception.DNSException):
        return False
    finally:
        sock.close()


def _wait(what: str, cond: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def _ready(p: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))


def run_bench(services: int = 1000, seconds: float = 10.0, latency_seconds: float = 5.0, latency_qps: float = 2000.0,
              clients: int = 8, outstanding: int = 100, log: Callable[[str], None] = print) -> dict:
    if not shutil.which("dnsperf") or not shutil.which("unbound"):
        raise RuntimeError("dnsperf and unbound are needed (Debian: apt-get install dnsperf unbound)")
    ncpu = os.cpu_count() or 1
    server_cpu, client_cpu = ncpu - 1, 0
    name = f"kwbdns{os.getpid() % 100000}"
    cfg = bench_config(name)
    # SIGTERM (a CI timeout, `kill`) ends the run through the finally below: servers stopped, cluster down
    old_handler = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs: list = []
    rows: list[Row] = []
    try:
        log(f"cluster {name}: up, {services} Services, client and server pods ...")
        h = lifecycle.up(cfg)
        node = cfg.nodes[0].name
        apply_documents(h.store, bench_documents(node, services), service_cidr=cfg.service_subnet)
        records_path = f"{h.dir}/dns/records.json"

        def settled() -> bool:
            pods = h.store.list("Pod", "bench") + [p for p in h.store.list("Pod", "kube-system")
                                                   if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns"]
            if len(pods) != 4 or not all(_ready(p) for p in pods):
                return False
            try:
                with open(records_path) as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                return False
            return sum(1 for s in doc["services"] if s["metadata"].get("namespace") == "bench") == services

        _wait("pods Ready and every Service in the DNS records", settled, timeout=120)
        with open(records_path) as f:
            records = json.load(f)
        names = cluster_names(records)

        def pod_rt(pod: str) -> dict:
            p = h.store.get("Pod", "bench", pod) or {}
            return h.store.runtime_get(f"pod/{p['spec']['nodeName']}/{p['metadata']['uid']}") or {}

        client_ns = pod_rt("dnsperf")["netns"]
        server_ns = pod_rt("dns-servers")["netns"]
        server_ip = (h.store.get("Pod", "bench", "dns-servers") or {})["status"]["podIP"]
        work = f"{h.dir}/bench"
        os.makedirs(work, exist_ok=True)
        rng = random.Random(42)
        shuffled = [f"{n} A" for n, _ in names]
        rng.shuffle(shuffled)
        cluster_file, external_file = f"{work}/cluster-names.txt", f"{work}/external-names.txt"
        Path(cluster_file).write_text("\n".join(shuffled) + "\n")
        Path(external_file).write_text("\n".join(q for e in EXTERNAL for q in search_list_queries(e, "bench")) + "\n")
        upstream = h.topo.internet_dns_ip
        Path(f"{work}/unbound.conf").write_text(unbound_conf(work, ["127.0.0.1", server_ip], UNBOUND_PORT, names, upstream,
                                                             cfg.dns_domain, cfg.dns_ttl))
        r = run(["unbound-checkconf", f"{work}/unbound.conf"], check=False)
        if r.code != 0:
            raise RuntimeError(f"unbound-checkconf: {r.stdout.strip()} {r.stderr.strip()}")

        log(f"servers: kubewire dns and unbound in pod bench/dns-servers ({server_ip}), pinned to CPU {server_cpu}")
        procs.append(("kubewire dns", background.start_in_netns(server_ns, [
            sys.executable, "-m", "kubewire.dns.server", "--listen", "0.0.0.0:53", "--records-file", records_path,
            "--upstream", f"{upstream}:53", "--cache", "--quiet"], f"{work}/kubewire-dns.log", str(server_cpu))))
        procs.append(("unbound", background.start_in_netns(server_ns, ["unbound", "-d", "-c", f"{work}/unbound.conf"],
                                                           f"{work}/unbound.log", str(server_cpu))))
        probe = names[0][0]
        for label, port in (("kubewire dns", 53), ("unbound", UNBOUND_PORT)):
            _wait(f"{label} answering", lambda port=port: answers(client_ns, server_ip, port, probe), timeout=30)

        # the deployed path: coredns pods and this node's NodeLocal DNSCache, pinned like the others
        coredns: list[int] = []
        for p in h.store.list("Pod", "kube-system"):
            if p["metadata"].get("labels", {}).get("k8s-app") == "kube-dns":
                rec = h.store.runtime_get(f"pod/{p['spec']['nodeName']}/{p['metadata']['uid']}") or {}
                coredns += [c["pid"] for c in rec.get("containers", {}).values() if c.get("pid")]
        nodelocal = lifecycle.host_pid(h, f"node-local-dns-{node}")
        if not nodelocal or len(coredns) != 2:
            raise RuntimeError("the coredns pods or this node's NodeLocal DNSCache are not running")
        for pid in [*coredns, nodelocal]:
            background.pin(pid, [server_cpu])
        ours_pid, unbound_pid = procs[0][1].pid, procs[1][1].pid
        dns_vip = (h.store.get("Service", "kube-system", "kube-dns") or {})["spec"]["clusterIP"]
        _wait("the kube-dns VIP answering", lambda: answers(client_ns, dns_vip, 53, probe), timeout=30)
        _wait("NodeLocal DNSCache answering", lambda: answers(client_ns, NODE_LOCAL_DNS_IP, 53, probe), timeout=30)

        perf = Dnsperf(client_ns, client_cpu, clients, outstanding)
        local = Dnsperf(server_ns, client_cpu, clients, outstanding)
        cpu = f"CPU {server_cpu}"
        vip, nl = "coredns ×2 via kube-dns VIP (query log)", "NodeLocal DNSCache (query log)"
        cluster, external = "cluster names", "external via search list"
        plan = [
            # the servers alone: dnsperf in their own namespace, over loopback
            ("loopback (server alone)", local, cluster, "kubewire dns", "127.0.0.1", 53, [ours_pid], 1, cluster_file),
            ("loopback (server alone)", local, cluster, "unbound", "127.0.0.1", UNBOUND_PORT, [unbound_pid], 1, cluster_file),
            # from a client pod on the same node: pod -> cni0 bridge (node netfilter) -> pod
            ("pod -> pod", perf, cluster, "kubewire dns", server_ip, 53, [ours_pid], 1, cluster_file),
            ("pod -> pod", perf, cluster, "unbound", server_ip, UNBOUND_PORT, [unbound_pid], 1, cluster_file),
            ("pod -> pod", perf, external, "kubewire dns (--cache)", server_ip, 53, [ours_pid], 8, external_file),
            ("pod -> pod", perf, external, "unbound", server_ip, UNBOUND_PORT, [unbound_pid], 8, external_file),
            # the deployed path: kube-proxy's DNAT to the coredns pods, or this node's NodeLocal DNSCache
            ("pod -> cluster DNS", perf, cluster, vip, dns_vip, 53, coredns, 1, cluster_file),
            ("pod -> cluster DNS", perf, cluster, nl, NODE_LOCAL_DNS_IP, 53, [nodelocal], 1, cluster_file),
            ("pod -> cluster DNS", perf, external, vip, dns_vip, 53, coredns, 8, external_file),
            ("pod -> cluster DNS", perf, external, nl, NODE_LOCAL_DNS_IP, 53, [nodelocal], 8, external_file),
        ]
        for where, client, mix, server, addr, port, pids, per_lookup, datafile in plan:
            log(f"  {where}: {mix}: {server} at {addr}:{port} ...")
            rows.append(measure(client, Row(where, mix, server, f"{addr}:{port}", cpu, per_lookup), addr, port,
                                datafile, seconds, latency_seconds, latency_qps, pids))
        command = " ".join(Dnsperf("<client netns>", client_cpu, clients, outstanding).argv(
            "<server>", 53, "<queries>", seconds, []))
    finally:
        for label, proc in procs:
            code = background.stop(proc)
            log(f"stopped {label} (pid {proc.pid}, exit {code})")
        lifecycle.down(name)
        signal.signal(signal.SIGTERM, old_handler)
    return {
        "cluster": name, "services": services, "server_cpu": server_cpu, "dnsperf_cpu": client_cpu,
        "dnsperf": {"clients": clients, "outstanding": outstanding, "seconds": seconds,
                    "latency_seconds": latency_seconds, "latency_qps": latency_qps, "command": command},
        "external_names": list(EXTERNAL),
        "target_qps_per_core": TARGET_QPS_PER_CORE,
        "coredns_published_qps_per_core": COREDNS_PUBLISHED_QPS_PER_CORE,
        "what_each_number_is": {
            "qps": "dnsperf 'Queries per second' in the saturating run (-l seconds, -c clients, -q outstanding)",
            "avg_ms/stddev_ms": "dnsperf 'Average Latency' and 'Latency StdDev' of that saturating run",
            "p50_ms/p99_ms": "percentiles of every reply's latency printed by dnsperf -v in a second run "
                             "at latency_offered_qps (-Q: the lower of --latency-qps and half the saturating qps)",
            "lookups_per_s": "qps / queries_per_lookup (8 for an external name through the ndots:5 search list)",
            "server_cpu_pct/qps_per_core": "CPU time of the server process(es) (utime+stime from /proc) during the "
                                           "saturating run, and replies completed per CPU-second of it",
        },
        "rows": [asdict(r) for r in rows],
    }
