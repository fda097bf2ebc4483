"""The bpf() system call from Python (ctypes): maps, program loading, cgroup attachment.

No compiler, no libbpf: kubewire's programs are a few dozen instructions assembled in Python
(kubewire.proxy.ebpf.programs), so a fresh machine needs nothing beyond a kernel with cgroup BPF.
Attribute blocks are packed with `struct` in the layout of `union bpf_attr` (uapi/linux/bpf.h);
the kernel accepts a block shorter than its own union as long as the rest would be zero.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterable, Iterator

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_BPF = 321  # x86_64

# commands
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY, PROG_LOAD = 0, 1, 2, 3, 4, 5
PROG_ATTACH = 8
PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD, PROG_QUERY = 13, 14, 15, 16
MAP_UPDATE_BATCH = 26
# map types
MAP_HASH, MAP_ARRAY, MAP_LRU_HASH = 1, 2, 9
# program types and attach points
PROG_CGROUP_SOCK_ADDR = 18
CGROUP_INET4_CONNECT, CGROUP_UDP4_SENDMSG, CGROUP_UDP4_RECVMSG, CGROUP_INET4_GETPEERNAME = 10, 14, 19, 29
ANY = 0  # BPF_ANY: create or update
NO_PREALLOC = 1  # hash maps: allocate elements as they are added, not max_entries up front


class BpfError(OSError):
    """A bpf() call failed; `log` carries the verifier's explanation for a rejected program."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        super().__init__(err, f"bpf {what}: {os.strerror(err)}" + (f"\n{log}" if log else ""))
        self.log = log


def _bpf(cmd: int, attr: ctypes.Array, what: str) -> int:
    ret = _libc.syscall(SYS_BPF, cmd, attr, ctypes.sizeof(attr))
    if ret < 0:
        raise BpfError(ctypes.get_errno(), what)
    return int(ret)


def _attr(data: bytes) -> ctypes.Array:
    return ctypes.create_string_buffer(data.ljust(128, b"\0"), 128)


def _addr(buf: ctypes.Array) -> int:
    return ctypes.addressof(buf)


class Map:
    """A BPF map owned by this process (its fd); keys and values are raw bytes."""

    @classmethod
    def from_id(cls, map_id: int) -> Map:
        """Open a live map by id (another process's, e.g. a node agent's), for reading."""
        self = cls.__new__(cls)
        self.fd = _bpf(MAP_GET_FD_BY_ID, _attr(struct.pack("III", map_id, 0, 0)), f"open map {map_id}")
        info = ctypes.create_string_buffer(80)
        _bpf(OBJ_GET_INFO_BY_FD, _attr(struct.pack("IIQ", self.fd, 80, _addr(info))), "map info")
        _type, _id, self.key_size, self.value_size, self.max_entries, _flags = struct.unpack_from("IIIIII", info.raw)
        self.name = info.raw[24:40].split(b"\0")[0].decode()
        self._batch = True
        return self

    def __init__(self, map_type: int, key_size: int, value_size: int, max_entries: int, name: str,
                 flags: int = 0) -> None:
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        attr = struct.pack("IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0,
                           name.encode()[:15])
        self.fd = _bpf(MAP_CREATE, _attr(attr), f"map create {name}")
        self.name = name
        self._batch = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _elem(self, cmd: int, key: bytes, value: ctypes.Array | None, flags: int, what: str) -> int:
        k = ctypes.create_string_buffer(key, self.key_size)
        attr = struct.pack("IIQQQ", self.fd, 0, _addr(k), _addr(value) if value is not None else 0, flags)
        return _bpf(cmd, _attr(attr), what)

    def update(self, key: bytes, value: bytes) -> None:
        self._elem(MAP_UPDATE_ELEM, key, ctypes.create_string_buffer(value, self.value_size), ANY, f"update {self.name}")

    def _found(self, cmd: int, key: bytes, value: ctypes.Array | None, what: str) -> bool:
        """False where the key is not there: ENOENT is an answer, not an error."""
        try:
            self._elem(cmd, key, value, 0, f"{what} {self.name}")
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def delete(self, key: bytes) -> bool:
        return self._found(MAP_DELETE_ELEM, key, None, "delete")

    def lookup(self, key: bytes) -> bytes | None:
        v = ctypes.create_string_buffer(self.value_size)
        return v.raw if self._found(MAP_LOOKUP_ELEM, key, v, "lookup") else None

    def keys(self) -> Iterator[bytes]:
        """Every key (a snapshot walk: entries added meanwhile may or may not appear)."""
        cur: bytes | None = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            k = ctypes.create_string_buffer(cur or b"", self.key_size)
            attr = struct.pack("IIQQQ", self.fd, 0, _addr(k) if cur is not None else 0, _addr(nxt), 0)
            try:
                _bpf(MAP_GET_NEXT_KEY, _attr(attr), f"next key {self.name}")
            except BpfError as e:
                if e.errno == errno.ENOENT:
                    return
                raise
            cur = nxt.raw
            yield cur

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def update_many(self, pairs: Iterable[tuple[bytes, bytes]]) -> int:
        """Many updates in one BPF_MAP_UPDATE_BATCH call (one element at a time where the kernel
        lacks it); returns how many were written."""
        pairs = list(pairs)
        if not pairs:
            return 0
        if self._batch:
            keys = ctypes.create_string_buffer(b"".join(k for k, _ in pairs), self.key_size * len(pairs))
            vals = ctypes.create_string_buffer(b"".join(v for _, v in pairs), self.value_size * len(pairs))
            # in_batch, out_batch, keys, values, count, map_fd, elem_flags, flags
            attr = struct.pack("QQQQIIQQ", 0, 0, _addr(keys), _addr(vals), len(pairs), self.fd, 0, 0)
            try:
                _bpf(MAP_UPDATE_BATCH, _attr(attr), f"update batch {self.name}")
                return len(pairs)
            except BpfError as e:
                if e.errno not in (errno.EINVAL, 524):  # 524: ENOTSUPP, the kernel's "no batch ops here"
                    raise
                self._batch = False
        for k, v in pairs:
            self.update(k, v)
        return len(pairs)


