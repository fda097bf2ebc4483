"""Running programs: always an argv list, never a shell string, payloads fed on stdin."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass


class CommandError(RuntimeError):
    def __init__(self, argv: list[str], code: int, stderr: str) -> None:
        self.argv, self.code, self.stderr = argv, code, stderr
        super().__init__(f"{' '.join(argv[:4])}... exited {code}: {stderr.strip()[:2000]}")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run(argv: list[str], stdin: str | None = None, check: bool = True, timeout: float | None = 60,
        cgroup_of: int | None = None) -> Result:
    """`cgroup_of`: start the program in that process's cgroup (a pod's node cgroup, where the
    eBPF socket load balancer is attached), as `kubectl exec` lands in the pod's cgroup."""
    pre = None
    if cgroup_of:
        from kubewire.kernel.cgroup import join_like

        pre = lambda: join_like(cgroup_of)  # noqa: E731
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, preexec_fn=pre)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        if check:
            raise CommandError(argv, 124, f"timed out after {timeout}s") from None
        return Result(124, out, f"timed out after {timeout}s")
    if check and p.returncode != 0:
        raise CommandError(argv, p.returncode, p.stderr)
    return Result(p.returncode, p.stdout, p.stderr)


def in_netns(netns: str, argv: list[str]) -> list[str]:
    """argv that runs a program in a namespace's network stack only (as a node-level tool would)."""
    return ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]


def in_pod(pid: int, argv: list[str], net_only: bool = False) -> list[str]:
    """argv that runs a program as a container of the pod whose process is pid: its network, mount
    and UTS namespaces (its /etc/resolv.conf, /etc/hosts, hostname), or its network only. Start it
    with run_in_pod / exec_in_pod, which also put it in the pod's cgroup."""
    return ["nsenter", "-t", str(pid), "-n", *(() if net_only else ("-m", "-u")), "--", *argv]


def run_in_pod(pid: int, argv: list[str], net_only: bool = False, **kw: object) -> Result:
    """run() inside a pod (in_pod) and its node's cgroup, where eBPF mode's socket load balancer
    is attached: the program's Service traffic is the pod's, as with `kubectl exec`."""
    return run(in_pod(pid, argv, net_only), cgroup_of=pid, **kw)  # type: ignore[arg-type]


def exec_in_pod(pid: int, argv: list[str]) -> None:
    """exec_replace() inside a pod and its node's cgroup (interactive `kubewire exec`)."""
    exec_replace(in_pod(pid, argv), cgroup_of=pid)


def exec_replace(argv: list[str], cgroup_of: int | None = None) -> None:
    """Become the program (for interactive `exec`, so the terminal and exit code pass through)."""
    import os

    if cgroup_of:
        from kubewire.kernel.cgroup import join_like

        join_like(cgroup_of)

    os.execvp(argv[0], argv)


def popen(argv: list[str], stdout_path: str | None = None) -> subprocess.Popen:
    out = open(stdout_path, "ab") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
