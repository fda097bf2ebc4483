"""The eBPF socket load balancer's planner and programs, without a kernel: which Services a node
balances in its maps and to which backends, the map operations a change costs (and their order),
and the programs' encoding."""

from __future__ import annotations

import struct

from kubewire.proxy.ebpf import maps as M
from kubewire.proxy.ebpf.asm import Program
from kubewire.proxy.ebpf.programs import MapFds, connect, reverse
from kubewire.proxy.model import build_endpoints_map, build_service_map


def svc(name: str, ip: str, port: int = 80, protocol: str = "TCP", **spec) -> dict:  # noqa: ANN003
    return {"kind": "Service", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "type": spec.pop("type", "ClusterIP"),
                     "ports": [{"name": "p", "port": port, "protocol": protocol, "targetPort": 8080,
                                **({"nodePort": spec.pop("nodePort")} if "nodePort" in spec else {})}], **spec}}


def eps(name: str, *endpoints: tuple[str, str, bool]) -> dict:
    return {"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{name}-x", "namespace": "ns", "labels": {"kubernetes.io/service-name": name}},
            "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": ready, "serving": ready,
                                                                                 "terminating": False}}
                          for ip, node, ready in endpoints]}


def plan(services: list[dict], slices: list[dict], node: str = "n1") -> dict:
    return M.plan_entries(build_service_map(services), build_endpoints_map(slices, node), node, {})


def test_cluster_ip_balanced_over_ready_endpoints_only() -> None:
    out = plan([svc("a", "10.96.0.5")], [eps("a", ("10.244.1.2", "n1", True), ("10.244.2.2", "n2", True),
                                              ("10.244.2.3", "n2", False))])
    (e,) = out.values()
    assert (e.vip, e.port, e.protocol, e.backends, e.affinity_seconds) == \
        ("10.96.0.5", 80, "TCP", (("10.244.1.2", 8080), ("10.244.2.2", 8080)), 0)


def test_services_without_usable_endpoints_are_left_to_netfilter() -> None:
    services = [svc("none", "10.96.0.6"), svc("local", "10.96.0.7", internalTrafficPolicy="Local")]
    slices = [eps("local", ("10.244.2.2", "n2", True))]
    assert plan(services, slices, "n1") == {}  # netfilter REJECTs "none" and DROPs "local" on n1
    assert [e.backends for e in plan(services, slices, "n2").values()] == [(("10.244.2.2", 8080),)]


def test_terminating_fallback_and_affinity() -> None:
    s = svc("a", "10.96.0.5", sessionAffinity="ClientIP")
    sl = eps("a", ("10.244.1.2", "n1", False))
    sl["endpoints"][0]["conditions"] = {"ready": False, "serving": True, "terminating": True}
    (e,) = plan([s], [sl]).values()
    assert e.backends == (("10.244.1.2", 8080),) and e.affinity_seconds == 10800


def test_externally_reachable_services_stay_in_netfilter_too() -> None:
    services = build_service_map([svc("np", "10.96.0.8", type="NodePort", nodePort=30080), svc("a", "10.96.0.5")])
    entries = M.plan_entries(services, build_endpoints_map([eps("np", ("10.244.1.2", "n1", True)),
                                                            eps("a", ("10.244.1.3", "n1", True))], "n1"), "n1", {})
    assert {k.name: M.in_socket_lb(s, entries.get(k)) for k, s in services.items()} == {"np": False, "a": True}


def test_encoding_is_what_the_programs_read() -> None:
    assert M.svc_key("10.96.0.10", 53, "UDP") == bytes([10, 96, 0, 10, 0, 53, 17, 0])
    assert M.backend_value("10.244.1.2", 8080) == bytes([10, 244, 1, 2, 0x1F, 0x90, 0, 0])
    assert M.svc_value(3, 7, 30) == struct.pack("=IIII", 3, 7, 30, 0)
    assert M.decode_backend(M.backend_value("10.244.1.2", 8080)) == ("10.244.1.2", 8080)
    assert M.decode_svc_key(M.svc_key("10.96.0.10", 53, "UDP")) == ("10.96.0.10", 53, "UDP")


def test_writes_touch_only_what_changed_in_a_safe_order() -> None:
    ids: dict = {}
    free: list[int] = []
    s = [svc("a", "10.96.0.5"), svc("b", "10.96.0.6")]
    one = plan(s, [eps("a", ("10.244.1.2", "n1", True), ("10.244.1.3", "n1", True)), eps("b", ("10.244.1.4", "n1", True))])
    w = M.plan_writes({}, one, ids, free)
    assert (len(w.backends), len(w.services), w.delete_backends, w.delete_services) == (3, 2, [], [])
    # one endpoint of "a" goes: its slot count first, then the stale slot
    two = plan(s, [eps("a", ("10.244.1.2", "n1", True)), eps("b", ("10.244.1.4", "n1", True))])
    w = M.plan_writes(one, two, ids, free)
    sid = ids[next(k for k in ids if k.name == "a")]
    assert w.services == [(M.svc_key("10.96.0.5", 80, "TCP"), M.svc_value(1, sid, 0))]
    assert w.backends == [(M.backend_key(sid, 0), M.backend_value("10.244.1.2", 8080))]
    assert w.delete_backends == [M.backend_key(sid, 1)] and w.changed_ids == {sid}
    assert w.operations == 3
    # "b" loses its endpoints: removed from the maps, its id reusable
    three = plan(s, [eps("a", ("10.244.1.2", "n1", True))])
    w = M.plan_writes(two, three, ids, free)
    assert w.delete_services == [M.svc_key("10.96.0.6", 80, "TCP")] and len(w.delete_backends) == 1
    assert free and not w.services


