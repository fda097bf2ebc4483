"""Cluster DNS: CoreDNS's kubernetes plugin semantics, a fast asyncio server, caching forwarder.

records.ClusterRecords answers cluster names (pure); zone.StaticZone serves the emulated
internet; server.DNSServer puts either on UDP/TCP and forwards the rest, optionally through
cache.DNSCache (NodeLocal DNSCache). Names are imported lazily so that
`python -m kubewire.dns.server` does not import the server module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Answer": "records", "Chase": "records", "ClusterRecords": "records", "reverse_zones": "records",
    "DNSCache": "cache", "Forwarder": "forward", "ForwardError": "forward",
    "DNSServer": "server", "QueryLog": "server", "StaticZone": "zone",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"kubewire.dns.{_EXPORTS[name]}"), name)
