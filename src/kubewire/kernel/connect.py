"""Real connections from inside network namespaces, all at once: what `kubewire probe` measures.

Each socket is created while the calling thread is inside the source's network namespace (setns),
so it belongs to that namespace for good; then one event loop drives every connection
concurrently. TCP counts when the handshake completes; UDP and SCTP when an echo comes back (the
built-in echo server answers "hostname" with its pod name).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import socket
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

from kubewire.kernel import cgroup
from kubewire.kernel.nsswitch import entered

IPPROTO_SCTP = 132


@dataclass(frozen=True)
class Attempt:
    netns: str  # name under /run/netns
    ip: str
    port: int
    protocol: str  # TCP | UDP | SCTP
    cgroup: str = ""  # run from this cgroup (eBPF mode: the source pod's node, where Service VIPs are balanced)


@dataclass
class Result:
    status: str  # connected | refused | timeout | unreachable | error | skipped
    detail: str = ""
    seconds: float = 0.0


def sctp_unavailable() -> str:
    """Why no SCTP socket can be opened here ("" if it can)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP).close()
        return ""
    except OSError as e:
        return f"SCTP: this kernel has no SCTP sockets (CONFIG_IP_SCTP is off: {e.strerror}), so SCTP cannot be exercised here"


def _raise_fd_limit(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _classify(e: BaseException) -> Result:
    if isinstance(e, TimeoutError):
        return Result("timeout", "no answer within the timeout")
    if isinstance(e, ConnectionRefusedError):
        return Result("refused", "connection refused")
    if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return Result("unreachable", e.strerror or str(e))
    return Result("error", f"{type(e).__name__}: {e}")


async def _one(loop: asyncio.AbstractEventLoop, sock: socket.socket, a: Attempt, timeout: float) -> Result:
    t0 = time.perf_counter()
    try:
        if a.protocol == "UDP":
            sock.connect((a.ip, a.port))  # a datagram socket's connect only sets the peer
            await loop.sock_sendall(sock, b"hostname\n")
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), timeout)
            res = Result("connected", data.decode(errors="replace").strip()[:80])
        else:
            await asyncio.wait_for(loop.sock_connect(sock, (a.ip, a.port)), timeout)
            if a.protocol == "SCTP":
                await loop.sock_sendall(sock, b"hostname\n")
                data = await asyncio.wait_for(loop.sock_recv(sock, 2048), timeout)
                res = Result("connected", data.decode(errors="replace").strip()[:80])
            else:
                res = Result("connected")
    except (OSError, TimeoutError) as e:
        res = _classify(e)
    finally:
        sock.close()
    res.seconds = time.perf_counter() - t0
    return res


def _open(a: Attempt) -> socket.socket:
    if a.protocol == "UDP":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    elif a.protocol == "SCTP":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    return s


async def _run(attempts: list[Attempt], timeout: float, limit: int) -> list[Result]:
    loop = asyncio.get_running_loop()
    results: list[Result | None] = [None] * len(attempts)
    by_ns: dict[str, list[int]] = defaultdict(list)
    for i, a in enumerate(attempts):
        by_ns[a.netns].append(i)
    sctp_reason = sctp_unavailable() if any(a.protocol == "SCTP" for a in attempts) else ""
    order = [i for idxs in by_ns.values() for i in idxs]
    for start in range(0, len(order), limit):  # rounds of `limit` sockets at once (file descriptors)
        batch = order[start:start + limit]
        socks: dict[int, socket.socket] = {}
        grouped: dict[str, list[int]] = defaultdict(list)
        for i in batch:
            grouped[attempts[i].netns].append(i)
        for ns, idxs in grouped.items():
            try:
                with entered(ns):
                    for i in idxs:
                        if attempts[i].protocol == "SCTP" and sctp_reason:
                            results[i] = Result("skipped", sctp_reason)
                            continue
                        socks[i] = _open(attempts[i])
            except OSError as e:
                for i in idxs:
                    if results[i] is None and i not in socks:
                        results[i] = Result("error", f"cannot enter {ns}: {e}")
        tasks = {i: loop.create_task(_one(loop, s, attempts[i], timeout)) for i, s in socks.items()}
        for i, t in tasks.items():
            results[i] = await t
    return [r if r is not None else Result("error", "not run") for r in results]


def connect_all(attempts: list[Attempt], timeout: float = 1.0) -> list[Result]:
    """Every attempt at once (in rounds if file descriptors run short); results in order.

    Attempts that name a cgroup run in a child process forked into it (cgroup membership is per
    process), one child per cgroup, all at once."""
    limit = max(64, _raise_fd_limit(len(attempts) + 256) - 256)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, a in enumerate(attempts):
        groups[a.cgroup].append(i)
    results: list[Result | None] = [None] * len(attempts)
    children: list[tuple[int, int, list[int]]] = []
    for cg, idxs in groups.items():
        if not cg:
            continue
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                os.close(r)
                cgroup.join(cg)
                out = asyncio.run(_run([attempts[i] for i in idxs], timeout, limit))
                os.write(w, json.dumps([asdict(x) for x in out]).encode())
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        os.close(w)
        children.append((pid, r, idxs))
    local = groups.get("", [])
    if local:
        for i, res in zip(local, asyncio.run(_run([attempts[i] for i in local], timeout, limit)), strict=True):
            results[i] = res
    for pid, r, idxs in children:
        data = b""
        while chunk := os.read(r, 1 << 16):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        got = [Result(**x) for x in json.loads(data)] if data else [Result("error", "probe child failed")] * len(idxs)
        for i, res in zip(idxs, got, strict=True):
            results[i] = res
    return [r if r is not None else Result("error", "not run") for r in results]
