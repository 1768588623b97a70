"""Kill ``vtpm-cuse socket`` with SIGKILL at random moments while a client loops
over NV-changing commands, and check after every restart that no acknowledged
change was lost and no change was half applied.

The client keeps a model of what the TPM acknowledged and of the one command
that was in flight when the process died (its effect may or may not have
happened, but only whole):

* an ordinary NV index (8 octets) rewritten with NV_Write: afterwards it reads
  exactly the last acknowledged value or the in-flight one;
* an NV counter bumped with NV_Increment: at least the acknowledged count, at
  most one more when an increment was in flight;
* a persistent object made and evicted with EvictControl: present exactly as
  last acknowledged, or as the in-flight command would leave it;
* the owner authorization changed with HierarchyChangeAuth: the last
  acknowledged password or the in-flight one works.

Used by tests/test_crash_consistency.py (a few kills) and
scripts/crash_consistency.py (hundreds, with figures).
"""

from __future__ import annotations

import dataclasses
import random
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from support.daemon import Daemon
from support.net import recv_exact
from support.object_templates import create_primary_cmd, ecc_template
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm.constants import TPM_CC, TPM_RH

#: TPMA_NV bits (Part 2, TPMA_NV): spelled out here, independent of the engine's tables.
NV_OWNERWRITE, NV_AUTHWRITE, NV_OWNERREAD, NV_AUTHREAD, NV_NO_DA = 1 << 1, 1 << 2, 1 << 17, 1 << 18, 1 << 25
NT_SHIFT, NT_ORDINARY, NT_COUNTER = 4, 0x0, 0x1
NV_ATTRIBUTES = NV_OWNERWRITE | NV_AUTHWRITE | NV_OWNERREAD | NV_AUTHREAD | NV_NO_DA
SHA256 = 0x000B

DATA_INDEX, COUNTER_INDEX = 0x01500010, 0x01500011
PERSISTENT_HANDLE = 0x81000020
DATA_SIZE = 8


class DaemonDied(Exception):
    """The connection broke: the command's effect is unknown."""


def nv_public(index: int, kind: int, size: int) -> bytes:
    area = u32(index) + u16(SHA256) + u32(NV_ATTRIBUTES | kind << NT_SHIFT) + tpm2b(b"") + u16(size)
    return tpm2b(area)


@dataclasses.dataclass
class Model:
    """What the TPM acknowledged; ``pending`` is the command in flight at a kill."""

    data: bytes = bytes(DATA_SIZE)
    counter: int = 0
    persistent: bool = False
    owner_auth: bytes = b""
    pending: tuple[str, object] | None = None


@dataclasses.dataclass
class Figures:
    runs: int = 0
    kills: int = 0
    acknowledged: int = 0
    checked: int = 0
    lost: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


