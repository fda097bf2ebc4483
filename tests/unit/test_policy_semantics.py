"""NetworkPolicy semantics: the truth table built from the networking.k8s.io/v1 API documentation.

Every case is checked twice over the whole 9-pod matrix (namespaces x, y, z; pods a, b, c): by the
semantics (`evaluate`, the reading `kubewire policy explain` compares the kernel with) and by
running the node rules the planner writes through a small interpreter (policy_world.node_verdict),
so the planner is held to the same table as the semantics, cell by cell.
"""

from __future__ import annotations

import itertools

import pytest
from policy_world import ALL, NODES, ip_of, kernel_allows, namespace_object, pod_object, world

from kubewire.policy.model import ClusterView
from kubewire.policy.plan import plan_cluster
from kubewire.policy.semantics import Endpoint, endpoint, evaluate


def pods_of(*spec: str) -> set[str]:
    """x/a, x/* (a namespace), */b (a pod name in every namespace), * (all)."""
    out: set[str] = set()
    for s in spec:
        ns, _, name = s.partition("/") if s != "*" else ("*", "", "*")
        out |= {k for k in ALL if ns in ("*", k.split("/")[0]) and name in ("*", k.split("/")[1])}
    return out


def cells(srcs: set[str], dsts: set[str]) -> set[tuple[str, str]]:
    return {(s, d) for s, d in itertools.product(srcs, dsts) if s != d}  # a pod always reaches itself


def check(view: ClusterView, denied: set[tuple[str, str]], port: int = 80, proto: str = "TCP") -> None:
    """Exactly `denied` is denied, by the semantics and by the planned kernel rules."""
    plan = plan_cluster(view)
    want = {(s, d): (s, d) not in denied for s in ALL for d in ALL}
    got_api = {(s, d): evaluate(view, endpoint(view, s), endpoint(view, d), port, proto).allowed
               for s in ALL for d in ALL}
    got_kernel = {(s, d): kernel_allows(plan, view, s, d, port, proto) for s in ALL for d in ALL}
    assert sorted(k for k in want if got_api[k] != want[k]) == []
    assert sorted(k for k in want if got_kernel[k] != want[k]) == []


NP = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: %s, namespace: %s}
spec:
"""


def np(name: str, ns: str, spec: str) -> str:
    return NP % (name, ns) + "\n".join("  " + line for line in spec.strip("\n").splitlines()) + "\n"


# --- isolation -----------------------------------------------------------------------------------------


def test_no_policy_allows_everything_and_plans_no_rules() -> None:
    view = world()
    check(view, set())
    assert all(rs.empty for rs in plan_cluster(view).values())


def test_default_deny_ingress() -> None:
    view = world(np("deny", "x", "podSelector: {}"))
    check(view, cells(pods_of("*"), pods_of("x/*")))
    check(view, cells(pods_of("*"), pods_of("x/*")), 81, "UDP")


def test_default_deny_egress() -> None:
    view = world(np("deny", "x", "podSelector: {}\npolicyTypes: [Egress]"))
    check(view, cells(pods_of("x/*"), pods_of("*")))


def test_policy_types_decide_isolation_not_the_rules() -> None:
    # Egress only: the ingress rules are ignored and ingress stays open; egress is denied outright
    view = world(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
ingress:
- from: [{namespaceSelector: {matchLabels: {ns: y}}}]
"""))
    check(view, cells({"x/a"}, pods_of("*")))
    # both types, ingress allow-all and no egress rules: egress deny-all
    view = world(np("p", "x", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress, Egress]\ningress: [{}]"))
    check(view, cells({"x/a"}, pods_of("*")))
    # no policyTypes: Ingress, plus Egress because egress rules exist (the API server's defaulting)
    view = world(np("p", "x", "podSelector: {matchLabels: {pod: a}}\negress: [{to: [{podSelector: {}}]}]"))
    assert view.policies[0].ingress and view.policies[0].egress
    check(view, cells(pods_of("*"), {"x/a"}) | cells({"x/a"}, pods_of("y/*", "z/*")))


def test_an_empty_rule_allows_everything_and_the_pod_is_still_isolated_for_the_other_direction() -> None:
    view = world(np("p", "x", "podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress: [{}]\negress: [{}]"))
    check(view, set())
    assert not plan_cluster(view)["n0"].empty  # isolated (chains exist), everything allowed


# --- peers -----------------------------------------------------------------------------------------------


def test_allow_from_a_namespace() -> None:
    view = world(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{namespaceSelector: {matchLabels: {ns: y}}}]
"""))
    check(view, cells(pods_of("x/*", "z/*"), {"x/a"}))


def test_allow_from_a_pod_in_a_namespace_is_an_and() -> None:
    view = world(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: y}}
    podSelector: {matchLabels: {pod: b}}
"""))
    check(view, cells(pods_of("*") - {"y/b"}, {"x/a"}))


