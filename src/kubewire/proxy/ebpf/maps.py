"""What the socket load balancer's maps hold on one node: planned from the same service and
endpoint model as the iptables and nftables proxies, encoded as the programs read it.

services  (hash)     vip u32, port u16 (network order), protocol u8, pad -> slots u32, id u32,
                     affinity timeout s u32, flags u32
backends  (hash)     service id u32, slot u32 -> ip u32, port u32 (network order in the low half)
affinity  (LRU hash) netns cookie u64, service id u32, pad -> last use ns u64, ip u32, port u32
revnat    (LRU hash) socket cookie u64, ip u32, port u32 -> vip u32, port u32

Only Services that have endpoints this node may use go in: a VIP missing from the map is left to
netfilter, where kube-proxy's filter rules REJECT ("has no endpoints") or DROP ("has no local
endpoints") it exactly as upstream does, and where NodePort, LoadBalancer and externalIPs traffic
from outside the node is handled (no socket exists there for a cgroup hook to see).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubewire.proxy.model import Endpoint, ServicePort, ServicePortName
from kubewire.proxy.topology import categorize_endpoints

PROTOCOLS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP}
SVC_KEY, SVC_VAL, BE_KEY, BE_VAL, AFF_KEY, AFF_VAL, REV_KEY, REV_VAL = 8, 16, 8, 8, 16, 16, 16, 8


def svc_key(vip: str, port: int, protocol: str) -> bytes:
    return socket.inet_aton(vip) + struct.pack("!H", port) + bytes([PROTOCOLS[protocol], 0])


def svc_value(slots: int, svc_id: int, affinity_seconds: int) -> bytes:
    return struct.pack("=IIII", slots, svc_id, affinity_seconds, 0)


def backend_key(svc_id: int, slot: int) -> bytes:
    return struct.pack("=II", svc_id, slot)


def backend_value(ip: str, port: int) -> bytes:
    return socket.inet_aton(ip) + struct.pack("!H", port) + b"\0\0"


def decode_backend(value: bytes) -> tuple[str, int]:
    return socket.inet_ntoa(value[:4]), struct.unpack("!H", value[4:6])[0]


def decode_svc_key(key: bytes) -> tuple[str, int, str]:
    proto = {v: k for k, v in PROTOCOLS.items()}.get(key[6], str(key[6]))
    return socket.inet_ntoa(key[:4]), struct.unpack("!H", key[4:6])[0], proto


@dataclass(frozen=True)
class Entry:
    """One Service port as this node balances it."""

    name: ServicePortName
    vip: str
    port: int
    protocol: str
    backends: tuple[tuple[str, int], ...]
    affinity_seconds: int


def internal_endpoints(svc: ServicePort, eps: Sequence[Endpoint], node: str, labels: Mapping[str, str]) -> list[Endpoint]:
    """The endpoints a pod on this node reaches through the ClusterIP (upstream's internal policy
    chain: Local endpoints under internalTrafficPolicy Local, else the Cluster ones)."""
    cat = categorize_endpoints(list(eps), svc, node, dict(labels))
    if not cat.all_reachable:
        return []
    return list(cat.internal(svc))


def plan_entries(services: Mapping[ServicePortName, ServicePort], endpoints: Mapping[ServicePortName, Sequence[Endpoint]],
                 node: str, labels: Mapping[str, str]) -> dict[ServicePortName, Entry]:
    out: dict[ServicePortName, Entry] = {}
    for name, svc in services.items():
        if svc.protocol not in PROTOCOLS or not svc.cluster_ip or svc.ip_family != "IPv4":
            continue
        eps = internal_endpoints(svc, endpoints.get(name, ()), node, labels)
        if not eps:
            continue
        backends = tuple(sorted({(e.ip, e.port) for e in eps}))
        affinity = svc.sticky_max_age_seconds if svc.session_affinity == "ClientIP" else 0
        out[name] = Entry(name, svc.cluster_ip, svc.port, svc.protocol, backends, affinity)
    return out


def in_socket_lb(svc: ServicePort, entry: Entry | None) -> bool:
    """Whether netfilter may leave this Service port to the socket load balancer entirely."""
    return entry is not None and not svc.externally_accessible


@dataclass
class MapWrites:
    """One sync's writes, in the order that keeps every lookup consistent: backend slots before
    the slot counts that expose them, stale slots only after the counts stop naming them."""

    backends: list[tuple[bytes, bytes]]
    services: list[tuple[bytes, bytes]]
    delete_backends: list[bytes]
    delete_services: list[bytes]
    changed_ids: set[int]  # services whose backends changed: their affinity entries may be stale

    @property
    def operations(self) -> int:
        return len(self.backends) + len(self.services) + len(self.delete_backends) + len(self.delete_services)


def plan_writes(old: Mapping[ServicePortName, Entry], new: Mapping[ServicePortName, Entry],
                ids: dict[ServicePortName, int], free: list[int]) -> MapWrites:
    """The map operations from `old` to `new`; `ids`/`free` (service ids) are updated in place."""
    w = MapWrites([], [], [], [], set())
    for name, e in new.items():
        o = old.get(name)
        if o == e:
            continue
        if name not in ids:
            ids[name] = free.pop() if free else len(ids) + len(free) + 1
        sid = ids[name]
        if o is None or o.backends != e.backends:
            w.backends += [(backend_key(sid, i), backend_value(ip, port)) for i, (ip, port) in enumerate(e.backends)]
            if o is not None:
                w.delete_backends += [backend_key(sid, i) for i in range(len(e.backends), len(o.backends))]
                w.changed_ids.add(sid)
        if o is not None and (o.vip, o.port, o.protocol) != (e.vip, e.port, e.protocol):
            w.delete_services.append(svc_key(o.vip, o.port, o.protocol))
        w.services.append((svc_key(e.vip, e.port, e.protocol), svc_value(len(e.backends), sid, e.affinity_seconds)))
    for name, o in old.items():
        if name in new:
            continue
        sid = ids.pop(name)
        free.append(sid)
        w.delete_services.append(svc_key(o.vip, o.port, o.protocol))
        w.delete_backends += [backend_key(sid, i) for i in range(len(o.backends))]
        w.changed_ids.add(sid)
    written = {k for k, _ in w.services}
    w.delete_services = [k for k in w.delete_services if k not in written]  # a VIP moved to another Service
    return w
