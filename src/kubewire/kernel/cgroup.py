"""cgroup v2 directories for kubewire's processes: where eBPF socket programs attach.

Programs attached to a cgroup run for every process in it and in its descendants, so each node
gets one cgroup and every process kubewire runs "on" that node (containers, `kubewire exec`,
probes) joins it. The directories live under the machine's cgroup2 mount, named with the cluster.
"""

from __future__ import annotations

import contextlib
import os
import time

CANDIDATES = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def cgroup2_root() -> str | None:
    """The cgroup2 mount point (hybrid hosts mount it at /sys/fs/cgroup/unified), or None."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = {line.split()[1]: line.split()[2] for line in f}
    except OSError:
        return None
    for c in CANDIDATES:
        if mounts.get(c) == "cgroup2":
            return c
    return next((m for m, t in mounts.items() if t == "cgroup2"), None)


def cluster_dir(cluster: str) -> str | None:
    root = cgroup2_root()
    return f"{root}/kubewire-{cluster}" if root else None


def node_dir(cluster: str, node: str) -> str | None:
    base = cluster_dir(cluster)
    return f"{base}/{node}" if base else None


def ensure(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def join(path: str, pid: int = 0) -> None:
    """Move a process (0: the caller) into a cgroup; its children are born there."""
    with open(f"{path}/cgroup.procs", "w") as f:
        f.write(str(pid or os.getpid()))


def of_pid(pid: int) -> str | None:
    """The cgroup2 directory a process is in, or None (gone, or no cgroup2)."""
    root = cgroup2_root()
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    rel = line[3:].strip()
                    return root + rel if root and rel != "/" else None
    except OSError:
        return None
    return None


def join_like(pid: int) -> None:
    """Join the cgroup another process is in (a container's node cgroup), if it is in one of ours:
    `kubewire exec` and probes get the pod's socket load balancing this way."""
    path = of_pid(pid)
    if path and "/kubewire-" in path:
        with contextlib.suppress(OSError):
            join(path)


def remove_tree(path: str) -> None:
    """Remove a cgroup and its children, deepest first (a cgroup with live processes stays)."""
    if not os.path.isdir(path):
        return
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
        for _ in range(50):  # processes just killed leave the cgroup as they finish exiting
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)
