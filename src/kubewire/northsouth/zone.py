"""The internet's public zone file, as the daemon's lifecycle writes it (external hosts), plus the
names the north-south path publishes. The public DNS server re-reads the file when it changes."""

from __future__ import annotations

import json
import os


def write_zone(state_dir: str, cfg, extra: dict[str, list[str]]) -> None:  # noqa: ANN001 - ClusterConfig
    zone: dict[str, list[str]] = {e.name: [e.address] for e in cfg.external_hosts}
    for name, ips in extra.items():
        zone.setdefault(name, []).extend(ips)
    os.makedirs(f"{state_dir}/dns", exist_ok=True)
    tmp = f"{state_dir}/dns/internet-zone.json.tmp"
    with open(tmp, "w") as f:
        json.dump(zone, f, indent=1, sort_keys=True)
    os.replace(tmp, f"{state_dir}/dns/internet-zone.json")