def test_separate_peers_are_an_or() -> None:
    view = world(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: y}}
  - podSelector: {matchLabels: {pod: b}}
"""))
    check(view, cells(pods_of("*") - pods_of("y/*") - {"x/b"}, {"x/a"}))


def test_a_pod_selector_only_peer_means_the_policys_own_namespace() -> None:
    view = world(np("p", "y", """
podSelector: {}
ingress:
- from: [{podSelector: {matchLabels: {pod: c}}}]
"""))
    check(view, cells(pods_of("*") - {"y/c"}, pods_of("y/*")))


def test_empty_selectors() -> None:
    # namespaceSelector {}: every pod of every namespace; podSelector {}: every pod of this namespace
    view = world(np("p", "x", "podSelector: {}\ningress: [{from: [{namespaceSelector: {}}]}]"))
    check(view, set())
    view = world(np("p", "x", "podSelector: {}\ningress: [{from: [{podSelector: {}}]}]"))
    check(view, cells(pods_of("y/*", "z/*"), pods_of("x/*")))
    view = world(np("p", "x", "podSelector: {}\ningress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}]}]"))
    check(view, cells(pods_of("*/b", "*/c"), pods_of("x/*")))


@pytest.mark.parametrize(("expr", "allowed_ns"), [
    ("{key: ns, operator: NotIn, values: [y]}", {"x", "z"}),
    ("{key: ns, operator: In, values: [y, z]}", {"y", "z"}),
    ("{key: env, operator: Exists}", {"z"}),
    ("{key: env, operator: DoesNotExist}", {"x", "y"}),
])
def test_namespace_match_expressions(expr: str, allowed_ns: set[str]) -> None:
    namespaces = [namespace_object("x"), namespace_object("y"), namespace_object("z", {"ns": "z", "env": "prod"})]
    view = world(np("p", "x", f"""
podSelector: {{matchLabels: {{pod: a}}}}
ingress:
- from: [{{namespaceSelector: {{matchExpressions: [{expr}]}}}}]
"""), namespaces=namespaces)
    check(view, cells(pods_of("*") - pods_of(*(f"{n}/*" for n in allowed_ns)), {"x/a"}))


def test_pod_match_expressions_select_the_policy_pods_and_the_peers() -> None:
    view = world(np("p", "x", """
podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}
ingress:
- from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [a]}]}}]
"""))
    check(view, cells(pods_of("*/b", "*/c"), {"x/b", "x/c"}))


def test_ip_block_with_except() -> None:
    # every b pod is in 10.244.1.0/24 (policy_world), so the except cuts exactly the b pods out
    view = world(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.0/24]}}]
"""))
    check(view, cells(pods_of("*/b"), {"x/a"}))
    plan = plan_cluster(view)
    assert kernel_allows(plan, view, "10.244.7.7", "x/a", 80)  # no pod: matched by address alone
    assert not kernel_allows(plan, view, "10.244.1.200", "x/a", 80)
    assert not kernel_allows(plan, view, "192.0.2.1", "x/a", 80)
    assert not evaluate(view, Endpoint("192.0.2.1"), endpoint(view, "x/a"), 80).allowed


def test_egress_ip_block_to_an_address_outside_the_cluster() -> None:
    view = world(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to: [{ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.128/25]}}]
