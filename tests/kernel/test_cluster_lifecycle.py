"""A cluster is built only inside its own namespaces and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import KW, Cluster, make_cluster

DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo"


def root_netns_state() -> dict:
    """Interfaces, addresses, routes and firewall rules of the machine's own network namespace."""
    def out(*argv: str) -> str:
        p = subprocess.run(list(argv), capture_output=True, text=True)
        return p.stdout if p.returncode == 0 else f"<{argv[0]} failed>"

    links = json.loads(out("ip", "-j", "link", "show"))
    return {
        "links": sorted((x["ifname"], x.get("mtu"), x.get("address"), tuple(x.get("flags", []))) for x in links),
        "addrs": out("ip", "-4", "addr", "show"),
        "addrs6": out("ip", "-6", "addr", "show"),
        "routes": out("ip", "route", "show", "table", "all"),
        "rules": out("ip", "rule", "show"),
        "iptables": "\n".join(x for x in out("iptables-save").splitlines() if not x.startswith("#")),
        "nft": out("nft", "list", "ruleset"),
        "sysctl_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
    }


def cgroup_dirs() -> set[str]:
    root = next((m for m in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup") if Path(m, "cgroup.procs").exists()), None)
    return {p.name for p in Path(root).iterdir() if p.is_dir()} if root else set()


@pytest.mark.parametrize("mode", ["iptables", "ebpf"])
def test_up_and_down_leave_the_root_namespace_untouched_and_nothing_behind(tmp_path: Path, mode: str) -> None:
    """eBPF mode adds cgroups (one per node, every container in its node's) and BPF programs on them;
    they go with `down` too, and the root namespace has no program or rule of ours either way."""
    before = root_netns_state()
    cgroups_before = cgroup_dirs()
    c = make_cluster(tmp_path, None, "--proxy-mode", mode)
    try:
        c.kw("apply", "-f", str(DEMO))
        c.ready_pods("production", "app=payment-processor", 2)
        assert root_netns_state() == before, "up changed the machine's own network namespace"
        netns = c.netns()
        assert f"kw-{c.name}-fabric" in netns and f"kw-{c.name}-internet" in netns
        assert sum(1 for n in netns if "-node-" in n) == 3
        assert sum(1 for n in netns if "-pod-" in n) == 4 + 2 + 2  # the demo, cluster DNS, ingress-nginx
        procs = [(int(cs["containerID"].split("://")[1]), start_ticks(int(cs["containerID"].split("://")[1])))
                 for p in c.pods("production") for cs in p["status"]["containerStatuses"]]
        assert all(t is not None for _, t in procs)
        # `ps` names each container, not the control loop it was forked from
        first = c.pods("production")[0]
        pid = int(first["status"]["containerStatuses"][0]["containerID"].split("://")[1])
        title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert title.startswith(f"kubewire-container production/{first['metadata']['name']}/"), title
        if mode == "ebpf":
            assert cgroup_dirs() - cgroups_before == {f"kubewire-{c.name}"}
            cg = Path(f"/proc/{pid}/cgroup").read_text().strip()
            assert cg.endswith(f"/kubewire-{c.name}/{first['spec']['nodeName']}"), cg
    finally:
        c.kw("down")
    assert root_netns_state() == before
    assert c.netns() == []
    assert not Path(f"/run/kubewire/{c.name}").exists()
    assert [p for p, t in procs if start_ticks(p) == t] == [], "containers outlived `down`"
    assert cgroup_dirs() == cgroups_before, "down left a cgroup behind"


def start_ticks(pid: int) -> int | None:
    """Start time of a live (not zombie) process: with the PID, it names one process."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if rest[0] in ("Z", "X") else int(rest[19])


def test_nodes_zones_and_addresses(cluster: Cluster) -> None:
    nodes = cluster.json("get", "nodes")["items"]
    assert len(nodes) == 3
    zones = {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes}
    assert len(zones) == 2
    for n in nodes:
        labels = n["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == n["metadata"]["name"]
        assert labels["topology.kubernetes.io/region"] == "us-east-1"
        assert n["spec"]["podCIDR"].startswith("10.244.")
    cidrs = {n["spec"]["podCIDR"] for n in nodes}
    assert len(cidrs) == 3


def test_two_clusters_at_once(tmp_path: Path) -> None:
    a = make_cluster(tmp_path)
    b = make_cluster(tmp_path)
    try:
        assert a.netns() and b.netns()
        assert not set(a.netns()) & set(b.netns())
        names = a.kw("clusters").stdout.split()
        assert a.name in names and b.name in names
    finally:
        a.kw("down", check=False)
        b.kw("down", check=False)
    assert a.netns() == [] and b.netns() == []


def test_custom_cluster_config(tmp_path: Path) -> None:
    c = make_cluster(tmp_path, """
apiVersion: kubewire.io/v1alpha1
kind: Cluster
networking:
  podSubnet: 10.200.0.0/16
nodes:
- name: alpha
  zone: eu-west-1a
  region: eu-west-1
  labels: {disk: ssd}
  allocatable: {cpu: "4", pods: 20}
- name: beta
  zone: eu-west-1b
  region: eu-west-1
""")
    try:
        nodes = {n["metadata"]["name"]: n for n in c.json("get", "nodes")["items"]}
        assert set(nodes) == {"alpha", "beta"}
        assert nodes["alpha"]["metadata"]["labels"]["disk"] == "ssd"
        assert nodes["alpha"]["status"]["allocatable"]["pods"] == "20"
        assert nodes["alpha"]["spec"]["podCIDR"] == "10.200.0.0/24"
    finally:
        c.kw("down", check=False)


def test_bad_cluster_config_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("apiVersion: kubewire.io/v1alpha1\nkind: Cluster\nnetworking:\n  kubeProxyMode: ipvs\n")
    p = subprocess.run([*KW, "--name", "tbadcfg", "up", "--config", str(cfg)],
                       capture_output=True, text=True)
    assert p.returncode != 0
    assert "networking.kubeProxyMode" in p.stderr and "ipvs" in p.stderr
    assert not Path("/run/kubewire/tbadcfg").exists()
