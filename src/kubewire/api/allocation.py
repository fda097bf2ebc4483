"""ClusterIP and NodePort allocation, as the API server does it while storing a Service.

Pure functions over "what is already taken": the caller (the store, inside the transaction that
writes the Service) passes the addresses and ports in use and an rng, and gets back the Service as
it must be stored. Upstream's allocators (pkg/registry/core/service/ipallocator, portallocator,
storage/alloc.go) split each range in two bands (KEP-3070): dynamic allocations take a random free
value from the upper band first and only then the lower one, which static requests are meant to
use. That is why a dynamically allocated ClusterIP never lands on 10.96.0.10 (cluster DNS) or
10.96.0.1 in a /12 unless the ~1M addresses above them are exhausted.
"""

from __future__ import annotations

import copy
import ipaddress
import random
from collections.abc import Collection, Container, Iterable
from typing import Generic, TypeVar

from kubewire.api.errors import FieldError, GoValue, go_string_slice, invalid
from kubewire.api.service import (
    CLUSTER_IP_NONE,
    cluster_ips_of,
    drop_type_dependent_fields,
    init_ip_family_fields,
    ip_families_of,
    needs_health_check,
    normalize_cluster_ips,
    parse_ip,
    patch_allocated_values,
    ports_of,
    should_allocate_node_ports,
    spec_of,
    svc_type,
)

NODE_PORT_RANGE = (30000, 32767)


class AllocationError(Exception):
    """What the API server answers when an allocation fails: field errors (an Invalid response)
    or one path-less "Internal error occurred: ..." error."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def _internal(message: str) -> AllocationError:
    return AllocationError([FieldError("", f"Internal error occurred: {message}")])


# --- ClusterIPs ---------------------------------------------------------------------------------


def ip_range_offset(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    """ipallocator calculateRangeOffset: min(max(16, size/16), 256); 0 for ranges of 16 or less."""
    size = network.num_addresses if network.max_prefixlen - network.prefixlen < 64 else 2**63 - 1
    if size <= 16:
        return 0
    return min(max(16, size // 16), 256)


def _hosts(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    """First and last allocatable address (as ints): never the network address, nor the IPv4
    broadcast address."""
    first = int(network.network_address) + 1
    last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
    return first, last


def allocate_cluster_ip(
    service_cidr: str,
    used: Container[str],
    requested: str | None,
    rng: random.Random,
    *,
    cluster_ips: list[str] | None = None,
) -> str:
    """An address of `service_cidr` not in `used` (canonical addresses, as service_allocations
    gives them): `requested` if given and free, else a random one.

    Raises AllocationError worded as the API server's; `cluster_ips` is the Service's
    spec.clusterIPs, which upstream prints as the bad value (default: [requested])."""
    network = ipaddress.ip_network(service_cidr, strict=False)
    taken = used  # read only: parsing every address for every Service made applying 10k Services O(n²)
    first, last = _hosts(network)
    if requested:
        ip = parse_ip(requested)
        value = GoValue(go_string_slice(cluster_ips if cluster_ips is not None else [requested]))

        def refuse(reason: str) -> AllocationError:
            detail = f"failed to allocate IP {requested}: {reason}"
            return AllocationError([invalid("spec.clusterIPs", value, detail)])

        if ip is None or ip.version != network.version or ip not in network:
            raise refuse("the provided network does not match the current range")
        if not first <= int(ip) <= last:
            raise refuse(
                f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is {network}"
            )
        if str(ip) in taken:
            raise refuse("provided IP is already allocated")
        return str(ip)

    size = max(last - first + 1, 0)
    offset = ip_range_offset(network)
    cls = type(network.network_address)
    upper = size - offset
    if upper > 0:
        start = rng.randrange(upper)
        for i in range(upper):
            candidate = str(cls(first + offset + (start + i) % upper))
            if candidate not in taken:
                return candidate
        if offset:
            start = rng.randrange(offset)
            for i in range(offset):
                candidate = str(cls(first + (start + i) % offset))
                if candidate not in taken:
                    return candidate
    raise _internal("failed to allocate a serviceIP: range is full")


# --- NodePorts ----------------------------------------------------------------------------------


def port_range_offset(size: int) -> int:
    """portallocator calculateRangeOffset: min(max(16, size/32), 128); 0 for ranges of 16 or less."""
    if size <= 16:
        return 0
    return min(max(16, size // 32), 128)


class _Refused(Exception):
    """An allocator's own error text (ErrAllocated, ErrNotInRange, ErrFull), before the registry
    wraps it into a field or internal error."""


def _pick_port(used: Container[int], requested: int | None, rng: random.Random, lo: int, hi: int) -> int:
    if requested:
        if not lo <= requested <= hi:
            raise _Refused(f"provided port is not in the valid range. The range of valid ports is {lo}-{hi}")
        if requested in used:
            raise _Refused("provided port is already allocated")
        return requested
    size = hi - lo + 1
    offset = port_range_offset(size)
    upper = size - offset
    if upper > 0:
        start = rng.randrange(upper)
        for i in range(upper):
            candidate = lo + offset + (start + i) % upper
            if candidate not in used:
                return candidate
    if offset:
        start = rng.randrange(offset)
        for i in range(offset):
            candidate = lo + (start + i) % offset
            if candidate not in used:
                return candidate
    raise _Refused("range is full")


def allocate_node_port(
    used: Container[int],
    requested: int | None,
    rng: random.Random,
    lo: int = NODE_PORT_RANGE[0],
    hi: int = NODE_PORT_RANGE[1],
    *,
    path: str = "spec.ports[0].nodePort",
) -> int:
    """A port in [lo, hi] not in `used`: `requested` if given and free, else a random one
    (upper band first). `path` names the field for the error of a refused request."""
    try:
        return _pick_port(used, requested, rng, lo, hi)
    except _Refused as e:
        if requested:
            raise AllocationError([invalid(path, requested, str(e))]) from None
        raise _internal(f"failed to allocate a nodePort: {e}") from None


# --- whole Services -----------------------------------------------------------------------------


def service_allocations(svc: dict | None) -> tuple[set[str], set[int]]:
    """The cluster IPs (canonical) and node ports (including the health-check port) a stored
    Service holds."""
    ips: set[str] = set()
    for text in cluster_ips_of(svc) or [spec_of(svc).get("clusterIP") or ""]:
        ip = parse_ip(text)
        if ip is not None:
            ips.add(str(ip))
    ports = {p["nodePort"] for p in ports_of(svc) if isinstance(p.get("nodePort"), int) and p["nodePort"]}
    hc = spec_of(svc).get("healthCheckNodePort")
    if isinstance(hc, int) and hc:
        ports.add(hc)
    return ips, ports


def used_allocations(services: Iterable[dict]) -> tuple[set[str], set[int]]:
    """Everything the given stored Services hold, to pass to prepare_service."""
    ips: set[str] = set()
    ports: set[int] = set()
    for svc in services:
        i, p = service_allocations(svc)
        ips |= i
        ports |= p
    return ips, ports


def _allocate_cluster_ips(
    svc: dict, old: dict | None, used: _Taken[str], service_cidr: str, rng: random.Random
) -> None:
    """allocClusterIPs (create, or ExternalName -> another type); an update otherwise keeps what
    it has. A stored Service found without addresses is healed rather than left unroutable."""
    spec = svc["spec"]
    if svc_type(svc) == "ExternalName":
        return
    ips = cluster_ips_of(svc) or []
    if ips and ips[0] == CLUSTER_IP_NONE:
        return
    families = ip_families_of(svc)
    if old is not None and svc_type(old) != "ExternalName" and len(ips) >= len(families) and all(ips):
        return
    want = list(ips) + [""] * (len(families) - len(ips))
    own, _ = (
        service_allocations(old) if old is not None and svc_type(old) != "ExternalName" else (set(), set())
    )
    for i in range(len(families)):
        requested = want[i]
        ip = parse_ip(requested)
        if requested and ip is not None and str(ip) in own:
            continue
        got = allocate_cluster_ip(service_cidr, used, requested or None, rng, cluster_ips=ips)
        used.add(got)
        want[i] = requested or got
    spec["clusterIPs"] = want
    spec["clusterIP"] = want[0]


def _allocate_node_ports_create(svc: dict, used: _Taken[int], rng: random.Random, lo: int, hi: int) -> None:
    """initNodePorts: ports with the same port number share one node port, requested or not."""
    ports = ports_of(svc)
    by_port: dict[int, int] = {}
    for i, port in enumerate(ports):
        if not port.get("nodePort") and not should_allocate_node_ports(svc):
            continue
        number = port.get("port") or 0
        shared = by_port.get(number, 0)
        path = f"spec.ports[{i}].nodePort"
        if not shared:
            wanted = next(
                (p.get("nodePort") for p in ports if (p.get("port") or 0) == number and p.get("nodePort")), 0
            )
            got = allocate_node_port(used, wanted or None, rng, lo, hi, path=path)
            used.add(got)
            port["nodePort"] = got
            by_port[number] = got
        elif port.get("nodePort", 0) != shared:
            if not port.get("nodePort"):
                port["nodePort"] = shared
            else:
                used.add(allocate_node_port(used, port["nodePort"], rng, lo, hi, path=path))


def _allocate_node_ports_update(
    svc: dict, old: dict, used: _Taken[int], rng: random.Random, lo: int, hi: int
) -> None:
    """updateNodePorts: ports the old Service held are kept; new ones are allocated."""
    old_ports = {p.get("nodePort") for p in ports_of(old) if p.get("nodePort")}
    allocated_here: set[int] = set()
    for i, port in enumerate(ports_of(svc)):
        requested = port.get("nodePort") or 0
        if not requested and not should_allocate_node_ports(svc):
            continue
        if requested:
            if requested not in old_ports and requested not in allocated_here:
                got = allocate_node_port(used, requested, rng, lo, hi, path=f"spec.ports[{i}].nodePort")
                used.add(got)
                allocated_here.add(got)
        else:
            got = allocate_node_port(used, None, rng, lo, hi)
            used.add(got)
            port["nodePort"] = got


def _allocate_health_check_port(svc: dict, used: _Taken[int], rng: random.Random, lo: int, hi: int) -> None:
    """allocHealthCheckNodePort, whose failures the API server reports as internal errors (the
    "0" is upstream's: it prints the variable the failed allocation left at zero)."""
    spec = svc["spec"]
    requested = spec.get("healthCheckNodePort") or 0
    try:
        got = _pick_port(used, requested or None, rng, lo, hi)
    except _Refused as e:
        if requested:
            raise _internal(f"failed to allocate requested HealthCheck NodePort {requested}: {e}") from None
        raise _internal(f"failed to allocate a HealthCheck NodePort 0: {e}") from None
    used.add(got)
    spec["healthCheckNodePort"] = got


T = TypeVar("T")


class _Taken(Generic[T]):
    """What is taken: the caller's set, read only, and what this Service holds and allocates."""

    def __init__(self, base: Collection[T], own: set[T]) -> None:
        self.base, self.own = base, set(own)

    def __contains__(self, item: object) -> bool:
        return item in self.own or item in self.base

    def add(self, item: T) -> None:
        self.own.add(item)


def prepare_service(
    svc: dict,
    old: dict | None,
    used_ips: Collection[str],
    used_ports: Collection[int],
    service_cidr: str,
    rng: random.Random,
    *,
    node_port_range: tuple[int, int] = NODE_PORT_RANGE,
) -> dict:
    """The Service as the API server stores it: clusterIP(s), ipFamilies/ipFamilyPolicy, node
    ports and the health-check node port filled in; on update (`old` is the stored object) the
    existing allocations are kept, new ones made, and fields a type change obsoletes dropped.

    `svc` must already be defaulted and validated (validate_and_default). `used_*` may include
    `old`'s own allocations; `used_ips` are canonical addresses (used_allocations). Raises
    AllocationError."""
    out = copy.deepcopy(svc)
    if not isinstance(out.get("spec"), dict):
        out["spec"] = {}
    lo, hi = node_port_range
    network = ipaddress.ip_network(service_cidr, strict=False)
    families = ("IPv4",) if network.version == 4 else ("IPv6",)
    if old is not None:
        patch_allocated_values(out, old)
    normalize_cluster_ips(out, old)
    errs = init_ip_family_fields(out, old, families)
    if errs:
        raise AllocationError(errs)

    # The old Service's own allocations stay taken during the update (upstream releases them
    # only after it commits), so new allocations can never reuse them.
    own_ips, own_ports = service_allocations(old) if old is not None else (set(), set())
    ips = _Taken(used_ips, own_ips)  # not copies: 10k Services applied at once would copy 10k sets
    ports = _Taken(used_ports, own_ports)

    _allocate_cluster_ips(out, old, ips, service_cidr, rng)
    if svc_type(out) in ("NodePort", "LoadBalancer"):
        if old is None:
            _allocate_node_ports_create(out, ports, rng, lo, hi)
        else:
            _allocate_node_ports_update(out, old, ports, rng, lo, hi)
    had_hc = old is not None and needs_health_check(old)
    if needs_health_check(out) and (not had_hc or not spec_of(out).get("healthCheckNodePort")):
        _allocate_health_check_port(out, ports, rng, lo, hi)

    if old is None:
        out["status"] = {"loadBalancer": {}}
        return out
    drop_type_dependent_fields(out, old)
    status = copy.deepcopy(old.get("status")) if isinstance(old.get("status"), dict) else {}
    if svc_type(old) == "LoadBalancer" and svc_type(out) != "LoadBalancer":
        status["loadBalancer"] = {}
    status.setdefault("loadBalancer", {})
    out["status"] = status
    return out
