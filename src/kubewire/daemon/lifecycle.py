"""Bringing a cluster up and down: topology, state directory, control-loop process.

`up` is idempotent: on an existing cluster it only makes sure the control loop runs, so running it
again after a crash converges instead of duplicating anything.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubewire.api.loader import Document, load_text
from kubewire.cluster.addressing import Topology, cluster_dns_ip, netns_prefix, plan_topology, state_dir
from kubewire.cluster.config import ClusterConfig, parse_config, to_doc  # noqa: F401 - re-exported
from kubewire.controllers.types import Op
from kubewire.kernel import cgroup as kcgroup
from kubewire.kernel import ip as kip
from kubewire.kernel import netfilter, nsswitch
from kubewire.kernel import process as kproc
from kubewire.kernel.run import popen
from kubewire.store.db import Store, now_rfc3339
from kubewire.topology.plan import plan_cluster

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class ClusterError(RuntimeError):
    pass


@dataclass
class Handle:
    cfg: ClusterConfig
    topo: Topology
    store: Store
    dir: str


def exists(name: str) -> bool:
    return os.path.exists(f"{state_dir(name)}/cluster.json")


def open_cluster(name: str) -> Handle:
    d = state_dir(name)
    try:
        with open(f"{d}/cluster.json") as f:
            cfg = parse_config(json.load(f), name)
    except FileNotFoundError:
        raise ClusterError(f'cluster "{name}" not found (run `kubewire up --name {name}` first)') from None
    return Handle(cfg, plan_topology(cfg), Store(f"{d}/state.db"), d)


def list_clusters() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/kubewire") if exists(n))
    except FileNotFoundError:
        return []


def build_topology(topo: Topology, external_addresses: tuple[str, ...] = (), node_local_dns: bool = False) -> None:
    plan = plan_cluster(topo, external_addresses, node_local_dns)
    present = set(kip.list_netns(netns_prefix(topo.cluster)))
    if all(ns in present for ns in plan.namespaces):
        return
    # A partial build (an interrupted `up`): start the topology again from nothing.
    kip.delete_netns([ns for ns in plan.namespaces if ns in present])
    for b in plan.batches:
        kip.batch(b.lines, b.netns)
    for ns, values in plan.sysctls.items():
        nsswitch.write_sysctls(ns, values)
    for ns, payload in plan.iptables.items():
        netfilter.restore(ns, payload)


def node_object(topo: Topology, cfg: ClusterConfig, i: int) -> dict:
    n, nc = topo.nodes[i], cfg.nodes[i]
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": n.name,
        "topology.kubernetes.io/zone": n.zone,
        "topology.kubernetes.io/region": n.region,
        **nc.labels,
    }
    res = {"cpu": nc.cpu, "pods": str(nc.pods), "memory": "2Gi", "ephemeral-storage": "10Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": labels},
        "spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": n.ip}, {"type": "Hostname", "address": n.name}],
            "capacity": res,
            "allocatable": res,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status", "lastHeartbeatTime": now_rfc3339(),
                            "lastTransitionTime": now_rfc3339()}],
            "nodeInfo": {"kubeletVersion": "v1.33.0-kubewire", "kubeProxyVersion": "v1.33.0-kubewire",
                         "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "kubewire://0.1.0"},
        },
    }


def seed_objects(h: Handle) -> None:
    ops = []
    for ns in SYSTEM_NAMESPACES:
        if h.store.get("Namespace", "", ns) is None:
            ops.append(Op("create", {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                                     "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}))
    for i, n in enumerate(h.topo.nodes):
        if h.store.get("Node", "", n.name) is None:
            ops.append(Op("create", node_object(h.topo, h.cfg, i)))
    h.store.write(ops)


def daemon_pid(h: Handle) -> int | None:
    try:
        with open(f"{h.dir}/daemon.pid") as f:
            pid = int(f.read().strip())
        with open(f"{h.dir}/daemon.ticks") as f:
            ticks = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if kproc.alive(pid, ticks) else None


def start_daemon(h: Handle) -> int:
    pid = daemon_pid(h)
    if pid:
        return pid
    p = popen([python(), "-m", "kubewire.daemon", "--name", h.cfg.name], stdout_path=f"{h.dir}/daemon.log")
    ticks = None
    for _ in range(50):
        ticks = kproc.start_ticks(p.pid)
        if ticks:
            break
        time.sleep(0.01)
    with open(f"{h.dir}/daemon.ticks", "w") as f:
        f.write(str(ticks))
    with open(f"{h.dir}/daemon.pid", "w") as f:
        f.write(str(p.pid))
    return p.pid


def ensure_host(h: Handle, name: str, netns: str, argv: list[str], resolv: str, env: dict[str, str] | None = None,
                cgroup: str = "") -> int:
    """A long-lived process in a non-pod namespace (the internet client): its mount namespace
    carries that host's own /etc/resolv.conf, so tools run beside it resolve as that host does."""
    key = f"host/{name}"
    rec = h.store.runtime_get(key)
    if rec and kproc.alive(rec["pid"], rec["ticks"]):
        return int(rec["pid"])
    d = f"{h.dir}/hosts/{name}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/hosts", "w") as f:
        f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    with open(f"{d}/resolv.conf", "w") as f:
        f.write(resolv)
    with open(f"{d}/hostname", "w") as f:
        f.write(name + "\n")
    pid = kproc.spawn(kproc.ContainerSpec(
        netns=netns, hostname=name[:63], log_path=f"{d}/output.log",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        files={f"{d}/hosts": "/etc/hosts", f"{d}/resolv.conf": "/etc/resolv.conf", f"{d}/hostname": "/etc/hostname"},
        argv=argv, cgroup=cgroup))
    h.store.runtime_put({key: {"pid": pid, "ticks": kproc.start_ticks(pid), "netns": netns}})
    return pid


