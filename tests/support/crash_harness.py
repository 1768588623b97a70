"""Kill ``vtpm-cuse socket`` with SIGKILL at random moments while a client loops
over state-changing commands, and check after every restart that no acknowledged
change was lost and no change was half applied.

The client keeps a :class:`Model` of what the TPM acknowledged; while a command
is in flight it also holds the model as that command would leave it.  After a
kill the TPM must be in exactly one of these candidate states (each field, and
all fields at once: a change is applied whole or not at all):

* write      -- an ordinary NV index rewritten with NV_Write: the value;
* increment  -- an NV counter bumped with NV_Increment: the count;
* evict      -- a persistent object made and evicted with EvictControl;
* changeauth -- the owner authorization changed with HierarchyChangeAuth;
* clockset   -- TPM2_ClockSet: Clock after the restart is at least the last
  acknowledged value (Clock never goes back behind an acknowledged set);
* da         -- a failed authorization of a DA-protected NV index: failedTries
  (TPM_PT_LOCKOUT_COUNTER) is the acknowledged count, one more with a failure in
  flight; DictionaryAttackLockReset brings it back to 0.  The engine writes
  failedTries to NV before the failing response leaves the TPM, so a kill never
  loses a counted failure.  (The TCG reference code, and so libtpms, may defer
  that write and instead count one more failure at the TPM2_Startup that
  follows a non-orderly shutdown when a DA-protected authorization was used
  since -- DAStartup.  This engine does not add that failure, so the count is
  checked exactly: a kill -9 is a non-orderly shutdown here too);
* volatile   -- PCR_Extend of PCRs 16 and 23, TPM2_Shutdown(STATE), then the
  control channel's CMD_STORE_VOLATILE: every later restart resumes that
  snapshot, so both PCRs read the saved values (together: the snapshot is whole);
* setblob    -- CMD_GET_STATEBLOB(permanent) remembers the whole model; later
  CMD_STOP, CMD_SET_STATEBLOB(volatile, empty), CMD_SET_STATEBLOB(permanent),
  CMD_INIT and Startup(CLEAR) bring it back: afterwards every field is the old
  state's or every field the restored one's ("whole" check).

Used by tests/test_crash_consistency.py (a few tens of kills) and
scripts/crash_consistency.py (a thousand, with figures per command kind).
"""

from __future__ import annotations

import dataclasses
import random
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from ioctl_defs import PtmBlobType, PtmCmd, PtmGetStateRequest, PtmInitRequest, PtmSetStateRequest
from support.ctrl_client import ctrl_call
from support.daemon import Daemon
from support.net import recv_exact
from support.object_templates import create_primary_cmd, ecc_template
from support.tpm_client import Response, command, tpm2b, u16, u32
from vtpm_cuse.tpm.constants import TPM_CC, TPM_PT, TPM_RH, TPM_SU
from vtpm_cuse.tpm.errors import TPM_RC

#: TPMA_NV bits (Part 2, TPMA_NV): spelled out here, independent of the engine's tables.
NV_OWNERWRITE, NV_AUTHWRITE, NV_OWNERREAD, NV_AUTHREAD, NV_NO_DA = 1 << 1, 1 << 2, 1 << 17, 1 << 18, 1 << 25
NT_SHIFT, NT_ORDINARY, NT_COUNTER = 4, 0x0, 0x1
NV_ATTRIBUTES = NV_OWNERWRITE | NV_AUTHWRITE | NV_OWNERREAD | NV_AUTHREAD | NV_NO_DA
SHA256, SHA256_SIZE = 0x000B, 32
TPM_CAP_TPM_PROPERTIES = 6

