"""The built-in workload every container image maps to: an echo server in the spirit of agnhost netexec.

It answers on every declared containerPort with who it is (pod, namespace, node, zone, pod IP) and
what it saw (the client address after any NAT, Host, headers), so each hop of the datapath can be
checked from the reply alone. TCP ports speak HTTP/1.1 and HTTP/2 (h2c) on the same socket; UDP
and SCTP ports echo datagrams with agnhost's `hostname` / `clientip` commands.

`run()` is entered in a child forked from the asyncio-based kubelet, thousands of times on a small
machine: it builds its own event loop, touches nothing inherited, runs single-threaded, and leaves
with os._exit so the parent's atexit handlers and stdio buffers are not replayed in the child.

    python -m kubewire.workload.echo --port 8080/TCP --port 53/UDP
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import socket
from collections.abc import Iterable
from typing import Any, NoReturn

from .app import Connection, Identity, Server, datagram_reply, fmt_addr, log_error, log_line, set_access_log
from .http1 import HTTP1

PROTOCOLS = ("TCP", "UDP", "SCTP")
GRACE = 0.9  # seconds a SIGTERM leaves running replies, inside the ~1 s the kubelet waits
BACKLOG = 1024


def parse_port(spec: str) -> tuple[int, str]:
    """Parse `8080`, `8080/TCP`, `53/udp` into (port, PROTOCOL); an argparse `type=`."""
    num, _, proto = spec.partition("/")
    proto = (proto or "TCP").upper()
    try:
        port = int(num)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port {spec!r}") from None
    if not 0 < port < 65536 or proto not in PROTOCOLS:
        raise argparse.ArgumentTypeError(f"bad port {spec!r}: want 1-65535[/TCP|UDP|SCTP]")
    return port, proto


def _preview(data: bytes) -> str:
    text = data[:40].decode("utf-8", "replace")
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


class UDPEcho(asyncio.DatagramProtocol):
    """Datagram echo with agnhost's commands; a reply goes to the address the request came from."""

    def __init__(self, srv: Server, log: bool) -> None:
        self.srv = srv
        self.log = log
        self.t: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]  # a DatagramTransport, though not by subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        client = fmt_addr(addr)
        reply = datagram_reply(self.srv.ident, data, client)
        if self.t is not None:
            self.t.sendto(reply, addr)
        if self.log:
            log_line(f'{client} "UDP {_preview(data)}" {len(reply)}B')

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a client that went away: nothing to do


class SCTPEcho(asyncio.Protocol, Connection):
    """SCTP (one-to-one, SOCK_STREAM) association: each message is answered like a UDP datagram."""

    def __init__(self, srv: Server, log: bool) -> None:
        self.srv = srv
        self.log = log
        self.t: asyncio.Transport | None = None
        self.client = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport
        self.client = fmt_addr(transport.get_extra_info("peername"))
        self.srv.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.srv.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.t is not None:
            self.t.write(datagram_reply(self.srv.ident, data, self.client))
        if self.log:
            log_line(f'{self.client} "SCTP {_preview(data)}" {len(data)}B')

    def drain(self) -> None:
        if self.t is not None:
            self.t.close()


def _socket(kind: int, proto: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind, proto)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot bind {host}:{port}: {exc.strerror}") from None
    return sock


def _forget_parent() -> None:
    """Drop what a fork inherited from an asyncio parent: its running loop and signal plumbing.

    The parent's loop routes signals through a wakeup fd (its self-pipe, shared with us after fork)
    into Python handlers that belong to its loop; left in place, our SIGTERM would wake the parent.
    """
    asyncio.events._set_running_loop(None)
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
            if callable(handler) and sig != signal.SIGINT:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            continue


