"""A KubeProxyConfiguration checked as kube-proxy checks its config file before it starts: values
of the wrong type are fatal (its strict decoder), as is what its validation refuses (clusterCIDR,
masqueradeBit, detectLocalMode, nodePortAddresses); unknown fields only warn (its lenient fallback
for v1alpha1). Pure: the messages, for the caller to print."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

_TOP = {
    "apiVersion", "kind", "featureGates", "clientConnection", "logging", "hostnameOverride", "bindAddress",
    "healthzBindAddress", "metricsBindAddress", "bindAddressHardFail", "enableProfiling",
    "showHiddenMetricsForVersion", "mode", "iptables", "ipvs", "winkernel", "nftables", "detectLocalMode",
    "detectLocal", "clusterCIDR", "nodePortAddresses", "oomScoreAdj", "conntrack", "configSyncPeriod",
    "portRange", "windowsRunAsService", "syncPeriod", "minSyncPeriod",
}  # fmt: skip
_BOOLS = ("iptables.masqueradeAll", "nftables.masqueradeAll", "iptables.localhostNodePorts", "conntrack.tcpBeLiberal")
_STRINGS = ("clusterCIDR", "mode", "detectLocalMode", "detectLocal.bridgeInterface", "detectLocal.interfaceNamePrefix")
_MAPS = ("iptables", "nftables", "detectLocal", "conntrack", "featureGates")
DETECT_LOCAL_MODES = ("ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix")


def _get(doc: Mapping[str, Any], path: str) -> Any:  # noqa: ANN401 - whatever the file holds
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _kind(v: Any) -> str:  # noqa: ANN401
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return f"a string ({v!r})"
    return "a list" if isinstance(v, list) else "a map" if isinstance(v, Mapping) else type(v).__name__


def _cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return False
    return "/" in text


def check(doc: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, warnings), each "field: message"."""
    errors: list[str] = []
    warnings = [f"{k}: unknown field (ignored)" for k in doc if k not in _TOP]
    for path in _MAPS:
        if (v := _get(doc, path)) is not None and not isinstance(v, Mapping):
            errors.append(f"{path}: must be a map, not {_kind(v)}")
    for path in _BOOLS:
        if (v := _get(doc, path)) is not None and not isinstance(v, bool):
            errors.append(f"{path}: must be a boolean (true or false), not {_kind(v)}")
    for path in _STRINGS:
        if (v := _get(doc, path)) is not None and not isinstance(v, str):
            errors.append(f"{path}: must be a string, not {_kind(v)}")
    for gate, v in (_get(doc, "featureGates") or {}).items() if isinstance(_get(doc, "featureGates"), Mapping) else ():
        if not isinstance(v, bool):
            errors.append(f"featureGates.{gate}: must be a boolean, not {_kind(v)}")
    bit = _get(doc, "iptables.masqueradeBit")
    if bit is not None and (isinstance(bit, bool) or not isinstance(bit, int)):
        errors.append(f"iptables.masqueradeBit: must be an integer, not {_kind(bit)}")
    elif bit is not None and not 0 <= bit <= 31:
        errors.append(f"iptables.masqueradeBit: Invalid value: {bit}: must be within the range [0, 31]")
    cidr = _get(doc, "clusterCIDR")
    if isinstance(cidr, str) and cidr:
        parts = cidr.split(",")
        if len(parts) > 2:
            errors.append(f"clusterCIDR: Invalid value: {cidr!r}: only one CIDR allowed or a valid DualStack CIDR "
                          "(e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)")
        elif not all(_cidr(p) for p in parts):
            errors.append(f"clusterCIDR: Invalid value: {cidr!r}: must be a valid CIDR block "
                          "(e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)")
        elif len(parts) == 2 and len({ipaddress.ip_network(p.strip(), strict=False).version for p in parts}) != 2:
            errors.append(f"clusterCIDR: Invalid value: {cidr!r}: must be a valid DualStack CIDR "
                          "(e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)")
    mode = _get(doc, "detectLocalMode")
    if isinstance(mode, str) and mode:
        if mode not in DETECT_LOCAL_MODES:
            errors.append(f"detectLocalMode: Unsupported value: {mode!r}: supported values: "
                          + ", ".join(f'"{m}"' for m in DETECT_LOCAL_MODES))
        elif mode == "BridgeInterface" and not _get(doc, "detectLocal.bridgeInterface"):
            errors.append("detectLocal.bridgeInterface: Required value: must not be empty")
        elif mode == "InterfaceNamePrefix" and not _get(doc, "detectLocal.interfaceNamePrefix"):
            errors.append("detectLocal.interfaceNamePrefix: Required value: must not be empty")
    addresses = _get(doc, "nodePortAddresses")
    if addresses is not None and not isinstance(addresses, list):
        errors.append(f"nodePortAddresses: must be a list, not {_kind(addresses)}")
    for i, a in enumerate(addresses if isinstance(addresses, list) else []):
        if not (isinstance(a, str) and (a == "primary" or _cidr(a))):
            errors.append(f"nodePortAddresses[{i}]: Invalid value: {a!r}: must be a valid CIDR")
    return errors, warnings
