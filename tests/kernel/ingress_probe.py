"""HTTP(S) client run inside the internet namespace by tests/kernel/test_northsouth.py.

It connects to a given address (the load balancer's) and sends the URL's host as Host header and,
for https, as SNI, verifying the certificate against a CA file: what a browser does once DNS has
answered. Prints one JSON document.

  requests JSON                         a list of {url, ip, method?, headers?, timeout?, ca?}
  load IP HOST PATH SECONDS THREADS MODE   MODE: new (a connection per request) | keepalive
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
import threading
import time
from urllib.parse import urlsplit


def connection(url: str, ip: str, timeout: float, ca: str | None) -> tuple[http.client.HTTPConnection, str]:
    u = urlsplit(url)
    host = u.hostname or ""
    port = u.port or (443 if u.scheme == "https" else 80)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(ip, port, timeout=timeout, context=ctx)
        raw = socket.create_connection((ip, port), timeout=timeout)
        conn.sock = ctx.wrap_socket(raw, server_hostname=host)
    else:
        conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return conn, path


def one(req: dict) -> dict:
    u = urlsplit(req["url"])
    t0 = time.monotonic()
    try:
        conn, path = connection(req["url"], req["ip"], float(req.get("timeout", 5)), req.get("ca"))
        headers = {"Host": u.netloc, **(req.get("headers") or {})}
        conn.request(req.get("method", "GET"), path, body=req.get("body"), headers=headers)
        r = conn.getresponse()
        raw = r.read().decode(errors="replace")
        conn.close()
        try:
            body: object = json.loads(raw)
        except ValueError:
            body = raw
        return {"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()}, "body": body,
                "secs": time.monotonic() - t0}
    except (OSError, ssl.SSLError, http.client.HTTPException) as e:
        return {"status": 0, "error": f"{type(e).__name__}: {e}", "secs": time.monotonic() - t0}


def load(ip: str, host: str, path: str, secs: float, threads: int, mode: str) -> dict:
    """Requests back to back from THREADS threads for SECS seconds; every outcome counted. With
    keep-alive, a request that finds its idle connection closed by the server before any byte of
    the response is retried once on a new connection, as HTTP clients do (RFC 9112 9.3.1)."""
    counts: dict[str, int] = {}
    lock = threading.Lock()
    end = time.time() + secs

    def note(k: str) -> None:
        with lock:
            counts[k] = counts.get(k, 0) + 1

    def worker() -> None:
        conn = None
        while time.time() < end:
            for attempt in (1, 2):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(ip, 80, timeout=10)
                    conn.request("GET", path, headers={"Host": host})
                    r = conn.getresponse()
                    r.read()
                    note(str(r.status))
                    if mode != "keepalive" or r.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                    conn.close()
                    conn = None
                    if mode == "keepalive" and attempt == 1:
                        note("retried-idle-close")
                        continue
                    note(type(e).__name__)
                    break
                except (OSError, http.client.HTTPException) as e:
                    if conn is not None:
                        conn.close()
                    conn = None
                    note(type(e).__name__)
                    break

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return counts


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "requests":
        reqs = json.loads(args[0])
        out: list[dict] = [{} for _ in reqs]

        def run(i: int, r: dict) -> None:
            out[i] = one(r)

        ths = [threading.Thread(target=run, args=(i, r)) for i, r in enumerate(reqs)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        print(json.dumps(out))
    elif mode == "load":
        ip, host, path, secs, threads, how = args
        print(json.dumps(load(ip, host, path, float(secs), int(threads), how)))
