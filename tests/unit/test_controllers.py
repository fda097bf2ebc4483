"""Workload controllers and scheduler, driven step by step through simulate.apply_ops."""

from __future__ import annotations

import copy
import random
import re

import pytest

from kubewire.controllers import podutil
from kubewire.controllers.deployment import (
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    REVISION_ANNOTATION,
    UNIQUE_LABEL_KEY,
    compute_hash,
    equal_ignore_hash,
    fnv1a_32,
    reconcile_deployments,
    resolve_fenceposts,
    safe_encode_string,
)
from kubewire.controllers.deployment import requeue_after as deployment_requeue_after
from kubewire.controllers.replicaset import ALPHANUMS, pods_to_delete, reconcile_replicasets
from kubewire.controllers.replicaset import requeue_after as rs_requeue_after
from kubewire.controllers.scheduler import fit_error_message, schedule
from kubewire.controllers.simulate import apply_ops, make_pods_ready, reap_terminating
from kubewire.controllers.types import Op, Snapshot

T0 = 1_700_000_000.0
NS = "default"


# --- builders ---------------------------------------------------------------------------------------


def ts(t: float) -> str:
    return podutil.format_time(t)


def node(name: str, zone: str, pods: int = 110, cpu: str = "4", **spec: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {
                "kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": zone,
                "topology.kubernetes.io/region": "region-1",
            },
        },
        "spec": dict(spec),
        "status": {"allocatable": {"pods": str(pods), "cpu": cpu, "memory": "8Gi"}},
    }


def three_nodes() -> list[dict]:
    return [node("node-a1", "zone-a"), node("node-a2", "zone-a"), node("node-b1", "zone-b")]


def template(image: str = "echo:1", labels: dict | None = None) -> dict:
    return {
        "metadata": {"labels": labels or {"app": "web"}, "annotations": {"team": "net"}},
        "spec": {
            "containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
        },
    }


def deployment(
    replicas: int = 4,
    surge: int | str = 1,
    unavailable: int | str = 0,
    strategy: str = "RollingUpdate",
    image: str = "echo:1",
    **spec: object,
) -> dict:
    strat: dict = {"type": strategy}
    if strategy == "RollingUpdate":
        strat["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": NS,
            "uid": "uid-deploy-web",
            "generation": 1,
            "creationTimestamp": ts(T0),
            "labels": {"app": "web"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": strat,
            "minReadySeconds": 0,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "template": template(image),
            **spec,
        },
    }


def replicaset(name: str = "web-rs", replicas: int = 3, uid: str = "uid-rs", **extra: object) -> dict:
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid,
            "generation": 1,
            "creationTimestamp": ts(T0),
            "labels": {"app": "web"},
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
    }
    rs["spec"].update(extra)
    return rs


def pod(
    name: str,
    *,
    node_name: str = "",
    phase: str = "Running",
    ready: bool | None = None,
    created: float = T0,
    ready_since: float | None = None,
    restarts: int = 0,
    owner: dict | None = None,
    labels: dict | None = None,
    **spec: object,
) -> dict:
    ready = (phase == "Running") if ready is None else ready
    p = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "creationTimestamp": ts(created),
            "labels": labels if labels is not None else {"app": "web"},
        },
        "spec": {"containers": [{"name": "app", "image": "echo:1"}], **spec},
        "status": {
            "phase": phase,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": ts(ready_since if ready_since is not None else created),
                }
            ],
            "containerStatuses": [{"name": "app", "restartCount": restarts}],
        },
    }
    if node_name:
        p["spec"]["nodeName"] = node_name
    if owner is not None:
        p["metadata"]["ownerReferences"] = [podutil.new_controller_ref(owner)]
    return p


def ops_of(ops: list[Op], verb: str, kind: str | None = None) -> list[dict]:
    """The objects written with `verb` (of `kind`; without one, Events aside)."""
    return [o.obj for o in ops if o.verb == verb and (o.obj["kind"] == kind if kind else o.obj["kind"] != "Event")]


# --- a tiny cluster loop ----------------------------------------------------------------------------


