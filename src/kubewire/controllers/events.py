"""Events, as components record them (client-go's EventRecorder with its correlator): what happened
to an object, shown by `describe` and `get events`.

Repeats aggregate as upstream's correlator does: the same type, reason, message and source for the
same object is one Event whose count and lastTimestamp grow. Its name is the object's name and a
hash of those fields (upstream: the object's name and a nanosecond timestamp), so any component
finds the Event to count on in the snapshot it already holds. Events of cluster-scoped objects live
in "default"; they expire an hour after they were last seen, as with the API server's --event-ttl.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from kubewire.controllers.types import Op, Snapshot

EVENT_TTL_SECONDS = 3600.0
SPAM_BURST = 25  # events_cache.go: defaultSpamBurst
SPAM_REFILL_SECONDS = 300.0  # defaultSpamQPS = 1/300
REFRESH_SECONDS = 300.0  # a standing condition is recorded again this often (the scheduler retries every 5 min)
SCHEDULER = "default-scheduler"
KUBELET = "kubelet"
REPLICASET_CONTROLLER = "replicaset-controller"
DEPLOYMENT_CONTROLLER = "deployment-controller"
SERVICE_CONTROLLER = "service-controller"
INGRESS_CONTROLLER = "nginx-ingress-controller"


@dataclass(frozen=True)
class Event:
    """One occurrence, before aggregation."""

    involved: dict  # the object it is about
    type: str  # Normal or Warning
    reason: str
    message: str
    component: str
    field_path: str = ""  # e.g. spec.containers{main}
    host: str = ""


class SpamFilter:
    """The correlator's spam filter: per source and object, a bucket of 25 events refilled one per
    five minutes, so a pod failing its probe every second writes 25 Events, then one per 5 min."""

    def __init__(self, burst: int = SPAM_BURST, refill: float = SPAM_REFILL_SECONDS) -> None:
        self.burst, self.refill = burst, refill
        self.buckets: dict[tuple, tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, e: Event, now: float) -> bool:
        m = e.involved.get("metadata") or {}
        key = (e.component, e.host, m.get("uid") or (e.involved.get("kind"), m.get("namespace"), m.get("name")))
        tokens, at = self.buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.refill)
        if tokens < 1:
            self.buckets[key] = (tokens, now)
            return False
        self.buckets[key] = (tokens - 1, now)
        return True

    def forget(self, uid: str) -> None:
        for key in [k for k in self.buckets if k[2] == uid]:
            del self.buckets[key]


def event_namespace(e: Event) -> str:
    """Where the Event lives: its object's namespace, "default" for cluster-scoped objects."""
    return (e.involved.get("metadata") or {}).get("namespace") or "default"


def stale(snap: Snapshot, e: Event, now: float, after: float = REFRESH_SECONDS) -> bool:
    """True when this event was never recorded, or last recorded more than `after` seconds ago: a
    condition that stands (a pod still unschedulable) is recorded again, so its Event neither goes
    stale nor expires while it lasts."""
    existing = snap.get("Event", event_namespace(e), event_name(e))
    if existing is None:
        return True
    return (existing.get("lastTimestamp") or "") < _time(now - after)


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _reference(obj: dict, field_path: str) -> dict:
    m = obj.get("metadata") or {}
    ref = {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", ""), "name": m.get("name", "")}
    if m.get("namespace"):
        ref["namespace"] = m["namespace"]
    if m.get("uid"):
        ref["uid"] = m["uid"]
    if field_path:
        ref["fieldPath"] = field_path
    return ref


def event_name(e: Event) -> str:
    m = e.involved.get("metadata") or {}
    key = "\0".join((str(m.get("uid", "")), e.involved.get("kind", ""), e.field_path, e.type, e.reason, e.message,
                     e.component, e.host))  # fmt: skip
    return f"{m.get('name', '')}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def event_ops(snap: Snapshot, events: Iterable[Event], now: float) -> list[Op]:
    """The writes recording these events: a new Event, or the existing one counted again."""
    counted: dict[tuple[str, str], tuple[Event, int]] = {}
    for e in events:
        key = (event_namespace(e), event_name(e))
        seen = counted.get(key)
        counted[key] = (e, seen[1] + 1 if seen else 1)
    ops: list[Op] = []
    stamp = _time(now)
    for i, ((ns, name), (e, n)) in enumerate(counted.items()):
        existing = snap.get("Event", ns, name)
        if existing is not None:
            ops.append(Op("update", {**existing, "count": int(existing.get("count") or 1) + n, "lastTimestamp": stamp}))
            continue
        source = {"component": e.component}
        if e.host:
            source["host"] = e.host
        ops.append(Op("create", {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": _reference(e.involved, e.field_path),
            "reason": e.reason,
            "message": e.message,
            "source": source,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            # MicroTime; one microsecond apart in recording order, so that what happened in one
            # second (Pulled, Created, Started) is listed in the order it happened
            "eventTime": _micro(now + i * 1e-6),
            "count": n,
            "type": e.type,
            "reportingComponent": e.component,
            "reportingInstance": e.host,
        }))  # fmt: skip
    return ops


def expire_events(snap: Snapshot, ttl: float = EVENT_TTL_SECONDS) -> list[Op]:
    """Events last seen more than `ttl` seconds ago are deleted (RFC 3339 in UTC with whole
    seconds sorts as text, so no timestamp is parsed)."""
    cutoff = _time(snap.now - ttl)
    ops = []
    for ev in snap.index("Event").values():
        last = ev.get("lastTimestamp") or (ev.get("metadata") or {}).get("creationTimestamp") or ""
        if len(last) == len(cutoff) and last < cutoff:
            ops.append(Op("delete", ev))
    return ops
