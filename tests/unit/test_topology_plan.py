"""The topology and pod-wiring planners, byte for byte: what `up` will put in the kernel."""

from __future__ import annotations

from kubewire.cluster.addressing import plan_topology, pod_netns, pod_veth
from kubewire.cluster.config import ClusterConfig, NodeConfig, default_nodes
from kubewire.cni.plan import PodSide, PodWiring, plan_add, plan_delete
from kubewire.topology.plan import Batch, mac_for, plan_cluster


def two_node_topology():  # noqa: ANN201
    cfg = ClusterConfig(name="demo", nodes=[NodeConfig("a", "z1", "r"), NodeConfig("b", "z2", "r")])
    return plan_topology(cfg)


def test_default_cluster_is_three_workers_in_two_zones() -> None:
    t = plan_topology(ClusterConfig(name="kubewire", nodes=default_nodes("kubewire")))
    assert [n.name for n in t.nodes] == ["kubewire-worker", "kubewire-worker2", "kubewire-worker3"]
    assert t.zones == ("us-east-1a", "us-east-1b")
    assert [n.pod_cidr for n in t.nodes] == ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]
    assert [n.ip for n in t.nodes] == ["172.18.1.10", "172.18.2.10", "172.18.1.11"]
    assert [n.netns for n in t.nodes] == ["kw-kubewire-node-kubewire-worker", "kw-kubewire-node-kubewire-worker2",
                                          "kw-kubewire-node-kubewire-worker3"]


def test_cluster_plan_exact_batches() -> None:
    plan = plan_cluster(two_node_topology())
    assert plan.batches[0] == Batch(None, ("netns add kw-demo-fabric", "netns add kw-demo-cloud-lb",
                                           "netns add kw-demo-internet", "netns add kw-demo-node-a",
                                           "netns add kw-demo-node-b"))
    assert plan.batches[1] == Batch("kw-demo-fabric", (
        "link set lo up",
        "link add br-z0 type bridge", "addr add 172.18.1.1/24 dev br-z0", "link set br-z0 up",
        "link add br-z1 type bridge", "addr add 172.18.2.1/24 dev br-z1", "link set br-z1 up",
        "link add kwn0 type veth peer name eth0 netns kw-demo-node-a", "link set kwn0 master br-z0 up",
        "link add kwn1 type veth peer name eth0 netns kw-demo-node-b", "link set kwn1 master br-z1 up",
        "link add kwt0 type veth peer name eth1 netns kw-demo-cloud-lb", "addr add 172.18.255.2/30 dev kwt0",
        "link set kwt0 up",
        "route add 10.244.0.0/24 via 172.18.1.10", "route add 10.244.1.0/24 via 172.18.2.10",
        "route add 198.51.100.0/24 via 172.18.255.1",
    ))
    assert plan.batches[2] == Batch("kw-demo-node-a", (
        "link set lo up", "addr add 172.18.1.10/24 dev eth0", "link set eth0 up", "route add default via 172.18.1.1",
        "link add cni0 address 0a:58:0a:f4:00:01 type bridge", "addr add 10.244.0.1/24 dev cni0", "link set cni0 up",
    ))
    cloudlb = plan.batches[4]
    # The edge routes node addresses only: pod and Service addresses stay unreachable from the internet.
    assert cloudlb.lines[-1] == "route add 172.18.0.0/16 via 172.18.255.2"
    assert not any("10.244" in line or "10.96" in line for line in cloudlb.lines)
    assert plan.batches[5] == Batch("kw-demo-internet", ("link set lo up", "addr add 198.51.100.10/24 dev eth0",
                                                         "addr add 198.51.100.53/24 dev eth0",
                                                         "link set eth0 up", "route add default via 198.51.100.1"))
    assert plan.sysctls["kw-demo-node-a"]["net/bridge/bridge-nf-call-iptables"] == "1"
    assert plan.sysctls["kw-demo-node-a"]["net/ipv4/ip_forward"] == "1"
    assert "kw-demo-internet" not in plan.sysctls  # a plain host: no forwarding


def test_same_zone_nodes_route_each_other_directly() -> None:
    cfg = ClusterConfig(name="d", nodes=[NodeConfig("a", "z1", "r"), NodeConfig("b", "z1", "r"), NodeConfig("c", "z2", "r")])
    plan = plan_cluster(plan_topology(cfg))
    node_a = next(b for b in plan.batches if b.netns == "kw-d-node-a")
    assert "route add 10.244.1.0/24 via 172.18.1.11" in node_a.lines
    assert not any("10.244.2.0" in line for line in node_a.lines)


def test_pod_wiring_exact_batches() -> None:
    node = two_node_topology().nodes[1]
    pods = [PodWiring("kw-demo-pod-1", "veth00000001", "10.244.1.2")]
    plan = plan_add(node, pods)
    assert plan.batches == [
        Batch(None, ("netns add kw-demo-pod-1",)),
        Batch("kw-demo-node-b", (
            "link add veth00000001 type veth peer name eth0 address 0a:58:0a:f4:01:02 netns kw-demo-pod-1",
            "link set veth00000001 master cni0",
            "link set veth00000001 type bridge_slave hairpin on",
            "link set veth00000001 up",
            "neigh replace 10.244.1.2 lladdr 0a:58:0a:f4:01:02 dev cni0 nud permanent",
        )),
    ]
    assert plan.pods == [PodSide("kw-demo-pod-1", "10.244.1.2", 24, "10.244.1.1", "0a:58:0a:f4:01:01")]
    assert plan_delete(node, pods, {"kw-demo-pod-1"}) == [
        Batch("kw-demo-node-b", ("neigh del 10.244.1.2 dev cni0",)),
        Batch(None, ("netns del kw-demo-pod-1",)),
    ]
    assert plan_delete(node, pods, {"kw-demo-pod-1"}, rewire=True)[0] == \
        Batch("kw-demo-node-b", ("link del veth00000001", "neigh del 10.244.1.2 dev cni0"))
    assert plan_add(node, []).batches == []


def test_names_fit_kernel_limits() -> None:
    uid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert len(pod_veth(uid)) <= 15 and pod_veth(uid).startswith("veth")
    assert pod_netns("kubewire", uid) == "kw-kubewire-pod-0f8fad5b-d9cb"
    assert mac_for("10.244.0.1") == "0a:58:0a:f4:00:01"


def test_internet_hosts_and_node_masquerade() -> None:
    plan = plan_cluster(two_node_topology(), ("198.51.100.20",))
    internet = next(b for b in plan.batches if b.netns == "kw-demo-internet")
    assert "addr add 198.51.100.20/24 dev eth0" in internet.lines
    payload = plan.iptables["kw-demo-node-a"]
    assert payload.startswith("*nat\n:IP-MASQ-AGENT - [0:0]\n")
    # private destinations keep the pod's address; the rest is masqueraded, last
    assert payload.index("-d 10.0.0.0/8") < payload.index("-j MASQUERADE")
    assert payload.rstrip().endswith("-j MASQUERADE\nCOMMIT")
    assert set(plan.iptables) == {"kw-demo-node-a", "kw-demo-node-b"}
