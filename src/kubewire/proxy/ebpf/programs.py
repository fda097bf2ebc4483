"""The socket load balancer's programs (cgroup sock_addr hooks), assembled from Python.

connect4 and sendmsg4 (same code) see a socket's destination before any packet exists: a Service
VIP:port found in the services map is rewritten to one backend, chosen at random among the slots
of this node's backend map (or the client's remembered backend under ClientIP affinity), and the
socket's (cookie, backend) is remembered in the reverse map. getpeername4 and recvmsg4 use that
reverse map to show the application the VIP again, as it expects (DNS clients check the answer's
source). Traffic then leaves with the backend's address: no DNAT per packet, no NAT entry in
conntrack. Maps' layouts are in kubewire.proxy.ebpf.maps.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubewire.proxy.ebpf.asm import ADD, JEQ, JGT, LSH, MOD, MUL, OR, SUB, Program

# helpers (uapi/linux/bpf.h, __BPF_FUNC_MAPPER)
MAP_LOOKUP, MAP_UPDATE, KTIME_GET_NS, GET_PRANDOM_U32, GET_SOCKET_COOKIE, GET_NETNS_COOKIE = 1, 2, 5, 7, 46, 122
# struct bpf_sock_addr
USER_IP4, USER_PORT, PROTOCOL = 4, 24, 36
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, FP = range(11)
# stack layout (offsets from the frame pointer)
SVC_KEY = -8          # u32 vip, u16 port, u8 proto, u8 pad
AFF_KEY = -24         # u64 netns cookie, u32 service id, u32 pad
BE_KEY = -32          # u32 service id, u32 slot
AFF_VAL = -48         # u64 last use (ns), u32 ip, u32 port
REV_KEY = -64         # u64 socket cookie, u32 backend ip, u32 backend port
REV_VAL = -72         # u32 vip, u32 port


@dataclass(frozen=True)
class MapFds:
    services: int
    backends: int
    affinity: int
    revnat: int


def _lookup(p: Program, map_fd: int, key: int) -> None:
    """r0 = map[stack at key] (or 0)."""
    p.ld_map(R1, map_fd)
    p.mov(R2, FP)
    p.alu_imm(ADD, R2, key)
    p.call(MAP_LOOKUP)


def _update(p: Program, map_fd: int, key: int, value: int) -> None:
    """map[stack at key] = stack at value (create or replace)."""
    p.ld_map(R1, map_fd)
    p.mov(R2, FP)
    p.alu_imm(ADD, R2, key)
    p.mov(R3, FP)
    p.alu_imm(ADD, R3, value)
    p.mov_imm(R4, 0)
    p.call(MAP_UPDATE)


def connect(fds: MapFds) -> bytes:
    """connect4 / sendmsg4: translate a VIP:port to a backend (or leave the address alone)."""
    p = Program()
    p.mov(R6, R1)
    # the services map key from the socket's destination
    p.ldx(4, R2, R6, USER_IP4)
    p.stx(4, FP, SVC_KEY, R2)
    p.ldx(4, R3, R6, USER_PORT)
    p.ldx(4, R4, R6, PROTOCOL)
    p.alu_imm(LSH, R4, 16)
    p.alu(OR, R3, R4)
    p.stx(4, FP, SVC_KEY + 4, R3)
    _lookup(p, fds.services, SVC_KEY)
    p.jmp_imm(JEQ, R0, 0, "allow")  # not a Service VIP (or one netfilter handles)
    p.mov(R7, R0)
    p.ldx(4, R9, R7, 4)  # service id
    p.ldx(4, R1, R7, 0)
    p.jmp_imm(JEQ, R1, 0, "allow")  # no backend slots: netfilter decides (REJECT / DROP)
    p.ldx(4, R1, R7, 8)  # affinity timeout, seconds
    p.jmp_imm(JEQ, R1, 0, "pick")
    # ClientIP affinity: the client is the pod, i.e. its network namespace
    p.mov(R1, R6)
    p.call(GET_NETNS_COOKIE)
    p.stx(8, FP, AFF_KEY, R0)
    p.stx(4, FP, AFF_KEY + 8, R9)
    p.st_imm(4, FP, AFF_KEY + 12, 0)
    _lookup(p, fds.affinity, AFF_KEY)
    p.jmp_imm(JEQ, R0, 0, "pick")
    p.mov(R8, R0)
    p.call(KTIME_GET_NS)
    p.ldx(8, R1, R8, 0)
    p.alu(SUB, R0, R1)
    p.ldx(4, R1, R7, 8)
    p.alu_imm(MUL, R1, 1_000_000_000)
    p.jmp(JGT, R0, R1, "pick")  # expired
    p.call(KTIME_GET_NS)
    p.stx(8, R8, 0, R0)  # used again: the timeout restarts, as `recent --set` does
    p.ldx(4, R2, R8, 8)
    p.ldx(4, R3, R8, 12)
    p.ja("write")
    # a random slot among this node's backends
    p.label("pick")
    p.call(GET_PRANDOM_U32)
    p.ldx(4, R1, R7, 0)
    p.alu32(MOD, R0, R1)
    p.stx(4, FP, BE_KEY, R9)
    p.stx(4, FP, BE_KEY + 4, R0)
    _lookup(p, fds.backends, BE_KEY)
    p.jmp_imm(JEQ, R0, 0, "allow")  # a slot being rewritten: let it pass untouched
    p.ldx(4, R2, R0, 0)
    p.ldx(4, R3, R0, 4)
    p.ldx(4, R1, R7, 8)
    p.jmp_imm(JEQ, R1, 0, "write")
    # remember the choice for this client
    p.stx(4, FP, AFF_VAL + 8, R2)
    p.stx(4, FP, AFF_VAL + 12, R3)
    p.call(KTIME_GET_NS)
    p.stx(8, FP, AFF_VAL, R0)
    _update(p, fds.affinity, AFF_KEY, AFF_VAL)
    p.ldx(4, R2, FP, AFF_VAL + 8)
    p.ldx(4, R3, FP, AFF_VAL + 12)
    # rewrite the destination, and remember how to show it back
    p.label("write")
    p.stx(4, R6, USER_IP4, R2)
    p.stx(4, R6, USER_PORT, R3)
    p.stx(4, FP, REV_KEY + 8, R2)
    p.stx(4, FP, REV_KEY + 12, R3)
    p.mov(R1, R6)
    p.call(GET_SOCKET_COOKIE)
    p.stx(8, FP, REV_KEY, R0)
    p.ldx(4, R1, FP, SVC_KEY)
    p.stx(4, FP, REV_VAL, R1)
    p.ldx(2, R1, FP, SVC_KEY + 4)
    p.stx(4, FP, REV_VAL + 4, R1)
    _update(p, fds.revnat, REV_KEY, REV_VAL)
    p.label("allow")
    p.ret(1)
    return p.assemble()


def reverse(fds: MapFds) -> bytes:
    """getpeername4 / recvmsg4: a backend's address, on a socket we translated, shows as the VIP."""
    p = Program()
    p.mov(R6, R1)
    p.call(GET_SOCKET_COOKIE)  # r1 is still the context
    p.stx(8, FP, REV_KEY, R0)
    p.ldx(4, R2, R6, USER_IP4)
    p.stx(4, FP, REV_KEY + 8, R2)
    p.ldx(4, R2, R6, USER_PORT)
    p.stx(4, FP, REV_KEY + 12, R2)
    _lookup(p, fds.revnat, REV_KEY)
    p.jmp_imm(JEQ, R0, 0, "done")
    p.ldx(4, R1, R0, 0)
    p.stx(4, R6, USER_IP4, R1)
    p.ldx(4, R1, R0, 4)
    p.stx(4, R6, USER_PORT, R1)
    p.label("done")
    p.ret(1)
    return p.assemble()