class Cluster:
    """Drives the controllers like the daemon would, one change at a time, with a fake kubelet."""

    def __init__(self, objs: list[dict], seed: int = 7) -> None:
        self.snap = Snapshot.of(objs, now=T0)
        self.rng = random.Random(seed)

    def tick(self, seconds: float = 1.0) -> None:
        self.snap = Snapshot(self.snap.objects, self.snap.now + seconds)

    def apply(self, ops: list[Op]) -> list[Op]:
        self.snap = apply_ops(self.snap, ops)
        return ops

    def deployments(self) -> list[Op]:
        return self.apply(reconcile_deployments(self.snap, self.rng))

    def replicasets(self) -> list[Op]:
        return self.apply(reconcile_replicasets(self.snap, self.rng))

    def scheduler(self) -> list[Op]:
        return self.apply(schedule(self.snap))

    def kubelet(self, ready: bool = True) -> None:
        """Start scheduled pods (Ready=`ready`), finish terminating ones, and let the RS report it."""
        self.snap = reap_terminating(make_pods_ready(self.snap, ready=ready))
        self.replicasets()

    def pods_settle(self, ready: bool = True) -> None:
        self.replicasets()
        self.scheduler()
        self.kubelet(ready)

    def settle(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            self.tick()
            self.deployments()
            self.pods_settle()

    def rs_sizes(self) -> dict[str, int]:
        return {r["metadata"]["name"]: r["spec"]["replicas"] for r in self.snap.list("ReplicaSet")}

    def dep(self) -> dict:
        d = self.snap.get("Deployment", NS, "web")
        assert d is not None
        return d

    def set_template_image(self, image: str) -> None:
        d = copy.deepcopy(self.dep())
        d["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.apply([Op("update", d)])

    def active_pods(self) -> list[dict]:
        return [p for p in self.snap.list("Pod") if podutil.is_active(p)]


# --- podutil ----------------------------------------------------------------------------------------


class TestPodutil:
    def test_label_selector_operators(self) -> None:
        labels = {"app": "web", "tier": "front"}
        assert podutil.selector_matches({"matchLabels": {"app": "web"}}, labels)
        assert not podutil.selector_matches({"matchLabels": {"app": "db"}}, labels)
        sel = {
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "mid"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "app", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        }
        assert podutil.selector_matches(sel, labels)
        assert not podutil.selector_matches(sel, {**labels, "canary": "1"})
        assert podutil.selector_matches({}, labels)  # empty selects everything
        assert not podutil.selector_matches(None, labels)  # null selects nothing

    def test_node_affinity_terms_or_expressions_and(self) -> None:
        n = node("node-a1", "zone-a")
        n["metadata"]["labels"]["cores"] = "8"
        term_zone_b = {
            "matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-b"]}
            ]
        }
        term_big = {
            "matchExpressions": [
                {"key": "cores", "operator": "Gt", "values": ["4"]},
                {"key": "gpu", "operator": "DoesNotExist"},
            ]
        }
        assert podutil.node_selector_matches({"nodeSelectorTerms": [term_zone_b, term_big]}, n)
        assert not podutil.node_selector_matches({"nodeSelectorTerms": [term_zone_b]}, n)
        lt = {"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]}
        assert not podutil.node_selector_matches({"nodeSelectorTerms": [lt]}, n)
        by_name = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a1"]}]}
        assert podutil.node_selector_matches({"nodeSelectorTerms": [by_name]}, n)
        assert not podutil.node_selector_matches({"nodeSelectorTerms": [{}]}, n)  # empty term: nothing

    def test_pod_matches_node_needs_selector_and_affinity(self) -> None:
        n = node("node-b1", "zone-b")
        p = pod("p", nodeSelector={"topology.kubernetes.io/zone": "zone-b"})
        assert podutil.pod_matches_node(p, n)
        p["spec"]["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["node-b1"]}
                            ]
                        }
                    ]
                }
            }
        }
        assert not podutil.pod_matches_node(p, n)

    def test_ready_available_active(self) -> None:
        p = pod("p", ready_since=T0)
        assert podutil.is_pod_ready(p)
        assert podutil.is_pod_available(p, 0, T0)
        assert not podutil.is_pod_available(p, 10, T0 + 10)  # strictly after minReadySeconds
        assert podutil.is_pod_available(p, 10, T0 + 11)
        assert not podutil.is_pod_ready(pod("q", phase="Pending"))
        assert not podutil.is_active(pod("s", phase="Succeeded"))
        gone = pod("t")
        gone["metadata"]["deletionTimestamp"] = ts(T0)
        assert podutil.is_terminating(gone) and not podutil.is_active(gone)

    def test_quantities(self) -> None:
        assert podutil.milli_value("100m") == 100
        assert podutil.milli_value("1") == 1000
        assert podutil.milli_value("0.25") == 250
        assert podutil.int_value("128Mi") == 128 * 2**20
        assert podutil.int_value("1G") == 10**9
        assert podutil.int_value("1e3") == 1000
        assert podutil.int_value(110) == 110

    def test_claim_adopts_keeps_releases_and_ignores(self) -> None:
        rs = replicaset()
        other = replicaset("other", uid="uid-other")
        orphan = pod("orphan")
        mine = pod("mine", owner=rs)
        stray = pod("stray", owner=rs, labels={"app": "db"})
        foreign = pod("foreign", owner=other)
        claimed, writes = podutil.claim(rs, rs["spec"]["selector"], [orphan, mine, stray, foreign])
        assert [p["metadata"]["name"] for p in claimed] == ["orphan", "mine"]
        by_name = {w["metadata"]["name"]: w for w in writes}
        assert set(by_name) == {"orphan", "stray"}
        assert podutil.controller_ref(by_name["orphan"])["uid"] == "uid-rs"
        assert by_name["stray"]["metadata"]["ownerReferences"] == []
        assert orphan["metadata"].get("ownerReferences") is None  # inputs untouched


# --- ReplicaSet -------------------------------------------------------------------------------------


