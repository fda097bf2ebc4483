"""Can this kernel run the eBPF socket load balancer? (for `kubewire doctor` and `up`)"""

from __future__ import annotations

import os

from kubewire.kernel import bpf
from kubewire.kernel import cgroup as kcgroup

ALLOW = bytes.fromhex("b700000001000000" "9500000000000000")  # r0 = 1; exit


def unsupported() -> str:
    """"" when cgroup v2 is mounted and a connect4 program can be loaded and attached; else why not."""
    root = kcgroup.cgroup2_root()
    if not root:
        return "no cgroup v2 hierarchy is mounted (cgroup BPF programs attach to cgroup v2 directories)"
    try:
        fd = bpf.load_program(bpf.PROG_CGROUP_SOCK_ADDR, bpf.CGROUP_INET4_CONNECT, ALLOW, "kw_check")
    except OSError as e:
        return f"the kernel refused a cgroup/connect4 program: {e}"
    probe = f"{root}/kubewire-doctor-{os.getpid()}"
    try:
        kcgroup.ensure(probe)
        bpf.attach_cgroup(probe, fd, bpf.CGROUP_INET4_CONNECT)
    except OSError as e:
        return f"attaching a cgroup/connect4 program failed: {e}"
    finally:
        bpf.close(fd)
        kcgroup.remove_tree(probe)
    return ""
