"""HTTP/2 cleartext (h2c) on a connection that http1 handed over; imported only when one arrives.

Each stream is answered on its own (delays and streams are per-stream timers), so many concurrent
requests multiplexed on one connection get independent answers: that is what makes a connection-
pinned gRPC client visible, and per-request balancing by Envoy measurable. Replies respect the
peer's flow-control windows, so a large echoed body is sent as the client grants credit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from .app import MAX_BODY, Reply, Request, Server, http_date, log_access, route, stream_chunk

MAX_CONCURRENT_STREAMS = 1000
_SC = h2.settings.SettingCodes


@dataclass(slots=True)
class _Stream:
    req: Request
    body: bytearray = field(default_factory=bytearray)
    reply: Reply | None = None
    timer: asyncio.TimerHandle | None = None
    seq: int = 0
    out: bytearray = field(default_factory=bytearray)  # DATA waiting for flow-control credit
    out_end: bool = False  # END_STREAM goes with the last of `out`


class H2:
    """The HTTP/2 side of one TCP connection; the owning HTTP1 protocol forwards bytes to it."""

    __slots__ = ("srv", "t", "client", "loop", "conn", "streams", "closed", "draining")

    def __init__(self, srv: Server, transport: asyncio.Transport, client: str,
                 loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
        self.srv = srv
        self.t = transport
        self.client = client
        self.loop = loop
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        conn = h2.connection.H2Connection(config=config)
        # h2 advertises 100 concurrent streams; Envoy and gRPC clients multiplex more than that.
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                _SC.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                _SC.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        self.conn = conn
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self.draining = False

    # --- setup --------------------------------------------------------------------------------

    def start(self) -> None:
        """Prior knowledge: the client's preface is still in the buffer http1 passes on next."""
        self.conn.initiate_connection()
        self._write()

    def start_upgrade(self, settings: str, req: Request) -> bool:
        """`Upgrade: h2c`: 101, our preface, then answer the upgrading request as stream 1."""
        try:
            raw = settings.strip().encode("ascii")
            raw += b"=" * (-len(raw) % 4)  # curl sends unpadded base64url; h2's decoder wants padding
            base64.urlsafe_b64decode(raw)
            self.conn.initiate_upgrade_connection(raw)
        except Exception:  # noqa: BLE001 - any malformed HTTP2-Settings just declines the upgrade
            return False
        self.t.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        self._write()
        req.proto = "HTTP/2"
        st = _Stream(req, bytearray(req.body))  # the body already came over HTTP/1.1
        self.streams[1] = st
        self._dispatch(1, st)
        return True

    # --- input --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._write()  # h2 queued a GOAWAY naming the error
            self._close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self._on_request(ev)
            elif isinstance(ev, h2.events.DataReceived):
                self._on_data(ev)
            elif isinstance(ev, h2.events.StreamEnded):
                st = self.streams.get(ev.stream_id)
                if st is not None and st.reply is None:
                    self._dispatch(ev.stream_id, st)
            elif isinstance(ev, h2.events.StreamReset):
                self._forget(ev.stream_id)
            elif isinstance(ev, h2.events.WindowUpdated) and ev.stream_id:
                self._flush_id(ev.stream_id)
            elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self._flush_all()  # connection window or INITIAL_WINDOW_SIZE changed
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._write()
                self._close()
                return
        self._write()

    def _on_request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        if self.draining:
            self.conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        headers: dict[str, str] = {}
        pseudo: dict[str, str] = {}
        for k, v in ev.headers or ():
            name = k.decode("latin-1") if isinstance(k, bytes) else k
            value = (
                v.decode("utf-8" if name == ":path" else "latin-1", "replace") if isinstance(v, bytes) else v
            )
            if name.startswith(":"):
                pseudo[name] = value
            elif name in headers:
                headers[name] += ("; " if name == "cookie" else ", ") + value
            else:
                headers[name] = value
        host = pseudo.get(":authority") or headers.get("host", "")
        req = Request(
            pseudo.get(":method", ""), pseudo.get(":path", ""), host, headers, b"", self.client, "HTTP/2"
        )
        self.streams[sid] = _Stream(req)

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        sid = ev.stream_id
        self.conn.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
        st = self.streams.get(sid)
        if st is None:
            return
        st.body += ev.data or b""
        if len(st.body) > MAX_BODY:
            self.conn.reset_stream(sid, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._forget(sid)

    # --- answering ----------------------------------------------------------------------------

    def _dispatch(self, sid: int, st: _Stream) -> None:
        st.req.body = bytes(st.body)
        st.body = bytearray()
        reply = st.reply = route(self.srv.ident, st.req)
        if reply.delay > 0:
            st.timer = self.loop.call_later(reply.delay, self._respond, sid)
        else:
            self._respond(sid)

    def _respond(self, sid: int) -> None:
        st = self.streams.get(sid)
        if st is None or self.closed:
            return
        st.timer = None
        reply, req = st.reply, st.req
        assert reply is not None
        status = reply.status
        headers = [
            (b":status", b"%d" % status),
            (b"content-type", reply.content_type.encode()),
            (b"x-pod-name", self.srv.pod_header),
            (b"date", http_date()),
        ]
        head_only = req.method == "HEAD"
        try:
            if reply.chunks >= 0:
                end = head_only or reply.chunks == 0
                self.conn.send_headers(sid, headers, end_stream=end)
                if end:
                    self._finish(sid, st)
                else:
                    self._next_chunk(sid)
            else:
                if status not in (204, 304):
                    headers.append((b"content-length", b"%d" % len(reply.body)))
                body = b"" if head_only else reply.body
                self.conn.send_headers(sid, headers, end_stream=not body)
                if body:
                    self._queue(sid, st, body, end=True)
                else:
                    self._finish(sid, st)
        except h2.exceptions.H2Error:
            self._forget(sid)  # the client reset or the connection went away meanwhile
        self._write()

    def _next_chunk(self, sid: int) -> None:
        st = self.streams.get(sid)
        if st is None or self.closed:
            return
        st.timer = None
        reply = st.reply
        assert reply is not None
        data = stream_chunk(self.srv.ident, st.req, st.seq, reply.chunks)
        st.seq += 1
        last = st.seq >= reply.chunks or self.draining
        try:
            self._queue(sid, st, data, end=last)
        except h2.exceptions.H2Error:
            self._forget(sid)
        if not last:
            st.timer = self.loop.call_later(reply.interval, self._next_chunk, sid)
        self._write()

    def _queue(self, sid: int, st: _Stream, data: bytes, end: bool) -> None:
        st.out += data
        st.out_end = end
        self._flush(sid, st)

    def _flush(self, sid: int, st: _Stream) -> None:
        """Send as much of the stream's pending DATA as the peer's windows allow."""
        conn = self.conn
        out = st.out
        while out:
            n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(out))
            if n <= 0:
                return  # wait for WINDOW_UPDATE
            chunk = bytes(out[:n])
            del out[:n]
            conn.send_data(sid, chunk, end_stream=st.out_end and not out)
        if st.out_end:
            self._finish(sid, st)

    def _flush_id(self, sid: int) -> None:
        st = self.streams.get(sid)
        if st is not None and st.out:
            try:
                self._flush(sid, st)
            except h2.exceptions.H2Error:
                self._forget(sid)

    def _flush_all(self) -> None:
        for sid in [s for s, st in self.streams.items() if st.out]:
            self._flush_id(sid)

    def _finish(self, sid: int, st: _Stream) -> None:
        req = st.req
        status = st.reply.status if st.reply is not None else 0
        log_access(self.client, req.method, req.target, req.proto, status, req.started)
        self.streams.pop(sid, None)
        if self.draining and not self.streams:
            self.loop.call_soon(self._goaway)

    def _forget(self, sid: int) -> None:
        st = self.streams.pop(sid, None)
        if st is not None and st.timer is not None:
            st.timer.cancel()
        if self.draining and not self.streams:
            self.loop.call_soon(self._goaway)

    # --- lifecycle ----------------------------------------------------------------------------

    def drain(self) -> None:
        """SIGTERM: refuse new streams, let running ones finish, then GOAWAY and close.

        GOAWAY goes last because h2 allows no more frames on a connection once it has sent one.
        """
        self.draining = True
        if not self.streams:
            self._goaway()
            return
        for sid, st in list(self.streams.items()):
            if st.timer is not None and st.reply is not None and st.reply.chunks >= 0:
                st.timer.cancel()  # a stream in progress: one last chunk now, then end it
                self._next_chunk(sid)

    def _goaway(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            self.conn.close_connection()
        self._write()
        self._close()

    def _write(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.t.write(data)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            for st in self.streams.values():
                if st.timer is not None:
                    st.timer.cancel()
            self.streams.clear()
            self.t.close()

    def connection_lost(self) -> None:
        self.closed = True
        for st in self.streams.values():
            if st.timer is not None:
                st.timer.cancel()
        self.streams.clear()