"""))
    plan = plan_cluster(view)
    for ip, want in (("198.51.100.10", True), ("198.51.100.200", False), ("203.0.113.1", False)):
        assert kernel_allows(plan, view, "x/a", ip, 443) is want
        assert evaluate(view, endpoint(view, "x/a"), Endpoint(ip), 443).allowed is want
    check(view, cells({"x/a"}, pods_of("*")))


def test_selectors_never_match_addresses_that_are_no_pod() -> None:
    view = world(np("p", "x", "podSelector: {}\ningress: [{from: [{namespaceSelector: {}}]}]"))
    assert not evaluate(view, Endpoint("192.0.2.1"), endpoint(view, "x/a"), 80).allowed
    assert not kernel_allows(plan_cluster(view), view, "192.0.2.1", "x/a", 80)


# --- ports ----------------------------------------------------------------------------------------------


def test_protocol_omitted_means_tcp() -> None:
    view = world(np("p", "x", "podSelector: {}\ningress: [{ports: [{port: 80}]}]"))
    check(view, set(), 80, "TCP")
    check(view, cells(pods_of("*"), pods_of("x/*")), 80, "UDP")
    check(view, cells(pods_of("*"), pods_of("x/*")), 81, "TCP")


@pytest.mark.parametrize("proto", ["UDP", "SCTP"])
def test_udp_and_sctp_ports(proto: str) -> None:
    view = world(np("p", "x", f"podSelector: {{}}\ningress: [{{ports: [{{port: 81, protocol: {proto}}}]}}]"))
    check(view, set(), 81, proto)
    for other in {"TCP", "UDP", "SCTP"} - {proto}:
        check(view, cells(pods_of("*"), pods_of("x/*")), 81, other)
    check(view, cells(pods_of("*"), pods_of("x/*")), 80, proto)


def test_a_protocol_without_a_port_allows_every_port_of_it() -> None:
    view = world(np("p", "x", "podSelector: {}\ningress: [{ports: [{protocol: UDP}]}]"))
    check(view, set(), 81, "UDP")
    check(view, set(), 5353, "UDP")
    check(view, cells(pods_of("*"), pods_of("x/*")), 80, "TCP")


def test_end_port_is_an_inclusive_range() -> None:
    view = world(np("p", "x", "podSelector: {}\ningress: [{ports: [{port: 80, endPort: 81}]}]"))
    check(view, set(), 80)
    check(view, set(), 81)
    check(view, cells(pods_of("*"), pods_of("x/*")), 82)
    check(view, cells(pods_of("*"), pods_of("x/*")), 79)


def test_named_ports_resolve_on_the_destination_pod() -> None:
    # x/a serves "web" on 81, x/b on 80: one rule, a different port on each pod
    pods = [pod_object(k) for k in ALL if k not in ("x/a", "x/b")]
    pods += [pod_object("x/a", ports=[{"name": "web", "containerPort": 81}]),
             pod_object("x/b", ports=[{"name": "web", "containerPort": 80}])]
    view = world(np("p", "x", "podSelector: {}\ningress: [{ports: [{port: web}]}]"), pods=pods)
    check(view, cells(pods_of("*"), pods_of("x/*") - {"x/b"}), 80)
    check(view, cells(pods_of("*"), pods_of("x/*") - {"x/a"}), 81)
    check(view, cells(pods_of("*"), pods_of("x/*")), 81, "UDP")  # the name is declared for TCP only


def test_egress_named_ports_resolve_on_each_destination_pod() -> None:
    pods = [pod_object(k) for k in ALL if k != "y/a"] + [pod_object("y/a", ports=[{"name": "serve-80-udp",
                                                                                       "containerPort": 81,
                                                                                       "protocol": "UDP"}])]
    view = world(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- ports: [{port: serve-80-udp, protocol: UDP}]
"""), pods=pods)
    check(view, cells({"x/a"}, {"y/a"}), 80, "UDP")  # y/a's serve-80-udp is 81
    check(view, cells({"x/a"}, pods_of("*") - {"y/a"}), 81, "UDP")
    check(view, cells({"x/a"}, pods_of("*")), 80, "TCP")


def test_ports_and_peers_of_one_rule_must_both_match() -> None:
    view = world(np("p", "x", """
podSelector: {matchLabels: {pod: a}}
ingress:
- from: [{namespaceSelector: {matchLabels: {ns: y}}}]
  ports: [{port: 81}]
"""))
    check(view, cells(pods_of("*"), {"x/a"}), 80)
    check(view, cells(pods_of("x/*", "z/*"), {"x/a"}), 81)


# --- several policies, and change -----------------------------------------------------------------------


