"""kube-proxy's nftables mode on real traffic: the applier's table loaded into a node namespace,
in upstream's layout and in the optional flat one.

The test owns its namespaces (kw-nft<id>-{node,srv1,srv2,cli}), built by hand like a kubewire node:
a cni0 bridge with pods on veths, br_netfilter on. Servers are small Python HTTP responders that
answer with their own address. It shows a ClusterIP connection DNATed to a pod (from a pod, from
the node itself, and a pod reaching itself through its Service), a partial sync moving the
Service to another endpoint, a Service without endpoints rejecting connections, NodePorts from
outside the node (kw-nft<id>-ext, on the node's eth0) under both external traffic policies, and
ClientIP session affinity.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from kubewire.kubeproxy.nftables import NftSyncer
from kubewire.proxy.model import KubeProxyConfig, build_endpoints_map, build_service_map
from kubewire.proxy.nftables import nft_params, render_full

VIP = "10.96.0.10"
NODE_PORT = 30080
PARAMS = nft_params(KubeProxyConfig(cluster_cidr="10.244.0.0/16"), "node", ["172.18.0.2"], {}, "IPv4", (),
                    ["10.96.0.0/12"])  # fmt: skip
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(16)
while True:
    c, peer = s.accept()
    c.recv(1024)
    body = f"{sys.argv[1]} saw {peer[0]}"
    c.sendall(f"HTTP/1.0 200 OK\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n{body}".encode())
    c.close()
"""


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {p.returncode} {p.stderr}")
    return p