DATA_INDEX, COUNTER_INDEX, DA_INDEX = 0x01500010, 0x01500011, 0x01500012
DA_AUTH = b"da-protected"
PERSISTENT_HANDLE = 0x81000020
DATA_SIZE = 8
#: Resettable PCRs extended by the volatile operation (PC Client: debug PCR 16, application PCR 23).
SNAPSHOT_PCRS = (16, 23)
#: Their value after TPM2_Startup(CLEAR): all zeros.
RESET_PCRS = (bytes(SHA256_SIZE),) * len(SNAPSHOT_PCRS)
#: DA parameters for the run: many tries, no self-healing during a run.
DA_MAX_TRIES, DA_RECOVERY_S, DA_RESET_AT = 100_000, 1_000_000, 30
#: Session 1 error bit + TPM_RC_AUTH_FAIL: what a wrong password of a DA-protected entity answers.
RC_AUTH_FAIL_SESSION1 = 0x900 | TPM_RC.AUTH_FAIL

#: Seconds a command may take before the harness calls the daemon hung.
ANSWER_TIMEOUT = 120.0
START_ATTEMPTS = 3

KINDS = ("write", "increment", "evict", "changeauth", "clockset", "da", "volatile", "setblob")


class DaemonDied(Exception):
    """The connection broke: the command's effect is unknown."""


def nv_public(index: int, kind: int, size: int, attributes: int = NV_ATTRIBUTES) -> bytes:
    area = u32(index) + u16(SHA256) + u32(attributes | kind << NT_SHIFT) + tpm2b(b"") + u16(size)
    return tpm2b(area)


@dataclasses.dataclass(frozen=True)
class Model:
    """The TPM state the client can check, as acknowledged."""

    data: bytes = bytes(DATA_SIZE)
    counter: int = 0
    persistent: bool = False
    owner_auth: bytes = b""
    clock_floor: int = 0
    da_failures: int = 0
    #: PCRs 16 and 23 in the stored volatile snapshot; None when there is none.
    snapshot_pcrs: tuple[bytes, ...] | None = None

    def expected_pcrs(self) -> tuple[bytes, ...]:
        return self.snapshot_pcrs if self.snapshot_pcrs is not None else RESET_PCRS


@dataclasses.dataclass
class Observed:
    """The same facts read back from the restarted TPM (owner_auth: the candidate that works)."""

    data: bytes
    counter: int
    persistent: bool
    owner_auth: bytes | None
    clock: int
    da_failures: int
    pcrs: tuple[bytes, ...]


#: Which command kind each field's check belongs to, and how a candidate explains an observation.
FIELD_CHECKS: tuple[tuple[str, Callable[[Model, Observed], bool]], ...] = (
    ("write", lambda m, o: o.data == m.data),
    ("increment", lambda m, o: o.counter == m.counter),
    ("evict", lambda m, o: o.persistent == m.persistent),
    ("changeauth", lambda m, o: o.owner_auth == m.owner_auth),
    ("clockset", lambda m, o: o.clock >= m.clock_floor),
    ("da", lambda m, o: o.da_failures == m.da_failures),
    ("volatile", lambda m, o: o.pcrs == m.expected_pcrs()),
)


@dataclasses.dataclass
class KindFigures:
    acknowledged: int = 0
    checked: int = 0
    lost: int = 0


@dataclasses.dataclass
class Figures:
    runs: int = 0
    kills: int = 0
    kinds: dict[str, KindFigures] = dataclasses.field(default_factory=lambda: {k: KindFigures() for k in KINDS})
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def acknowledged(self) -> int:
        return sum(k.acknowledged for k in self.kinds.values())

    @property
    def checked(self) -> int:
        return sum(k.checked for k in self.kinds.values())

    @property
    def lost(self) -> int:
        return sum(k.lost for k in self.kinds.values())

    def summary(self) -> str:
        return (
            f"runs {self.runs}  kills {self.kills}  acknowledged {self.acknowledged}  "
            f"checked {self.checked}  lost {self.lost}"
        )

    def table(self) -> str:
        lines = [f"{'kind':<11} {'acknowledged':>12} {'checked':>8} {'lost':>5}"]
        for name, k in self.kinds.items():
            lines.append(f"{name:<11} {k.acknowledged:>12} {k.checked:>8} {k.lost:>5}")
        return "\n".join(lines)