def test_assembler_encodes_and_resolves_labels() -> None:
    p = Program()
    p.mov_imm(0, 1)
    p.ja("end")
    p.mov_imm(0, 2)
    p.label("end")
    p.exit()
    assert p.assemble() == bytes.fromhex("b700000001000000" "0500010000000000" "b700000002000000" "9500000000000000")
    p = Program()
    p.ld_map(1, 7)
    assert p.assemble() == bytes.fromhex("1811000007000000" "0000000000000000")


def test_programs_assemble_with_the_map_fds() -> None:
    fds = MapFds(3, 4, 5, 6)
    for code in (connect(fds), reverse(fds)):
        assert len(code) % 8 == 0 and code[-8:] == bytes.fromhex("9500000000000000")
    # every map reference carries a real fd (pseudo map fd loads)
    refs = {code[i + 4] for code in (connect(fds),) for i in range(0, len(code), 8) if code[i] == 0x18 and code[i + 1] >> 4 == 1}
    assert refs == {3, 4, 5, 6}


def _objs(services: list[dict], slices: list[dict]) -> tuple[dict, dict]:
    for i, o in enumerate(services + slices):
        o["metadata"].setdefault("resourceVersion", str(i + 1))
    return ({(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in services},
            {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in slices})


def test_node_view_recomputes_only_what_changed_and_matches_a_full_plan() -> None:
    import copy

    from kubewire.proxy.ebpf.view import NodeView

    services = [svc(f"s{i}", f"10.96.1.{i}") for i in range(20)] + [svc("np", "10.96.2.1", type="NodePort", nodePort=30001)]
    slices = [eps(f"s{i}", (f"10.244.1.{i}", "n1", True), (f"10.244.2.{i}", "n2", True)) for i in range(20)]
    slices.append(eps("np", ("10.244.3.1", "n2", True)))
    sv, sl = _objs(services, slices)
    view = NodeView("n1")
    first = view.update(sv, sl, {})
    assert len(first.services) == 21 and view.entries == plan(services, slices)
    assert view.netfilter == {("ns", "np")}  # NodePort: netfilter too; the rest only in the maps
    assert view.update(sv, sl, {}).services == set()
    # one endpoint of s3 leaves: only s3 is recomputed
    sl2 = dict(sl)
    s3 = copy.deepcopy(sl[("ns", "s3-x")])
    s3["endpoints"] = s3["endpoints"][:1]
    s3["metadata"]["resourceVersion"] = "999"
    sl2[("ns", "s3-x")] = s3
    ch = view.update(sv, sl2, {})
    assert ch.services == {("ns", "s3")}
    assert [e.backends for e in ch.new.values()] == [(("10.244.1.3", 8080),)]
    assert view.entries == plan(services, list(sl2.values()))
    # a Service deleted with its slice: its entries go, and netfilter does not take it over
    sv3 = {k: v for k, v in sv.items() if k != ("ns", "s5")}
    sl3 = {k: v for k, v in sl2.items() if k != ("ns", "s5-x")}
    ch = view.update(sv3, sl3, {})
    assert ch.services == {("ns", "s5")} and not ch.new and len(ch.old) == 1
    assert ("ns", "s5") not in view.netfilter
    # a slice emptied: its Service leaves the maps and goes to netfilter (REJECT there)
    sl4 = dict(sl3)
    s7 = copy.deepcopy(sl3[("ns", "s7-x")])
    s7["endpoints"] = []
    s7["metadata"]["resourceVersion"] = "1000"
    sl4[("ns", "s7-x")] = s7
    view.update(sv3, sl4, {})
    assert ("ns", "s7") in view.netfilter and not any(k.name == "s7" for k in view.entries)


def test_node_view_one_endpoint_change_at_10k_services_is_cheap() -> None:
    """The planning share of a one-endpoint sync at 10k Services (the target for the whole sync is
    50 ms); generous bound, a machine under load must not fail it."""
    import copy
    import time

    from kubewire.bench.services import filler
    from kubewire.proxy.ebpf.view import NodeView

    services, slices = filler(10000)
    sv, sl = _objs(services, slices)
    view = NodeView("n1")
    view.update(sv, sl, {})
    k = next(iter(sl))
    changed = copy.deepcopy(sl[k])
    changed["endpoints"] = changed["endpoints"][:-1]
    changed["metadata"]["resourceVersion"] = "changed"
    sl2 = {**sl, k: changed}
    t0 = time.perf_counter()
    ch = view.update(sv, sl2, {})
    w = M.plan_writes(ch.old, ch.new, {}, [])
    took = time.perf_counter() - t0
    assert len(ch.services) == 1 and w.operations >= 1
    assert took < 0.05, took
