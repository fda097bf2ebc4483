"""What the echo server answers, independent of the wire protocol that carried the question.

HTTP/1.1 (http1.py), HTTP/2 (http2.py), UDP and SCTP (echo.py) all turn their input into a
`Request` and ask `route()` for a `Reply`, so every protocol reports the same identity in the same
shape and the endpoints behave the same whichever way a client arrives.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

JSON = "application/json"
NDJSON = "application/x-ndjson"
TEXT = "text/plain; charset=utf-8"

#: Upper bounds that keep one misbehaving client from pinning a process for hours.
MAX_DELAY_MS = 600_000
MAX_STREAM_CHUNKS = 1_000_000
MAX_BODY = 16 * 1024 * 1024

REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}


@dataclass(slots=True, frozen=True)
class Identity:
    """Who this process claims to be; read once at start because the kubelet fixes it at exec."""

    pod: str
    namespace: str
    node: str
    zone: str
    pod_ip: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Identity:
        return cls(
            pod=env.get("POD_NAME") or socket.gethostname(),
            namespace=env.get("POD_NAMESPACE", ""),
            node=env.get("NODE_NAME", ""),
            zone=env.get("KUBEWIRE_ZONE", ""),
            pod_ip=env.get("POD_IP", ""),
        )


@dataclass(slots=True)
class Request:
    method: str
    target: str  # as sent: path plus query
    host: str
    headers: dict[str, str]
    body: bytes
    client: str  # "ip:port" of the peer socket, i.e. after any NAT on the way
    proto: str  # "HTTP/1.1" | "HTTP/1.0" | "HTTP/2"
    started: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    delay: float = 0.0  # seconds to wait before answering (timer, never a blocking sleep)
    chunks: int = -1  # >= 0: a streamed reply of that many chunks, built by stream_chunk()
    interval: float = 0.0  # seconds between streamed chunks


def fmt_addr(addr: object) -> str:
    """Format a socket address as "ip:port" (brackets for IPv6) the way clients print it."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return "" if addr is None else str(addr)


def describe(ident: Identity, req: Request, **extra: object) -> bytes:
    """The JSON document every default answer carries: identity plus what the server saw."""
    doc: dict[str, object] = {
        "pod": ident.pod,
        "namespace": ident.namespace,
        "node": ident.node,
        "zone": ident.zone,
        "podIP": ident.pod_ip,
        "client": req.client,
        "host": req.host,
        "path": req.target,
        "method": req.method,
        "proto": req.proto,
        "headers": req.headers,
        "body": req.body.decode("utf-8", "replace"),
    }
    doc.update(extra)
    return (json.dumps(doc) + "\n").encode()


def _bad(ident: Identity, req: Request, why: str) -> Reply:
    return Reply(400, JSON, describe(ident, req, error=why))


def _int_arg(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw)  # ValueError is turned into a 400 by route()
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}]")
    return value


def route(ident: Identity, req: Request) -> Reply:
    """Map a request to its reply; the agnhost-style endpoints, and the echo document otherwise."""
    path, _, qs = req.target.partition("?")
    if path.startswith(("http://", "https://")):  # absolute-form target, as sent to a proxy
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    query = dict(parse_qsl(qs, keep_blank_values=True)) if qs else {}
    try:
        if path == "/hostname":
            return Reply(200, TEXT, ident.pod.encode())
        if path == "/clientip":
            return Reply(200, TEXT, req.client.encode())
        if path == "/healthz":
            return Reply(200, TEXT, b"ok")
        if path == "/echo":
            return Reply(200, TEXT, query.get("msg", "").encode())
        if path == "/delay":
            ms = _int_arg(query, "ms", 0, 0, MAX_DELAY_MS)
            return Reply(200, JSON, describe(ident, req), delay=ms / 1000)
        if path.startswith("/status/"):
            status = int(unquote(path[len("/status/") :]))
            if not 200 <= status <= 599:
                raise ValueError("status must be in [200, 599]")
            body = b"" if status in (204, 304) else describe(ident, req)
            return Reply(status, JSON, body)
        if path == "/stream":
            n = _int_arg(query, "n", 10, 0, MAX_STREAM_CHUNKS)
            ms = _int_arg(query, "interval_ms", 1000, 0, MAX_DELAY_MS)
            return Reply(200, NDJSON, b"", chunks=n, interval=ms / 1000)
    except ValueError as exc:
        return _bad(ident, req, str(exc))
    return Reply(200, JSON, describe(ident, req))


def stream_chunk(ident: Identity, req: Request, seq: int, total: int) -> bytes:
    """One line of a /stream reply; seq lets a client see which chunks an intermediary dropped."""
    return describe(ident, req, seq=seq, total=total)


def datagram_reply(ident: Identity, data: bytes, client: str) -> bytes:
    """UDP/SCTP: agnhost's `hostname` and `clientip` commands; anything else comes back verbatim."""
    cmd = data.rstrip(b"\r\n")
    nl = data[len(cmd) :]
    if cmd == b"hostname":
        return ident.pod.encode() + nl
    if cmd == b"clientip":
        return client.encode() + nl
    return data


# --- access log --------------------------------------------------------------------------------

_log_enabled = True
_clock: list[object] = [-1, "", b""]  # second, ISO timestamp, HTTP Date header value


def set_access_log(enabled: bool) -> None:
    global _log_enabled
    _log_enabled = enabled


def _now() -> tuple[str, bytes]:
    """Timestamps formatted once per second: at thousands of requests/s strftime would show up."""
    sec = int(time.time())
    if sec != _clock[0]:
        tm = time.gmtime(sec)
        _clock[0] = sec
        _clock[1] = time.strftime("%Y-%m-%dT%H:%M:%SZ", tm)
        _clock[2] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", tm).encode()
    return _clock[1], _clock[2]  # type: ignore[return-value]


def http_date() -> bytes:
    return _now()[1]


def log_line(text: str) -> None:
    """Write one line straight to fd 1.

    os.write rather than sys.stdout: it is unbuffered (so `kubewire logs` sees it at once) and takes
    no lock that a thread of the parent might have held when it forked us.
    """
    with contextlib.suppress(OSError):  # a closed or full stdout must never take the server down
        os.write(1, f"{_now()[0]} {text}\n".encode("utf-8", "replace"))


def log_access(client: str, method: str, target: str, proto: str, status: int, started: float) -> None:
    if _log_enabled:
        ms = (time.monotonic() - started) * 1000
        log_line(f'{client} "{method} {target} {proto}" {status} {ms:.1f}ms')


def log_error(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"{_now()[0]} echo: {text}\n".encode("utf-8", "replace"))


class Server:
    """State shared by every connection of one process: identity, live connections, draining."""

    def __init__(self, ident: Identity) -> None:
        self.ident = ident
        self.conns: set[Connection] = set()
        self.draining = False
        self.pod_header = ident.pod.encode("latin-1", "replace")


class Connection:
    """What the server needs from any live connection to drain it on SIGTERM."""

    __slots__ = ()

    def drain(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError
