"""Which ports listen in a network namespace, asked of the kernel through sock_diag (netlink).

/proc/PID/net/tcp walks the machine's whole socket hash table on every read (milliseconds each
with thousands of pods); a sock_diag dump filtered to listening sockets touches only those.
"""

from __future__ import annotations

import socket
import struct

from kubewire.kernel.nsswitch import entered

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2
TCP_LISTEN, TCP_CLOSE = 10, 7
_REQ = struct.Struct("=BBBxI48x")  # inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid


def _dump(sock: socket.socket, family: int, proto: int, states: int) -> set[int]:
    body = _REQ.pack(family, proto, 0, states)
    hdr = struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    sock.send(hdr + body)
    ports: set[int] = set()
    while True:
        data = sock.recv(65536)
        off = 0
        while off + 16 <= len(data):
            length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
            if mtype == NLMSG_DONE:
                return ports
            if mtype == NLMSG_ERROR:
                return ports
            # inet_diag_msg: family, state, timer, retrans, then sockid (sport big-endian first)
            ports.add(struct.unpack_from("!H", data, off + 16 + 4)[0])
            off += (length + 3) & ~3
        if not data:
            return ports


def bound_ports(netns: str) -> dict[str, set[int]]:
    """TCP ports listening and UDP ports bound, IPv4 and IPv6, in one namespace."""
    with entered(netns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        tcp = _dump(s, socket.AF_INET, socket.IPPROTO_TCP, 1 << TCP_LISTEN)
        tcp |= _dump(s, socket.AF_INET6, socket.IPPROTO_TCP, 1 << TCP_LISTEN)
        udp = _dump(s, socket.AF_INET, socket.IPPROTO_UDP, 1 << TCP_CLOSE)
        udp |= _dump(s, socket.AF_INET6, socket.IPPROTO_UDP, 1 << TCP_CLOSE)
    finally:
        s.close()
    return {"TCP": tcp, "UDP": udp}


def listening(netns: str, ports: list[tuple[int, str]]) -> bool:
    want = [(p, proto) for p, proto in ports if proto in ("TCP", "UDP")]
    if not want:
        return True
    try:
        have = bound_ports(netns)
    except OSError:
        return False
    return all(p in have[proto] for p, proto in want)


__all__ = ["bound_ports", "listening"]


SOCK_DESTROY = 21
NLM_F_ACK = 0x4
ALL_STATES = 0xFFFFFFFF


def destroy_udp_to(netns: str, targets: set[tuple[str, int]]) -> int:
    """Abort the UDP sockets in a namespace that are connected to one of `targets` (ip, port): the
    eBPF mode's counterpart of flushing stale UDP conntrack entries, since a connected socket keeps
    the backend it was given at connect(). The socket is disconnected with an error pending, so the
    application's next call fails and it reconnects, as with Cilium's socket termination. Returns
    how many were aborted."""
    if not targets:
        return 0
    want = {(socket.inet_aton(ip), struct.pack("!H", port)) for ip, port in targets}
    with entered(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        body = _REQ.pack(socket.AF_INET, socket.IPPROTO_UDP, 0, ALL_STATES)
        sock.send(struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        ids: list[bytes] = []
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            off = 0
            while off + 16 <= len(data):
                length, mtype = struct.unpack_from("=IH", data, off)
                if mtype in (NLMSG_DONE, NLMSG_ERROR):
                    done = True
                    break
                sockid = data[off + 20:off + 68]  # inet_diag_msg: 4 bytes, then inet_diag_sockid (48)
                if (sockid[20:24], sockid[2:4]) in want:
                    ids.append(sockid)
                off += (length + 3) & ~3
        n = 0
        for seq, sockid in enumerate(ids, start=2):
            req = struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_UDP, 0, ALL_STATES) + sockid
            sock.send(struct.pack("=IHHII", 16 + len(req), SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + req)
            ack = sock.recv(4096)
            if len(ack) >= 20 and struct.unpack_from("=IHHIIi", ack)[1] == NLMSG_ERROR and struct.unpack_from("=i", ack, 16)[0] == 0:
                n += 1
        return n
    finally:
        sock.close()