ADDONS = Path(__file__).resolve().parent.parent / "manifests" / "addons"


def python() -> str:
    """One spelling of this environment's interpreter, however kubewire was started (python,
    python3, the console script), so add-on manifests render the same and `up` stays idempotent."""
    return os.path.join(sys.prefix, "bin", "python3")


def addon_documents(h: Handle) -> list[Document]:
    """The add-ons every cluster runs (cluster DNS), with this cluster's addresses filled in."""
    values = {"DNS_IP": cluster_dns_ip(h.cfg),
              "PYTHON": python(), "DNS_DIR": f"{h.dir}/dns", "UPSTREAM": h.topo.internet_dns_ip,
              "STATE_DIR": h.dir}
    docs: list[Document] = []
    for path in sorted(ADDONS.glob("*.yaml")):
        text = string.Template(path.read_text()).safe_substitute(values)
        docs += load_text(text, str(path))
    return docs


def apply_addons(h: Handle) -> None:
    from kubewire.store.apply import apply_documents

    apply_documents(h.store, addon_documents(h), service_cidr=h.cfg.service_subnet)


def start_node_local_dns(h: Handle) -> None:
    """NodeLocal DNSCache on every node (a hostNetwork DaemonSet upstream): a caching resolver on
    169.254.20.10 that forwards misses to cluster DNS over TCP."""
    from kubewire.topology.plan import NODE_LOCAL_DNS_IP

    dns_ip = cluster_dns_ip(h.cfg)
    for n in h.topo.nodes:
        ensure_host(h, f"node-local-dns-{n.name}", n.netns,
                    [python(), "-m", "kubewire.dns.server", "--listen", f"{NODE_LOCAL_DNS_IP}:53", "--cache",
                     "--force-tcp", "--upstream", f"{dns_ip}:53", "--log-file", f"{h.dir}/dns/node-local-{n.name}.jsonl",
                     "--clients-file", f"{h.dir}/dns/records.json"],
                    f"nameserver {dns_ip}\n", cgroup=node_cgroup(h.cfg, n.name))


def node_cgroup(cfg: ClusterConfig, node: str) -> str:
    """Where a node's processes run: in eBPF mode the node's own cgroup, where the socket load
    balancer is attached (containers, and node-level processes such as NodeLocal DNS, so that their
    connections to a ClusterIP are balanced as a pod's are); "" (wherever the loop runs) otherwise."""
    if cfg.proxy_mode != "ebpf":
        return ""
    path = kcgroup.node_dir(cfg.name, node)
    if not path:
        raise ClusterError("eBPF mode needs a cgroup v2 hierarchy (none is mounted); run `kubewire doctor`")
    return path


