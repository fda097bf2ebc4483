"""The cluster DNS server: UDP and TCP with asyncio, answering like CoreDNS.

Cluster names come from a ClusterRecords snapshot (or a StaticZone for the emulated internet);
everything else is forwarded upstream, optionally through a DNSCache (NodeLocal DNSCache).
The hot path is synchronous inside the UDP socket's reader callback: parse the query by hand,
look up the rendered reply for (name, type) in the snapshot's template table, patch ID and
question in, send. Only forwarded and ExternalName-chasing queries get a coroutine.

Run as `python -m kubewire.dns.server --listen 0.0.0.0:53 --records-file F.json --upstream IP:53`;
see main() for the other modes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from kubewire.dns.cache import DNSCache
from kubewire.dns.forward import Forwarder, ForwardError, parse_hostport
from kubewire.dns.records import Answer, ClusterRecords
from kubewire.dns.wire import (
    Query,
    Template,
    badvers_reply,
    error_reply,
    parse_query,
    parse_query_slow,
    qname_text,
    truncate,
)
from kubewire.dns.zone import StaticZone

_perf = time.perf_counter
_FORWARD = object()  # template-table marker: not our name, forward it
_TCP_IDLE = 10.0


class Authority(Protocol):
    """What the server answers from: ClusterRecords or StaticZone."""

    def answer(self, qname: dns.name.Name, qtype: int) -> Answer | None: ...


# ---------------------------------------------------------------------------------------------
# Query log
# ---------------------------------------------------------------------------------------------

_FLAG_NAMES = ((0x8000, "qr"), (0x0400, "aa"), (0x0200, "tc"), (0x0100, "rd"), (0x0080, "ra"),
               (0x0040, "z"), (0x0020, "ad"), (0x0010, "cd"))


def _flags_text(flags: int) -> str:
    return ",".join(name for bit, name in _FLAG_NAMES if flags & bit)


def _seconds(d: float) -> str:
    """Go's strconv.FormatFloat(d, 'f', -1, 64), as CoreDNS prints durations (to the ns)."""
    text = f"{d:.9f}".rstrip("0")
    return (text + "0" if text.endswith(".") else text) + "s"


