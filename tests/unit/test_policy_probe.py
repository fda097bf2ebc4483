"""`kubewire probe`, the pure half: targets, cells (to pod IPs or through each pod's Service), the
matrix as text and JSON, and the comparison with an expected matrix."""

from __future__ import annotations

import pytest
from policy_world import world

from kubewire.policy.probe import (
    Matrix,
    Outcome,
    Target,
    compare,
    parse_expectation,
    parse_target,
    plan_cells,
)


def test_targets() -> None:
    assert parse_target("80") == Target(80, "TCP")
    assert parse_target("53/udp") == Target(53, "UDP")
    assert parse_target("serve-80-tcp/TCP") == Target("serve-80-tcp", "TCP")
    for bad in ("0", "70000", "80/ICMP", "/TCP"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_cells_to_pod_ips_resolve_named_ports_on_each_destination() -> None:
    view = world()
    pods = [view.pod("x", "a"), view.pod("y", "b")]
    cells = plan_cells(pods, [Target("serve-81-udp", "UDP"), Target("nope", "TCP")])
    assert [(c.src.key, c.dst.key, c.ip, c.port, c.skip) for c in cells if not c.skip] == [
        ("x/a", "x/a", "10.244.0.10", 81, ""), ("x/a", "y/b", "10.244.1.14", 81, ""),
        ("y/b", "x/a", "10.244.0.10", 81, ""), ("y/b", "y/b", "10.244.1.14", 81, "")]
    assert {c.skip for c in cells if c.skip} == {"x/a has no port named nope/TCP", "y/b has no port named nope/TCP"}


def _service(name: str, ns: str, selector: dict, ip: str, port: int, target: int | str) -> dict:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "clusterIP": ip, "ports": [{"port": port, "targetPort": target, "protocol": "TCP"}]}}


def _slice(service: str, ns: str, *ips: str) -> dict:
    return {"metadata": {"namespace": ns, "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


def test_cells_through_services_need_a_service_whose_only_endpoint_is_the_pod() -> None:
    view = world()
    xa, xb, ya = view.pod("x", "a"), view.pod("x", "b"), view.pod("y", "a")
    services = [_service("a", "x", {"pod": "a"}, "10.96.0.20", 8080, "serve-80-tcp"),
                _service("all", "y", {}, "10.96.0.21", 80, 80),  # no selector: never used
                _service("both", "y", {"pod": "a"}, "10.96.0.22", 80, 80)]
    slices = [_slice("a", "x", xa.ip), _slice("both", "y", ya.ip, "10.244.9.9")]
    cells = {c.dst.key: c for c in plan_cells([xa, xb, ya], [Target(80)], "service", services, slices) if c.src.key == "x/a"}
    assert (cells["x/a"].ip, cells["x/a"].port, cells["x/a"].via, cells["x/a"].skip) == ("10.96.0.20", 8080, "service x/a", "")
    assert cells["x/b"].skip == "no Service in x selects b on 80/TCP"
    assert cells["y/a"].skip.startswith("service y/both has 2 ready endpoints")


def _matrix(results: dict[tuple[str, str], str], targets: list[Target] | None = None) -> Matrix:
    view = world()
    targets = targets or [Target(80)]
    pods = sorted({k for pair in results for k in pair})
    m = Matrix(pods, targets)
    for (s, d), status in results.items():
        for t in targets:
            [cell] = plan_cells([view.pod(*s.split("/"))], [t])[:1] if s == d else [
                c for c in plan_cells([view.pod(*s.split("/")), view.pod(*d.split("/"))], [t])
                if c.src.key == s and c.dst.key == d]
            m.add(cell, Outcome(status, "why" if status == "skipped" else ""))
    return m


def test_matrix_json_text_and_comparison() -> None:
    m = _matrix({("x/a", "x/a"): "connected", ("x/a", "x/b"): "timeout", ("x/b", "x/a"): "refused",
                 ("x/b", "x/b"): "connected"})
    assert m.as_json() == {"x/a": {"x/a": True, "x/b": False}, "x/b": {"x/a": False, "x/b": True}}
    assert m.text().splitlines()[:4] == [
        "80/TCP via pod-ip: rows are sources, columns destinations",
        "        0  1",
        "x/a  0  .  X",
        "x/b  1  R  .",
    ]
    assert "2/4 connected" in m.text()
    diffs, skipped = compare(m, {"x/a": {"x/a": True, "x/b": True}, "x/b": {"x/a": False, "x/c": True}})
    assert [str(d) for d in diffs] == [
        "x/a -> x/b 80/TCP: expected connected, got timeout",
        "x/b -> x/c 80/TCP: expected connected, but this cell was not probed",
    ]
    assert skipped == []


def test_several_ports_key_cells_by_port_and_skipped_cells_are_null_and_not_compared() -> None:
    targets = [Target(80), Target(80, "SCTP")]
    view = world()
    m = Matrix(["x/a", "x/b"], targets)
    for c in plan_cells([view.pod("x", "a"), view.pod("x", "b")], targets):
        m.add(c, Outcome("skipped", "SCTP: no sockets") if c.target.protocol == "SCTP" else Outcome("connected"))
    assert m.as_json()["x/a"] == {"x/a:80/TCP": True, "x/a:80/SCTP": None, "x/b:80/TCP": True, "x/b:80/SCTP": None}
    assert "skipped 4: SCTP: no sockets" in m.text()
    diffs, skipped = compare(m, {"x/a": {"x/b": True}, "x/b": {"x/a:80/SCTP": False}})
    assert diffs == []
    assert [(d.src, d.dst, d.target) for d in skipped] == [("x/a", "x/b", "80/SCTP"), ("x/b", "x/a", "80/SCTP")]


def test_expectations_in_json_or_yaml() -> None:
    assert parse_expectation('{"x/a": {"x/b": false}}') == {"x/a": {"x/b": False}}
    assert parse_expectation("x/a:\n  x/b: true\n") == {"x/a": {"x/b": True}}
    for bad in ("[1]", '{"x/a": {"x/b": 1}}', '{"x/a": 3}'):
        with pytest.raises(ValueError):
            parse_expectation(bad)
