"""DNS wire-format helpers for the server's hot path.

dnspython builds and parses every message the slow way (objects per name, per rdata); at the
17k-queries-per-core target there are ~60 µs per query for everything, so the common case skips
it: a plain query is parsed by hand, and an authoritative reply is a pre-rendered template (the
answer bytes after the question, compressed against the question at offset 12) prefixed with the
query's own ID and question bytes. Because compression pointers only point backwards, a reply can
be truncated at any record boundary, which is how TC replies and cache TTL patching work without
re-parsing.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_right
from dataclasses import dataclass

import dns.message
import dns.name
import dns.rdataclass
import dns.rrset

from kubewire.dns.records import Answer

OPT = 41
_PLAIN = re.compile(rb"[A-Za-z0-9_*./-]*")  # names that need no escaping in presentation form
_HEADER = struct.Struct("!HHHHH")  # flags, qd, an, ns, ar (after the 2-byte ID)
_ONE_Q = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_ONE_Q_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_CD = 0x0010
_ECHOED = FLAG_RD | FLAG_CD  # miekg/dns SetReply copies RD and CD for QUERY


class Query:
    """The parts of a query the server needs, sliced straight from the wire."""

    __slots__ = ("id", "flags", "qname", "key", "qtype", "qclass", "question", "edns", "udp_size",
                 "do", "version", "size")

    def __init__(self, id: bytes, flags: int, qname: bytes, qtype: int, qclass: int, question: bytes,
                 edns: bool, udp_size: int, do: bool, version: int, size: int) -> None:
        self.id = id
        self.flags = flags
        self.qname = qname  # wire form, as sent (case kept)
        self.key = qname.lower()  # DNS case folding is ASCII-only, exactly bytes.lower()
        self.qtype = qtype
        self.qclass = qclass
        self.question = question  # qname + qtype + qclass, as sent
        self.edns = edns
        self.udp_size = udp_size
        self.do = do
        self.version = version
        self.size = size

    def udp_limit(self) -> int:
        """The largest UDP reply this client accepts (512 without EDNS, RFC 6891)."""
        return max(512, self.udp_size) if self.edns else 512

    def opt(self) -> bytes:
        """The OPT record CoreDNS puts in replies: the client's size echoed, DO kept, version 0."""
        if not self.edns:
            return b""
        return b"\x00\x00\x29" + self.udp_size.to_bytes(2, "big") + (b"\x00\x00\x80\x00" if self.do else
                                                                     b"\x00\x00\x00\x00") + b"\x00\x00"


def parse_query(data: bytes) -> Query | None:
    """A one-question QUERY with at most an OPT record; None for anything else (slow path)."""
    n = len(data)
    if n < 17:
        return None
    flags = (data[2] << 8) | data[3]
    if flags & 0xF800:  # a response, or an opcode other than QUERY
        return None
    counts = data[4:12]
    if counts != _ONE_Q and counts != _ONE_Q_OPT:
        return None
    i = 12
    try:
        length = data[i]
        while length:
            if length > 63:
                return None
            i += length + 1
            length = data[i]
    except IndexError:
        return None
    end = i + 1
    pos = end + 4
    if pos > n:
        return None
    edns = False
    udp_size = 0
    do = False
    version = 0
    if counts[7]:
        if pos + 11 > n or data[pos] != 0 or data[pos + 1] != 0 or data[pos + 2] != OPT:
            return None
        edns = True
        udp_size = (data[pos + 3] << 8) | data[pos + 4]
        version = data[pos + 6]
        do = bool(data[pos + 7] & 0x80)
    return Query(data[:2], flags, data[12:end], (data[end] << 8) | data[end + 1],
                 (data[end + 2] << 8) | data[end + 3], data[12:pos], edns, udp_size, do, version, n)


def parse_query_slow(data: bytes) -> Query | dns.message.Message | None:
    """dnspython's parse for what the fast path refuses. Returns a Query for an answerable QUERY,
    the parsed message when the server must refuse it (opcode, question count), None if garbage."""
    try:
        msg = dns.message.from_wire(data, ignore_trailing=True)
    except Exception:  # noqa: BLE001 - any malformed input is just FORMERR
        return None
    if msg.opcode() != 0 or len(msg.question) != 1 or msg.flags & FLAG_QR:
        return msg
    rrset = msg.question[0]
    qname = rrset.name.to_wire()
    question = qname + struct.pack("!HH", rrset.rdtype, rrset.rdclass)
    edns = msg.edns >= 0
    return Query(data[:2], msg.flags & 0xFFFF, qname, rrset.rdtype, rrset.rdclass, question, edns,
                 msg.payload if edns else 0, bool(msg.ednsflags & 0x8000), max(msg.edns, 0), len(data))


def error_reply(data: bytes, rcode: int) -> bytes | None:
    """A header-only error reply (FORMERR/NOTIMP/SERVFAIL) echoing the question when it parses."""
    if len(data) < 12:
        return None
    flags = FLAG_QR | ((data[2] << 8 | data[3]) & (0x7800 | _ECHOED)) | (rcode & 0xF)
    q = parse_query(data)
    if q is None:
        return data[:2] + _HEADER.pack(flags, 0, 0, 0, 0)
    opt = q.opt()
    return q.id + _HEADER.pack(flags, 1, 0, 0, 1 if opt else 0) + q.question + opt


def badvers_reply(q: Query) -> bytes:
    """RFC 6891: an unknown EDNS version gets BADVERS (extended rcode 1) and our version, 0."""
    opt = b"\x00\x00\x29" + q.udp_size.to_bytes(2, "big") + b"\x01\x00\x00\x00\x00\x00"
    return q.id + _HEADER.pack(FLAG_QR | (q.flags & _ECHOED), 1, 0, 0, 1) + q.question + opt