class QueryLog:
    """One line per query as CoreDNS's log plugin writes it, plus optional JSON lines.

    `[INFO] client:port - id "TYPE CLASS name. proto size do bufsize" RCODE flags rsize duration`
    Streams are flushed on a short timer rather than per line, to keep the hot path cheap while
    a tail of the log still sees each query within ~50 ms.
    """

    def __init__(self, text: TextIO | None = None, json_lines: TextIO | None = None,
                 flush_interval: float = 0.05) -> None:
        self.text = text
        self.json = json_lines
        self.flush_interval = flush_interval
        self._flush_pending = False
        self._types: dict[int, str] = {}
        self._rcodes: dict[int, str] = {}
        self._flags: dict[int, str] = {}
        self.pods_by_ip: dict[str, str] = {}  # client address -> "ns/pod", so the log names the asker

    def record(self, client: Any, q: Query, proto: str, reply: bytes, duration: float, cache_hit: bool) -> None:
        qtype = self._types.get(q.qtype)
        if qtype is None:
            qtype = self._types[q.qtype] = dns.rdatatype.to_text(q.qtype)
        rcode_n = reply[3] & 0x0F
        rcode = self._rcodes.get(rcode_n)
        if rcode is None:
            rcode = self._rcodes[rcode_n] = dns.rcode.to_text(rcode_n)
        name = qname_text(q.qname)
        host, port = client[0], client[1]
        remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.text is not None:
            rflags_n = (reply[2] << 8) | reply[3]
            rflags = self._flags.get(rflags_n)
            if rflags is None:
                rflags = self._flags[rflags_n] = _flags_text(rflags_n)
            bufsize = 65535 if proto == "tcp" else q.udp_limit()
            qclass = "IN" if q.qclass == 1 else dns.rdataclass.to_text(q.qclass)
            self.text.write(
                f'[INFO] {remote} - {int.from_bytes(q.id, "big")} "{qtype} {qclass} {name} {proto} '
                f'{q.size} {"true" if q.do else "false"} {bufsize}" {rcode} {rflags} {len(reply)} '
                f"{_seconds(duration)}\n")
        if self.json is not None:
            self.json.write(json.dumps({
                "ts": round(time.time(), 6), "client": remote, "client_pod": self.pods_by_ip.get(host, ""),
                "id": int.from_bytes(q.id, "big"),
                "name": name, "type": qtype, "proto": proto, "rcode": rcode,
                "duration_ms": round(duration * 1000, 3), "cache_hit": cache_hit, "size": len(reply),
            }) + "\n")
        if not self._flush_pending:
            self._flush_pending = True
            try:
                asyncio.get_running_loop().call_later(self.flush_interval, self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self._flush_pending = False
        for stream in (self.text, self.json):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()


# ---------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------


class _UDPReader:
    """Drains the UDP socket on each readiness event.

    asyncio's DatagramProtocol transport reads one datagram per event-loop iteration, and that
    iteration (epoll, handle scheduling) costs more than answering the query itself. Measured on
    one core, 32 queries in flight, no query log: ~20k queries/s through the transport, ~58k
    reading until EAGAIN (up to BURST per wake-up). The handler stays synchronous, with no
    coroutine per query.
    """

    BURST = 256

    def __init__(self, server: DNSServer, sock: socket.socket) -> None:
        self.handle = server._handle
        self.sock = sock

    def readable(self) -> None:
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        handle = self.handle
        for _ in range(self.BURST):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            reply = handle(data, addr, None)
            if reply is not None:
                try:  # noqa: SIM105 - contextlib.suppress costs more on the hot path
                    sendto(reply, addr)
                except OSError:
                    pass  # a full socket buffer drops the reply, as any UDP server would


class DNSServer:
    """Serves an Authority over UDP and TCP; forwards the rest, through a cache if given.

    `cache=True` puts a DNSCache in front of a Forwarder built from `upstreams`; a DNSCache
    instance is used as given (with its own forwarder). `update()` swaps the authority snapshot
    atomically: queries in flight finish on the old one, the next ones see the new one.
    """

    def __init__(self, records: Authority | None = None, upstreams: Sequence[str] = (), *,
                 cache: bool | DNSCache = False, timeout: float = 2.0, force_tcp: bool = False,
                 log: QueryLog | None = None, max_templates: int = 200_000) -> None:
        self.forwarder: Forwarder | None = None
        self.cache: DNSCache | None = None
        if isinstance(cache, DNSCache):
            self.cache = cache
            self.forwarder = cache.forwarder
        elif upstreams:
            self.forwarder = Forwarder(upstreams, timeout=timeout, force_tcp=force_tcp)
            if cache:
                self.cache = DNSCache(self.forwarder)
        self.log = log
        self.max_templates = max_templates
        self._records = records
        self._templates: dict[tuple[bytes, int], Any] = {}
        self._udp: socket.socket | None = None
        self._tcp: asyncio.Server | None = None
        self._conn_tasks: dict[asyncio.StreamWriter, set[asyncio.Task[None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._queries = 0
        self._by_type: dict[int, int] = {}
        self._by_rcode: dict[int, int] = {}
        self._forwarded = 0
        self._forward_failures = 0
        self._truncated = 0
        self.address: tuple[str, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 53) -> tuple[str, int]:
        """Bind UDP and TCP on (host, port); port 0 picks one free for both. Returns the address."""
        loop = asyncio.get_running_loop()
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        for _ in range(20):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.bind((host, port))
                sock.setblocking(False)
                bound = sock.getsockname()[1]
                # backlog as Go listens (somaxconn): NodeLocal caches open bursts of connections at TTL expiry
                self._tcp = await asyncio.start_server(self._serve_tcp, host, bound, reuse_address=True, backlog=4096)
            except OSError:
                sock.close()
                if port:
                    raise
                continue
            loop.add_reader(sock.fileno(), _UDPReader(self, sock).readable)
            self._udp = sock
            self.address = (host, bound)
            return self.address
        raise OSError(f"no port free for both UDP and TCP on {host}")

    async def stop(self) -> None:
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.forwarder is not None:
            self.forwarder.close()
        if self.log is not None:
            self.log.flush()

    async def __aenter__(self) -> DNSServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def update(self, records: Authority | None) -> None:
        """Serve from a new snapshot; rendered replies of the old one are dropped with it."""
        self._records = records
        self._templates = {}

    @property
    def records(self) -> Authority | None:
        return self._records

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "queries": self._queries,
            "by_type": {dns.rdatatype.to_text(t): n for t, n in sorted(self._by_type.items())},
            "by_rcode": {dns.rcode.to_text(r): n for r, n in sorted(self._by_rcode.items())},
            "forwarded": self._forwarded,
            "forward_failures": self._forward_failures,
            "truncated": self._truncated,
            "templates": len(self._templates),
        }
        if self.cache is not None:
            out["cache"] = {"hits": self.cache.hits, "misses": self.cache.misses, "entries": len(self.cache),
                            "coalesced": self.cache.coalesced}
        return out

    # -- the hot path ------------------------------------------------------------------------

    def _handle(self, data: bytes, addr: Any, writer: asyncio.StreamWriter | None) -> bytes | None:
        """The reply to send now, or None when there is none or a task will send it later."""
        t0 = _perf()
        q = parse_query(data)
        if q is None:
            parsed = parse_query_slow(data)
            if not isinstance(parsed, Query):
                rcode = dns.rcode.FORMERR
                if parsed is not None and parsed.opcode() != 0:
                    rcode = dns.rcode.NOTIMP
                if parsed is not None and parsed.flags & 0x8000:
                    return None  # never answer a response
                reply = error_reply(data, rcode)
                if reply is not None:
                    self._by_rcode[rcode] = self._by_rcode.get(rcode, 0) + 1
                return reply
            q = parsed
        if q.edns and q.version:
            reply = badvers_reply(q)
            self._account(q, addr, writer, reply, t0, False)
            return reply
        entry = self._templates.get((q.key, q.qtype)) if q.qclass == 1 else _FORWARD
        if entry is None:
            entry = self._prepare(q)
        if entry.__class__ is Template:
            reply = entry.render(q, 65535 if writer else q.udp_limit())
            self._account(q, addr, writer, reply, t0, False)
            return reply
        if entry is _FORWARD and self.cache is not None:
            reply = self.cache.get(q)
            if reply is not None:
                reply = self._fit(reply, q, writer)
                self._account(q, addr, writer, reply, t0, True)
                return reply
        task = asyncio.get_running_loop().create_task(self._answer_later(entry, q, data, addr, writer, t0))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if writer is not None and writer in self._conn_tasks:
            conn = self._conn_tasks[writer]
            conn.add(task)
            task.add_done_callback(conn.discard)
        return None

    def _prepare(self, q: Query) -> Any:
        """Compute and remember how to answer (name, type) from the current snapshot."""
        records = self._records
        qname = dns.name.from_wire(q.qname, 0)[0]
        try:
            answer = records.answer(qname, q.qtype) if records is not None else None
        except Exception as exc:  # noqa: BLE001 - a bug must cost one SERVFAIL, not the server
            print(f"[ERROR] answering {qname} {q.qtype}: {exc!r}", file=sys.stderr)
            return Template.from_answer(Answer(dns.rcode.SERVFAIL, authoritative=False), qname, q.qtype)
        if answer is None:
            entry: Any = _FORWARD
        elif answer.chase is not None:
            entry = answer
        else:
            entry = Template.from_answer(answer, qname, q.qtype)
        if len(self._templates) >= self.max_templates:
            self._templates = {}
        if records is self._records:
            self._templates[(q.key, q.qtype)] = entry
        return entry

    def _fit(self, reply: bytes, q: Query, writer: asyncio.StreamWriter | None) -> bytes:
        limit = 65535 if writer else q.udp_limit()
        if len(reply) > limit:
            self._truncated += 1
            return truncate(reply, limit, q.opt())
        return reply

    def _account(self, q: Query, addr: Any, writer: asyncio.StreamWriter | None, reply: bytes,
                 t0: float, cache_hit: bool) -> None:
        self._queries += 1
        self._by_type[q.qtype] = self._by_type.get(q.qtype, 0) + 1
        rcode = reply[3] & 0x0F
        self._by_rcode[rcode] = self._by_rcode.get(rcode, 0) + 1
        if reply[2] & 0x02:
            self._truncated += 1
        if self.log is not None:
            try:
                self.log.record(addr, q, "tcp" if writer else "udp", reply, _perf() - t0, cache_hit)
            except Exception as exc:  # noqa: BLE001 - a log problem must not cost the reply
                print(f"[ERROR] query log: {exc!r}", file=sys.stderr)

    # -- the slow path -----------------------------------------------------------------------

    async def _answer_later(self, entry: Any, q: Query, data: bytes, addr: Any,
                            writer: asyncio.StreamWriter | None, t0: float) -> None:
        if entry is _FORWARD:
            try:
                reply = await self._forward(data, q)
            except ForwardError:
                reply = error_reply(data, dns.rcode.SERVFAIL) or b""
        else:
            reply = await self._chase(entry, q)
        if not reply:
            return
        reply = self._fit(reply, q, writer)
        self._send(reply, addr, writer)
        self._account(q, addr, writer, reply, t0, False)

    async def _forward(self, data: bytes, q: Query) -> bytes:
        if self.forwarder is None:
            raise ForwardError("no upstream configured")
        self._forwarded += 1
        try:
            if self.cache is not None:
                return await self.cache.resolve(data, q)
            return await self.forwarder.resolve(data)
        except ForwardError:
            self._forward_failures += 1
            raise

    async def _chase(self, answer: Answer, q: Query) -> bytes:
        """CoreDNS's Upstream.Lookup for an ExternalName target: resolve it as a client of this
        server would, append its answer; if that fails outright, the CNAME goes too (NODATA)."""
        assert answer.chase is not None
        qname = dns.name.from_wire(q.qname, 0)[0]
        target, rdtype = answer.chase.target, answer.chase.rdtype
        extra: list = []
        try:
            local = self._records.answer(target, rdtype) if self._records is not None else None
            if local is not None:
                extra = list(local.answer)
            else:
                sub = dns.message.make_query(target, rdtype)
                wire = sub.to_wire()
                sub_q = parse_query(wire)
                assert sub_q is not None
                extra = list(dns.message.from_wire(await self._forward(wire, sub_q)).answer)
            full = Answer(dns.rcode.NOERROR, (*answer.answer, *extra))
        except (ForwardError, dns.exception.DNSException):
            full = Answer(dns.rcode.NOERROR, authority=(answer.soa,) if answer.soa else ())
        return Template.from_answer(full, qname, q.qtype).render(q)

    def _send(self, reply: bytes, addr: Any, writer: asyncio.StreamWriter | None) -> None:
        if writer is not None:
            if not writer.is_closing():
                writer.write(len(reply).to_bytes(2, "big") + reply)
        elif self._udp is not None:
            with contextlib.suppress(OSError):
                self._udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self._conn_tasks[writer] = set()
        try:
            while True:
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), _TCP_IDLE), "big")
                data = await asyncio.wait_for(reader.readexactly(size), _TCP_IDLE)
                reply = self._handle(data, peer, writer)
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            # Replies still being resolved for this connection go out before it closes.
            pending = self._conn_tasks.pop(writer, set())
            if pending:
                await asyncio.wait(pending, timeout=_TCP_IDLE)
            writer.close()


