"""A small eBPF assembler: instructions as 8-byte records, jumps to named labels.

Enough for the socket load balancer's programs (uapi/linux/bpf.h encodings); writing them as
Python keeps kubewire free of a compiler toolchain on the machine.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# classes, sizes, modes, operations, sources (uapi/linux/bpf_common.h, bpf.h)
LD, LDX, ST, STX, ALU, JMP, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, MEM = 0x00, 0x60
ADD, SUB, MUL, OR, AND, LSH, RSH, MOD, MOV = 0x00, 0x10, 0x20, 0x40, 0x50, 0x60, 0x70, 0x90, 0xB0
K, X = 0x00, 0x08
JA, JEQ, JGT, JNE, CALL, EXIT = 0x00, 0x10, 0x20, 0x50, 0x80, 0x90
PSEUDO_MAP_FD = 1
SIZES = {1: B, 2: H, 4: W, 8: DW}


@dataclass
class Program:
    """Instructions with symbolic jump targets, resolved by `assemble()`."""

    insns: list[tuple[int, int, int, int | str, int]] = field(default_factory=list)  # op, dst, src, off, imm
    labels: dict[str, int] = field(default_factory=dict)

    def _emit(self, op: int, dst: int = 0, src: int = 0, off: int | str = 0, imm: int = 0) -> None:
        self.insns.append((op, dst, src, off, imm))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    # data movement
    def mov(self, dst: int, src: int) -> None:
        self._emit(ALU64 | MOV | X, dst, src)

    def mov_imm(self, dst: int, imm: int) -> None:
        self._emit(ALU64 | MOV | K, dst, 0, 0, imm)

    def ldx(self, size: int, dst: int, src: int, off: int) -> None:
        self._emit(LDX | MEM | SIZES[size], dst, src, off)

    def stx(self, size: int, dst: int, off: int, src: int) -> None:
        self._emit(STX | MEM | SIZES[size], dst, src, off)

    def st_imm(self, size: int, dst: int, off: int, imm: int) -> None:
        self._emit(ST | MEM | SIZES[size], dst, 0, off, imm)

    def ld_map(self, dst: int, map_fd: int) -> None:
        """A map reference (two instruction slots, as LD_IMM64 is)."""
        self._emit(LD | DW | IMM, dst, PSEUDO_MAP_FD, 0, map_fd)
        self._emit(0, 0, 0, 0, 0)

    # arithmetic
    def alu_imm(self, op: int, dst: int, imm: int) -> None:
        self._emit(ALU64 | op | K, dst, 0, 0, imm)

    def alu(self, op: int, dst: int, src: int) -> None:
        self._emit(ALU64 | op | X, dst, src)

    def alu32(self, op: int, dst: int, src: int) -> None:
        self._emit(ALU | op | X, dst, src)

    # control
    def jmp_imm(self, op: int, dst: int, imm: int, target: str) -> None:
        self._emit(JMP | op | K, dst, 0, target, imm)

    def jmp(self, op: int, dst: int, src: int, target: str) -> None:
        self._emit(JMP | op | X, dst, src, target)

    def ja(self, target: str) -> None:
        self._emit(JMP | JA, 0, 0, target)

    def call(self, helper: int) -> None:
        self._emit(JMP | CALL, 0, 0, 0, helper)

    def exit(self) -> None:
        self._emit(JMP | EXIT)

    def ret(self, value: int) -> None:
        self.mov_imm(0, value)
        self.exit()

    def assemble(self) -> bytes:
        out = bytearray()
        for i, (op, dst, src, off, imm) in enumerate(self.insns):
            if isinstance(off, str):
                if off not in self.labels:
                    raise ValueError(f"undefined label {off!r}")
                off = self.labels[off] - i - 1
            out += struct.pack("<BBhi", op, (src << 4) | dst, off, imm)
        return bytes(out)

    def __len__(self) -> int:
        return len(self.insns)
