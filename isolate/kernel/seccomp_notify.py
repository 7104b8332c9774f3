"""A filter whose denials are shown to a supervisor, with their arguments.

The kernel's audit record of a seccomp denial has the syscall but not its arguments.
A filter whose SECCOMP_RET_ERRNO returns are turned into SECCOMP_RET_USER_NOTIF hands
every such call, with its arguments, to whoever holds the filter's listener fd (a
session's isolate-agentd). The supervisor runs the same program on the notification's
seccomp_data (evaluate, here and in isolate/agent/_agentd.c) to learn what the profile decided, and
answers with that errno: the program sees exactly what the plain filter gives it.

notify_variant(bpf, watch_connect) -> bytes
    every `RET ERRNO|e` becomes `RET USER_NOTIF|e` (the kernel ignores the data bits of
    USER_NOTIF; they keep e for the supervisor). With watch_connect a prefix of
    CONNECT_PREFIX instructions also sends every native connect() to the supervisor,
    which evaluates the program from CONNECT_PREFIX on to decide it as the profile would.
evaluate(bpf, nr, args, arch, ip, start=0) -> the program's return value.
"""

from __future__ import annotations

import struct

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
RET_ACTION = 0xFFFF0000
RET_DATA = 0x0000FFFF

AUDIT_ARCH_X86_64 = 0xC000003E
SYS_CONNECT_X86_64 = 42

_INSN = struct.Struct("=HBBI")
# classic BPF opcodes (linux/filter.h)
_LD, _LDX, _ST, _STX, _ALU, _JMP, _RET, _MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
_W, _IMM, _ABS, _MEM, _LEN = 0x00, 0x00, 0x20, 0x60, 0x80
_K, _X, _A = 0x00, 0x08, 0x10
_JA, _JEQ, _JGT, _JGE, _JSET = 0x00, 0x10, 0x20, 0x30, 0x40
_ADD, _SUB, _MUL, _DIV, _OR, _AND, _LSH, _RSH, _NEG, _MOD, _XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0)
_TAX, _TXA = 0x00, 0x80
_M32 = 0xFFFFFFFF

# BPF_STMT(LD|W|ABS, arch); JEQ X86_64 ? next : program; LD nr; JEQ connect ? next : program;
# RET USER_NOTIF. (Jumps are relative: the program after it is unchanged.)
CONNECT_PREFIX = 5


def _prefix() -> bytes:
    return b"".join((
        _INSN.pack(_LD | _W | _ABS, 0, 0, 4),
        _INSN.pack(_JMP | _JEQ | _K, 0, 3, AUDIT_ARCH_X86_64),
        _INSN.pack(_LD | _W | _ABS, 0, 0, 0),
        _INSN.pack(_JMP | _JEQ | _K, 0, 1, SYS_CONNECT_X86_64),
        _INSN.pack(_RET | _K, 0, 0, RET_USER_NOTIF),
    ))


def instructions(bpf: bytes) -> list[tuple[int, int, int, int]]:
    if len(bpf) % _INSN.size:
        raise ValueError(f"a BPF program is a whole number of {_INSN.size}-byte instructions, got {len(bpf)} bytes")
    return [_INSN.unpack_from(bpf, i) for i in range(0, len(bpf), _INSN.size)]


def notify_variant(bpf: bytes, watch_connect: bool = False) -> bytes:
    """The program with its ERRNO returns turned into USER_NOTIF (see the module doc).
    ValueError for a program that returns A (its decision cannot be rewritten)."""
    out = []
    for code, jt, jf, k in instructions(bpf):
        if code == _RET | _A:
            raise ValueError("the filter returns the accumulator: its errno returns cannot be rewritten")
        if code == _RET | _K and k & RET_ACTION == RET_ERRNO:
            k = RET_USER_NOTIF | (k & RET_DATA)
        out.append(_INSN.pack(code, jt, jf, k))
    program = b"".join(out)
    return _prefix() + program if watch_connect else program


def _data(nr: int, arch: int, ip: int, args) -> bytes:
    a = list(args)[:6] + [0] * (6 - len(list(args)[:6]))
    return struct.pack("=iIQ6Q", nr, arch, ip, *[x & 0xFFFFFFFFFFFFFFFF for x in a])


def evaluate(bpf: bytes, nr: int, args=(), arch: int = AUDIT_ARCH_X86_64, ip: int = 0, start: int = 0) -> int:
    """What the program returns for this seccomp_data (classic BPF as the kernel runs it)."""
    prog = instructions(bpf)
    data = _data(nr, arch, ip, args)
    a = x = 0
    mem = [0] * 16
    pc = start
    while 0 <= pc < len(prog):
        code, jt, jf, k = prog[pc]
        pc += 1
        cls = code & 0x07
        if cls == _LD:
            mode = code & 0xE0
            if mode == _ABS:
                if k % 4 or k + 4 > len(data):
                    return RET_KILL_THREAD
                a = struct.unpack_from("=I", data, k)[0]
            elif mode == _IMM:
                a = k
            elif mode == _MEM:
                a = mem[k & 15]
            elif mode == _LEN:
                a = len(data)
            else:
                return RET_KILL_THREAD
        elif cls == _LDX:
            mode = code & 0xE0
            x = k if mode == _IMM else mem[k & 15] if mode == _MEM else len(data) if mode == _LEN else x
        elif cls == _ST:
            mem[k & 15] = a
        elif cls == _STX:
            mem[k & 15] = x
        elif cls == _ALU:
            op, src = code & 0xF0, (x if code & _X else k)
            if op == _ADD:
                a = (a + src) & _M32
            elif op == _SUB:
                a = (a - src) & _M32
            elif op == _MUL:
                a = (a * src) & _M32
            elif op == _DIV:
                if src == 0:
                    return RET_KILL_THREAD
                a //= src
            elif op == _MOD:
                if src == 0:
                    return RET_KILL_THREAD
                a %= src
            elif op == _OR:
                a |= src
            elif op == _AND:
                a &= src
            elif op == _XOR:
                a ^= src
            elif op == _LSH:
                a = (a << (src & 31)) & _M32
            elif op == _RSH:
                a >>= (src & 31)
            elif op == _NEG:
                a = (-a) & _M32
        elif cls == _JMP:
            op = code & 0xF0
            if op == _JA:
                pc += k
                continue
            src = x if code & _X else k
            taken = (a == src if op == _JEQ else a > src if op == _JGT else a >= src if op == _JGE
                     else bool(a & src) if op == _JSET else False)
            pc += jt if taken else jf
        elif cls == _RET:
            return a if code & 0x18 == _A else k
        elif cls == _MISC:
            if code & 0xF8 == _TXA:
                a = x
            else:
                x = a
    return RET_KILL_THREAD  # ran off the end: the kernel refuses such a program at load
