"""`ip -batch` with payloads built in memory: the fastest path KERNEL-NOTES measured."""

from __future__ import annotations

import os

from kubewire.kernel.run import run

NETNS_DIR = "/run/netns"


def batch(lines: list[str] | tuple[str, ...], netns: str | None = None, force: bool = False) -> None:
    if not lines:
        return
    argv = ["ip"]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    run(argv, stdin="\n".join(lines) + "\n")


def list_netns(prefix: str = "") -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def delete_netns(names: list[str]) -> None:
    """Delete namespaces; one already gone (someone else deleted it meanwhile) is not an error."""
    if not names:
        return
    run(["ip", "-force", "-batch", "-"], stdin="".join(f"netns del {n}\n" for n in names), check=False)
    left = [n for n in names if os.path.exists(f"{NETNS_DIR}/{n}")]
    if left:
        batch([f"netns del {n}" for n in left], force=True)


def json_of(netns: str | None, *args: str) -> str:
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + list(args)
    return run(argv).stdout
