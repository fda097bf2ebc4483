"""HTTP/1.1 on an asyncio Protocol, and the switch to HTTP/2 on the same port.

A callback Protocol (no task or coroutine per request) keeps the cost of a short keep-alive request
to a buffer scan, a dict and one write: thousands of these processes share two cores. Delays and
streams are loop timers, so a slow request never holds up another connection. HTTP/2 is detected
here (prior-knowledge preface, or `Upgrade: h2c`) and only then is http2 (and h2) imported.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .app import (
    MAX_BODY,
    REASONS,
    Connection,
    Reply,
    Request,
    Server,
    fmt_addr,
    http_date,
    log_access,
    route,
    stream_chunk,
)

if TYPE_CHECKING:
    from .http2 import H2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_HEAD = 64 * 1024
HIGH_WATER = 256 * 1024  # buffered pipelined input before we stop reading from the client

# parser states
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER = range(6)


class HTTPError(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",")} if value else set()


class HTTP1(asyncio.Protocol, Connection):
    """One TCP connection: parses requests in order and answers each (keep-alive, pipelining)."""

    __slots__ = (
        "srv", "loop", "t", "client", "buf", "state", "need", "body", "req", "keep", "first",
        "busy", "closed", "eof", "timer", "cur", "seq", "h2", "read_paused", "write_paused",
    )  # fmt: skip

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.loop = asyncio.get_running_loop()
        self.t: asyncio.Transport | None = None
        self.client = ""
        self.buf = bytearray()
        self.state = _HEAD
        self.need = 0
        self.body: bytearray | None = None
        self.req: Request | None = None
        self.keep = True
        self.first = True  # the HTTP/2 preface is only legal as the first bytes of a connection
        self.busy = False  # a delayed or streamed reply is in flight; later requests wait
        self.closed = False
        self.eof = False
        self.timer: asyncio.TimerHandle | None = None
        self.cur: tuple[Request, Reply] | None = None
        self.seq = 0
        self.h2: H2 | None = None
        self.read_paused = False
        self.write_paused = False

    # --- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport
        self.client = fmt_addr(transport.get_extra_info("peername"))
        self.srv.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.srv.conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.h2 is not None:
            self.h2.connection_lost()

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self.h2.data_received(data)
            return
        self.buf += data
        if not self.busy:
            self._process()
        self._update_reading()

    def eof_received(self) -> bool:
        """The client half-closed (`nc -N`, shutdown(SHUT_WR)): answer what it sent, then close."""
        if self.h2 is not None:
            return False
        self.eof = True
        if not self.busy:
            self._process()
            self._close()
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    def drain(self) -> None:
        """SIGTERM: close now if idle, else after the reply in flight (the h2 side sends GOAWAY)."""
        if self.closed or self.t is None:
            return
        if self.h2 is not None:
            self.h2.drain()
        elif not self.busy and self.state == _HEAD and not self.buf:
            self._close()
        elif self.cur is not None and self.cur[1].chunks >= 0 and self.timer is not None:
            self.timer.cancel()  # a stream in progress: one last chunk now, then end it
            self._next_chunk()

    # --- parsing ------------------------------------------------------------------------------

    def _update_reading(self) -> None:
        """Backpressure: stop reading while the client does not read our replies, or floods us."""
        t = self.t
        if t is None or self.closed:
            return
        want_pause = self.write_paused or (self.busy and len(self.buf) > HIGH_WATER)
        if want_pause != self.read_paused:
            self.read_paused = want_pause
            if want_pause:
                t.pause_reading()
            else:
                t.resume_reading()

    def _process(self) -> None:
        buf = self.buf
        try:
            while buf and not self.busy and not self.closed and self.h2 is None:
                state = self.state
                if state == _HEAD:
                    if self.first and buf[:1] == b"P":
                        n = min(len(buf), len(PREFACE))
                        if buf[:n] == PREFACE[:n]:
                            if n == len(PREFACE):
                                self._switch_h2(None)
                            return
                    while buf[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request
                        del buf[:2]
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > MAX_HEAD:
                            raise HTTPError(431, "request header section too large")
                        return
                    head = bytes(buf[:end])
                    del buf[: end + 4]
                    self._parse_head(head)
                elif state in (_BODY, _CHUNK_DATA):
                    n = min(self.need, len(buf))
                    assert self.body is not None
                    self.body += buf[:n]
                    del buf[:n]
                    self.need -= n
                    if self.need:
                        return
                    if state == _BODY:
                        self._complete()
                    else:
                        self.state = _CHUNK_CRLF
                elif state == _CHUNK_SIZE:
                    i = buf.find(b"\r\n")
                    if i < 0:
                        if len(buf) > 4096:
                            raise HTTPError(400, "chunk size line too long")
                        return
                    line = bytes(buf[:i]).split(b";", 1)[0].strip()
                    del buf[: i + 2]
                    try:
                        size = int(line, 16)
                    except ValueError:
                        raise HTTPError(400, "bad chunk size") from None
                    assert self.body is not None
                    if size < 0 or len(self.body) + size > MAX_BODY:
                        raise HTTPError(413, "request body too large")
                    self.need = size
                    self.state = _CHUNK_DATA if size else _TRAILER
                elif state == _CHUNK_CRLF:
                    if len(buf) < 2:
                        return
                    if buf[:2] != b"\r\n":
                        raise HTTPError(400, "chunk not followed by CRLF")
                    del buf[:2]
                    self.state = _CHUNK_SIZE
                else:  # _TRAILER: trailer fields are read and dropped, up to the empty line
                    i = buf.find(b"\r\n")
                    if i < 0:
                        if len(buf) > MAX_HEAD:
                            raise HTTPError(431, "trailer section too large")
                        return
                    del buf[: i + 2]
                    if i == 0:
                        self._complete()
        except HTTPError as exc:
            self._fail(exc.status, str(exc))

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise HTTPError(400, "malformed request line")
        method = parts[0].decode("latin-1")
        target = parts[1].decode("utf-8", "replace")
        version = parts[2].decode("latin-1")
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise HTTPError(505, f"unsupported version {version!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in (b" ", b"\t"):
                raise HTTPError(400, "malformed header line")
            key = name.decode("latin-1").lower()
            val = value.strip(b" \t").decode("latin-1")
            if key in headers:
                headers[key] += ("; " if key == "cookie" else ", ") + val
            else:
                headers[key] = val
        self.first = False
        conn = _tokens(headers.get("connection", ""))
        self.keep = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        self.req = Request(method, target, headers.get("host", ""), headers, b"", self.client, version)
        te = headers.get("transfer-encoding")
        if te is not None:
            if te.rsplit(",", 1)[-1].strip().lower() != "chunked":
                raise HTTPError(501, f"unsupported transfer-encoding {te!r}")
            self.body = bytearray()
            self.state = _CHUNK_SIZE
        else:
            cl = headers.get("content-length", "")
            if cl and not cl.isdigit():
                raise HTTPError(400, "bad content-length")
            self.need = int(cl) if cl else 0
            if self.need > MAX_BODY:
                raise HTTPError(413, "request body too large")
            if self.need == 0:
                self._complete()
                return
            self.body = bytearray()
            self.state = _BODY
        if version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue" and self.t:
            self.t.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # --- answering ----------------------------------------------------------------------------

    def _complete(self) -> None:
        req = self.req
        assert req is not None
        if self.body is not None:
            req.body = bytes(self.body)
            self.body = None
        self.state = _HEAD
        self.req = None
        if req.proto == "HTTP/1.1" and "h2c" in _tokens(req.headers.get("upgrade", "")):
            settings = req.headers.get("http2-settings")
            if settings is not None and self._switch_h2(req, settings):
                return
        reply = route(self.srv.ident, req)
        if reply.delay > 0 or reply.chunks >= 0:
            self.busy = True
            self.cur = (req, reply)
            if reply.delay > 0:
                self.timer = self.loop.call_later(reply.delay, self._fire)
            else:
                self._fire()
        else:
            self._send(req, reply)

    def _head(self, req: Request, reply: Reply, length: int | None) -> bytes:
        status = reply.status
        out = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nX-Pod-Name: %s\r\nDate: %s\r\n" % (
            status,
            REASONS.get(status, "Unknown").encode(),
            reply.content_type.encode(),
            self.srv.pod_header,
            http_date(),
        )
        if length is None:
            if req.proto == "HTTP/1.1":
                out += b"Transfer-Encoding: chunked\r\n"
        elif status not in (204, 304):
            out += b"Content-Length: %d\r\n" % length
        if not self.keep or self.srv.draining:
            out += b"Connection: close\r\n"
        elif req.proto == "HTTP/1.0":
            out += b"Connection: keep-alive\r\n"
        return out + b"\r\n"

    def _send(self, req: Request, reply: Reply) -> None:
        assert self.t is not None
        body = b"" if req.method == "HEAD" else reply.body
        self.t.write(self._head(req, reply, len(reply.body)) + body)
        log_access(self.client, req.method, req.target, req.proto, reply.status, req.started)
        self._done()

    def _fire(self) -> None:
        """A delay elapsed (or a stream starts): send the reply, or the stream's head."""
        self.timer = None
        assert self.cur is not None and self.t is not None
        req, reply = self.cur
        if reply.chunks < 0:
            self._send(req, reply)
            self._resume()
            return
        if req.proto == "HTTP/1.0":
            self.keep = False  # no chunked coding in 1.0: the end of the stream is the close
        self.t.write(self._head(req, reply, None))
        self.seq = 0
        self._next_chunk()

    def _next_chunk(self) -> None:
        self.timer = None
        if self.closed:
            return
        assert self.cur is not None and self.t is not None
        req, reply = self.cur
        chunked = req.proto == "HTTP/1.1"
        if req.method != "HEAD" and self.seq < reply.chunks:
            data = stream_chunk(self.srv.ident, req, self.seq, reply.chunks)
            self.t.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.seq += 1
            if self.seq < reply.chunks and not self.srv.draining:
                self.timer = self.loop.call_later(reply.interval, self._next_chunk)
                return
        if chunked and req.method != "HEAD":
            self.t.write(b"0\r\n\r\n")
        log_access(self.client, req.method, req.target, req.proto, reply.status, req.started)
        self._done()
        self._resume()

    def _done(self) -> None:
        if not self.keep or self.srv.draining:
            self._close()

    def _resume(self) -> None:
        """Called when an asynchronous reply finished: carry on with pipelined requests."""
        self.busy = False
        self.cur = None
        if not self.closed:
            self._process()
            if self.eof and not self.busy:
                self._close()
            else:
                self._update_reading()

    def _fail(self, status: int, why: str) -> None:
        """Malformed input: answer with the status and close, since the stream can't be resynced."""
        self.keep = False
        req = self.req or Request("-", "-", "", {}, b"", self.client, "HTTP/1.1")
        req.proto = "HTTP/1.1"
        body = (why + "\n").encode()
        self._send(req, Reply(status, "text/plain; charset=utf-8", body))

    def _close(self) -> None:
        if not self.closed and self.t is not None:
            self.closed = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.t.close()

    def _switch_h2(self, req: Request | None, settings: str = "") -> bool:
        """Hand the connection to HTTP/2: prior knowledge (req is None) or an h2c upgrade."""
        from .http2 import H2  # deferred: most connections never speak HTTP/2

        assert self.t is not None
        h2 = H2(self.srv, self.t, self.client, self.loop)
        if req is None:
            h2.start()
        elif not h2.start_upgrade(settings, req):
            return False  # unusable HTTP2-Settings: the upgrade is optional, answer in HTTP/1.1
        self.h2 = h2
        rest = bytes(self.buf)
        self.buf.clear()
        if rest:
            h2.data_received(rest)
        return True
