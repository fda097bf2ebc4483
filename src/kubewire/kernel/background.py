"""Background programs in a network namespace (benchmark servers such as unbound): started with a
PID the caller keeps, optionally pinned to CPUs with taskset, and stopped by that PID only."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable

from kubewire.kernel.ip import NETNS_DIR


def start_in_netns(netns: str, argv: list[str], log_path: str, cpus: str | None = None) -> subprocess.Popen:
    """Start argv in `netns` (its network stack only, as `ip netns exec` without the mounts),
    pinned to `cpus` (a taskset list such as "1") when given. nsenter and taskset exec the program,
    so the returned process's PID is the program's own; it leads a session of its own."""
    cmd = ["nsenter", f"--net={NETNS_DIR}/{netns}", "--"]
    if cpus is not None:
        cmd += ["taskset", "-c", cpus]
    with open(log_path, "ab") as log:
        return subprocess.Popen([*cmd, *argv], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """SIGTERM to this PID (our unreaped child, so never a reused one), SIGKILL after `timeout`;
    reaped here. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def pin(pid: int, cpus: Iterable[int]) -> set[int]:
    """`taskset -a -p`: every thread of a running process onto these CPUs; returns the old set."""
    old = os.sched_getaffinity(pid)
    wanted = set(cpus)
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, wanted)
        except ProcessLookupError:
            continue
    return old