def load_program(prog_type: int, attach_type: int, insns: bytes, name: str, license_: str = "GPL") -> int:
    """Load a program; returns its fd. A rejected program raises with the verifier's log."""
    lic = ctypes.create_string_buffer(license_.encode())
    code = ctypes.create_string_buffer(insns, len(insns))
    log = ctypes.create_string_buffer(1 << 16)
    attr = struct.pack("IIQQIIQII16sII", prog_type, len(insns) // 8, _addr(code), _addr(lic), 1, len(log), _addr(log),
                       0, 0, name.encode()[:15], 0, attach_type)
    ret = _libc.syscall(SYS_BPF, PROG_LOAD, _attr(attr), 128)
    if ret < 0:
        raise BpfError(ctypes.get_errno(), f"load {name}", log.value.decode(errors="replace")[-4000:])
    return int(ret)


def attach_cgroup(cgroup_dir: str, prog_fd: int, attach_type: int) -> None:
    """Attach to a cgroup (v2), replacing what this hook had there: with no flags a cgroup holds one
    program per hook, so a restarted agent's attach swaps its programs in atomically."""
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _bpf(PROG_ATTACH, _attr(struct.pack("IIIII", fd, prog_fd, attach_type, 0, 0)), f"attach to {cgroup_dir}")
    finally:
        os.close(fd)


def attached_maps(cgroup_dir: str, attach_type: int) -> dict[str, Map]:
    """The maps of the program attached at a cgroup hook, by name: what is live in the kernel."""
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids = (ctypes.c_uint32 * 8)()
        attr = _attr(struct.pack("IIIIQI", fd, attach_type, 0, 0, ctypes.addressof(ids), 8))
        _bpf(PROG_QUERY, attr, f"query {cgroup_dir}")
        count = struct.unpack_from("I", attr.raw, 24)[0]
    finally:
        os.close(fd)
    out: dict[str, Map] = {}
    for prog_id in list(ids)[:count]:
        pfd = _bpf(PROG_GET_FD_BY_ID, _attr(struct.pack("III", prog_id, 0, 0)), f"open program {prog_id}")
        try:
            map_ids = (ctypes.c_uint32 * 16)()
            info = ctypes.create_string_buffer(256)
            # bpf_prog_info: nr_map_ids at 52, map_ids (pointer) at 56
            struct.pack_into("<IQ", info, 52, 16, ctypes.addressof(map_ids))
            _bpf(OBJ_GET_INFO_BY_FD, _attr(struct.pack("IIQ", pfd, 256, _addr(info))), "program info")
            n = struct.unpack_from("I", info.raw, 52)[0]
        finally:
            os.close(pfd)
        for mid in list(map_ids)[:min(n, 16)]:
            m = Map.from_id(mid)
            out[m.name] = m
    return out


def close(fd: int) -> None:
    os.close(fd)