# ---------------------------------------------------------------------------------------------
# Command line: how the daemon runs cluster DNS, NodeLocal DNSCache and the internet's DNS
# ---------------------------------------------------------------------------------------------


def _load(path: str, kind: str) -> Authority:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return StaticZone.from_dict(doc) if kind == "zone" else ClusterRecords.from_dict(doc)


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


async def _watch(server: DNSServer, path: str, kind: str, seen: tuple[int, int, int] | None,
                 interval: float = 0.1) -> None:
    """Re-read the file when it changes; a half-written or invalid file keeps the old snapshot."""
    while True:
        await asyncio.sleep(interval)
        sig = _signature(path)
        if sig is None or sig == seen:
            continue
        try:
            server.update(_load(path, kind))
            if kind == "records":
                _map_clients(server, path)
            seen = sig
        except (OSError, ValueError, TypeError, KeyError) as exc:
            print(f"[ERROR] reloading {path}: {exc!r}", file=sys.stderr)


def _map_clients(server: DNSServer, path: str) -> None:
    """Pod addresses from a records file, so each logged query names the pod that asked."""
    if server.log is None:
        return
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return
    server.log.pods_by_ip = {
        p["status"]["podIP"]: f'{p["metadata"].get("namespace", "")}/{p["metadata"]["name"]}'
        for p in doc.get("pods") or [] if (p.get("status") or {}).get("podIP")
    }


