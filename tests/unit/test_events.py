"""Events: recorded and counted as client-go's recorder does, expired after an hour, written by the
scheduler, the ReplicaSet and Deployment controllers, and shown by describe and get."""

from __future__ import annotations

import copy
import random

from test_controllers import T0, deployment, node, pod, replicaset

from kubewire.cli.describe import event_lines, tabbed
from kubewire.cli.printers import table
from kubewire.controllers.deployment import reconcile_deployments
from kubewire.controllers.events import Event, event_ops, expire_events
from kubewire.controllers.replicaset import reconcile_replicasets
from kubewire.controllers.scheduler import schedule
from kubewire.controllers.types import Op, Snapshot, key_of

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "uid": "u1"}}


def events(ops: list[Op]) -> list[dict]:
    return [op.obj for op in ops if op.obj["kind"] == "Event"]


def applied(snap: Snapshot, ops: list[Op]) -> Snapshot:
    objects = dict(snap.objects)
    for op in ops:
        objects[key_of(op.obj)] = copy.deepcopy(op.obj)
    return Snapshot(objects, snap.now)


def test_repeats_are_one_event_whose_count_grows() -> None:
    failed = Event(POD, "Warning", "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503",
                   "kubelet", field_path="spec.containers{main}")  # fmt: skip
    snap = Snapshot.of([POD], now=T0)
    (op,) = event_ops(snap, [failed, failed], T0)
    ev = op.obj
    assert op.verb == "create" and ev["metadata"]["namespace"] == "shop" and ev["metadata"]["name"].startswith("web.")
    assert ev["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": "shop", "uid": "u1",
                                    "fieldPath": "spec.containers{main}"}  # fmt: skip
    assert (ev["count"], ev["type"], ev["source"]) == (2, "Warning", {"component": "kubelet"})
    (again,) = event_ops(applied(snap, [op]), [failed], T0 + 90)
    assert again.verb == "update" and again.obj["count"] == 3
    assert again.obj["firstTimestamp"] == ev["firstTimestamp"] != again.obj["lastTimestamp"]
    other = Event(POD, "Warning", "Unhealthy", "Readiness probe failed: dial tcp: refused", "kubelet")
    assert event_ops(snap, [other], T0)[0].obj["metadata"]["name"] != ev["metadata"]["name"]
    node_event = event_ops(snap, [Event(node("n1", "zone-a"), "Normal", "Ready", "ready", "kubelet")], T0)[0].obj
    assert node_event["metadata"]["namespace"] == "default"  # cluster-scoped objects' events


def test_events_expire_an_hour_after_last_seen() -> None:
    snap = Snapshot.of([POD], now=T0)
    ops = event_ops(snap, [Event(POD, "Normal", "Started", "Started container main", "kubelet")], T0)
    snap = applied(snap, ops)
    assert expire_events(Snapshot(snap.objects, T0 + 3599)) == []
    assert [op.verb for op in expire_events(Snapshot(snap.objects, T0 + 3601))] == ["delete"]


def test_scheduler_records_scheduled_and_failed_scheduling_once() -> None:
    snap = Snapshot.of([node("n1", "zone-a"), pod("a")], now=T0)
    (ev,) = events(schedule(snap))
    assert (ev["reason"], ev["message"], ev["source"]["component"]) == (
        "Scheduled", "Successfully assigned default/a to n1", "default-scheduler")
    big = pod("big", nodeSelector={"disk": "ssd"})
    snap = Snapshot.of([node("n1", "zone-a"), big], now=T0)
    ops = schedule(snap)
    (ev,) = events(ops)
    assert ev["type"] == "Warning" and ev["reason"] == "FailedScheduling" and "0/1 nodes are available" in ev["message"]
    assert events(schedule(applied(snap, ops))) == []  # the same verdict again: nothing new to say


def test_replicaset_and_deployment_record_what_they_did() -> None:
    rs = replicaset(replicas=2)
    ops = reconcile_replicasets(Snapshot.of([rs], T0), random.Random(1))
    created = [op.obj["metadata"]["name"] for op in ops if op.verb == "create" and op.obj["kind"] == "Pod"]
    assert sorted(e["message"] for e in events(ops)) == sorted(f"Created pod: {n}" for n in created)
    assert {e["reason"] for e in events(ops)} == {"SuccessfulCreate"}
    d = deployment(replicas=3)
    ops = reconcile_deployments(Snapshot.of([d], T0))
    (ev,) = events(ops)
    (new_rs,) = [op.obj for op in ops if op.obj["kind"] == "ReplicaSet"]
    assert (ev["reason"], ev["message"]) == ("ScalingReplicaSet",
                                             f"Scaled up replica set {new_rs['metadata']['name']} from 0 to 3")


class _Store:
    def __init__(self, objs: list[dict]) -> None:
        self.objs = objs

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        return [o for o in self.objs if o["kind"] == kind and o["metadata"].get("namespace") == namespace]


def test_describe_and_get_events_as_kubectl_prints_them() -> None:
    snap = Snapshot.of([POD], now=T0)
    ops = event_ops(snap, [Event(POD, "Normal", "Scheduled", "Successfully assigned shop/web to n1", "default-scheduler")],
                    T0)  # fmt: skip
    ops += event_ops(snap, [Event(POD, "Warning", "Unhealthy", "Readiness probe failed: x", "kubelet")] * 4, T0 + 5)
    evs = events(ops)
    text = tabbed(event_lines(POD, _Store(evs))).splitlines()  # type: ignore[arg-type]
    assert text[0] == "Events:"
    assert text[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert text[2].split() == ["----", "------", "----", "----", "-------"]
    assert text[3].split()[:2] == ["Normal", "Scheduled"] and text[3].endswith("default-scheduler  Successfully assigned shop/web to n1")
    assert text[4].split()[:2] == ["Warning", "Unhealthy"] and "(x4 over " in text[4]
    assert event_lines({**POD, "metadata": {**POD["metadata"], "uid": "other"}}, _Store(evs)) == ["Events:\t<none>"]  # type: ignore[arg-type]
    rows = table("Event", evs).splitlines()
    assert rows[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert rows[1].split()[1:4] == ["Normal", "Scheduled", "pod/web"]


def test_spam_filter_lets_25_through_then_one_per_five_minutes() -> None:
    from kubewire.controllers.events import SpamFilter

    f = SpamFilter()
    probe = Event(POD, "Warning", "Unhealthy", "Readiness probe failed: x", "kubelet", host="n1")
    assert [f.allow(probe, T0 + i) for i in range(30)].count(True) == 25  # a failing probe every second
    assert not f.allow(probe, T0 + 60)
    assert f.allow(probe, T0 + 30 + 300) and not f.allow(probe, T0 + 30 + 301)
    other = Event({**POD, "metadata": {**POD["metadata"], "uid": "u2"}}, "Normal", "Started", "s", "kubelet", host="n1")
    assert f.allow(other, T0 + 60)  # per object


def test_a_pod_that_stays_unschedulable_is_said_again_every_five_minutes() -> None:
    big = pod("big", nodeSelector={"disk": "ssd"})
    snap = Snapshot.of([node("n1", "zone-a"), big], now=T0)
    snap = applied(snap, schedule(snap))
    assert events(schedule(Snapshot(snap.objects, T0 + 200))) == []
    (op,) = [op for op in schedule(Snapshot(snap.objects, T0 + 301)) if op.obj["kind"] == "Event"]
    assert op.verb == "update" and op.obj["count"] == 2  # so it neither goes stale nor expires while pending