class TestReplicaSet:
    def test_scale_up_creates_pods_from_template(self) -> None:
        rs = replicaset(replicas=3)
        ops = reconcile_replicasets(Snapshot.of([rs], T0), random.Random(1))
        created = ops_of(ops, "create", "Pod")
        assert len(created) == 3
        for p in created:
            assert re.fullmatch(rf"web-rs-[{ALPHANUMS}]{{5}}", p["metadata"]["name"])
            assert p["metadata"]["generateName"] == "web-rs-"
            assert p["metadata"]["namespace"] == NS
            assert p["metadata"]["labels"] == {"app": "web"}
            assert p["metadata"]["annotations"] == {"team": "net"}
            assert p["spec"] == rs["spec"]["template"]["spec"]
            assert p["metadata"]["ownerReferences"] == [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-rs",
                    "uid": "uid-rs",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        assert len({p["metadata"]["name"] for p in created}) == 3
        # Same seed, same names: tests and replays are deterministic.
        again = reconcile_replicasets(Snapshot.of([rs], T0), random.Random(1))
        assert [p["metadata"]["name"] for p in ops_of(again, "create")] == [
            p["metadata"]["name"] for p in created
        ]

    def test_long_names_are_truncated_to_fit(self) -> None:
        rs = replicaset(name="x" * 70, replicas=1)
        (p,) = ops_of(reconcile_replicasets(Snapshot.of([rs], T0), random.Random(1)), "create")
        assert len(p["metadata"]["name"]) == 63
        assert p["metadata"]["name"].startswith("x" * 58)

    def test_status_reported_only_on_change(self) -> None:
        rs = replicaset(replicas=2, minReadySeconds=10)
        pods = [
            pod("a", owner=rs, node_name="n", ready_since=T0),
            pod("b", owner=rs, node_name="n", ready_since=T0 + 5, labels={"app": "web", "x": "y"}),
            pod("c", owner=rs, node_name="n", phase="Pending"),
        ]
        pods[2]["metadata"]["labels"] = {"app": "web"}
        snap = Snapshot.of([rs, *pods[:2]], T0 + 12)
        ops = reconcile_replicasets(snap, random.Random(1))
        (st,) = ops_of(ops, "status")
        assert st["status"] == {
            "replicas": 2,
            "fullyLabeledReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 1,
            "observedGeneration": 1,
        }
        assert reconcile_replicasets(apply_ops(snap, ops), random.Random(1)) == []

    def test_fully_labeled_counts_template_labels(self) -> None:
        rs = replicaset(replicas=1)
        rs["spec"]["template"]["metadata"]["labels"] = {"app": "web", "track": "stable"}
        snap = Snapshot.of([rs, pod("a", owner=rs)], T0)
        (st,) = ops_of(reconcile_replicasets(snap, random.Random(1)), "status")
        assert st["status"]["replicas"] == 1 and st["status"]["fullyLabeledReplicas"] == 0

    def test_adopts_orphans_and_creates_only_the_rest(self) -> None:
        rs = replicaset(replicas=3)
        snap = Snapshot.of([rs, pod("orphan", node_name="n"), pod("db", labels={"app": "db"})], T0)
        ops = reconcile_replicasets(snap, random.Random(1))
        (adopted,) = ops_of(ops, "update")
        assert adopted["metadata"]["name"] == "orphan"
        assert podutil.controller_ref(adopted)["name"] == "web-rs"
        assert len(ops_of(ops, "create")) == 2

    def test_releases_pods_it_no_longer_selects(self) -> None:
        rs = replicaset(replicas=1)
        relabelled = pod("relabelled", owner=rs, labels={"app": "debug"})
        ops = reconcile_replicasets(Snapshot.of([rs, relabelled], T0), random.Random(1))
        (released,) = ops_of(ops, "update")
        assert released["metadata"]["ownerReferences"] == []
        assert len(ops_of(ops, "create")) == 1

    def test_ignores_terminating_finished_and_foreign_pods(self) -> None:
        rs = replicaset(replicas=2)
        other = replicaset("other", replicas=1, uid="uid-other")
        dying = pod("dying", owner=rs)
        dying["metadata"]["deletionTimestamp"] = ts(T0)
        theirs = pod("theirs", owner=other)
        snap = Snapshot.of([rs, other, dying, pod("done", owner=rs, phase="Succeeded"), theirs], T0)
        ops = reconcile_replicasets(snap, random.Random(1))
        created = ops_of(ops, "create")
        assert len(created) == 2
        assert {podutil.controller_ref(p)["name"] for p in created} == {"web-rs"}
        assert not ops_of(ops, "delete") and not ops_of(ops, "update")

    def test_scale_down_deletes_extras(self) -> None:
        rs = replicaset(replicas=1)
        # Ages 4000 s, 1000 s and 100 s: far enough apart to land in different log2 buckets.
        pods = [pod(f"p{i}", owner=rs, node_name="n", created=T0 + t) for i, t in enumerate((0, 3000, 3900))]
        ops = reconcile_replicasets(Snapshot.of([rs, *pods], T0 + 4000), random.Random(1))
        deleted = [p["metadata"]["name"] for p in ops_of(ops, "delete")]
        assert deleted == ["p2", "p1"]  # most recently ready first when all else is equal

    def test_victim_order_follows_active_pods_with_ranks(self) -> None:
        now = T0 + 10_000
        rs = replicaset()
        ranked = [
            pod("unassigned", phase="Pending", created=T0),
            pod("pending", node_name="n1", phase="Pending", created=T0),
            pod("unknown", node_name="n1", phase="Unknown", ready=False, created=T0),
            pod("not-ready", node_name="n2", ready=False, created=T0),
            pod("cheap", node_name="n3", created=T0, ready_since=T0),
            pod("ready-recently", node_name="n4", created=T0, ready_since=T0 + 9_000),
            pod("restarts", node_name="n5", created=T0, ready_since=T0, restarts=5),
            pod("newer", node_name="n6", created=T0 + 5_000, ready_since=T0),
            pod("oldest", node_name="n7", created=T0, ready_since=T0),
        ]
        ranked[4]["metadata"]["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": "-10"}
        for p in ranked:
            p["metadata"]["ownerReferences"] = [podutil.new_controller_ref(rs)]
        shuffled = ranked[:]
        random.Random(3).shuffle(shuffled)
        got = pods_to_delete(shuffled, shuffled, len(ranked) - 1, now)
        assert [p["metadata"]["name"] for p in got] == [p["metadata"]["name"] for p in ranked[:-1]]

    def test_doubled_up_nodes_lose_pods_first(self) -> None:
        lonely = pod("lonely", node_name="n1", created=T0 + 50)
        crowded = [pod(f"crowded{i}", node_name="n2", created=T0) for i in range(3)]
        got = pods_to_delete([lonely, *crowded], [lonely, *crowded], 2, T0 + 100)
        assert all(p["spec"]["nodeName"] == "n2" for p in got)

    def test_logarithmic_ages_tie_break_on_uid(self) -> None:
        a = pod("a", node_name="n", created=T0 + 1, ready_since=T0)
        b = pod("b", node_name="n", created=T0 + 2, ready_since=T0)
        # 1001 s and 1000 s old are in the same log2 bucket, so the lower uid goes first.
        got = pods_to_delete([b, a], [], 1, T0 + 1002)
        assert got[0]["metadata"]["name"] == "a"

    def test_scale_down_via_reconcile_prefers_not_ready(self) -> None:
        rs = replicaset(replicas=2)
        pods = [
            pod("ready-old", owner=rs, node_name="n1", created=T0),
            pod("not-ready", owner=rs, node_name="n2", ready=False, created=T0 - 100),
            pod("ready-new", owner=rs, node_name="n3", created=T0 + 1),
        ]
        ops = reconcile_replicasets(Snapshot.of([rs, *pods], T0 + 10), random.Random(1))
        assert [p["metadata"]["name"] for p in ops_of(ops, "delete")] == ["not-ready"]

    def test_terminating_rs_manages_nothing(self) -> None:
        rs = replicaset(replicas=2)
        rs["metadata"]["deletionTimestamp"] = ts(T0)
        ops = reconcile_replicasets(Snapshot.of([rs], T0), random.Random(1))
        assert not ops_of(ops, "create")


# --- Deployment -------------------------------------------------------------------------------------


class TestHash:
    def test_fnv_and_safe_encoding(self) -> None:
        assert fnv1a_32(b"") == 0x811C9DC5
        assert fnv1a_32(b"a") == 0xE40C292C
        assert fnv1a_32(b"foobar") == 0xBF9CF968
        # Decimal digits land on "456789bcdf", the alphabet real pod-template-hashes use.
        assert safe_encode_string("0123456789") == "456789bcdf"

    def test_stable_for_equal_templates_and_different_otherwise(self) -> None:
        t1, t2 = template(), template()
        t2["metadata"]["labels"] = dict(reversed(list(t2["metadata"]["labels"].items())))
        assert compute_hash(t1) == compute_hash(t2) == compute_hash(copy.deepcopy(t1))
        t2["metadata"]["annotations"] = {}
        t1_no_ann = copy.deepcopy(t1)
        del t1_no_ann["metadata"]["annotations"]
        assert compute_hash(t1_no_ann) == compute_hash(t2)  # empty and absent are the same
        assert compute_hash(template("echo:2")) != compute_hash(t1)
        assert compute_hash(t1, 1) != compute_hash(t1) != compute_hash(t1, 0)
        assert re.fullmatch(r"[456789bcdf]{1,10}", compute_hash(t1))

    def test_equal_ignore_hash(self) -> None:
        t = template()
        with_hash = copy.deepcopy(t)
        with_hash["metadata"]["labels"][UNIQUE_LABEL_KEY] = "abc"
        assert equal_ignore_hash(t, with_hash)
        assert not equal_ignore_hash(t, template("echo:2"))

    @pytest.mark.parametrize(
        ("surge", "unavailable", "desired", "expected"),
        [
            ("25%", "25%", 4, (1, 1)),
            ("25%", "25%", 10, (3, 2)),
            (1, 0, 4, (1, 0)),
            ("0%", "1%", 2, (0, 1)),
            (0, 0, 3, (0, 1)),
            ("50%", "0%", 3, (2, 0)),
        ],
    )
    def test_fenceposts_round_like_upstream(
        self, surge: object, unavailable: object, desired: int, expected: tuple[int, int]
    ) -> None:
        assert resolve_fenceposts(surge, unavailable, desired) == expected


class TestDeployment:
    def test_create_makes_hashed_replicaset_then_pods(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=4)])
        ops = c.deployments()
        (rs,) = ops_of(ops, "create", "ReplicaSet")
        h = compute_hash(template())
        assert rs["metadata"]["name"] == f"web-{h}"
        assert rs["metadata"]["labels"] == {"app": "web", UNIQUE_LABEL_KEY: h}
        assert rs["spec"]["selector"] == {"matchLabels": {"app": "web", UNIQUE_LABEL_KEY: h}}
        assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", UNIQUE_LABEL_KEY: h}
        assert rs["spec"]["replicas"] == 4
        anns = rs["metadata"]["annotations"]
        assert anns[REVISION_ANNOTATION] == "1"
        assert anns[DESIRED_REPLICAS_ANNOTATION] == "4"
        assert anns[MAX_REPLICAS_ANNOTATION] == "5"
        assert podutil.controller_ref(rs) == podutil.new_controller_ref(deployment())
        assert c.dep()["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
        prog = podutil.get_condition(c.dep(), "Progressing")
        assert prog["reason"] == "NewReplicaSetCreated"
        assert podutil.get_condition(c.dep(), "Available")["reason"] == "MinimumReplicasUnavailable"

        c.pods_settle()
        assert len(c.active_pods()) == 4
        assert all(p["metadata"]["labels"][UNIQUE_LABEL_KEY] == h for p in c.active_pods())
        c.tick()
        c.deployments()
        st = c.dep()["status"]
        assert (
            st["replicas"],
            st["updatedReplicas"],
            st["readyReplicas"],
            st["availableReplicas"],
            st["unavailableReplicas"],
            st["observedGeneration"],
        ) == (4, 4, 4, 4, 0, 1)
        assert podutil.get_condition(c.dep(), "Available")["reason"] == "MinimumReplicasAvailable"
        assert podutil.get_condition(c.dep(), "Progressing")["reason"] == "NewReplicaSetAvailable"
        # Level-triggered and idempotent once converged.
        assert reconcile_deployments(c.snap) == []
        assert reconcile_replicasets(c.snap, c.rng) == []

    def _rollout(self, c: Cluster, new_image: str, ready_after_rounds: int = 0) -> list[tuple[int, int]]:
        """Update the image, then one deployment sync per round; pods become ready only every
        `ready_after_rounds + 1` rounds. Returns (old, new) RS sizes after each deployment sync."""
        old_name = next(iter(c.rs_sizes()))
        c.set_template_image(new_image)
        seq = []
        for i in range(40):
            c.tick()
            c.deployments()
            sizes = c.rs_sizes()
            new_name = next(n for n in sizes if n != old_name)
            seq.append((sizes[old_name], sizes[new_name]))
            c.replicasets()
            c.scheduler()
            c.kubelet(ready=(i % (ready_after_rounds + 1) == ready_after_rounds))
            if seq[-1] == (0, 4) and len(seq) > 1 and seq[-2] == (0, 4):
                break
        while len(seq) > 1 and seq[-1] == seq[-2]:
            seq.pop()
        return seq

    def test_rolling_update_surge_one_unavailable_zero(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=4, surge=1, unavailable=0)])
        c.settle()
        seq = self._rollout(c, "echo:2")
        assert seq == [(4, 1), (3, 1), (3, 2), (2, 2), (2, 3), (1, 3), (1, 4), (0, 4)]
        assert all(old + new <= 5 for old, new in seq)

    def test_rolling_update_never_drops_below_min_available(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=4, surge=1, unavailable=0)])
        c.settle()
        c.set_template_image("echo:2")
        for _ in range(30):
            c.tick()
            c.deployments()
            c.replicasets()
            ready = [p for p in c.active_pods() if podutil.is_pod_ready(p)]
            assert len(ready) >= 4
            assert len(c.active_pods()) <= 5
            c.scheduler()
            c.kubelet()
        assert set(c.rs_sizes().values()) == {0, 4}

    def test_rolling_update_25_percent(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=4, surge="25%", unavailable="25%")])
        c.settle()
        # Pods need two rounds to turn ready, so the deployment sees the not-ready phase too.
        seq = self._rollout(c, "echo:2", ready_after_rounds=1)
        assert seq == [(3, 1), (3, 2), (1, 2), (1, 4), (0, 4)]
        assert all(old + new <= 5 for old, new in seq)

    def test_rollout_status_and_revision(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=4)])
        c.settle()
        c.set_template_image("echo:2")
        c.tick()
        c.deployments()
        d = c.dep()
        assert d["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
        assert podutil.get_condition(d, "Progressing")["reason"] == "NewReplicaSetCreated"
        assert d["status"]["observedGeneration"] == 2
        c.pods_settle()
        c.tick()
        c.deployments()
        assert podutil.get_condition(c.dep(), "Progressing")["reason"] == "ReplicaSetUpdated"
        c.settle()
        d = c.dep()
        prog = podutil.get_condition(d, "Progressing")
        new_name = next(n for n, size in c.rs_sizes().items() if size == 4)
        assert prog["reason"] == "NewReplicaSetAvailable"
        assert prog["message"] == f'ReplicaSet "{new_name}" has successfully progressed.'
        new_rs = c.snap.get("ReplicaSet", NS, new_name)
        assert new_rs["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
        assert d["status"]["updatedReplicas"] == 4

    def test_recreate_waits_for_old_pods_to_go(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=3, strategy="Recreate")])
        c.settle()
        (old_name,) = c.rs_sizes()
        c.set_template_image("echo:2")
        c.tick()
        ops = c.deployments()
        assert not ops_of(ops, "create", "ReplicaSet")
        assert c.rs_sizes() == {old_name: 0}
        c.replicasets()  # old pods now terminating, still running
        assert len(c.snap.list("Pod")) == 3
        c.tick()
        assert not ops_of(c.deployments(), "create", "ReplicaSet")
        c.snap = reap_terminating(c.snap)
        c.replicasets()
        c.tick()
        ops = c.deployments()
        (new_rs,) = ops_of(ops, "create", "ReplicaSet")
        assert new_rs["spec"]["replicas"] == 3  # straight to full size
        c.settle()
        assert len(c.active_pods()) == 3
        assert all(p["spec"]["containers"][0]["image"] == "echo:2" for p in c.active_pods())

    def test_scaling_without_rollout_resizes_new_rs(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=2)])
        c.settle()
        d = copy.deepcopy(c.dep())
        d["spec"]["replicas"] = 5
        c.apply([Op("update", d)])
        c.tick()
        ops = c.deployments()
        (rs,) = ops_of(ops, "update", "ReplicaSet")
        assert rs["spec"]["replicas"] == 5
        assert rs["metadata"]["annotations"][DESIRED_REPLICAS_ANNOTATION] == "5"
        assert rs["metadata"]["annotations"][MAX_REPLICAS_ANNOTATION] == "6"
        c.settle()
        assert len(c.active_pods()) == 5
        d = copy.deepcopy(c.dep())
        d["spec"]["replicas"] = 1
        c.apply([Op("update", d)])
        c.settle()
        assert len(c.active_pods()) == 1

    def test_proportional_scaling_during_rollout(self) -> None:
        d = deployment(replicas=10, surge=3, unavailable=2)
        d["spec"]["replicas"] = 20
        old = replicaset("web-old", replicas=8, uid="uid-old")
        new = replicaset("web-new", replicas=5, uid="uid-new")
        new["metadata"]["creationTimestamp"] = ts(T0 + 60)
        for rs in (old, new):
            rs["metadata"]["ownerReferences"] = [podutil.new_controller_ref(d)]
            rs["metadata"]["annotations"] = {DESIRED_REPLICAS_ANNOTATION: "10", MAX_REPLICAS_ANNOTATION: "13"}
        new["spec"]["template"] = copy.deepcopy(d["spec"]["template"])
        old["spec"]["template"] = template("echo:0")
        ops = reconcile_deployments(Snapshot.of([d, old, new], T0 + 100))
        sizes = {r["metadata"]["name"]: r["spec"]["replicas"] for r in ops_of(ops, "update", "ReplicaSet")}
        assert sizes == {"web-old": 14, "web-new": 9}  # 23 allowed, shared 8:5

    def test_revision_history_limit_deletes_oldest_empty_rs(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=2, revisionHistoryLimit=1)])
        c.settle()
        names = list(c.rs_sizes())
        for image in ("echo:2", "echo:3"):
            c.set_template_image(image)
            c.settle()
            names += [n for n in c.rs_sizes() if n not in names]
        assert len(names) == 3
        remaining = c.rs_sizes()
        assert names[0] not in remaining  # revision 1 is gone
        assert remaining == {names[1]: 0, names[2]: 2}

    def test_paused_deployment_does_not_roll_out(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=2)])
        c.settle()
        d = copy.deepcopy(c.dep())
        d["spec"]["paused"] = True
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "echo:2"
        c.apply([Op("update", d)])
        c.settle(3)
        assert len(c.rs_sizes()) == 1
        assert podutil.get_condition(c.dep(), "Progressing")["reason"] == "DeploymentPaused"
        d = copy.deepcopy(c.dep())
        d["spec"]["paused"] = False
        c.apply([Op("update", d)])
        c.settle()
        assert sorted(c.rs_sizes().values()) == [0, 2]

    def test_adopts_orphan_replicaset(self) -> None:
        d = deployment(replicas=2)
        h = compute_hash(d["spec"]["template"])
        orphan = replicaset(f"web-{h}", replicas=2, uid="uid-orphan")
        orphan["spec"]["template"] = copy.deepcopy(d["spec"]["template"])
        orphan["spec"]["template"]["metadata"]["labels"][UNIQUE_LABEL_KEY] = h
        orphan["metadata"]["labels"] = {"app": "web", UNIQUE_LABEL_KEY: h}
        ops = reconcile_deployments(Snapshot.of([d, orphan], T0))
        assert not ops_of(ops, "create")
        (adopted,) = ops_of(ops, "update", "ReplicaSet")
        assert podutil.controller_ref(adopted)["uid"] == "uid-deploy-web"

    def test_hash_collision_bumps_collision_count(self) -> None:
        d = deployment(replicas=2)
        h = compute_hash(d["spec"]["template"])
        squatter = replicaset(f"web-{h}", replicas=0, uid="uid-squatter")
        squatter["spec"]["selector"] = {"matchLabels": {"app": "other"}}
        squatter["metadata"]["labels"] = {"app": "other"}
        squatter["spec"]["template"] = template("something-else", labels={"app": "other"})
        snap = Snapshot.of([d, squatter], T0)
        ops = reconcile_deployments(snap)
        assert not ops_of(ops, "create")
        (st,) = ops_of(ops, "status")
        assert st["status"]["collisionCount"] == 1
        ops = reconcile_deployments(apply_ops(snap, ops))
        (rs,) = ops_of(ops, "create", "ReplicaSet")
        assert rs["metadata"]["name"] == f"web-{compute_hash(d['spec']['template'], 1)}" != f"web-{h}"

    def test_unavailable_pods_keep_available_false(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=3)])
        c.deployments()
        c.pods_settle(ready=False)
        c.tick()
        c.deployments()
        st = c.dep()["status"]
        assert st["availableReplicas"] == 0 and st["unavailableReplicas"] == 3
        avail = podutil.get_condition(c.dep(), "Available")
        assert (avail["status"], avail["reason"]) == ("False", "MinimumReplicasUnavailable")

    def test_min_ready_seconds_delays_availability(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=1, minReadySeconds=30)])
        c.settle(2)
        assert c.dep()["status"]["availableReplicas"] == 0
        c.tick(60)
        c.replicasets()
        c.deployments()
        assert c.dep()["status"]["availableReplicas"] == 1