async def _watch_clients(server: DNSServer, path: str, interval: float = 0.5) -> None:
    """Keep the client-pod names of a records file this server does not answer from (NodeLocal)."""
    seen = None
    while True:
        sig = _signature(path)
        if sig is not None and sig != seen:
            _map_clients(server, path)
            seen = sig
        await asyncio.sleep(interval)


async def _run(args: argparse.Namespace) -> None:
    path, kind = (args.zone_file, "zone") if args.zone_file else (args.records_file, "records")
    records: Authority | None = None
    seen = None
    if path:
        seen = _signature(path)
        try:
            records = _load(path, kind)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            print(f"[ERROR] loading {path}: {exc!r}; serving empty until it is valid", file=sys.stderr)
            seen = None
            records = StaticZone({}) if kind == "zone" else ClusterRecords()
    json_stream = None
    if args.log_file == "-":
        json_stream = sys.stdout
    elif args.log_file:
        json_stream = open(args.log_file, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
    # --quiet without --log-file: no query log at all, not one that formats every query for nobody
    log = None if args.quiet and json_stream is None else QueryLog(None if args.quiet else sys.stdout, json_stream)
    server = DNSServer(records, args.upstream or (), cache=args.cache, force_tcp=args.force_tcp,
                       timeout=args.timeout, log=log)
    if path and kind == "records":
        _map_clients(server, path)
    host, port = parse_hostport(args.listen)
    await server.start(host, port)
    print(f"[INFO] kubewire dns listening on {args.listen} (udp, tcp)", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchers = [asyncio.create_task(_watch(server, path, kind, seen))] if path else []
    if args.clients_file and args.clients_file != path:
        watchers.append(asyncio.create_task(_watch_clients(server, args.clients_file)))
    await stop.wait()
    for watcher in watchers:
        watcher.cancel()
    await server.stop()
    if json_stream is not None and json_stream is not sys.stdout:
        json_stream.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubewire.dns.server", description=(
        "Cluster DNS as CoreDNS's kubernetes plugin serves it (--records-file), a static "
        "authoritative zone (--zone-file), or a caching forwarder (neither; NodeLocal DNSCache)."))
    parser.add_argument("--listen", default="0.0.0.0:53", help="HOST:PORT for UDP and TCP (default 0.0.0.0:53)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--records-file", help="JSON {services, endpointslices, pods, domain, ttl, ...}; "
                        "re-read when it changes")
    source.add_argument("--zone-file", help="JSON {name: [ips]}: authoritative A/AAAA, NXDOMAIN otherwise")
    parser.add_argument("--upstream", action="append", help="IP:PORT to forward other names to (repeatable)")
    parser.add_argument("--cache", action="store_true", help="cache forwarded replies (positive and negative)")
    parser.add_argument("--force-tcp", action="store_true", help="forward over TCP only (NodeLocal DNSCache)")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-upstream timeout in seconds (default 2)")
    parser.add_argument("--log-file", help="append JSON query lines here ('-' for stdout)")
    parser.add_argument("--clients-file", help="a records file whose pods name the clients in the query log "
                        "(default: --records-file; for a cache that answers from none)")
    parser.add_argument("--quiet", action="store_true", help="no CoreDNS-style query lines on stdout")
    args = parser.parse_args(argv)
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
