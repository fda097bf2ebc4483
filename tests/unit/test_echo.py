"""The echo workload, exercised with real clients over 127.0.0.1.

Servers run in forked children (the way the kubelet starts them), never via subprocess.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from kubewire.workload import echo
from kubewire.workload.app import Identity, Request, datagram_reply, route

ENV = {
    "POD_NAME": "web-7d9f-abcde",
    "POD_NAMESPACE": "shop",
    "NODE_NAME": "node-a1",
    "POD_IP": "10.244.1.5",
    "KUBEWIRE_ZONE": "zone-a",
}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(ports: list[tuple[int, str]], out: str, err: str, env: dict[str, str]) -> None:
    """Runs in the forked child: own stdout/stderr files, identity env, then serve forever."""
    try:
        for fd, path in ((1, out), (2, err)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(f, fd)
            os.close(f)
        os.environ.update(env)
        echo.run(ports, host="127.0.0.1")
    finally:
        os._exit(3)  # run() never returns; never fall back into pytest in the child


def local_addr(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"{host}:{port}"


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


@dataclass
class EchoServer:
    proc: Any
    tcp: int
    udp: int
    out: Path
    err: Path

    def log(self) -> str:
        return self.out.read_text()

    def ready(self) -> bool:
        return self.out.exists() and "serving" in self.out.read_text()


def start(tmp_path: Path, ports: list[tuple[int, str]], tcp: int, udp: int) -> EchoServer:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(ports, str(out), str(err), ENV))
    proc.start()
    srv = EchoServer(proc, tcp, udp, out, err)
    wait_for(lambda: srv.ready() or not proc.is_alive())
    assert proc.is_alive(), err.read_text()
    return srv


def stop(proc: Any) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(3)
    if proc.is_alive():
        proc.kill()
        proc.join(3)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    srv = start(tmp_path_factory.mktemp("echo"), [(tcp, "TCP"), (udp, "UDP")], tcp, udp)
    yield srv
    stop(srv.proc)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EchoServer]:
    """A server this test may kill."""
    tcp = free_port()
    srv = start(tmp_path, [(tcp, "TCP")], tcp, 0)
    yield srv
    stop(srv.proc)


def conn(server: EchoServer, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.tcp, timeout=timeout)


def read_response(f: Any) -> tuple[int, dict[str, str], bytes]:
    """Minimal HTTP/1.1 response reader over one buffered file, so pipelined replies stay intact."""
    status = int(f.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int(f.readline().strip(), 16):
            body += f.read(size)
            f.readline()
        f.readline()
    else:
        body = f.read(int(headers.get("content-length", "0")))
    return status, headers, body


# --- HTTP/1.1 -------------------------------------------------------------------------------------


def test_keepalive_two_requests_and_identity(server: EchoServer) -> None:
    c = conn(server)
    c.request("GET", "/some/path?x=1", headers={"X-Trace": "abc"})
    r1 = c.getresponse()
    doc1 = json.loads(r1.read())
    local = local_addr(c.sock)
    c.request("POST", "/b", body=b"hello body", headers={"Host": "shop.example"})
    r2 = c.getresponse()
    doc2 = json.loads(r2.read())
    c.close()

    assert r1.status == 200 and r1.getheader("Content-Type") == "application/json"
    assert r1.getheader("X-Pod-Name") == ENV["POD_NAME"]
    assert r1.getheader("Connection") is None  # keep-alive is the HTTP/1.1 default
    assert doc1 == {
        "pod": ENV["POD_NAME"],
        "namespace": "shop",
        "node": "node-a1",
        "zone": "zone-a",
        "podIP": "10.244.1.5",
        "client": local,
        "host": f"127.0.0.1:{server.tcp}",
        "path": "/some/path?x=1",
        "method": "GET",
        "proto": "HTTP/1.1",
        "headers": doc1["headers"],
        "body": "",
    }
    assert doc1["headers"]["x-trace"] == "abc"
    assert doc2["client"] == local  # same connection reused
    assert (doc2["method"], doc2["host"], doc2["body"]) == ("POST", "shop.example", "hello body")
    wait_for(lambda: '"POST /b HTTP/1.1" 200' in server.log())
    assert f'{local} "GET /some/path?x=1 HTTP/1.1" 200' in server.log()


def test_status_and_agnhost_endpoints(server: EchoServer) -> None:
    c = conn(server)

    def get(path: str, method: str = "GET") -> tuple[int, str, str]:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read().decode()

    status, ctype, body = get("/status/503")
    assert status == 503 and ctype == "application/json" and json.loads(body)["pod"] == ENV["POD_NAME"]
    assert get("/hostname")[0::2] == (200, ENV["POD_NAME"])
    assert get("/healthz")[0::2] == (200, "ok")
    assert get("/echo?msg=hello%20world")[0::2] == (200, "hello world")
    status, ctype, body = get("/clientip")
    assert ctype.startswith("text/plain") and body == local_addr(c.sock)
    assert get("/status/204")[0::2] == (204, "")
    assert get("/status/abc")[0] == 400
    assert get("/delay?ms=-1")[0] == 400
    status, _, body = get("/anything", method="BREW")
    assert status == 200 and json.loads(body)["method"] == "BREW"
    c.request("HEAD", "/x")
    r = c.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) > 0 and r.read() == b""
    assert get("/after-head")[0] == 200  # the HEAD reply carried no body to confuse framing
    c.close()


def test_delay_does_not_block_other_connections(server: EchoServer) -> None:
    slow, fast = conn(server), conn(server)
    t0 = time.monotonic()
    slow.request("GET", "/delay?ms=300")
    fast.request("GET", "/quick")
    assert fast.getresponse().status == 200
    fast_done = time.monotonic() - t0
    r = slow.getresponse()
    slow_done = time.monotonic() - t0
    assert r.status == 200 and json.loads(r.read())["path"] == "/delay?ms=300"
    assert fast_done < 0.25 and 0.29 < slow_done < 3  # a blocking sleep would hold `fast` >= 0.3 s
    slow.close()
    fast.close()


def test_stream_is_chunked_and_paced(server: EchoServer) -> None:
    c = conn(server)
    t0 = time.monotonic()
    c.request("GET", "/stream?n=3&interval_ms=150")
    r = c.getresponse()
    assert r.getheader("Transfer-Encoding") == "chunked" and r.getheader("Content-Length") is None
    first = json.loads(r.readline())
    t_first = time.monotonic() - t0
    rest = [json.loads(line) for line in r.read().splitlines()]
    elapsed = time.monotonic() - t0
    assert [d["seq"] for d in [first, *rest]] == [0, 1, 2]
    assert first["pod"] == ENV["POD_NAME"] and first["total"] == 3
    assert t_first < 0.14 and elapsed >= 0.29  # the first chunk is not held back until the end
    c.request("GET", "/after-stream")  # connection still usable
    assert c.getresponse().status == 200
    c.close()


def test_chunked_body_pipelined_and_connection_close(server: EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=5) as s:
        s.sendall(
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
            b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /third HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        f = s.makefile("rb")
        st1, _, b1 = read_response(f)
        st2, _, b2 = read_response(f)
        st3, h3, b3 = read_response(f)
        assert (st1, json.loads(b1)["body"]) == (200, "hello world")
        assert (st2, json.loads(b2)["path"]) == (200, "/second")
        assert (st3, json.loads(b3)["path"], h3.get("connection")) == (200, "/third", "close")
        assert f.read() == b""  # the server honoured Connection: close


def test_http10_and_malformed(server: EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=5) as s:
        s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        f = s.makefile("rb")
        status, _, body = read_response(f)
        assert status == 200 and json.loads(body)["proto"] == "HTTP/1.0"
        assert f.read() == b""  # 1.0 without keep-alive: closed after the reply
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=5) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        assert read_response(s.makefile("rb"))[0] == 400


def test_expect_continue_and_half_close(server: EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=5) as s:
        s.sendall(b"PUT /e HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"data")
        assert json.loads(read_response(s.makefile("rb"))[2])["body"] == "data"
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=5) as s:
        s.sendall(b"GET /delay?ms=50 HTTP/1.1\r\nHost: h\r\n\r\n")
        s.shutdown(socket.SHUT_WR)  # like `nc -N`: the reply must still come, then the close
        f = s.makefile("rb")
        assert read_response(f)[0] == 200 and f.read() == b""


# --- HTTP/2 ---------------------------------------------------------------------------------------


def h2_exchange(sock: socket.socket, client: h2.connection.H2Connection, want: set[int]) -> dict[int, Any]:
    """Pump frames until every stream in `want` ended; returns {stream: {"headers", "body"}}."""
    got: dict[int, dict[str, Any]] = {sid: {"headers": {}, "body": b""} for sid in want}
    ended: set[int] = set()
    while ended != want:
        sock.sendall(client.data_to_send())
        data = sock.recv(65536)
        assert data, "server closed the connection"
        for ev in client.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                got[ev.stream_id]["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                got[ev.stream_id]["body"] += ev.data
                client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                raise AssertionError(f"stream {ev.stream_id} reset")
    sock.sendall(client.data_to_send())
    return got


def h2_client() -> h2.connection.H2Connection:
    return h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))


def h2_headers(server: EchoServer, path: str, method: str = "GET") -> list[tuple[str, str]]:
    return [(":method", method), (":path", path), (":scheme", "http"), (":authority", f"echo:{server.tcp}")]


def test_h2_prior_knowledge_concurrent_streams(server: EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=5) as s:
        client = h2_client()
        client.initiate_connection()
        client.send_headers(1, h2_headers(server, "/delay?ms=150"), end_stream=True)  # answered last
        client.send_headers(3, h2_headers(server, "/three"), end_stream=True)
        client.send_headers(5, [*h2_headers(server, "/five", "POST"), ("x-req", "5")])
        client.send_data(5, b"payload", end_stream=True)
        got = h2_exchange(s, client, {1, 3, 5})
        local = local_addr(s)
    docs = {sid: json.loads(r["body"]) for sid, r in got.items()}
    assert all(r["headers"][":status"] == "200" for r in got.values())
    assert got[3]["headers"]["x-pod-name"] == ENV["POD_NAME"]
    assert {d["proto"] for d in docs.values()} == {"HTTP/2"}
    assert {d["client"] for d in docs.values()} == {local}
    assert docs[5]["body"] == "payload" and docs[5]["method"] == "POST" and docs[5]["headers"]["x-req"] == "5"
    assert docs[3]["host"] == f"echo:{server.tcp}" and docs[1]["path"] == "/delay?ms=150"
    wait_for(lambda: '"GET /three HTTP/2" 200' in server.log())


def test_h2_large_body_respects_flow_control(server: EchoServer) -> None:
    body = b"x" * 200_000  # the echoed reply exceeds the 65535-byte initial window
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=5) as s:
        client = h2_client()
        client.initiate_connection()
        client.send_headers(1, h2_headers(server, "/big", "PUT"))
        sent = 0
        while sent < len(body):  # respect the server's window too
            n = min(client.local_flow_control_window(1), client.max_outbound_frame_size, len(body) - sent)
            if n == 0:
                s.sendall(client.data_to_send())
                for _ in client.receive_data(s.recv(65536)):
                    pass
                continue
            client.send_data(1, body[sent : sent + n], end_stream=sent + n == len(body))
            sent += n
        got = h2_exchange(s, client, {1})
    assert json.loads(got[1]["body"])["body"] == body.decode()


def test_h2_stream_sends_data_frames(server: EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=5) as s:
        client = h2_client()
        client.initiate_connection()
        client.send_headers(1, h2_headers(server, "/stream?n=3&interval_ms=20"), end_stream=True)
        got = h2_exchange(s, client, {1})
    lines = [json.loads(line) for line in got[1]["body"].splitlines()]
    assert [d["seq"] for d in lines] == [0, 1, 2] and lines[0]["proto"] == "HTTP/2"


def test_h2c_upgrade(server: EchoServer) -> None:
    client = h2_client()
    settings = client.initiate_upgrade_connection().decode().rstrip("=")  # unpadded, as curl sends it
    with socket.create_connection(("127.0.0.1", server.tcp), timeout=5) as s:
        s.sendall(
            b"POST /up HTTP/1.1\r\nHost: upgraded\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + settings.encode() + b"\r\nContent-Length: 7\r\n\r\nup-body"
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        events = client.receive_data(rest) if rest else []
        assert not any(isinstance(e, h2.events.StreamReset) for e in events)
        got: dict[str, Any] = {"body": b""}
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                got["body"] += ev.data
        if not any(isinstance(e, h2.events.StreamEnded) for e in events):
            more = h2_exchange(s, client, {1})
            got["body"] += more[1]["body"]
    doc = json.loads(got["body"])
    assert (doc["proto"], doc["path"], doc["host"], doc["body"]) == ("HTTP/2", "/up", "upgraded", "up-body")


# --- UDP / SCTP -----------------------------------------------------------------------------------


def test_udp_echo_and_commands(server: EchoServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", server.udp))

        def ask(data: bytes) -> bytes:
            s.send(data)
            return s.recv(65536)

        assert ask(b"hostname") == ENV["POD_NAME"].encode()
        assert ask(b"hostname\n") == ENV["POD_NAME"].encode() + b"\n"
        assert ask(b"clientip") == (local_addr(s)).encode()
        assert ask(b"\x00binary hostname\xff") == b"\x00binary hostname\xff"


def test_sctp_port_is_reported_or_served(tmp_path: Path) -> None:
    tcp, sctp = free_port(), free_port()
    srv = start(tmp_path, [(sctp, "SCTP"), (tcp, "TCP")], tcp, 0)
    try:
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
            supported = True
        except OSError:
            supported = False
        if supported:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP) as s:
                s.settimeout(2)
                s.connect(("127.0.0.1", sctp))
                s.send(b"hostname")
                assert s.recv(100) == ENV["POD_NAME"].encode()
        else:
            err = srv.err.read_text()
            assert f"SCTP port {sctp} cannot be served on this kernel" in err and len(err.splitlines()) == 1
        c = conn(srv)
        c.request("GET", "/")
        assert c.getresponse().status == 200  # the other ports are served regardless
        c.close()
    finally:
        stop(srv.proc)


# --- lifecycle ------------------------------------------------------------------------------------


def test_sigterm_exits_zero_quickly(own_server: EchoServer) -> None:
    idle = conn(own_server)
    idle.request("GET", "/")
    idle.getresponse().read()
    streaming = conn(own_server)
    streaming.request("GET", "/stream?n=1000&interval_ms=500")
    r = streaming.getresponse()
    r.readline()
    t0 = time.monotonic()
    os.kill(own_server.proc.pid, signal.SIGTERM)
    own_server.proc.join(3)
    elapsed = time.monotonic() - t0
    assert own_server.proc.exitcode == 0 and elapsed < 1.2
    assert r.read() is not None  # the stream was ended, not left hanging
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", own_server.tcp), timeout=1).close()
    idle.close()
    streaming.close()


def test_runs_in_child_forked_from_running_asyncio_loop(tmp_path: Path) -> None:
    """The kubelet forks from inside its event loop; the child must start clean and not wake it."""
    tcp = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    parent_got_sigterm: list[int] = []

    async def kubelet() -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, parent_got_sigterm.append, 1)
        try:
            pid = os.fork()
            if pid == 0:
                _child([(tcp, "TCP")], str(out), str(err), ENV)
            await loop.run_in_executor(None, wait_for, lambda: out.exists() and "serving" in out.read_text())
            c = http.client.HTTPConnection("127.0.0.1", tcp, timeout=5)
            await loop.run_in_executor(None, c.request, "GET", "/from-loop")
            resp = await loop.run_in_executor(None, c.getresponse)
            assert json.loads(resp.read())["path"] == "/from-loop"
            c.close()
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                await asyncio.sleep(0.01)  # the parent loop keeps running meanwhile
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("child did not exit on SIGTERM")
            await asyncio.sleep(0.05)
            return os.waitstatus_to_exitcode(status)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    assert asyncio.run(kubelet()) == 0, err.read_text()
    assert parent_got_sigterm == []  # the child's signal did not leak into the parent's loop


# --- pure parts -----------------------------------------------------------------------------------


def test_identity_env_and_hostname_fallback() -> None:
    ident = Identity.from_env({"POD_NAMESPACE": "ns"})
    assert ident.pod == socket.gethostname() and ident.namespace == "ns" and ident.node == ""


def test_route_and_datagram_reply() -> None:
    ident = Identity("p", "ns", "n", "z", "10.0.0.1")
    req = Request("GET", "/stream?n=x", "h", {}, b"", "1.2.3.4:5", "HTTP/1.1")
    assert route(ident, req).status == 400
    req.target = "/stream"
    reply = route(ident, req)
    assert (reply.chunks, reply.interval) == (10, 1.0)
    req.target = "http://proxy.example/hostname"  # absolute-form target
    assert route(ident, req).body == b"p"
    assert datagram_reply(ident, b"clientip\r\n", "1.2.3.4:5") == b"1.2.3.4:5\r\n"
    assert datagram_reply(ident, b"other", "c") == b"other"


def test_parse_port() -> None:
    assert echo.parse_port("8080") == (8080, "TCP")
    assert echo.parse_port("53/udp") == (53, "UDP")
    for bad in ("0/TCP", "x", "80/ICMP", "70000"):
        with pytest.raises(Exception, match="bad port"):
            echo.parse_port(bad)