def test_several_policies_on_one_pod_are_a_union() -> None:
    a = np("from-y", "x", "podSelector: {matchLabels: {pod: a}}\ningress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]")
    b = np("from-zc", "x", """
podSelector: {}
ingress:
- from: [{namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: c}}}]
  ports: [{port: 80}]
""")
    view = world(a, b)
    check(view, cells(pods_of("x/*", "z/a", "z/b"), {"x/a"}) | cells(pods_of("*") - {"z/c"}, {"x/b", "x/c"}), 80)
    check(view, cells(pods_of("x/*", "z/*"), {"x/a"}) | cells(pods_of("*"), {"x/b", "x/c"}), 81)
    assert {p.key for p in view.policies} == {"x/from-y", "x/from-zc"}


def test_ingress_and_egress_must_both_allow() -> None:
    view = world(
        np("egress", "y", "podSelector: {matchLabels: {pod: b}}\npolicyTypes: [Egress]\negress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}}]}]"),
        np("ingress", "x", "podSelector: {matchLabels: {pod: a}}\ningress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}]"),
    )
    denied = cells({"y/b"}, pods_of("y/*", "z/*")) | cells(pods_of("*") - {"x/c"}, {"x/a"})
    check(view, denied)
    verdict = evaluate(view, endpoint(view, "y/b"), endpoint(view, "x/a"), 80)
    assert verdict.egress.allowed and not verdict.ingress.allowed
    assert verdict.egress.allowed_by == ["y/egress egress[0]"]
    assert verdict.ingress.policies == ["x/ingress"]


def test_relabelling_a_pod_and_a_namespace() -> None:
    policy = np("p", "x", """
podSelector: {matchLabels: {role: db}}
ingress:
- from: [{namespaceSelector: {matchLabels: {team: blue}}}]
""")
    pods = [pod_object(k) for k in ALL]
    check(world(policy, pods=pods), set())  # nobody is role=db yet
    pods = [pod_object(k, {"pod": "a", "role": "db"}) if k == "x/a" else pod_object(k) for k in ALL]
    check(world(policy, pods=pods), cells(pods_of("*"), {"x/a"}))
    namespaces = [namespace_object("x"), namespace_object("y", {"ns": "y", "team": "blue"}), namespace_object("z")]
    check(world(policy, pods=pods, namespaces=namespaces), cells(pods_of("x/*", "z/*"), {"x/a"}))


def test_every_namespace_carries_its_name_label() -> None:
    view = world(np("p", "x", """
podSelector: {}
ingress:
- from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]
"""))
    check(view, cells(pods_of("x/*", "y/*"), pods_of("x/*")))


# --- what is always allowed -----------------------------------------------------------------------------


def test_the_pods_own_node_always_reaches_it() -> None:
    view = world(np("deny", "x", "podSelector: {}\npolicyTypes: [Ingress, Egress]"))
    plan = plan_cluster(view)
    pod = view.pod("x", "a")
    for address in NODES[pod.node]:
        assert evaluate(view, Endpoint(address), endpoint(view, "x/a"), 80).allowed
        assert kernel_allows(plan, view, address, "x/a", 80)
    other = next(a for n, addrs in NODES.items() if n != pod.node for a in addrs)
    assert not evaluate(view, Endpoint(other), endpoint(view, "x/a"), 80).allowed
    assert not kernel_allows(plan, view, other, "x/a", 80)


def test_a_pod_always_reaches_itself() -> None:
    view = world(np("deny", "x", "podSelector: {}\npolicyTypes: [Ingress, Egress]"))
    plan = plan_cluster(view)
    assert evaluate(view, endpoint(view, "x/a"), endpoint(view, "x/a"), 80).allowed
    assert kernel_allows(plan, view, "x/a", "x/a", 80)


def test_an_address_held_by_two_pods_belongs_to_the_live_one() -> None:
    old = pod_object("x/a")
    old["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    new = pod_object("x/b")
    new["metadata"].update(name="z", uid="uid-new")
    new["status"]["podIP"] = ip_of("x/a")
    view = world(pods=[old, new])
    assert [p.key for p in view.pods] == ["x/z"]
    view = world(pods=[new, old])
    assert [p.key for p in view.pods] == ["x/z"]
