"""Container processes: forked into a pod's namespaces, tracked and ended by PID.

A container is a process in its pod's network namespace with a mount namespace of its own in which
the pod's /etc/hosts and /etc/resolv.conf are bind-mounted (what `ip netns exec` does) and a UTS
namespace with the pod's hostname. Forking from the agent (instead of starting a new interpreter)
lets thousands of built-in echo servers share the interpreter's pages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import setproctitle

from kubewire.kernel import cgroup
from kubewire.kernel import nsswitch as ns
from kubewire.kernel.ip import NETNS_DIR


@dataclass
class ContainerSpec:
    netns: str
    hostname: str
    log_path: str
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)  # host file -> path to mount it over (/etc/hosts ...)
    argv: list[str] | None = None  # a command that exists on the machine
    target: Callable[[], object] | None = None  # else: a function to run (the built-in workload)
    workdir: str = "/"
    cgroup: str = ""  # a cgroup v2 directory to run in (eBPF mode: the node's, where the socket LB is)
    title: str = ""  # what `ps` shows for a forked (not exec'd) container, instead of the loop's command line


def spawn(spec: ContainerSpec) -> int:
    """Fork a container; returns its PID (also its process group, so its children die with it)."""
    pid = os.fork()
    if pid:
        return pid
    code = 127
    try:
        if spec.title and not spec.argv:  # before the environment changes: it finds argv's memory then
            setproctitle.setproctitle(spec.title)
        _become_container(spec)
        if spec.argv:
            os.execvpe(spec.argv[0], spec.argv, spec.env)
        elif spec.target:
            spec.target()
            code = 0
    except BaseException as e:  # noqa: BLE001 - the child must never return into the agent
        try:
            sys.stderr.write(f"kubewire: container failed to start: {e}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


def _become_container(spec: ContainerSpec) -> None:
    os.setsid()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(s, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # nothing of the agent's leaks in: not its listening sockets (a restarted agent must be able to
    # bind them again), not the store, not other containers' pidfds
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    if spec.cgroup:  # before /sys is remounted below
        cgroup.join(spec.cgroup)
    fd = os.open(f"{NETNS_DIR}/{spec.netns}", os.O_RDONLY)
    ns.setns(fd, ns.CLONE_NEWNET)
    os.close(fd)
    ns.unshare(ns.CLONE_NEWNS | ns.CLONE_NEWUTS)
    ns.mount("none", "/", None, ns.MS_REC | ns.MS_SLAVE)
    for src, dst in spec.files.items():
        ns.mount(src, dst, None, ns.MS_BIND)
    try:  # sysfs of this network namespace, as `ip netns exec` gives it
        ns.umount("/sys")
        ns.mount("sysfs", "/sys", "sysfs", 0)
    except OSError:
        pass
    ns.sethostname(spec.hostname[:63])
    os.chdir(spec.workdir)
    os.environ.clear()
    os.environ.update(spec.env)


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks: with the PID it names one process, never a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def alive(pid: int, ticks: int | None) -> bool:
    return ticks is not None and start_ticks(pid) == ticks


def signal_group(pid: int, ticks: int | None, sig: int) -> bool:
    """Signal a container's process group, only if the PID is still the process we started."""
    if not alive(pid, ticks):
        return False
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, sig)
    return True


def reap(pids: list[int]) -> list[tuple[int, int]]:
    """Collect our exited containers: (pid, exit code as kubelet reports it: 128+signal when killed).
    Only the PIDs asked for, so other children (probes, tools) keep their own exit status."""
    out = []
    for pid in pids:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            out.append((pid, 128 - code if code < 0 else code))
    return out


def proc_stats(pid: int) -> tuple[int, float]:
    """RSS bytes and CPU seconds of one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(rest[21]) * os.sysconf("SC_PAGE_SIZE"), (int(rest[11]) + int(rest[12])) / tick
    except OSError:
        return 0, 0.0


def pids_in_netns(netns: str) -> list[int]:
    """Every process living in one of our namespaces (by the namespace's inode): a container a
    crashed agent started but never recorded still belongs to its pod and must end with it."""
    try:
        target = os.stat(f"{NETNS_DIR}/{netns}").st_ino
    except OSError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                    out.append(int(entry))
            except OSError:
                continue
    return out


def kill_netns_processes(netnses: list[str]) -> None:
    for name in netnses:
        for pid in pids_in_netns(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