class CrashLoop:
    def __init__(self, state_dir: Path, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.daemon = Daemon(state_dir, extra=["--flags", "not-need-init,startup-clear"])
        self.model = Model()
        self.figures = Figures()
        self.sock: socket.socket | None = None

    # --- transport ---------------------------------------------------------------------------
    def start(self) -> None:
        self.daemon.start()
        self.sock = self.daemon.connect_data()

    def execute(self, cmd: bytes) -> Response:
        assert self.sock is not None
        try:
            self.sock.sendall(cmd)
            header = recv_exact(self.sock, 10)
            rest = recv_exact(self.sock, int.from_bytes(header[2:6], "big") - 10)
        except OSError as exc:  # ConnectionError included: the peer was killed mid-command
            raise DaemonDied(str(exc)) from None
        return Response(header + rest)

    def ok(self, cmd: bytes, what: str) -> Response:
        resp = self.execute(cmd)
        if resp.rc != 0:
            raise AssertionError(f"{what} answered 0x{resp.rc:x}")
        return resp

    # --- the operations ------------------------------------------------------------------------
    def provision(self) -> None:
        """Define the two indices and give both a first value (before any kill)."""
        owner = self.model.owner_auth
        self.ok(
            command(
                TPM_CC.NV_DefineSpace,
                tpm2b(b"") + nv_public(DATA_INDEX, NT_ORDINARY, DATA_SIZE),
                u32(TPM_RH.OWNER),
                owner,
            ),
            "NV_DefineSpace (data)",
        )
        self.ok(
            command(
                TPM_CC.NV_DefineSpace, tpm2b(b"") + nv_public(COUNTER_INDEX, NT_COUNTER, 8), u32(TPM_RH.OWNER), owner
            ),
            "NV_DefineSpace (counter)",
        )
        self.ok(self.write_cmd(self.model.data), "NV_Write")
        self.ok(command(TPM_CC.NV_Increment, handles=u32(COUNTER_INDEX) + u32(COUNTER_INDEX), auth=b""), "NV_Increment")
        self.model.counter = self.read_counter()

    def write_cmd(self, data: bytes) -> bytes:
        return command(TPM_CC.NV_Write, tpm2b(data) + u16(0), u32(DATA_INDEX) + u32(DATA_INDEX), b"")

    def read_data(self) -> bytes:
        resp = self.ok(
            command(TPM_CC.NV_Read, u16(DATA_SIZE) + u16(0), u32(DATA_INDEX) + u32(DATA_INDEX), b""), "NV_Read"
        )
        params = resp.params()
        return params[2 : 2 + int.from_bytes(params[:2], "big")]

    def read_counter(self) -> int:
        cmd = command(TPM_CC.NV_Read, u16(8) + u16(0), u32(COUNTER_INDEX) + u32(COUNTER_INDEX), b"")
        params = self.ok(cmd, "NV_Read (counter)").params()
        return int.from_bytes(params[2:10], "big")

    def owner_works(self, auth: bytes) -> bool:
        """NV_Read with owner authorization: proves the owner password without changing anything."""
        cmd = command(TPM_CC.NV_Read, u16(1) + u16(0), u32(TPM_RH.OWNER) + u32(DATA_INDEX), auth)
        return self.execute(cmd).rc == 0

    def operations(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("write", self.op_write),
            ("increment", self.op_increment),
            ("evict", self.op_evict),
            ("changeauth", self.op_changeauth),
        ]

    def run_op(self, name: str, pending: object, cmd: bytes, apply: Callable[[], None]) -> None:
        self.model.pending = (name, pending)
        self.ok(cmd, name)
        apply()
        self.model.pending = None
        self.figures.acknowledged += 1

    def op_write(self) -> None:
        value = self.rng.randbytes(DATA_SIZE)
        self.run_op("write", value, self.write_cmd(value), lambda: setattr(self.model, "data", value))

    def op_increment(self) -> None:
        cmd = command(TPM_CC.NV_Increment, handles=u32(COUNTER_INDEX) + u32(COUNTER_INDEX), auth=b"")
        self.run_op("increment", None, cmd, lambda: setattr(self.model, "counter", self.model.counter + 1))

    def op_evict(self) -> None:
        owner = self.model.owner_auth
        if self.model.persistent:
            target = PERSISTENT_HANDLE
        else:
            resp = self.ok(create_primary_cmd(ecc_template(), hierarchy_auth=owner), "CreatePrimary")
            target = int.from_bytes(resp.raw[10:14], "big")
        cmd = command(TPM_CC.EvictControl, u32(PERSISTENT_HANDLE), u32(TPM_RH.OWNER) + u32(target), owner)
        now = not self.model.persistent
        self.run_op("evict", now, cmd, lambda: setattr(self.model, "persistent", now))
        if target != PERSISTENT_HANDLE:
            self.ok(command(TPM_CC.FlushContext, u32(target)), "FlushContext")

    def op_changeauth(self) -> None:
        new = self.rng.randbytes(8).hex().encode()
        cmd = command(TPM_CC.HierarchyChangeAuth, tpm2b(new), u32(TPM_RH.OWNER), self.model.owner_auth)
        self.run_op("changeauth", new, cmd, lambda: setattr(self.model, "owner_auth", new))

    # --- checking ----------------------------------------------------------------------------------
    def check(self) -> None:
        """After a restart: every acknowledged change is there, nothing is half applied."""
        model, pending = self.model, self.model.pending
        name, value = pending if pending else ("", None)
        self._expect("data", self.read_data(), {model.data} | ({value} if name == "write" else set()))
        counter = self.read_counter()
        self._expect("counter", counter, {model.counter} | ({model.counter + 1} if name == "increment" else set()))
        exists = self.execute(command(TPM_CC.ReadPublic, handles=u32(PERSISTENT_HANDLE))).rc == 0
        self._expect("persistent", exists, {model.persistent} | ({value} if name == "evict" else set()))
        candidates = [model.owner_auth] + ([value] if name == "changeauth" else [])
        working = [auth for auth in candidates if self.owner_works(auth)]
        self._expect("owner auth", len(working), {1})
        # Adopt whichever of the possible outcomes happened.
        model.data, model.counter, model.persistent = self.read_data(), counter, exists
        if working:
            model.owner_auth = working[0]
        model.pending = None

    def _expect(self, what: str, got: object, allowed: set) -> None:
        self.figures.checked += 1
        if got not in allowed:
            self.figures.lost += 1
            self.figures.problems.append(f"{what}: {got!r}, expected one of {allowed!r}")

    # --- the loop ------------------------------------------------------------------------------------
    def run(self, kills: int, max_delay: float = 0.3) -> Figures:
        """``kills`` rounds of: loop over random operations until a timer sends SIGKILL, restart, check."""
        self.start()
        self.provision()
        try:
            for _ in range(kills):
                self.figures.runs += 1
                timer = threading.Timer(self.rng.uniform(0.01, max_delay), self._kill)
                timer.start()
                try:
                    while True:
                        self.rng.choice(self.operations())[1]()
                except DaemonDied:
                    pass
                finally:
                    timer.cancel()
                status = self.daemon.wait_exit()
                if status != -signal.SIGKILL:
                    self.figures.problems.append(f"the daemon ended by itself with status {status}")
                self.daemon.stop()
                self.start()
                self.check()
        finally:
            self.daemon.stop()
        return self.figures

    def _kill(self) -> None:
        proc = self.daemon.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            self.figures.kills += 1
