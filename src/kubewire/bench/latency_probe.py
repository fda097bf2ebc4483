"""The client side of the latency benchmarks, run inside a client pod's namespaces as its own
process: new connections one after another, the client closing first (KERNEL-NOTES), targets
interleaved so both see the same machine. Prints JSON: per target, connect and first-byte times in µs.

`--peer PID`: a second client, in the network namespace and cgroup of process PID (a pod on
another node), measured in turns with this one, round by round. `kubewire bench datapath` uses
it to compare a node with n Services against a node with one at the same moment: this machine's
load moves p50 by more than 10% from one minute to the next, the turns cancel that.
Stdlib only without `--peer` (the peer's move uses kubewire.kernel's setns and cgroup join).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

REQUEST = b"GET /hostname HTTP/1.1\r\nHost: bench\r\n\r\n"
WARM_UP = 20


def one_round(targets: list[tuple[str, int]], out: dict, i: int) -> int:
    """One new connection per target, in turn i (the first WARM_UP are not kept; odd turns go in
    reverse order, so that no target is always the one right after the other client's turn).
    Returns the number of errors."""
    errors = 0
    keep = i >= WARM_UP
    for host, port in (targets if i % 2 == 0 else targets[::-1]):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(2)
        try:
            t0 = time.perf_counter_ns()
            s.connect((host, port))
            t1 = time.perf_counter_ns()
            s.sendall(REQUEST)
            s.recv(1)
            t2 = time.perf_counter_ns()
        except OSError:
            errors += 1
            continue
        finally:
            s.close()
        if keep:
            out[f"{host}:{port}"]["connect"].append((t1 - t0) / 1000)
            out[f"{host}:{port}"]["first_byte"].append((t2 - t0) / 1000)
    return errors


def become(pid: int) -> None:
    """Move this process into the network namespace and the (kubewire) cgroup of process pid, as
    `kubewire exec` would start it there."""
    from kubewire.kernel.cgroup import join_like
    from kubewire.kernel.nsswitch import CLONE_NEWNET, setns

    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)
    join_like(pid)


def empty(targets: list[tuple[str, int]]) -> dict:
    return {f"{h}:{p}": {"connect": [], "first_byte": []} for h, p in targets}


def main() -> None:
    args = sys.argv[1:]
    peer = 0
    if args[:1] == ["--peer"]:
        peer, args = int(args[1]), args[2:]
    samples = int(args[0])
    targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in args[1:]]
    out, errors = empty(targets), 0
    if not peer:
        for i in range(samples + WARM_UP):
            errors += one_round(targets, out, i)
        print(json.dumps({"samples": out, "errors": errors}))
        return
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:  # the peer: a round each time it is told, its results at the end
        ours.close()
        become(peer)
        mine, mine_errors = empty(targets), 0
        i = 0
        while theirs.recv(1) == b"g":
            mine_errors += one_round(targets, mine, i)
            i += 1
            theirs.sendall(b"k")
        theirs.sendall(json.dumps({"samples": mine, "errors": mine_errors}).encode())
        theirs.close()
        os._exit(0)
    theirs.close()
    for i in range(samples + WARM_UP):
        errors += one_round(targets, out, i)
        ours.sendall(b"g")
        if ours.recv(1) != b"k":
            raise SystemExit("the peer probe stopped")
    ours.sendall(b"q")
    data = b""
    while chunk := ours.recv(65536):
        data += chunk
    os.waitpid(child, 0)
    print(json.dumps({"samples": out, "errors": errors, "peer": json.loads(data)}))


if __name__ == "__main__":
    main()