def qname_text(wire: bytes) -> str:
    """Presentation form of a wire name, fast for ordinary host names."""
    parts = []
    i = 0
    length = wire[0]
    while length:
        parts.append(wire[i + 1:i + 1 + length])
        i += length + 1
        length = wire[i]
    if not parts:
        return "."
    text = b".".join(parts)
    if _PLAIN.fullmatch(text) and text.count(b".") == len(parts) - 1:
        return text.decode() + "."
    return dns.name.from_wire(wire, 0)[0].to_text()


# ---------------------------------------------------------------------------------------------
# Walking records without decoding them
# ---------------------------------------------------------------------------------------------


def skip_name(wire: bytes, i: int) -> int:
    """Offset just past the (possibly compressed) name starting at i."""
    while True:
        length = wire[i]
        if length == 0:
            return i + 1
        if length >= 0xC0:
            return i + 2
        i += length + 1


@dataclass(frozen=True, slots=True)
class RR:
    """Where one record sits in a message: start, TTL field offset, end, type."""

    start: int
    ttl_at: int
    end: int
    rdtype: int


def walk(wire: bytes) -> tuple[int, list[RR], tuple[int, int, int]]:
    """(end of question section, every record in order, (an, ns, ar) counts); raises on junk."""
    qd, an, ns, ar = struct.unpack_from("!HHHH", wire, 4)
    i = 12
    for _ in range(qd):
        i = skip_name(wire, i) + 4
    qend = i
    rrs = []
    for _ in range(an + ns + ar):
        start = i
        i = skip_name(wire, i)
        rdtype = (wire[i] << 8) | wire[i + 1]
        rdlen = (wire[i + 8] << 8) | wire[i + 9]
        end = i + 10 + rdlen
        if end > len(wire):
            raise ValueError("record runs past the end of the message")
        rrs.append(RR(start, i + 4, end, rdtype))
        i = end
    return qend, rrs, (an, ns, ar)


def truncate(wire: bytes, limit: int, opt: bytes = b"") -> bytes:
    """Fit a reply into `limit` bytes as miekg/dns Msg.Truncate does: keep as many whole records
    as fit (answer first), drop the rest, set TC; then add the client's OPT back."""
    try:
        qend, rrs, (an, ns, ar) = walk(wire)
    except (ValueError, IndexError, struct.error):
        return wire[:2] + _HEADER.pack(((wire[2] << 8) | wire[3]) | FLAG_TC, 0, 0, 0, 0)
    rrs_no_opt = [rr for rr in rrs if rr.rdtype != OPT]
    room = limit - len(opt)
    keep = 0
    body = bytearray(wire[:qend])
    for rr in rrs_no_opt:
        if len(body) + (rr.end - rr.start) > room:
            break
        body += wire[rr.start:rr.end]
        keep += 1
    new_an = min(an, keep)
    new_ns = min(ns, keep - new_an)
    new_ar = keep - new_an - new_ns
    if opt:
        body += opt
        new_ar += 1
    flags = ((wire[2] << 8) | wire[3]) | FLAG_TC
    _HEADER.pack_into(body, 2, flags, struct.unpack_from("!H", wire, 4)[0], new_an, new_ns, new_ar)
    return bytes(body)


# ---------------------------------------------------------------------------------------------
# Authoritative reply templates
# ---------------------------------------------------------------------------------------------


class Template:
    """An authoritative reply for one (name, type), minus the query's ID and question bytes.

    The tail was rendered with compression against a question at offset 12; a query for the
    same name in any letter case has its question at the same offsets, so the tail is valid for
    it, and owner names (pointers into the question) come out in the asker's case, as CoreDNS
    writes them.
    """

    __slots__ = ("flags", "an", "ns", "ar", "tail", "bounds")

    def __init__(self, flags: int, an: int, ns: int, ar: int, tail: bytes, bounds: list[int]) -> None:
        self.flags = flags
        self.an = an
        self.ns = ns
        self.ar = ar
        self.tail = tail
        self.bounds = bounds  # end offset in tail of each record

    @classmethod
    def from_answer(cls, answer: Answer, qname: dns.name.Name, qtype: int,
                    qclass: int = dns.rdataclass.IN) -> Template:
        msg = dns.message.Message(id=0)
        msg.flags = FLAG_QR | (FLAG_AA if answer.authoritative else 0)
        msg.set_rcode(answer.rcode)
        msg.question = [dns.rrset.RRset(qname, qclass, qtype)]
        msg.answer = list(answer.answer)
        msg.authority = list(answer.authority)
        msg.additional = list(answer.additional)
        wire = msg.to_wire()
        qend, rrs, (an, ns, ar) = walk(wire)
        return cls(msg.flags | (answer.rcode & 0xF), an, ns, ar, wire[qend:], [rr.end - qend for rr in rrs])

    def render(self, q: Query, limit: int = 65535) -> bytes:
        """The reply to q: its ID and question, our records, its OPT echoed; TC-truncated to limit."""
        opt = q.opt()
        flags = self.flags | (q.flags & _ECHOED)
        if 12 + len(q.question) + len(self.tail) + len(opt) <= limit:
            return (q.id + _HEADER.pack(flags, 1, self.an, self.ns, self.ar + (1 if opt else 0))
                    + q.question + self.tail + opt)
        keep = bisect_right(self.bounds, limit - 12 - len(q.question) - len(opt))
        an = min(self.an, keep)
        ns = min(self.ns, keep - an)
        ar = keep - an - ns
        tail = self.tail[: self.bounds[keep - 1]] if keep else b""
        return (q.id + _HEADER.pack(flags | FLAG_TC, 1, an, ns, ar + (1 if opt else 0))
                + q.question + tail + opt)