class CrashLoop:
    def __init__(self, state_dir: Path, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.daemon = Daemon(state_dir, extra=["--flags", "not-need-init,startup-clear"])
        self.model = Model()
        #: The model as the command in flight would leave it (several for multi-step operations).
        self.pending: list[Model] = []
        #: The whole model at the last CMD_GET_STATEBLOB, with that blob.
        self.saved_blob: tuple[Model, bytes] | None = None
        self.figures = Figures()
        self.sock: socket.socket | None = None
        self.ctrl: socket.socket | None = None

    # --- transport ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the daemon on the state directory, on fresh ports each time: between a kill
        and the restart, another process on this machine may have taken the old ones (then
        the daemon exits with "Address already in use", or the probe reaches the other
        process; both are retried on new ports)."""
        for attempt in range(START_ATTEMPTS):
            self.daemon = Daemon(self.daemon.state_dir, extra=self.daemon.extra)
            try:
                self.daemon.start()
                self.sock = self.daemon.connect_data()
                self.ctrl = self.daemon.connect_ctrl()
                break
            except (RuntimeError, OSError) as exc:
                self.close_connections()
                proc = self.daemon.proc
                stderr = ""
                if proc is not None and proc.poll() is not None and proc.stderr is not None:
                    stderr = proc.stderr.read().decode(errors="replace")
                self.daemon.stop()
                in_use = "Address already in use" in str(exc) + stderr
                if not in_use or attempt == START_ATTEMPTS - 1:
                    raise RuntimeError(f"the daemon did not start: {exc} {stderr}") from exc
        # The first command after a start waits for the engine import: slow on a busy machine.
        for s in (self.sock, self.ctrl):
            s.settimeout(ANSWER_TIMEOUT)

    def close_connections(self) -> None:
        for s in (self.sock, self.ctrl):
            if s is not None:
                s.close()
        self.sock = self.ctrl = None

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

    def control(self, cmd: PtmCmd, request: object | None = None) -> object:
        """A control command that must succeed; DaemonDied when the connection breaks."""
        assert self.ctrl is not None
        try:
            response = ctrl_call(self.ctrl, cmd, request)
        except OSError as exc:
            raise DaemonDied(str(exc)) from None
        if response.tpm_result != 0:
            raise AssertionError(f"{cmd.name} answered ptm_res 0x{response.tpm_result:x}")
        return response

    # --- provisioning --------------------------------------------------------------------------
    def provision(self) -> None:
        """Define the indices, give them first values, make DA failures count (before any kill)."""
        owner = self.model.owner_auth
        defines = (
            (b"", nv_public(DATA_INDEX, NT_ORDINARY, DATA_SIZE)),
            (b"", nv_public(COUNTER_INDEX, NT_COUNTER, 8)),
            (DA_AUTH, nv_public(DA_INDEX, NT_ORDINARY, 1, NV_ATTRIBUTES & ~NV_NO_DA)),
        )
        for auth, public in defines:
            self.ok(command(TPM_CC.NV_DefineSpace, tpm2b(auth) + public, u32(TPM_RH.OWNER), owner), "NV_DefineSpace")
        self.ok(self.write_cmd(self.model.data), "NV_Write")
        self.ok(command(TPM_CC.NV_Write, tpm2b(b"\x01") + u16(0), u32(DA_INDEX) * 2, DA_AUTH), "NV_Write (DA)")
        self.ok(command(TPM_CC.NV_Increment, handles=u32(COUNTER_INDEX) * 2, auth=b""), "NV_Increment")
        da_params = u32(DA_MAX_TRIES) + u32(DA_RECOVERY_S) + u32(DA_RECOVERY_S)
        self.ok(command(TPM_CC.DictionaryAttackParameters, da_params, u32(TPM_RH.LOCKOUT), b""), "DA parameters")
        self.model = dataclasses.replace(self.model, counter=self.read_counter())

    # --- reading the state back ------------------------------------------------------------------
    def write_cmd(self, data: bytes) -> bytes:
        return command(TPM_CC.NV_Write, tpm2b(data) + u16(0), u32(DATA_INDEX) * 2, b"")

    def read_data(self) -> bytes:
        resp = self.ok(command(TPM_CC.NV_Read, u16(DATA_SIZE) + u16(0), u32(DATA_INDEX) * 2, b""), "NV_Read")
        params = resp.params()
        return params[2 : 2 + int.from_bytes(params[:2], "big")]

    def read_counter(self) -> int:
        cmd = command(TPM_CC.NV_Read, u16(8) + u16(0), u32(COUNTER_INDEX) * 2, b"")
        return int.from_bytes(self.ok(cmd, "NV_Read (counter)").params()[2:10], "big")

    def read_clock(self) -> int:
        """TPMS_TIME_INFO.clockInfo.clock from ReadClock (after the 8-octet time)."""
        return int.from_bytes(self.ok(command(TPM_CC.ReadClock), "ReadClock").params()[8:16], "big")

    def read_lockout_counter(self) -> int:
        cmd = command(TPM_CC.GetCapability, u32(TPM_CAP_TPM_PROPERTIES) + u32(TPM_PT.LOCKOUT_COUNTER) + u32(1))
        params = self.ok(cmd, "GetCapability(LOCKOUT_COUNTER)").params()
        # moreData(1) capability(4) count(4) property(4) value(4)
        assert int.from_bytes(params[9:13], "big") == TPM_PT.LOCKOUT_COUNTER
        return int.from_bytes(params[13:17], "big")

    def read_pcrs(self) -> tuple[bytes, ...]:
        select = bytearray(3)
        for pcr in SNAPSHOT_PCRS:
            select[pcr // 8] |= 1 << pcr % 8
        params = self.ok(command(TPM_CC.PCR_Read, u32(1) + u16(SHA256) + b"\x03" + bytes(select)), "PCR_Read").params()
        digests = params[4 + 10 :]  # pcrUpdateCounter, TPML_PCR_SELECTION (one bank)
        count, pos, values = int.from_bytes(digests[:4], "big"), 4, []
        for _ in range(count):
            size = int.from_bytes(digests[pos : pos + 2], "big")
            values.append(digests[pos + 2 : pos + 2 + size])
            pos += 2 + size
        return tuple(values)

    def owner_works(self, auth: bytes) -> bool:
        """NV_Read with owner authorization: proves the owner password without changing anything."""
        cmd = command(TPM_CC.NV_Read, u16(1) + u16(0), u32(TPM_RH.OWNER) + u32(DATA_INDEX), auth)
        return self.execute(cmd).rc == 0

    def observe(self, candidates: list[Model]) -> Observed:
        auths = dict.fromkeys(c.owner_auth for c in candidates)
        working = [auth for auth in auths if self.owner_works(auth)]
        return Observed(
            data=self.read_data(),
            counter=self.read_counter(),
            persistent=self.execute(command(TPM_CC.ReadPublic, handles=u32(PERSISTENT_HANDLE))).rc == 0,
            owner_auth=working[0] if len(working) == 1 else None,
            clock=self.read_clock(),
            da_failures=self.read_lockout_counter(),
            pcrs=self.read_pcrs(),
        )

    # --- the operations ------------------------------------------------------------------------
    def operations(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("write", self.op_write),
            ("increment", self.op_increment),
            ("evict", self.op_evict),
            ("changeauth", self.op_changeauth),
            ("clockset", self.op_clockset),
            ("da", self.op_da),
            ("volatile", self.op_volatile),
            ("setblob", self.op_setblob),
        ]

    def run_op(self, kind: str, outcomes: list[Model], step: Callable[[], None]) -> None:
        """Run ``step`` (the state-changing command(s)); acknowledged, its outcome is ``outcomes[-1]``."""
        self.pending = outcomes
        step()
        self.model = outcomes[-1]
        self.pending = []
        self.figures.kinds[kind].acknowledged += 1

    def op_write(self) -> None:
        value = self.rng.randbytes(DATA_SIZE)
        after = dataclasses.replace(self.model, data=value)
        self.run_op("write", [after], lambda: self.ok(self.write_cmd(value), "NV_Write"))

    def op_increment(self) -> None:
        cmd = command(TPM_CC.NV_Increment, handles=u32(COUNTER_INDEX) * 2, auth=b"")
        after = dataclasses.replace(self.model, counter=self.model.counter + 1)
        self.run_op("increment", [after], lambda: self.ok(cmd, "NV_Increment"))

    def op_evict(self) -> None:
        owner = self.model.owner_auth
        if self.model.persistent:
            target = PERSISTENT_HANDLE
        else:
            resp = self.ok(create_primary_cmd(ecc_template(), hierarchy_auth=owner), "CreatePrimary")
            target = int.from_bytes(resp.raw[10:14], "big")
        cmd = command(TPM_CC.EvictControl, u32(PERSISTENT_HANDLE), u32(TPM_RH.OWNER) + u32(target), owner)
        after = dataclasses.replace(self.model, persistent=not self.model.persistent)
        self.run_op("evict", [after], lambda: self.ok(cmd, "EvictControl"))
        if target != PERSISTENT_HANDLE:
            self.ok(command(TPM_CC.FlushContext, u32(target)), "FlushContext")

    def op_changeauth(self) -> None:
        new = self.rng.randbytes(8).hex().encode()
        cmd = command(TPM_CC.HierarchyChangeAuth, tpm2b(new), u32(TPM_RH.OWNER), self.model.owner_auth)
        after = dataclasses.replace(self.model, owner_auth=new)
        self.run_op("changeauth", [after], lambda: self.ok(cmd, "HierarchyChangeAuth"))

    def op_clockset(self) -> None:
        new = self.read_clock() + self.rng.randrange(1_000, 1_000_000)
        cmd = command(TPM_CC.ClockSet, new.to_bytes(8, "big"), u32(TPM_RH.OWNER), self.model.owner_auth)
        after = dataclasses.replace(self.model, clock_floor=new)
        self.run_op("clockset", [after], lambda: self.ok(cmd, "ClockSet"))

    def op_da(self) -> None:
        if self.model.da_failures >= DA_RESET_AT:
            cmd = command(TPM_CC.DictionaryAttackLockReset, handles=u32(TPM_RH.LOCKOUT), auth=b"")
            after = dataclasses.replace(self.model, da_failures=0)
            self.run_op("da", [after], lambda: self.ok(cmd, "DictionaryAttackLockReset"))
            return
        cmd = command(TPM_CC.NV_Read, u16(1) + u16(0), u32(DA_INDEX) * 2, b"wrong")

        def fail() -> None:
            rc = self.execute(cmd).rc
            if rc != RC_AUTH_FAIL_SESSION1:
                raise AssertionError(f"a wrong password of a DA-protected index answered 0x{rc:x}")

        after = dataclasses.replace(self.model, da_failures=self.model.da_failures + 1)
        self.run_op("da", [after], fail)

    def op_volatile(self) -> None:
        for pcr in SNAPSHOT_PCRS:
            digest = u32(1) + u16(SHA256) + self.rng.randbytes(SHA256_SIZE)
            self.ok(command(TPM_CC.PCR_Extend, digest, u32(pcr), b""), "PCR_Extend")
        pcrs = self.read_pcrs()
        after = dataclasses.replace(self.model, snapshot_pcrs=pcrs)

        def save() -> None:
            self.ok(command(TPM_CC.Shutdown, u16(TPM_SU.STATE)), "Shutdown(STATE)")
            self.control(PtmCmd.CMD_STORE_VOLATILE)

        self.run_op("volatile", [after], save)

    def op_setblob(self) -> None:
        """First call: remember the permanent state blob; next call: put it back."""
        if self.saved_blob is None:
            request = PtmGetStateRequest(type=PtmBlobType.PTM_BLOB_TYPE_PERMANENT)
            self.saved_blob = (self.model, self.control(PtmCmd.CMD_GET_STATEBLOB, request).data)
            return
        saved, blob = self.saved_blob
        self.saved_blob = None
        no_volatile = dataclasses.replace(self.model, snapshot_pcrs=None)
        restored = dataclasses.replace(saved, snapshot_pcrs=None)

        def restore() -> None:
            self.control(PtmCmd.CMD_STOP)
            self.control(PtmCmd.CMD_SET_STATEBLOB, PtmSetStateRequest(type=PtmBlobType.PTM_BLOB_TYPE_VOLATILE))
            self.control(
                PtmCmd.CMD_SET_STATEBLOB, PtmSetStateRequest(type=PtmBlobType.PTM_BLOB_TYPE_PERMANENT, data=blob)
            )
            self.control(PtmCmd.CMD_INIT, PtmInitRequest())
            self.ok(command(TPM_CC.Startup, u16(TPM_SU.CLEAR)), "Startup(CLEAR)")

        self.run_op("setblob", [self.model, no_volatile, restored], restore)

    # --- checking ----------------------------------------------------------------------------------
    def check(self) -> None:
        """After a restart: every acknowledged change is there, nothing is half applied."""
        candidates = [self.model, *self.pending]
        seen = self.observe(candidates)
        for kind, explains in FIELD_CHECKS:
            self._count(kind, any(explains(c, seen) for c in candidates), seen)
        whole = [c for c in candidates if all(explains(c, seen) for _, explains in FIELD_CHECKS)]
        self._count("setblob", bool(whole), seen)
        # Go on from the state the TPM is in (the first whole explanation, or what was read).
        base = whole[0] if whole else self.model
        self.model = dataclasses.replace(
            base,
            data=seen.data,
            counter=seen.counter,
            persistent=seen.persistent,
            owner_auth=seen.owner_auth if seen.owner_auth is not None else base.owner_auth,
            da_failures=seen.da_failures,
        )
        self.pending = []
        self.saved_blob = None  # a blob from before the kill may predate state the loop relies on

    def _count(self, kind: str, ok: bool, seen: Observed) -> None:
        figures = self.figures.kinds[kind]
        figures.checked += 1
        if not ok:
            figures.lost += 1
            self.figures.problems.append(f"{kind}: observed {seen!r}; model {self.model!r}; pending {self.pending!r}")

    # --- the loop ------------------------------------------------------------------------------------
    def run(
        self,
        kills: int,
        max_delay: float = 0.3,
        progress: Callable[[Figures], None] | None = None,
        every: int = 50,
        should_stop: Callable[[], bool] | None = None,
    ) -> Figures:
        """``kills`` rounds of: loop over random operations until a timer sends SIGKILL, restart, check.

        ``progress`` is called with the figures every ``every`` kills (long runs report as they go);
        ``should_stop`` ends the run early (between two kills) when it returns True.
        """
        self.start()
        self.provision()
        try:
            for _ in range(kills):
                if should_stop is not None and should_stop():
                    break
                self.figures.runs += 1
                # The round's first operation completes before the timer runs, so that even a
                # short run acknowledges every kind; the kill lands among the random ones after it.
                self.first_operation()
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
                self.close_connections()
                self.daemon.stop()
                self.start()
                self.check()
                if progress is not None and self.figures.runs % every == 0:
                    progress(self.figures)
        finally:
            self.close_connections()
            self.daemon.stop()
        return self.figures

    def first_operation(self) -> None:
        """Each round starts with the next kind in turn, so a short run covers every kind."""
        kind, operation = self.operations()[(self.figures.runs - 1) % len(KINDS)]
        if kind == "setblob" and self.saved_blob is None:
            operation()  # the snapshot; the restore follows
        operation()

    def _kill(self) -> None:
        proc = self.daemon.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            self.figures.kills += 1