def _serve(ports: Iterable[tuple[int, str]], host: str, access_log: bool) -> int:
    # Hold SIGTERM/SIGINT until the loop can drain properly; unblocking at the end also undoes a
    # mask the parent may have had when it forked.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    _forget_parent()
    set_access_log(access_log)
    loop = asyncio.SelectorEventLoop()  # not the policy's loop: the parent may have replaced the policy
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(
        lambda _loop, ctx: log_error(f"{ctx.get('message')}: {ctx.get('exception')!r}")
    )
    srv = Server(Identity.from_env())
    listeners: list[asyncio.Server] = []
    datagrams: list[asyncio.BaseTransport] = []
    served: list[str] = []
    # Sockets are made here, not by create_server(host=...), which would resolve the host in a
    # thread pool: no threads in a process that exists thousands of times.
    for port, proto in dict.fromkeys((p, pr.upper()) for p, pr in ports):
        if proto == "TCP":
            sock = _socket(socket.SOCK_STREAM, 0, host, port)
            listeners.append(
                loop.run_until_complete(loop.create_server(lambda: HTTP1(srv), sock=sock, backlog=BACKLOG))
            )
        elif proto == "UDP":
            sock = _socket(socket.SOCK_DGRAM, 0, host, port)
            transport, _ = loop.run_until_complete(
                loop.create_datagram_endpoint(lambda: UDPEcho(srv, access_log), sock=sock)
            )
            datagrams.append(transport)
        elif proto == "SCTP":
            try:
                socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
            except (OSError, AttributeError) as exc:  # CONFIG_IP_SCTP off: EPROTONOSUPPORT
                log_error(
                    f"SCTP port {port} cannot be served on this kernel ({exc}); serving the other ports"
                )
                continue
            sock = _socket(socket.SOCK_STREAM, socket.IPPROTO_SCTP, host, port)
            listeners.append(
                loop.run_until_complete(
                    loop.create_server(lambda: SCTPEcho(srv, access_log), sock=sock, backlog=BACKLOG)
                )
            )
        else:
            raise ValueError(f"unknown protocol {proto!r} for port {port}")
        served.append(f"{port}/{proto}")

    def shutdown() -> None:
        if srv.draining:
            return
        srv.draining = True
        for listener in listeners:
            listener.close()
        for transport in datagrams:
            transport.close()
        for conn in list(srv.conns):
            conn.drain()
        deadline = loop.time() + GRACE

        def check() -> None:
            if not srv.conns or loop.time() >= deadline:
                loop.stop()
            else:
                loop.call_later(0.02, check)

        loop.call_soon(check)

    for sig in stop_signals:
        loop.add_signal_handler(sig, shutdown)
    ident = srv.ident
    log_line(
        f"echo: pod={ident.pod} namespace={ident.namespace} node={ident.node} serving {' '.join(served)}"
    )
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
    loop.run_forever()
    return 0


def run(ports: list[tuple[int, str]], *, host: str = "0.0.0.0", access_log: bool = True) -> NoReturn:
    """Serve every (port, protocol) until SIGTERM/SIGINT, then exit 0; never returns.

    Meant for a freshly forked child (or `python -m`). Exits 1 with the reason on stderr if a port
    cannot be bound, as a container whose server fails to start would.
    """
    # Move everything inherited into the permanent generation: collections then never walk (and
    # so never copy-on-write) the pages this process shares with its parent and siblings.
    gc.freeze()
    code = 1
    try:
        code = _serve(ports, host, access_log)
    except BaseException as exc:  # noqa: BLE001 - report whatever stopped us, then exit
        log_error(f"fatal: {type(exc).__name__}: {exc}")
    os._exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(
        prog="python -m kubewire.workload.echo",
        description="kubewire's built-in echo server (agnhost netexec-like): HTTP/1.1 + h2c, UDP, SCTP.",
    )
    parser.add_argument("--port", action="append", type=parse_port, required=True, metavar="PORT[/PROTO]",
                        help="port to serve, e.g. 8080/TCP, 53/UDP, 9999/SCTP (repeatable)")  # fmt: skip
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log each request to stdout")
    args = parser.parse_args(argv)
    run(args.port, host=args.host, access_log=not args.no_access_log)


if __name__ == "__main__":
    main()