class TestRequeueAndDeadlines:
    def test_progress_deadline_exceeded(self) -> None:
        c = Cluster([*three_nodes(), deployment(replicas=2, progressDeadlineSeconds=60)])
        c.deployments()
        c.pods_settle(ready=False)
        c.tick()
        c.deployments()
        # Pods were created (progress), but they never turn ready: no further progress after this.
        assert podutil.get_condition(c.dep(), "Progressing")["reason"] == "ReplicaSetUpdated"
        wait = deployment_requeue_after(c.snap)
        assert wait is not None and 0 < wait <= 61
        c.tick(61)
        c.deployments()
        prog = podutil.get_condition(c.dep(), "Progressing")
        assert (prog["status"], prog["reason"]) == ("False", "ProgressDeadlineExceeded")
        rs_name = next(iter(c.rs_sizes()))
        assert prog["message"] == f'ReplicaSet "{rs_name}" has timed out progressing.'
        assert deployment_requeue_after(c.snap) is None
        # Pods finally become ready: the rollout completes and the condition recovers.
        c.kubelet()
        c.tick()
        c.deployments()
        assert podutil.get_condition(c.dep(), "Progressing")["reason"] == "NewReplicaSetAvailable"

    def test_replicaset_requeue_for_min_ready_seconds(self) -> None:
        rs = replicaset(replicas=1, minReadySeconds=30)
        snap = Snapshot.of([rs, pod("a", owner=rs, node_name="n", ready_since=T0)], T0 + 10)
        assert rs_requeue_after(snap) == pytest.approx(20)
        assert rs_requeue_after(Snapshot(snap.objects, T0 + 31)) is None


# --- scheduler --------------------------------------------------------------------------------------


def pending_pods(n: int, owner: dict | None = None, **spec: object) -> list[dict]:
    return [pod(f"p{i}", phase="Pending", created=T0 + i, owner=owner, **spec) for i in range(n)]


def placements(ops: list[Op]) -> dict[str, str]:
    return {o["metadata"]["name"]: o["spec"]["nodeName"] for o in ops_of(ops, "update", "Pod")}


class TestScheduler:
    def test_spreads_over_zones_then_nodes(self) -> None:
        rs = replicaset(replicas=4)
        snap = Snapshot.of([*three_nodes(), rs, *pending_pods(4, owner=rs)], T0)
        got = placements(schedule(snap))
        assert got == {"p0": "node-a1", "p1": "node-b1", "p2": "node-a2", "p3": "node-b1"}
        zones = {"node-a1": "a", "node-a2": "a", "node-b1": "b"}
        per_zone = [zones[n] for n in got.values()]
        assert per_zone.count("a") == per_zone.count("b") == 2

    def test_spreading_counts_existing_pods(self) -> None:
        rs = replicaset(replicas=3)
        existing = [pod("old1", owner=rs, node_name="node-a1"), pod("old2", owner=rs, node_name="node-b1")]
        snap = Snapshot.of([*three_nodes(), rs, *existing, *pending_pods(1, owner=rs)], T0)
        assert placements(schedule(snap)) == {"p0": "node-a2"}

    def test_unrelated_pods_only_break_ties(self) -> None:
        busy = [pod(f"other{i}", node_name="node-a1", labels={"app": "db"}) for i in range(3)]
        rs = replicaset(replicas=1)
        snap = Snapshot.of(
            [node("node-a1", "zone-a"), node("node-a2", "zone-a"), rs, *busy, *pending_pods(1, owner=rs)], T0
        )
        assert placements(schedule(snap)) == {"p0": "node-a2"}

    def test_node_selector(self) -> None:
        snap = Snapshot.of(
            [*three_nodes(), *pending_pods(2, nodeSelector={"topology.kubernetes.io/zone": "zone-a"})], T0
        )
        assert set(placements(schedule(snap)).values()) <= {"node-a1", "node-a2"}

    def test_required_node_affinity(self) -> None:
        affinity = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-b"]}
                            ]
                        },
                    ]
                }
            }
        }
        snap = Snapshot.of([*three_nodes(), *pending_pods(3, affinity=affinity)], T0)
        assert set(placements(schedule(snap)).values()) == {"node-b1"}

    def test_unschedulable_message_like_upstream(self) -> None:
        p = pending_pods(1, nodeSelector={"disk": "ssd"})[0]
        snap = Snapshot.of([*three_nodes(), p], T0)
        ops = schedule(snap)
        (st,) = ops_of(ops, "status")
        assert st["status"]["phase"] == "Pending"
        cond = podutil.get_condition(st, "PodScheduled")
        assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
        assert (
            cond["message"] == "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
        )
        assert not ops_of(ops, "update")
        # Same verdict next time: nothing to write.
        assert schedule(apply_ops(snap, ops)) == []

    def test_mixed_reasons_are_counted_and_sorted(self) -> None:
        full = node("node-full", "zone-a", pods=1)
        cordoned = node("node-cordoned", "zone-a", unschedulable=True)
        elsewhere = node("node-gpu", "zone-b")
        elsewhere["metadata"]["labels"]["gpu"] = "none"
        tainted = node(
            "node-tainted", "zone-b", taints=[{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]
        )
        occupant = pod("occupant", node_name="node-full")
        p = pending_pods(1, nodeSelector={"kubernetes.io/hostname": "node-full"})[0]
        snap = Snapshot.of([full, cordoned, elsewhere, tainted, occupant, p], T0)
        (st,) = ops_of(schedule(snap), "status")
        assert podutil.get_condition(st, "PodScheduled")["message"] == (
            "0/4 nodes are available: 1 Too many pods, 1 node(s) didn't match Pod's node affinity/selector, "
            "1 node(s) had untolerated taint {dedicated: infra}, 1 node(s) were unschedulable."
        )

    def test_no_nodes(self) -> None:
        assert fit_error_message(0, {}) == "no nodes available to schedule pods"

    def test_cpu_capacity_accounts_for_the_batch(self) -> None:
        nodes = [node("small-a", "zone-a", cpu="1"), node("small-b", "zone-b", cpu="1")]
        res = {"requests": {"cpu": "600m"}}
        pods = [
            pod(
                f"p{i}",
                phase="Pending",
                created=T0 + i,
                containers=[{"name": "app", "image": "x", "resources": res}],
            )
            for i in range(3)
        ]
        ops = schedule(Snapshot.of([*nodes, *pods], T0))
        assert sorted(placements(ops).values()) == ["small-a", "small-b"]
        (st,) = ops_of(ops, "status")
        assert st["metadata"]["name"] == "p2"
        assert (
            podutil.get_condition(st, "PodScheduled")["message"]
            == "0/2 nodes are available: 2 Insufficient cpu."
        )

    def test_pod_count_capacity(self) -> None:
        nodes = [node("tiny", "zone-a", pods=2)]
        ops = schedule(Snapshot.of([*nodes, *pending_pods(3)], T0))
        assert len(placements(ops)) == 2
        (st,) = ops_of(ops, "status")
        assert (
            podutil.get_condition(st, "PodScheduled")["message"]
            == "0/1 nodes are available: 1 Too many pods."
        )

    def test_priority_wins_the_last_slot(self) -> None:
        nodes = [node("tiny", "zone-a", pods=1)]
        low = pod("low", phase="Pending", created=T0)
        high = pod("high", phase="Pending", created=T0 + 5, priority=1000)
        assert placements(schedule(Snapshot.of([*nodes, low, high], T0))) == {"high": "tiny"}

    def test_tolerations_and_host_ports(self) -> None:
        tainted = node("edge", "zone-a", taints=[{"key": "role", "value": "edge", "effect": "NoSchedule"}])
        plain = node("plain", "zone-b")
        tolerant = pod(
            "tolerant",
            phase="Pending",
            nodeSelector={"kubernetes.io/hostname": "edge"},
            tolerations=[{"key": "role", "operator": "Exists", "effect": "NoSchedule"}],
        )
        assert placements(schedule(Snapshot.of([tainted, plain, tolerant], T0))) == {"tolerant": "edge"}

        hp = [{"name": "app", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}]
        pods = [pod(f"ingress{i}", phase="Pending", created=T0 + i, containers=hp) for i in range(3)]
        ops = schedule(Snapshot.of([node("n1", "zone-a"), node("n2", "zone-b"), *pods], T0))
        assert sorted(placements(ops).values()) == ["n1", "n2"]
        (st,) = ops_of(ops, "status")
        assert podutil.get_condition(st, "PodScheduled")["message"] == (
            "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
        )

    def test_skips_bound_terminating_and_foreign_scheduler_pods(self) -> None:
        bound = pod("bound", node_name="node-a1")
        dying = pod("dying", phase="Pending")
        dying["metadata"]["deletionTimestamp"] = ts(T0)
        custom = pod("custom", phase="Pending", schedulerName="my-scheduler")
        assert schedule(Snapshot.of([*three_nodes(), bound, dying, custom], T0)) == []

    def test_binding_clears_an_earlier_unschedulable_verdict(self) -> None:
        p = pending_pods(1)[0]
        snap = Snapshot.of([p], T0)
        snap = apply_ops(snap, schedule(snap))
        assert podutil.get_condition(snap.get("Pod", NS, "p0"), "PodScheduled")["status"] == "False"
        snap = Snapshot({**snap.objects, ("Node", "", "n1"): node("n1", "zone-a")}, T0 + 1)
        ops = schedule(snap)
        assert placements(ops) == {"p0": "n1"}
        (st,) = ops_of(ops, "status")
        assert podutil.get_condition(st, "PodScheduled")["status"] == "True"


# --- simulate ---------------------------------------------------------------------------------------


class TestSimulate:
    def test_apply_ops_identity_generation_and_graceful_delete(self) -> None:
        snap = Snapshot.of([], T0)
        rs = replicaset()
        del rs["metadata"]["uid"], rs["metadata"]["creationTimestamp"], rs["metadata"]["generation"]
        snap = apply_ops(snap, [Op("create", rs)])
        stored = snap.get("ReplicaSet", NS, "web-rs")
        assert stored["metadata"]["uid"] and stored["metadata"]["creationTimestamp"] == ts(T0)
        assert stored["metadata"]["generation"] == 1
        with pytest.raises(ValueError):
            apply_ops(snap, [Op("create", rs)])

        changed = copy.deepcopy(stored)
        changed["spec"]["replicas"] = 9
        changed["metadata"]["uid"] = "forged"
        snap = apply_ops(snap, [Op("update", changed)])
        stored = snap.get("ReplicaSet", NS, "web-rs")
        assert stored["metadata"]["generation"] == 2 and stored["metadata"]["uid"] != "forged"

        p = pod("p")
        snap = apply_ops(snap, [Op("create", p), Op("delete", p)], now=T0 + 5)
        assert snap.get("Pod", NS, "p")["metadata"]["deletionTimestamp"] == ts(T0 + 5)
        assert reap_terminating(snap).get("Pod", NS, "p") is None
        assert apply_ops(snap, [Op("delete", stored)]).get("ReplicaSet", NS, "web-rs") is None