def start_internet(h: Handle) -> None:
    """The internet side: a client, the public resolver (names outside the cluster, later Ingress
    hosts and load balancers) and the external servers the Cluster config declares."""
    resolv = f"nameserver {h.topo.internet_dns_ip}\n"
    ensure_host(h, "internet-client", h.topo.internet_ns, ["sleep", "infinity"], resolv)
    os.makedirs(f"{h.dir}/dns", exist_ok=True)
    write_internet_zone(h, {})
    ensure_host(h, "internet-dns", h.topo.internet_ns,
                [python(), "-m", "kubewire.dns.server", "--listen", f"{h.topo.internet_dns_ip}:53",
                 "--zone-file", f"{h.dir}/dns/internet-zone.json", "--log-file", f"{h.dir}/dns/internet-queries.jsonl"],
                resolv)
    for e in h.cfg.external_hosts:
        argv = [python(), "-m", "kubewire.workload.echo", "--host", e.address]
        for p in e.ports:
            argv += ["--port", f"{p}/TCP"]
        ensure_host(h, f"external-{e.name}", h.topo.internet_ns, argv, resolv,
                    env={"POD_NAME": e.name, "POD_NAMESPACE": "internet", "NODE_NAME": "internet", "POD_IP": e.address})


def write_internet_zone(h: Handle, extra: dict[str, list[str]]) -> None:
    """The public zone: external hosts, plus what the north-south path adds (Ingress hosts, LBs)."""
    zone: dict[str, list[str]] = {e.name: [e.address] for e in h.cfg.external_hosts}
    for name, ips in extra.items():
        zone.setdefault(name, []).extend(ips)
    tmp = f"{h.dir}/dns/internet-zone.json.tmp"
    with open(tmp, "w") as f:
        json.dump(zone, f, indent=1, sort_keys=True)
    os.replace(tmp, f"{h.dir}/dns/internet-zone.json")


def host_pid(h: Handle, name: str) -> int | None:
    rec = h.store.runtime_get(f"host/{name}")
    return int(rec["pid"]) if rec and kproc.alive(rec["pid"], rec["ticks"]) else None


def up(cfg: ClusterConfig) -> Handle:
    d = state_dir(cfg.name)
    if exists(cfg.name):
        h = open_cluster(cfg.name)
        if to_doc(h.cfg) != to_doc(cfg):
            raise ClusterError(f'cluster "{cfg.name}" already exists with another configuration; '
                               f"run `kubewire down --name {cfg.name}` first")
    else:
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/cluster.json.tmp", "w") as f:
            json.dump(to_doc(cfg), f, indent=2)
        os.replace(f"{d}/cluster.json.tmp", f"{d}/cluster.json")
        h = open_cluster(cfg.name)
    build_topology(h.topo, tuple(e.address for e in h.cfg.external_hosts), h.cfg.node_local_dns)
    for n in h.topo.nodes:
        if cg := node_cgroup(h.cfg, n.name):
            kcgroup.ensure(cg)
    seed_objects(h)
    start_internet(h)
    apply_addons(h)
    if h.cfg.node_local_dns:
        start_node_local_dns(h)
    start_daemon(h)
    return h


def stop_daemon(h: Handle, timeout: float = 5.0, teardown: bool = False) -> None:
    """SIGTERM stops the loop and leaves containers running (they are adopted by the next one);
    SIGUSR1 makes it end and reap every container first (for `down`)."""
    pid = daemon_pid(h)
    if not pid:
        return
    os.kill(pid, signal.SIGUSR1 if teardown else signal.SIGTERM)
    deadline = time.time() + timeout
    ticks = kproc.start_ticks(pid)
    while time.time() < deadline and kproc.alive(pid, ticks):
        kproc.reap([pid])
        time.sleep(0.02)
    if kproc.alive(pid, ticks):
        os.kill(pid, signal.SIGKILL)
    kproc.reap([pid])


def down(name: str) -> list[str]:
    """Everything goes: control loop, containers (by their recorded PIDs), namespaces, files."""
    removed: list[str] = []
    d = state_dir(name)
    if exists(name):
        h = open_cluster(name)
        stop_daemon(h, timeout=120, teardown=True)
        records = h.store.runtime_items("pod/")
        pids = [(c["pid"], c.get("ticks")) for r in records.values() for c in r.get("containers", {}).values() if c.get("pid")]
        pids += [(r["pid"], r.get("ticks")) for r in h.store.runtime_items("host/").values()]
        for pid, ticks in pids:
            kproc.signal_group(pid, ticks, signal.SIGKILL)
        h.store.close()
    ours = kip.list_netns(netns_prefix(name))
    kproc.kill_netns_processes([n for n in ours if "-pod-" in n])  # anything no record names
    kip.delete_netns(ours)
    removed += ours
    cg = kcgroup.cluster_dir(name)
    if cg and os.path.isdir(cg):
        kcgroup.remove_tree(cg)  # its programs and maps go with the last reference
        removed.append(cg)
    shutil.rmtree(d, ignore_errors=True)
    return removed
