"""``--seccomp action=kill|log``: a syscall deny-list installed with seccomp(2).

Why a hand-written BPF program: libseccomp's Python binding (Debian's
python3-seccomp) is not installable into the venv, and the filter a TPM
daemon needs is a short deny-list, i.e. a linear run of "syscall number equal
to N -> action" instructions, which is a few dozen bytes of classic BPF.

What is denied (:data:`DENIED_SYSCALLS`): what a TPM emulator never needs
once it serves -- running programs (execve), debugging other processes,
mounting and namespaces, modules and kexec, reboot and swap, clock setting,
kernel keyrings, bpf/perf.  Like swtpm's profile it is a deny-list, so
everything Python, trio and OpenSSL do keeps working.  The filter is
installed for all threads at once (SECCOMP_FILTER_FLAG_TSYNC) after
start-up (daemonizing, --chroot, --runas), and with no_new_privs set, so it
survives into nothing and cannot be dropped again.

Actions: ``kill`` kills the whole process (SECCOMP_RET_KILL_PROCESS), ``log``
lets the call run and has the kernel log it (SECCOMP_RET_LOG, audit/dmesg),
``none`` installs nothing.  Calls made through a foreign ABI (x32 on x86_64,
another architecture's numbers) get the action too, since their numbers
would not match the table.  Supported architectures: x86_64 and aarch64;
elsewhere a requested filter is an error rather than silently absent.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import IntEnum

from .options import SeccompAction

__all__ = ["DENIED_SYSCALLS", "SeccompError", "build_filter", "install_filter", "supported"]


class SeccompError(RuntimeError):
    """The filter could not be installed (message names the reason)."""


@dataclass(frozen=True)
class Architecture:
    """What the filter needs to know about one ABI."""

    audit_arch: int
    """AUDIT_ARCH_* value the kernel puts in seccomp_data.arch."""
    seccomp_nr: int
    """Number of the seccomp(2) syscall."""
    syscalls: dict[str, int]
    """Number of every denied syscall on this ABI."""
    foreign_bit: int = 0
    """Syscall-number bit of another ABI sharing the arch value (x32 on x86_64)."""


DENIED_SYSCALLS: tuple[str, ...] = (
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount", "move_mount", "open_tree",
    "unshare", "setns", "swapon", "swapoff", "reboot", "sethostname", "setdomainname",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "quotactl",
    "bpf", "perf_event_open", "add_key", "request_key", "keyctl", "personality",
    "userfaultfd", "open_by_handle_at", "name_to_handle_at", "syslog", "vhangup", "mknodat",
)  # fmt: skip
"""Syscalls the daemon never makes once it serves."""

# Numbers from the kernel's uapi headers (asm/unistd_64.h, asm-generic/unistd.h).
_X86_64 = (59, 322, 101, 310, 311, 165, 166, 155, 161, 430, 432, 429, 428, 272, 308, 167, 168, 169, 170, 171,
           175, 313, 176, 246, 320, 163, 164, 227, 305, 159, 179, 321, 298, 248, 249, 250, 135,
           323, 304, 303, 103, 153, 259)  # fmt: skip
_GENERIC = (221, 281, 117, 270, 271, 40, 39, 41, 51, 430, 432, 429, 428, 97, 268, 224, 225, 142, 161, 162,
            105, 273, 106, 104, 294, 89, 170, 112, 266, 171, 60, 280, 241, 217, 218, 219, 92,
            282, 265, 264, 116, 58, 33)  # fmt: skip

ARCHITECTURES: dict[str, Architecture] = {
    "x86_64": Architecture(0xC000003E, 317, dict(zip(DENIED_SYSCALLS, _X86_64, strict=True)), 0x40000000),
    "aarch64": Architecture(0xC00000B7, 277, dict(zip(DENIED_SYSCALLS, _GENERIC, strict=True))),
}
"""``uname -m`` -> ABI description."""


class _Bpf(IntEnum):
    """Classic BPF opcodes used here (linux/filter.h)."""

    LD_W_ABS = 0x00 | 0x00 | 0x20
    JMP_JEQ_K = 0x05 | 0x10 | 0x00
    JMP_JSET_K = 0x05 | 0x40 | 0x00
    RET_K = 0x06 | 0x00


class _Ret(IntEnum):
    """seccomp filter return values (linux/seccomp.h)."""

    KILL_PROCESS = 0x80000000
    LOG = 0x7FFC0000
    ALLOW = 0x7FFF0000


_DATA_NR_OFFSET = 0
_DATA_ARCH_OFFSET = 4
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_RETURN_OF = {SeccompAction.KILL: _Ret.KILL_PROCESS, SeccompAction.LOG: _Ret.LOG}


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def supported(machine: str | None = None) -> bool:
    return (machine or os.uname().machine) in ARCHITECTURES


def _architecture(machine: str | None) -> Architecture:
    name = machine or os.uname().machine
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise SeccompError(
            f"--seccomp: no syscall table for architecture {name!r} (supported: {', '.join(ARCHITECTURES)}); "
            "use --seccomp action=none"
        ) from None


def build_filter(action: SeccompAction, machine: str | None = None) -> bytes:
    """The BPF program (a sequence of struct sock_filter) for ``action`` on ``machine``."""
    if action is SeccompAction.NONE:
        raise ValueError("action=none installs no filter")
    arch = _architecture(machine)
    deny = _RETURN_OF[action]
    numbers = sorted(set(arch.syscalls.values()))
    program = [
        _insn(_Bpf.LD_W_ABS, 0, 0, _DATA_ARCH_OFFSET),
        _insn(_Bpf.JMP_JEQ_K, 1, 0, arch.audit_arch),
        _insn(_Bpf.RET_K, 0, 0, deny),
        _insn(_Bpf.LD_W_ABS, 0, 0, _DATA_NR_OFFSET),
    ]
    if arch.foreign_bit:
        program.append(_insn(_Bpf.JMP_JSET_K, len(numbers) + 1, 0, arch.foreign_bit))
    # Each number: equal -> jump over the remaining tests and the ALLOW to the deny return.
    for index, number in enumerate(numbers):
        program.append(_insn(_Bpf.JMP_JEQ_K, len(numbers) - index, 0, number))
    program.append(_insn(_Bpf.RET_K, 0, 0, _Ret.ALLOW))
    program.append(_insn(_Bpf.RET_K, 0, 0, deny))
    return b"".join(program)


def install_filter(action: SeccompAction, machine: str | None = None) -> bool:
    """Install the filter for every thread of this process; False for ``none``.

    Raises :class:`SeccompError` when the kernel refuses (the daemon then exits
    rather than run without the filter that was asked for).
    """
    if action is SeccompAction.NONE:
        return False
    arch = _architecture(machine)
    program = build_filter(action, machine)
    # ctypes (and ctypes.util's subprocess): imported when the filter is installed, not at start-up.
    import ctypes
    import ctypes.util

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SeccompError(f"--seccomp: prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    result = libc.syscall(
        ctypes.c_long(arch.seccomp_nr),
        ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(_SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    if result != 0:
        detail = os.strerror(ctypes.get_errno()) if result < 0 else f"thread {result} could not be synchronised"
        raise SeccompError(f"--seccomp action={action.value}: seccomp(SECCOMP_SET_MODE_FILTER): {detail}")
    return True
