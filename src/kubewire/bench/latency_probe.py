"""The client side of the latency benchmarks, run inside a client pod's namespaces as its own
process: new connections one after another, the client closing first (KERNEL-NOTES), targets
interleaved so both see the same machine. Prints JSON: per target, connect and first-byte times in µs."""

from __future__ import annotations

import json
import socket
import sys
import time


def main() -> None:
    samples = int(sys.argv[1])
    targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in sys.argv[2:]]
    req = b"GET /hostname HTTP/1.1\r\nHost: bench\r\n\r\n"
    out: dict[str, dict[str, list[float]]] = {f"{h}:{p}": {"connect": [], "first_byte": []} for h, p in targets}
    errors = 0
    for i in range(samples + 20):
        for host, port in targets:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(2)
            try:
                t0 = time.perf_counter_ns()
                s.connect((host, port))
                t1 = time.perf_counter_ns()
                s.sendall(req)
                s.recv(1)
                t2 = time.perf_counter_ns()
            except OSError:
                errors += 1
                continue
            finally:
                s.close()
            if i >= 20:  # warm-up
                out[f"{host}:{port}"]["connect"].append((t1 - t0) / 1000)
                out[f"{host}:{port}"]["first_byte"].append((t2 - t0) / 1000)
    print(json.dumps({"samples": out, "errors": errors}))


if __name__ == "__main__":
    main()
