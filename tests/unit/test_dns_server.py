"""The DNS server over real UDP and TCP on 127.0.0.1 (high ports), with dnspython's dns.query as
the client: authoritative answers, truncation and TCP retry, EDNS, forwarding to a second server
acting as upstream, the cache (positive, negative, TTLs), the query log, the records-file CLI."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import re
import socket
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from kubewire.dns.cache import DNSCache
from kubewire.dns.forward import Forwarder
from kubewire.dns.records import ClusterRecords
from kubewire.dns.server import DNSServer, QueryLog, _watch, main
from kubewire.dns.zone import StaticZone

HOST = "127.0.0.1"


def svc(name, ns, ip, ports=(), **spec):
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"name": n, "port": p} for n, p in ports], **spec}}


def slice_(service, ns, ips, hostnames=None):
    hostnames = hostnames or {}
    return {"kind": "EndpointSlice",
            "metadata": {"name": f"{service}-x", "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                           **({"hostname": hostnames[ip]} if ip in hostnames else {})} for ip in ips],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}


BIG = [f"10.244.{i // 200}.{i % 200 + 1}" for i in range(60)]
SERVICES = [
    svc("payment-service", "production", "10.96.0.50", [("http", 8080)]),
    svc("big", "production", "None", [("http", 80)]),
    svc("db", "production", "None", [("http", 80)]),
    {"kind": "Service", "metadata": {"name": "stripe", "namespace": "production"},
     "spec": {"type": "ExternalName", "externalName": "api.stripe.com"}},
]
SLICES = [slice_("big", "production", BIG), slice_("db", "production", ["10.244.1.5"], {"10.244.1.5": "db-0"})]
INTERNET = {"api.stripe.com": ["198.51.100.7"], "many.example": [f"198.51.100.{i}" for i in range(1, 61)]}


def records() -> ClusterRecords:
    return ClusterRecords(SERVICES, SLICES, serial=42)


def query(name: str, qtype: str = "A", **kw) -> dns.message.Message:
    return dns.message.make_query(name, qtype, **kw)


async def udp(port: int, msg: dns.message.Message, timeout: float = 3) -> dns.message.Message:
    return await asyncio.to_thread(dns.query.udp, msg, HOST, port=port, timeout=timeout)


async def tcp(port: int, msg: dns.message.Message) -> dns.message.Message:
    return await asyncio.to_thread(dns.query.tcp, msg, HOST, port=port, timeout=3)


def rrs(msg: dns.message.Message, section: str = "answer") -> list[str]:
    return [line for rrset in getattr(msg, section) for line in rrset.to_text().splitlines()]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# ---------------------------------------------------------------------------------------------


def test_udp_and_tcp_answers():
    async def go():
        log = io.StringIO()
        async with DNSServer(records(), log=QueryLog(log)) as server:
            _, port = await server.start(HOST, 0)
            for send in (udp, tcp):
                m = query("Payment-Service.production.svc.cluster.local")
                r = await send(port, m)
                assert r.id == m.id and r.rcode() == dns.rcode.NOERROR
                assert r.flags & dns.flags.AA and r.flags & dns.flags.RD and not r.flags & dns.flags.RA
                assert rrs(r) == ["Payment-Service.production.svc.cluster.local. 5 IN A 10.96.0.50"]
            r = await udp(port, query("nope.production.svc.cluster.local"))
            assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
            assert rrs(r, "authority") == [
                "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"]
            r = await udp(port, query("payment-service.production.svc.cluster.local", "AAAA"))
            assert r.rcode() == dns.rcode.NOERROR and not r.answer and len(r.authority) == 1
            r = await udp(port, query("_http._tcp.db.production.svc.cluster.local", "SRV"))
            assert rrs(r) == ["_http._tcp.db.production.svc.cluster.local. 5 IN SRV 0 100 80 "
                              "db-0.db.production.svc.cluster.local."]
            assert rrs(r, "additional") == ["db-0.db.production.svc.cluster.local. 5 IN A 10.244.1.5"]
            stats = server.stats()
        assert stats["queries"] == 5
        assert stats["by_type"] == {"A": 3, "AAAA": 1, "SRV": 1}
        assert stats["by_rcode"] == {"NOERROR": 4, "NXDOMAIN": 1}
        lines = log.getvalue().splitlines()
        assert len(lines) == 5
        pattern = (r'\[INFO\] 127\.0\.0\.1:\d+ - (\d+) "A IN Payment-Service\.production\.svc\.cluster\.local\. '
                   r'udp (\d+) false 512" NOERROR qr,aa,rd (\d+) \d+\.\d+s')
        assert re.fullmatch(pattern, lines[0]), lines[0]
        assert re.fullmatch(r'\[INFO\] .* "A IN Payment-Service\.production\.svc\.cluster\.local\. tcp \d+ false '
                            r'65535" NOERROR qr,aa,rd \d+ \d+\.\d+s', lines[1]), lines[1]
        assert " NXDOMAIN qr,aa,rd " in lines[2]

    run(go())


def test_truncation_and_tcp_retry():
    async def go():
        async with DNSServer(records()) as server:
            _, port = await server.start(HOST, 0)
            name = "big.production.svc.cluster.local"
            r = await udp(port, query(name))
            assert r.flags & dns.flags.TC and len(r.to_wire()) <= 512
            assert 0 < len(r.answer[0]) < 60
            r, used_tcp = await asyncio.to_thread(dns.query.udp_with_fallback, query(name), HOST, port=port, timeout=3)
            assert used_tcp and not r.flags & dns.flags.TC and len(r.answer[0]) == 60
            # With EDNS the client's buffer size is respected, and echoed in our OPT record.
            r = await udp(port, query(name, use_edns=0, payload=1232))
            assert not r.flags & dns.flags.TC and len(r.answer[0]) == 60 and r.payload == 1232
            r = await udp(port, query(name, use_edns=0, payload=600))
            assert r.flags & dns.flags.TC and r.edns == 0 and len(r.to_wire()) <= 600
            assert server.stats()["truncated"] == 3  # incl. udp_with_fallback's first try

    run(go())


def test_malformed_and_unsupported_queries():
    async def go():
        async with DNSServer(records()) as server:
            _, port = await server.start(HOST, 0)
            def garbage() -> bytes:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.settimeout(3)
                    s.sendto(b"\x12\x34" + b"\x00" * 10 + b"\xff\xff", (HOST, port))
                    return s.recv(512)

            reply = await asyncio.to_thread(garbage)
            assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
            m = query("payment-service.production.svc.cluster.local")
            m.set_opcode(dns.opcode.NOTIFY)
            r = await udp(port, m)
            assert r.rcode() == dns.rcode.NOTIMP
            r = await udp(port, query("payment-service.production.svc.cluster.local", use_edns=1))
            assert r.rcode() == dns.rcode.BADVERS

    run(go())


def test_forwarding_to_upstream_and_external_name():
    async def go():
        upstream_log = io.StringIO()
        async with DNSServer(StaticZone(INTERNET), log=QueryLog(upstream_log)) as upstream:
            _, up_port = await upstream.start(HOST, 0)
            async with DNSServer(records(), [f"{HOST}:{up_port}"]) as server:
                _, port = await server.start(HOST, 0)
                r = await udp(port, query("api.stripe.com"))
                assert rrs(r) == ["api.stripe.com. 300 IN A 198.51.100.7"]
                r = await udp(port, query("nope.example"))
                assert r.rcode() == dns.rcode.NXDOMAIN
                # ExternalName: CNAME from us, the target's A from upstream, as CoreDNS chases it.
                r = await udp(port, query("stripe.production.svc.cluster.local"))
                assert rrs(r) == ["stripe.production.svc.cluster.local. 5 IN CNAME api.stripe.com.",
                                  "api.stripe.com. 300 IN A 198.51.100.7"]
                # Unknown reverse names fall through to the upstream.
                r = await udp(port, query("9.9.9.9.in-addr.arpa", "PTR"))
                assert r.rcode() == dns.rcode.NXDOMAIN
                # An upstream UDP reply with TC is retried over TCP, then fitted to the client.
                r = await tcp(port, query("many.example"))
                assert len(r.answer[0]) == 60
                r, used_tcp = await asyncio.to_thread(dns.query.udp_with_fallback, query("many.example"),
                                                      HOST, port=port, timeout=3)
                assert used_tcp and len(r.answer[0]) == 60
                assert server.stats()["forwarded"] == 7  # the chase and the UDP try count too
        up_lines = upstream_log.getvalue()
        assert '"A IN many.example. udp' in up_lines and '"A IN many.example. tcp' in up_lines

    run(go())


def test_servfail_when_every_upstream_fails():
    async def go():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
            silent.bind((HOST, 0))
            dead = silent.getsockname()[1]
            async with DNSServer(records(), [f"{HOST}:{dead}"], timeout=0.2) as server:
                _, port = await server.start(HOST, 0)
                start = time.monotonic()
                r = await udp(port, query("api.stripe.com"))
                assert r.rcode() == dns.rcode.SERVFAIL
                assert time.monotonic() - start < 2
                # The ExternalName chase failing drops the CNAME too: NODATA with our SOA.
                r = await udp(port, query("stripe.production.svc.cluster.local"))
                assert r.rcode() == dns.rcode.NOERROR and not r.answer and len(r.authority) == 1
                assert server.stats()["forward_failures"] == 2

    run(go())


def test_cache_hit_on_second_lookup_and_negative_caching():
    async def go():
        upstream_log = io.StringIO()
        json_log = io.StringIO()
        async with DNSServer(StaticZone(INTERNET), log=QueryLog(upstream_log)) as upstream:
            _, up_port = await upstream.start(HOST, 0)
            # NodeLocal DNSCache shape: no records of its own, everything through the cache, TCP upstream.
            async with DNSServer(None, [f"{HOST}:{up_port}"], cache=True, force_tcp=True,
                                 log=QueryLog(None, json_log)) as nodelocal:
                _, port = await nodelocal.start(HOST, 0)
                for _ in range(2):
                    r = await udp(port, query("API.stripe.com"))
                    assert rrs(r) == ["API.stripe.com. 300 IN A 198.51.100.7"]
                for _ in range(2):
                    r = await udp(port, query("nope.example"))
                    assert r.rcode() == dns.rcode.NXDOMAIN and len(r.authority) == 1
                assert nodelocal.stats()["cache"] == {"hits": 2, "misses": 2, "entries": 2, "coalesced": 0}
        assert upstream_log.getvalue().count("API.stripe.com. tcp") == 1
        assert upstream_log.getvalue().count("nope.example. tcp") == 1
        entries = [json.loads(line) for line in json_log.getvalue().splitlines()]
        assert [e["cache_hit"] for e in entries] == [False, True, False, True]
        assert [e["rcode"] for e in entries] == ["NOERROR", "NOERROR", "NXDOMAIN", "NXDOMAIN"]
        assert set(entries[0]) >= {"client", "name", "type", "rcode", "duration_ms", "cache_hit"}
        assert entries[0]["name"] == "API.stripe.com." and entries[0]["type"] == "A"

    run(go())


def test_cache_honours_ttls_and_soa_minimum():
    now = [1000.0]
    zone = StaticZone({"a.example": ["192.0.2.1"]}, ttl=300)

    async def go():
        async with DNSServer(zone) as upstream:
            _, up_port = await upstream.start(HOST, 0)
            cache = DNSCache(Forwarder([f"{HOST}:{up_port}"]), clock=lambda: now[0], max_negative_ttl=60)
            async with DNSServer(None, cache=cache) as server:
                _, port = await server.start(HOST, 0)
                assert rrs(await udp(port, query("a.example"))) == ["a.example. 300 IN A 192.0.2.1"]
                now[0] += 100
                assert rrs(await udp(port, query("a.example"))) == ["a.example. 200 IN A 192.0.2.1"]
                now[0] += 200  # expired
                assert rrs(await udp(port, query("a.example"))) == ["a.example. 300 IN A 192.0.2.1"]
                # Negative answers live for min(SOA TTL, SOA minimum), capped (60 s here).
                await udp(port, query("b.example"))
                now[0] += 59
                r = await udp(port, query("b.example"))
                assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].ttl == 241
                now[0] += 2
                await udp(port, query("b.example"))
                assert (cache.hits, cache.misses) == (2, 4)  # both expiries are misses

    run(go())


def test_concurrent_misses_for_one_name_go_upstream_once():
    from kubewire.dns.wire import parse_query

    class SlowUpstream:
        calls = 0

        async def resolve(self, wire: bytes) -> bytes:
            SlowUpstream.calls += 1
            await asyncio.sleep(0.05)
            reply = dns.message.make_response(dns.message.from_wire(wire))
            reply.answer.append(dns.rrset.from_text(reply.question[0].name, 30, "IN", "A", "192.0.2.9"))
            return reply.to_wire()

    async def go():
        cache = DNSCache(SlowUpstream())  # type: ignore[arg-type]
        wires = [query("Busy.example", id=1000 + i).to_wire() for i in range(20)]
        replies = await asyncio.gather(*(cache.resolve(w, parse_query(w)) for w in wires))
        assert SlowUpstream.calls == 1 and cache.coalesced == 19
        for i, wire in enumerate(replies):
            m = dns.message.from_wire(wire)
            assert m.id == 1000 + i and rrs(m) == ["Busy.example. 30 IN A 192.0.2.9"]

    run(go())


def test_tcp_connections_to_upstream_are_reused():
    async def one_shot(reader, writer):  # answers one query, then closes: a connection left idle dies
        size = int.from_bytes(await reader.readexactly(2), "big")
        m = dns.message.from_wire(await reader.readexactly(size))
        reply = dns.message.make_response(m)
        reply.answer.append(dns.rrset.from_text(m.question[0].name, 30, "IN", "A", "192.0.2.8"))
        wire = reply.to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        writer.close()

    async def go():
        async with DNSServer(StaticZone(INTERNET)) as upstream:
            _, up_port = await upstream.start(HOST, 0)
            fwd = Forwarder([f"{HOST}:{up_port}"], force_tcp=True)
            for i in range(5):
                r = dns.message.from_wire(await fwd.resolve(query("api.stripe.com", id=i).to_wire()))
                assert r.id == i and rrs(r) == ["api.stripe.com. 300 IN A 198.51.100.7"]
            assert fwd.tcp_connections == 1, "one connection for five queries in a row"
            fwd.close()
        closing = await asyncio.start_server(one_shot, HOST, 0)
        port = closing.sockets[0].getsockname()[1]
        fwd = Forwarder([f"{HOST}:{port}"], force_tcp=True)
        for i in range(3):
            await asyncio.sleep(0.05)
            r = dns.message.from_wire(await fwd.resolve(query("x.example", id=100 + i).to_wire()))
            assert r.id == 100 + i and rrs(r) == ["x.example. 30 IN A 192.0.2.8"]
        assert fwd.tcp_connections == 3, "a connection the upstream closed is replaced, not an error"
        fwd.close()
        closing.close()
        await closing.wait_closed()

    run(go())


def test_update_swaps_the_snapshot():
    async def go():
        async with DNSServer(records()) as server:
            _, port = await server.start(HOST, 0)
            name = "payment-service.production.svc.cluster.local"
            assert rrs(await udp(port, query(name))) == [f"{name}. 5 IN A 10.96.0.50"]
            server.update(ClusterRecords([svc("payment-service", "production", "10.96.0.99")], []))
            assert rrs(await udp(port, query(name))) == [f"{name}. 5 IN A 10.96.0.99"]
            server.update(ClusterRecords([], []))
            assert (await udp(port, query(name))).rcode() == dns.rcode.NXDOMAIN

    run(go())


def _write_json(path, doc) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def test_records_file_is_reloaded_when_it_changes(tmp_path):
    path = tmp_path / "records.json"
    _write_json(path, {"services": SERVICES, "endpointslices": SLICES})

    async def go():
        async with DNSServer(ClusterRecords.from_dict(json.loads(path.read_text()))) as server:
            _, port = await server.start(HOST, 0)
            watcher = asyncio.create_task(_watch(server, str(path), "records", None))
            name = "db-0.db.production.svc.cluster.local"
            assert (await udp(port, query(name))).rcode() == dns.rcode.NOERROR
            _write_json(path, {"services": SERVICES, "endpointslices": []})  # the pod is gone
            start = time.monotonic()
            while (await udp(port, query(name))).rcode() != dns.rcode.NXDOMAIN:
                assert time.monotonic() - start < 1.0, "deleted pod still resolves after 1 s"
                await asyncio.sleep(0.02)
            path.write_text("{ not json")  # a broken file keeps the last good snapshot
            await asyncio.sleep(0.3)
            assert (await udp(port, query("payment-service.production.svc.cluster.local"))).answer
            watcher.cancel()

    run(go())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_for_answer(port: int, name: str, deadline: float = 10.0) -> dns.message.Message:
    start = time.monotonic()
    while True:
        try:
            return dns.query.udp(query(name), HOST, port=port, timeout=0.2)
        except (dns.exception.Timeout, OSError):
            if time.monotonic() - start > deadline:
                raise


@pytest.fixture
def spawn():
    ctx = multiprocessing.get_context("spawn")
    procs = []

    def start(argv):
        proc = ctx.Process(target=main, args=(argv,), daemon=True)
        proc.start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.join(5)


def test_command_line_records_and_zone_modes(tmp_path, spawn):
    zone_file = tmp_path / "zone.json"
    _write_json(zone_file, INTERNET)
    records_file = tmp_path / "records.json"
    _write_json(records_file, {"services": SERVICES, "endpointslices": SLICES, "ttl": 30})
    log_file = tmp_path / "q.jsonl"
    internet_port, cluster_port = _free_port(), _free_port()
    spawn(["--listen", f"{HOST}:{internet_port}", "--zone-file", str(zone_file), "--quiet"])
    spawn(["--listen", f"{HOST}:{cluster_port}", "--records-file", str(records_file),
           "--upstream", f"{HOST}:{internet_port}", "--log-file", str(log_file), "--quiet"])
    _wait_for_answer(internet_port, "api.stripe.com")
    r = _wait_for_answer(cluster_port, "payment-service.production.svc.cluster.local")
    assert rrs(r) == ["payment-service.production.svc.cluster.local. 30 IN A 10.96.0.50"]
    r = _wait_for_answer(cluster_port, "api.stripe.com")
    assert rrs(r) == ["api.stripe.com. 300 IN A 198.51.100.7"] and r.flags & dns.flags.AA
    _write_json(records_file, {"services": [svc("payment-service", "production", "10.96.0.77")], "ttl": 30})
    start = time.monotonic()
    while rrs(_wait_for_answer(cluster_port, "payment-service.production.svc.cluster.local")) != [
            "payment-service.production.svc.cluster.local. 30 IN A 10.96.0.77"]:
        assert time.monotonic() - start < 2
        time.sleep(0.05)
    time.sleep(0.2)  # the JSON log is flushed on a 50 ms timer
    names = [json.loads(line)["name"] for line in log_file.read_text().splitlines()]
    assert "api.stripe.com." in names


def test_qps_self_check(tmp_path, spawn):
    """Printed, not asserted: one server process, one client, UDP, 32 queries in flight."""
    records_file = tmp_path / "records.json"
    _write_json(records_file, {"services": SERVICES, "endpointslices": SLICES})
    port = _free_port()
    spawn(["--listen", f"{HOST}:{port}", "--records-file", str(records_file), "--quiet"])
    _wait_for_answer(port, "payment-service.production.svc.cluster.local")
    wire = query("payment-service.production.svc.cluster.local").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((HOST, port))
        s.settimeout(2)
        sent = received = 0
        total, window = 20000, 32
        start = time.perf_counter()
        try:
            while received < total:
                while sent - received < window and sent < total:
                    s.send(wire)
                    sent += 1
                s.recv(4096)
                received += 1
        except TimeoutError:
            pass
        elapsed = time.perf_counter() - start
    print(f"\nDNS QPS self-check: {received} replies in {elapsed:.2f}s = {received / elapsed:.0f} queries/s "
          f"(cluster name, one core each for server and client)")
    assert received > 0