def service(endpoints: list[str], nodes: dict[str, str] | None = None, **spec) -> tuple[list[dict], list[dict]]:
    """Service default/web at VIP:80 -> 8080 on the endpoints (on node "node" unless `nodes` says)."""
    port = {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}
    if spec.get("type") == "NodePort":
        port["nodePort"] = NODE_PORT
    svc = {"kind": "Service", "metadata": {"namespace": "default", "name": "web"},
           "spec": {"clusterIP": VIP, "ports": [port], **spec}}
    eps = {"kind": "EndpointSlice", "addressType": "IPv4",
           "metadata": {"namespace": "default", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": [ip], "nodeName": (nodes or {}).get(ip, "node")} for ip in endpoints]}  # fmt: skip
    return [svc], [eps]


@pytest.fixture
def node():
    tag = f"kw-nft{uuid.uuid4().hex[:6]}"
    names = {k: f"{tag}-{k}" for k in ("node", "srv1", "srv2", "cli", "ext")}
    procs: list[subprocess.Popen] = []
    try:
        for n in names.values():
            sh("ip", "netns", "add", n)
        nodens = names["node"]
        sh("ip", "-n", nodens, "link", "add", "cni0", "type", "bridge")
        sh("ip", "-n", nodens, "addr", "add", "10.244.1.1/24", "dev", "cni0")
        sh("ip", "-n", nodens, "link", "set", "cni0", "up")
        sh("ip", "-n", nodens, "link", "set", "lo", "up")
        # eth0 and a default route, as a node has (the Service range is not routed anywhere else);
        # the other end is a client outside the node
        ext = names["ext"]
        sh("ip", "-n", nodens, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", ext)
        sh("ip", "-n", nodens, "addr", "add", "172.18.0.2/24", "dev", "eth0")
        sh("ip", "-n", ext, "addr", "add", "172.18.0.1/24", "dev", "eth0")
        sh("ip", "-n", ext, "link", "set", "eth0", "up")
        sh("ip", "-n", ext, "link", "set", "lo", "up")
        sh("ip", "-n", nodens, "link", "set", "eth0", "up")
        sh("ip", "-n", nodens, "route", "add", "default", "via", "172.18.0.1")
        for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
            sh("ip", "netns", "exec", nodens, "sh", "-c", f"echo 1 > /proc/sys/{key}")
        for i, key in enumerate(("srv1", "srv2", "cli"), start=2):
            pod, veth = names[key], f"veth{key}"
            sh("ip", "-n", nodens, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod)
            sh("ip", "-n", nodens, "link", "set", veth, "master", "cni0", "up")
            sh("ip", "-n", nodens, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
            sh("ip", "-n", pod, "addr", "add", f"10.244.1.{i}/24", "dev", "eth0")
            sh("ip", "-n", pod, "link", "set", "eth0", "up")
            sh("ip", "-n", pod, "link", "set", "lo", "up")
            sh("ip", "-n", pod, "route", "add", "default", "via", "10.244.1.1")
            if key != "cli":
                procs.append(subprocess.Popen(["ip", "netns", "exec", pod, sys.executable, "-c", SERVER, key]))
        time.sleep(0.5)
        yield names
    finally:
        for p in procs:
            p.kill()
            p.wait()
        sh("ip", "-batch", "-", check=False, input="".join(f"netns del {n}\n" for n in names.values()))


def fetch(netns: str, url: str, timeout: float = 3) -> str:
    code = (
        "import sys, urllib.request\n"
        "try:\n"
        f"    print(urllib.request.urlopen({url!r}, timeout={timeout}).read().decode())\n"
        "except Exception as e:\n"
        "    print('ERROR', type(e).__name__, e)\n"
    )
    return sh("ip", "netns", "exec", netns, sys.executable, "-c", code).stdout.strip()


@pytest.mark.parametrize("layout", ["upstream", "flat"])
def test_clusterip_dnat_partial_sync_and_reject(node, layout: str) -> None:
    params = nft_params(KubeProxyConfig(cluster_cidr="10.244.0.0/16"), "node", ["172.18.0.2"], {}, "IPv4", (),
                        ["10.96.0.0/12"])  # fmt: skip
    syncer = NftSyncer(node["node"], layout=layout)

    # The rendered full sync (upstream's single transaction) is valid nft for this kernel.
    svcs, slices = service(["10.244.1.2"])
    sh("ip", "netns", "exec", node["node"], "nft", "-c", "-f", "-",
       input=render_full(svcs, slices, KubeProxyConfig(cluster_cidr="10.244.0.0/16"), "node", ["172.18.0.2"],
                         service_cidrs=["10.96.0.0/12"]))  # fmt: skip

    result = syncer.sync(build_service_map(svcs), build_endpoints_map(slices, "node"), params)
    assert result.kind == "initial"
    if layout == "upstream":
        table = sh("ip", "netns", "exec", node["node"], "nft", "list", "table", "ip", "kube-proxy").stdout
        assert "chain service-" in table and "numgen random mod 1 vmap" in table
    else:
        table = sh("ip", "netns", "exec", node["node"], "nft", "list", "table", "ip", "kube-proxy-flat").stdout
        assert "numgen random mod 1 map @k1" in table and "/tcp/" not in table

    # From a pod on the node: DNATed to srv1, source address kept (pod traffic is not masqueraded).
    assert fetch(node["cli"], f"http://{VIP}/") == "srv1 saw 10.244.1.4"
    entries = sh("ip", "netns", "exec", node["node"], "conntrack", "-L", "-p", "tcp", "--orig-dst", VIP,
                 check=False).stdout  # fmt: skip
    assert f"dst={VIP}" in entries and "src=10.244.1.2" in entries  # the reply comes from the pod
    # From the node itself (nat-output): masqueraded, as it does not come from a pod.
    assert fetch(node["node"], f"http://{VIP}/") == "srv1 saw 10.244.1.1"
    # Hairpin: srv1 reaching itself through its Service is masqueraded to the bridge address.
    assert fetch(node["srv1"], f"http://{VIP}/") == "srv1 saw 10.244.1.1"
    # A port the Service does not have: rejected by cluster-ips-check.
    assert fetch(node["cli"], f"http://{VIP}:81/").startswith("ERROR")

    # Partial sync: the endpoint moves to srv2; only that Service's chains and elements change.
    svcs, slices = service(["10.244.1.3"])
    result = syncer.sync(build_service_map(svcs), build_endpoints_map(slices, "node"), params)
    assert result.kind == "partial" and result.transactions == 1
    assert fetch(node["cli"], f"http://{VIP}/") == "srv2 saw 10.244.1.4"

    # No endpoints: connections are rejected at once (not timed out).
    svcs, slices = service([])
    result = syncer.sync(build_service_map(svcs), build_endpoints_map(slices, "node"), params)
    t0 = time.monotonic()
    out = fetch(node["cli"], f"http://{VIP}/")
    assert out.startswith("ERROR") and "refused" in out.lower() and time.monotonic() - t0 < 2.5

    # A new applier (a restarted kube-proxy) replaces the table it finds.
    svcs, slices = service(["10.244.1.2", "10.244.1.3"])
    again = NftSyncer(node["node"], layout=layout)
    assert again.sync(build_service_map(svcs), build_endpoints_map(slices, "node"), params).kind == "initial"
    seen = {fetch(node["cli"], f"http://{VIP}/") for _ in range(20)}
    assert seen == {"srv1 saw 10.244.1.4", "srv2 saw 10.244.1.4"}


@pytest.mark.parametrize("layout", ["upstream", "flat", "auto"])
def test_agent_syncs_from_snapshots(node, layout: str) -> None:
    """NftProxyAgent, as the control loop drives it: a Snapshot in, partial syncs after the first."""
    from kubewire.cluster.addressing import NodePlan
    from kubewire.controllers.types import Snapshot
    from kubewire.kubeproxy.nftables import NftProxyAgent

    plan = NodePlan(name="node", index=0, zone="z", zone_index=0, region="r", netns=node["node"], ip="172.18.0.2",
                    gateway="172.18.0.1", pod_cidr="10.244.1.0/24", bridge_ip="10.244.1.1", fabric_port="x")  # fmt: skip
    agent = NftProxyAgent(plan, "10.244.0.0/16", "10.96.0.0/12", layout=layout)

    def snap(endpoints: list[str], rv: str) -> Snapshot:
        svcs, slices = service(endpoints)
        for o in svcs + slices:
            o["metadata"]["resourceVersion"] = rv if o["kind"] == "EndpointSlice" else "1"
        return Snapshot.of([*svcs, *slices, {"kind": "Node", "metadata": {"name": "node", "labels": {}}}])

    assert agent.sync(snap(["10.244.1.2"], "1")) and agent.last_result.kind == "initial"
    assert fetch(node["cli"], f"http://{VIP}/") == "srv1 saw 10.244.1.4"
    assert not agent.sync(snap(["10.244.1.2"], "1"))  # nothing changed: nothing done
    assert agent.sync(snap(["10.244.1.3"], "2")) and agent.last_result.kind == "partial"
    assert agent.last_result.operations < 30
    assert fetch(node["cli"], f"http://{VIP}/") == "srv2 saw 10.244.1.4"


def sync(syncer: NftSyncer, objects: tuple[list[dict], list[dict]]):  # noqa: ANN201
    svcs, slices = objects
    return syncer.sync(build_service_map(svcs), build_endpoints_map(slices, "node"), PARAMS)


@pytest.mark.parametrize("layout", ["upstream", "flat"])
def test_nodeport_and_traffic_policies(node, layout: str) -> None:
    syncer = NftSyncer(node["node"], layout=layout, pod_cidrs=["10.244.1.0/24"])
    url = f"http://172.18.0.2:{NODE_PORT}/"
    # externalTrafficPolicy Cluster: from outside, masqueraded to the node's address on the pods' bridge.
    sync(syncer, service(["10.244.1.2"], type="NodePort"))
    assert fetch(node["ext"], url) == "srv1 saw 10.244.1.1"
    assert fetch(node["cli"], f"http://{VIP}/") == "srv1 saw 10.244.1.4"
    # Local: the client's own address is kept.
    sync(syncer, service(["10.244.1.2"], type="NodePort", externalTrafficPolicy="Local"))
    assert fetch(node["ext"], url) == "srv1 saw 172.18.0.1"
    # Local with the only endpoint "on another node": dropped from outside; a pod's connection
    # to the NodePort is short-circuited to the cluster-wide endpoints.
    sync(syncer, service(["10.244.1.3"], {"10.244.1.3": "other"}, type="NodePort", externalTrafficPolicy="Local"))
    assert fetch(node["ext"], url, timeout=1).startswith("ERROR")
    assert fetch(node["cli"], url) == "srv2 saw 10.244.1.4"
    # No endpoints: rejected at once.
    sync(syncer, service([], type="NodePort"))
    t0 = time.monotonic()
    out = fetch(node["ext"], url)
    assert "refused" in out.lower() and time.monotonic() - t0 < 2.5


@pytest.mark.parametrize("layout", ["upstream", "flat"])
def test_session_affinity(node, layout: str) -> None:
    syncer = NftSyncer(node["node"], layout=layout, pod_cidrs=["10.244.1.0/24"])
    spec = {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}
    sync(syncer, service(["10.244.1.2", "10.244.1.3"], **spec))
    seen = {fetch(node["cli"], f"http://{VIP}/") for _ in range(8)}
    assert len(seen) == 1 and seen <= {"srv1 saw 10.244.1.4", "srv2 saw 10.244.1.4"}
    (first,) = seen
    # The endpoint it sticks to goes: the client moves to the other one and sticks there.
    other = "10.244.1.3" if first.startswith("srv1") else "10.244.1.2"
    result = sync(syncer, service([other], **spec))
    assert result.kind == "partial"
    assert {fetch(node["cli"], f"http://{VIP}/") for _ in range(4)} == {
        f"{'srv2' if first.startswith('srv1') else 'srv1'} saw 10.244.1.4"
    }
    # Both again: stays with the one it has.
    sync(syncer, service(["10.244.1.2", "10.244.1.3"], **spec))
    assert len({fetch(node["cli"], f"http://{VIP}/") for _ in range(6)}) == 1


def test_flat_parameter_change_and_layout_switch(node) -> None:
    """New node parameters rewrite the flat table's rules in place (and a later new endpoint
    count still gets its map); a kube-proxy restarted in the other layout replaces the table."""
    ns = node["node"]
    flat = NftSyncer(ns, layout="flat", pod_cidrs=["10.244.1.0/24"])
    sync(flat, service(["10.244.1.2"]))
    assert fetch(node["cli"], f"http://{VIP}/") == "srv1 saw 10.244.1.4"
    other = nft_params(KubeProxyConfig(cluster_cidr="10.244.0.0/16"), "node", ["172.18.0.2"], {}, "IPv4", (),
                       ["10.96.0.0/12", "10.200.0.0/16"])  # fmt: skip
    svcs, slices = service(["10.244.1.2"])
    r = flat.sync(build_service_map(svcs), build_endpoints_map(slices, "node"), other)
    assert r.kind == "full" and r.operations < 60  # its rules rewritten (a new table: 77)
    table = sh("ip", "netns", "exec", ns, "nft", "list", "chain", "ip", "kube-proxy-flat", "cluster-ips-check").stdout
    assert "10.200.0.0/16" in table
    svcs, slices = service(["10.244.1.2", "10.244.1.3"])
    assert flat.sync(build_service_map(svcs), build_endpoints_map(slices, "node"), other).kind == "partial"
    assert {fetch(node["cli"], f"http://{VIP}/") for _ in range(16)} == {"srv1 saw 10.244.1.4", "srv2 saw 10.244.1.4"}

    tables = lambda: sh("ip", "netns", "exec", ns, "nft", "list", "tables").stdout  # noqa: E731
    upstream = NftSyncer(ns, layout="upstream")
    assert upstream.sync(build_service_map(svcs), build_endpoints_map(slices, "node"), PARAMS).kind == "initial"
    assert "kube-proxy-flat" not in tables() and "ip kube-proxy" in tables()
    assert fetch(node["cli"], f"http://{VIP}/") in {"srv1 saw 10.244.1.4", "srv2 saw 10.244.1.4"}
    flat = NftSyncer(ns, layout="flat")
    assert flat.sync(build_service_map(svcs), build_endpoints_map(slices, "node"), PARAMS).kind == "initial"
    assert "kube-proxy-flat" in tables() and "ip kube-proxy\n" not in tables()
    assert fetch(node["cli"], f"http://{VIP}/") in {"srv1 saw 10.244.1.4", "srv2 saw 10.244.1.4"}


def canonical(listing: str) -> dict[str, list[str]]:
    """A table's listing by block (set, map, chain) with what order means nothing taken out: the
    order of blocks, and of the per-K rules (each matches destinations of one K only)."""
    from kubewire.proxy.nftables.flat import K_CHAINS

    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        text = line.strip()
        if text.startswith(("set ", "map ", "chain ")) and text.endswith("{"):
            current = blocks[text] = []
        elif current is not None and text == "}" and line.startswith("\t}"):
            current = None
        elif current is not None:
            current.append(text)
    for header, lines in blocks.items():
        if header.split()[0] == "chain" and header.split()[1] in K_CHAINS:
            lines.sort()
    return blocks


def test_flat_first_load_in_parts(node, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large first load on an empty node goes part by part, parsing overlapping nft, and ends as
    the one-transaction load does (the same sets, maps, chains and rules) and serves; an agent
    restarted over a loaded table replaces it in one transaction (nothing unserved in between)."""
    from kubewire.bench.services import filler
    from kubewire.cluster.addressing import NodePlan
    from kubewire.controllers.types import SnapshotCache
    from kubewire.kubeproxy import nftables as agent_module

    ns = node["node"]
    plan = NodePlan(name="node", index=0, zone="z", zone_index=0, region="r", netns=ns, ip="172.18.0.2",
                    gateway="172.18.0.1", pod_cidr="10.244.1.0/24", bridge_ip="10.244.1.1", fabric_port="x")  # fmt: skip
    svcs, slices = filler(300)  # 5 endpoints each, in the first parts; web (2 endpoints) in the last
    web_svcs, web_slices = service(["10.244.1.2", "10.244.1.3"])
    objs = [*svcs, *slices, *web_svcs, *web_slices]
    for o in objs:
        o["metadata"].setdefault("resourceVersion", "1")
    listing = ["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "kube-proxy-flat"]

    def first_sync(load_in_parts_at: int) -> agent_module.SyncResult:
        monkeypatch.setattr(agent_module, "LOAD_IN_PARTS_AT", load_in_parts_at)
        monkeypatch.setattr(agent_module, "LOAD_PART", 100)
        agent = agent_module.NftProxyAgent(plan, "10.244.0.0/16", "10.96.0.0/12", layout="flat")
        assert agent.sync(SnapshotCache().apply(objs, ()))
        assert agent.last_result is not None
        return agent.last_result

    r = first_sync(10**9)
    assert r.kind == "initial" and r.transactions == 1
    one_transaction = sh(*listing).stdout
    sh("ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "kube-proxy-flat")

    r = first_sync(100)
    assert r.kind == "initial" and r.transactions == 4 and r.services_written == 301  # 301 Services, 100 a part
    in_parts = sh(*listing).stdout
    # k2 came with the last part: its map and rules after k5's, unlike in the one transaction
    assert in_parts.index("map k5 {") < in_parts.index("map k2 {")
    assert one_transaction.index("map k2 {") < one_transaction.index("map k5 {")
    assert canonical(in_parts) == canonical(one_transaction)
    assert {fetch(node["cli"], f"http://{VIP}/") for _ in range(16)} == {"srv1 saw 10.244.1.4", "srv2 saw 10.244.1.4"}

    restarted = first_sync(100)
    assert restarted.kind == "initial" and restarted.transactions == 1
    assert sh(*listing).stdout == one_transaction
