"""Differential testing against libtpms: random command sequences on our engine and on
Debian's swtpm, compared command by command.

* :class:`SequenceGenerator` draws sequences from the command declarations
  (``vtpm_cuse.tpm.commands.COMMANDS``): each step is a declared command whose handles are
  drawn from what earlier steps of the same sequence created (primaries, loaded external
  keys, NV indices, policy/trial sessions, hash/HMAC sequences, PCRs) and whose parameters
  are made valid for that world by a recipe; commands without a recipe get parameters drawn
  at random from their declared types.  A fraction of the steps is mutated once (a byte of a
  parameter changed, a TPM2B size off by one, a handle of the wrong type, the parameters
  truncated, commandSize off by one).
* :class:`TwoTpms` replays a sequence on a fresh :class:`~vtpm_cuse.tpm.engine.Engine` and
  on ``swtpm socket`` brought back to a fresh manufactured state (CMD_STOP, state files
  removed, CMD_INIT), both after TPM2_Startup(CLEAR).  Handles are symbolic (:class:`Ref`)
  and resolved per TPM, because the two TPMs number transient objects and sessions
  differently.
* :func:`compare` says, per step, whether the response codes agree (normalised into the base
  error and its handle/parameter/session position) and, for outputs that do not depend on
  the primary seeds or on nonces, whether the response bytes are identical.

Seeds: both TPMs manufacture their own random primary seeds and proof values at first start.
Our state blob and libtpms' ``tpm2-00.permall`` are unrelated formats, so neither can be
given the other's seeds; everything compared here is therefore independent of them
(external keys, NULL-hierarchy tickets, policy digests, PCRs, NV contents and names).

Disagreements that the specification decides against libtpms (or leaves open) are listed in
:data:`KNOWN_DIFFERENCES`, each with the clause that decides it and a reproducer that
``tests/test_differential.py`` replays so the table cannot rot.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from ioctl_defs.constants import PtmCmd
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.command import AuthRole, Command
from vtpm_cuse.tpm.commands import COMMANDS
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CAP, TPM_CC, TPM_RH, TPM_RS_PW, TPM_SE, TPM_ST, TPMA_NV
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import TpmError
from vtpm_cuse.tpm.marshal import (
    Attributes,
    FixedBytes,
    Int,
    Interface,
    ListOf,
    Reader,
    Sized,
    SizedStruct,
    Struct,
    TpmType,
    UInt,
)

from .engine_oracle import EngineOracle, OracleFailure
from .object_templates import (
    DECRYPT,
    NO_DA,
    NO_SYM,
    SIGN,
    USER_WITH_AUTH,
    ecc_template,
    keyedhash_template,
    rsa_template,
    symcipher_template,
)
from .swtpm_oracle import SwtpmOracle
from .tpm_client import Response, command, tpm2b, u16, u32

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
#: A transient handle neither TPM has assigned: what a reference to a dropped step resolves to.
UNASSIGNED = 0x80FFFFFF
HASHES = (TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512)
DIGEST_SIZE = {TPM_ALG.SHA1: 20, TPM_ALG.SHA256: 32, TPM_ALG.SHA384: 48, TPM_ALG.SHA512: 64}
PY_HASH = {TPM_ALG.SHA1: "sha1", TPM_ALG.SHA256: "sha256", TPM_ALG.SHA384: "sha384", TPM_ALG.SHA512: "sha512"}
#: PCRs any locality may reset and extend (16 debug, 23 application), and some it may only extend.
RESETTABLE_PCRS = (16, 23)
NV_BASE = 0x01500000
FORMAT_ONE = 0x080
#: libtpms' MAX_LOADED_OBJECTS; our engine is started with as many transient slots (it has 32
#: by default), so TPM_RC_OBJECT_MEMORY comes at the same command on both.
LIBTPMS_OBJECT_SLOTS = 3


# --- response codes --------------------------------------------------------------------------


class Where(enum.Enum):
    HANDLE = "handle"
    PARAMETER = "parameter"
    SESSION = "session"


@dataclasses.dataclass(frozen=True)
class Code:
    """A response code split into its base error and, for format-one codes, the position
    (handle, parameter or session number) it names (Part 2, TPM_RC, Table 16)."""

    base: int
    where: Where | None = None
    number: int = 0

    @classmethod
    def of(cls, rc: int) -> Code:
        if not rc & FORMAT_ONE:
            return cls(rc)
        base, n = FORMAT_ONE | (rc & 0x3F), (rc >> 8) & 0xF
        if rc & 0x40:
            return cls(base, Where.PARAMETER, n)
        if n & 0x8:
            return cls(base, Where.SESSION, n & 0x7)
        return cls(base, Where.HANDLE if n else None, n)

    def __str__(self) -> str:
        return f"0x{self.base:03x}" + (f" at {self.where.value} {self.number}" if self.where else "")


# --- sequences -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ref:
    """The handle response-handle ``slot`` of step ``step`` returned, resolved per TPM."""

    step: int
    slot: int = 0


HandleValue = int | Ref


class Compare(enum.Enum):
    """What of a response must agree besides the code."""

    CODE = "code"  # depends on seeds or nonces: the response code only
    SIZE = "size"  # random output: code and response length
    BYTES = "bytes"  # deterministic: every byte after the response handles


class MutationKind(enum.Enum):
    PARAM_BYTE = "parameter byte changed"
    SIZE_OFF_BY_ONE = "TPM2B size off by one"
    WRONG_HANDLE = "handle of the wrong type"
    TRUNCATED = "parameters truncated"
    COMMAND_SIZE = "commandSize off by one"


@dataclasses.dataclass(frozen=True)
class Mutation:
    kind: MutationKind
    #: PARAM_BYTE / SIZE_OFF_BY_ONE: offset in the parameter area; WRONG_HANDLE: handle index;
    #: TRUNCATED: bytes removed.
    at: int
    #: PARAM_BYTE: the xor mask; SIZE_OFF_BY_ONE / COMMAND_SIZE: +1 or -1; WRONG_HANDLE: the handle.
    value: int

    def __str__(self) -> str:
        return f"{self.kind.value} (at {self.at}, {self.value:#x})"


@dataclasses.dataclass(frozen=True)
class Step:
    """One command: its code, symbolic handles, the password of each authorized handle (one
    password session each, in handle order), the parameter bytes, and at most one mutation."""

    id: int
    code: int
    handles: tuple[HandleValue, ...]
    params: bytes
    passwords: tuple[bytes, ...] = ()
    compare: Compare = Compare.CODE
    mutation: Mutation | None = None
    note: str = ""
    #: Handles marshalled as the first parameters (TPM2_FlushContext's flushHandle).
    param_handles: tuple[HandleValue, ...] = ()

    @property
    def name(self) -> str:
        return TPM_CC(self.code).name if self.code in TPM_CC._value2member_map_ else f"CC_{self.code:x}"

    def __str__(self) -> str:
        def show(h: HandleValue) -> str:
            return f"step{h.step}.h{h.slot}" if isinstance(h, Ref) else f"0x{h:08x}"

        text = f"#{self.id} {self.name}({', '.join(map(show, self.handles))}) params="
        text += "".join(f"<{show(h)}>" for h in self.param_handles) + self.params.hex()
        if self.passwords:
            text += f" pw={[p.hex() for p in self.passwords]}"
        if self.mutation:
            text += f" mutated: {self.mutation}"
        return text + (f"  [{self.note}]" if self.note else "")

    def build(self, resolve: Callable[[HandleValue], int]) -> bytes:
        """The command bytes, with handles resolved for one TPM and the mutation applied."""
        handles = [resolve(h) for h in self.handles]
        params = bytearray(b"".join(u32(resolve(h)) for h in self.param_handles) + self.params)
        size_delta = 0
        m = self.mutation
        if m is not None:
            if m.kind is MutationKind.PARAM_BYTE and m.at < len(params):
                params[m.at] ^= m.value
            elif m.kind is MutationKind.SIZE_OFF_BY_ONE and m.at + 2 <= len(params):
                size = (int.from_bytes(params[m.at : m.at + 2], "big") + m.value) & 0xFFFF
                params[m.at : m.at + 2] = size.to_bytes(2, "big")
            elif m.kind is MutationKind.WRONG_HANDLE and m.at < len(handles):
                handles[m.at] = m.value
            elif m.kind is MutationKind.TRUNCATED:
                del params[max(0, len(params) - m.at) :]
            elif m.kind is MutationKind.COMMAND_SIZE:
                size_delta = m.value
        body = b"".join(u32(h) for h in handles)
        if self.passwords:
            area = b"".join(u32(TPM_RS_PW) + u16(0) + b"\x01" + tpm2b(pw) for pw in self.passwords)
            body += u32(len(area)) + area
            tag = TPM_ST.SESSIONS
        else:
            tag = TPM_ST.NO_SESSIONS
        body += bytes(params)
        return u16(tag) + u32(10 + len(body) + size_delta) + u32(self.code) + body


@dataclasses.dataclass(frozen=True)
class Outcome:
    """Both TPMs' answers to one step."""

    step: Step
    command: bytes  # as sent to libtpms (ours differs only in resolved handles)
    theirs: bytes
    ours: bytes
    #: Set when our engine crashed, logged an internal error or answered malformed bytes.
    our_failure: str = ""

    @property
    def theirs_rc(self) -> int:
        return int.from_bytes(self.theirs[6:10], "big")

    @property
    def ours_rc(self) -> int:
        return int.from_bytes(self.ours[6:10], "big")


# --- the two TPMs ----------------------------------------------------------------------------


def response_handles(code: int, response: bytes) -> list[int]:
    """The handles a successful response carries, per the declaration (none when unknown)."""
    decl = COMMANDS.get(code)
    if decl is None or len(response) < 10 or int.from_bytes(response[6:10], "big"):
        return []
    count = len(decl.response_handles)
    return [int.from_bytes(response[10 + 4 * i : 14 + 4 * i], "big") for i in range(count)]


class TwoTpms:
    """Our engine and Debian's swtpm, reset to a fresh manufactured state per sequence."""

    def __init__(self) -> None:
        self.swtpm = SwtpmOracle()
        self.ours = EngineOracle(Engine(max_objects=LIBTPMS_OBJECT_SLOTS))
        self.reset()
        #: The commands both implement (libtpms lacks some of 1.83's, e.g. NV_ReadPublic2).
        self.common_codes = frozenset(listed_commands(self.swtpm.execute) & listed_commands(self.ours.execute))

    def reset(self) -> None:
        """Both TPMs freshly manufactured, after _TPM_Init and TPM2_Startup(CLEAR).

        libtpms: CMD_STOP, its state files deleted, CMD_INIT (libtpms manufactures anew when
        it finds no permanent state; about a millisecond).  Ours: a new Engine.
        """
        swtpm = self.swtpm
        if swtpm.ctrl(PtmCmd.CMD_STOP) != bytes(4):
            raise RuntimeError("swtpm refused CMD_STOP")
        for name in os.listdir(swtpm.dir):
            if name.startswith("tpm2-00."):
                os.unlink(os.path.join(swtpm.dir, name))
        if swtpm.ctrl(PtmCmd.CMD_INIT, u32(1)) != bytes(4):
            raise RuntimeError("swtpm CMD_INIT failed after the state was removed")
        self.ours = EngineOracle(Engine(max_objects=LIBTPMS_OBJECT_SLOTS))
        for execute in (swtpm.execute, self.ours.execute):
            rc = execute(STARTUP_CLEAR)
            if rc != bytes.fromhex("80010000000a00000000"):
                raise RuntimeError(f"TPM2_Startup(CLEAR) answered {rc.hex()}")

    def run(self, steps: Sequence[Step], stop: Callable[[Outcome], bool] | None = None) -> list[Outcome]:
        """Replay ``steps`` on both TPMs from a fresh state; ``stop`` ends the replay early."""
        self.reset()
        created: list[dict[int, list[int]]] = [{}, {}]

        def resolver(side: int) -> Callable[[HandleValue], int]:
            def resolve(h: HandleValue) -> int:
                if isinstance(h, int):
                    return h
                got = created[side].get(h.step, [])
                return got[h.slot] if h.slot < len(got) else UNASSIGNED

            return resolve

        outcomes = []
        for step in steps:
            theirs_cmd = step.build(resolver(0))
            ours_cmd = step.build(resolver(1))
            theirs = self.swtpm.execute(theirs_cmd)
            failure = ""
            try:
                ours = self.ours.execute(ours_cmd)
            except OracleFailure as err:
                failure = str(err)
                ours = self.ours.log[-1][1] if self.ours.log else b""
            created[0][step.id] = response_handles(step.code, theirs)
            created[1][step.id] = response_handles(step.code, ours)
            outcome = Outcome(step, theirs_cmd, theirs, ours, failure)
            outcomes.append(outcome)
            if stop is not None and stop(outcome):
                break
        return outcomes

    def close(self) -> None:
        self.swtpm.close()


def listed_commands(execute: Callable[[bytes], bytes]) -> set[int]:
    """The command codes a TPM lists in GetCapability(TPM_CAP_COMMANDS), following moreData."""
    codes: set[int] = set()
    start = 0
    while True:
        resp = Response(execute(command(TPM_CC.GetCapability, u32(TPM_CAP.COMMANDS) + u32(start) + u32(64))))
        if resp.rc:
            raise RuntimeError(f"GetCapability(TPM_CAP_COMMANDS) answered 0x{resp.rc:x}")
        more, data = resp.params()[0], T.TPMS_CAPABILITY_DATA.unpack(resp.params()[1:]).data
        codes.update(attrs & 0x2000FFFF for attrs in data)
        if not more or not data:
            return codes
        start = max(codes) + 1


# --- comparison and the known differences ---------------------------------------------------


class Kind(enum.Enum):
    AGREE = "agree"
    CODE_MISMATCH = "code mismatch"
    BYTE_MISMATCH = "byte mismatch"
    OUR_FAILURE = "our engine failed"


@dataclasses.dataclass(frozen=True)
class KnownDifference:
    """A disagreement the specification decides (or leaves open): which command, under which
    condition, libtpms' and our code, and the clause that decides it."""

    name: str
    command: int
    condition: str
    theirs: int
    ours: int
    clause: str
    #: True: we follow the clause and libtpms does not; False: the clause leaves it open.
    we_follow_spec: bool
    #: Decides whether an outcome with these two codes is this difference.
    matches: Callable[[Outcome], bool]
    #: A sequence that shows the difference in its last step.
    reproducer: Callable[[], list[Step]]


def sent_params(outcome: Outcome) -> bytes:
    """The parameter area of the command as sent (mutation applied)."""
    cmd, at = outcome.command, 10 + 4 * len(outcome.step.handles)
    if outcome.step.passwords and len(cmd) >= at + 4:
        at += 4 + int.from_bytes(cmd[at : at + 4], "big")
    return cmd[at:]


def declared_values(outcome: Outcome) -> list[tuple[str, Any]]:
    """(field name, value) of every field, nested ones included, of the step's parameters
    unmarshalled with our declaration: as sent, or else as generated (before the mutation);
    [] when neither unmarshals."""
    step = outcome.step
    decl = COMMANDS.get(step.code)
    if decl is None:
        return []
    for params in (sent_params(outcome), b"".join(u32(0) for _ in step.param_handles) + step.params):
        try:
            value = decl.params.unpack(params)
            break
        except (TpmError, ValueError, KeyError):
            continue
    else:
        return []
    found: list[tuple[str, Any]] = []

    def walk(v: Any) -> None:
        if dataclasses.is_dataclass(v):
            for f in dataclasses.fields(v):
                item = getattr(v, f.name)
                found.append((f.name, item))
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(value)
    return found


def _has(o: Outcome, test: Callable[[str, Any, list[tuple[str, Any]]], bool]) -> bool:
    values = declared_values(o)
    return any(test(name, value, values) for name, value in values)


def _parms_of(o: Outcome, kind: str) -> list[Any]:
    """Every value of the step's parameters of the Struct class named ``kind``."""
    return [v for _, v in declared_values(o) if type(v).__name__ == kind]


def _aes_192(o: Outcome) -> bool:
    return o.theirs_rc & 0xBF == 0x84 and _has(
        o,
        lambda n, v, _: type(v).__name__.startswith("TPMT_SYM_DEF") and v.algorithm == TPM_ALG.AES and v.keyBits == 192,
    )


def _rsa_4096(o: Outcome) -> bool:
    return o.theirs_rc & 0xBF == 0x84 and any(p.keyBits == 4096 for p in _parms_of(o, "TPMS_RSA_PARMS"))


LIBTPMS_CURVES = frozenset({1, 2, 3, 4, 5, 0x10, 0x11, 0x20})


def _curve_not_ours(o: Outcome) -> bool:
    from vtpm_cuse.tpm.algorithms import ECC_CURVES

    return (
        o.ours_rc & 0xBF == 0xA6
        and o.theirs_rc == 0
        and (
            _has(o, lambda n, v, _: n in ("curveID",) and v in LIBTPMS_CURVES and v not in ECC_CURVES)
            or (o.step.code == TPM_CC.ECC_Parameters and int.from_bytes(sent_params(o)[:2], "big") not in ECC_CURVES)
        )
    )


def _exponent_not_prime(o: Outcome) -> bool:
    from vtpm_cuse.tpm.parms import is_probable_prime

    return (o.theirs_rc, o.ours_rc & 0xBF) == (0, 0x84) and any(
        p.exponent not in (0,) and (p.exponent < 3 or not is_probable_prime(p.exponent))
        for p in _parms_of(o, "TPMS_RSA_PARMS")
    )


def _symmetric_not_cfb(o: Outcome) -> bool:
    parms = _parms_of(o, "TPMS_RSA_PARMS") + _parms_of(o, "TPMS_ECC_PARMS")
    return (o.theirs_rc, o.ours_rc & 0xBF) == (0, 0x96) and any(
        p.symmetric.algorithm != TPM_ALG.NULL and p.symmetric.mode != TPM_ALG.CFB for p in parms
    )


def _ecdh_with_kdf(o: Outcome) -> bool:
    return (o.theirs_rc, o.ours_rc & 0xBF) == (0, 0x8C) and any(
        p.scheme.scheme == TPM_ALG.ECDH and p.kdf.scheme != TPM_ALG.NULL for p in _parms_of(o, "TPMS_ECC_PARMS")
    )


def _handle_at(o: Outcome, rc: int) -> int | None:
    """The handle a format-one ``rc`` names (its value as sent to libtpms), if any."""
    code = Code.of(rc)
    if code.where is not Where.HANDLE or not 1 <= code.number <= len(o.step.handles):
        return None
    return int.from_bytes(o.command[10 + 4 * (code.number - 1) : 14 + 4 * (code.number - 1)], "big")


def _persistent_while_full(o: Outcome) -> bool:
    handle = _handle_at(o, o.ours_rc)
    return o.theirs_rc == 0x902 and Code.of(o.ours_rc).base == 0x8B and handle is not None and handle >> 24 == 0x81


def _vendor_auth_handle(o: Outcome) -> bool:
    handle = _handle_at(o, o.ours_rc)
    same_place = Code.of(o.theirs_rc).number == Code.of(o.ours_rc).number
    return (
        (Code.of(o.theirs_rc).base, Code.of(o.ours_rc).base) == (0x84, 0x8B)
        and same_place
        and handle is not None
        and 0x40000010 <= handle <= 0x4000010F
    )


def _tdes(o: Outcome) -> bool:
    """libtpms implements TDES (TPM_ALG_TDES 0x0003), we do not: our unmarshalling stops at it
    with TPM_RC_SYMMETRIC where libtpms goes on (and answers what comes next)."""
    return Code.of(o.ours_rc).base == 0x96 and o.theirs_rc != o.ours_rc and b"\x00\x03" in sent_params(o)


def _load_external_unnamed(o: Outcome) -> bool:
    code = Code.of(o.ours_rc)
    return (
        o.step.code == TPM_CC.LoadExternal
        and (code.base, code.where, code.number) == (0x83, Where.PARAMETER, 2)
        and any(type(v).__name__ == "TPMT_PUBLIC" and v.nameAlg == TPM_ALG.NULL for _, v in declared_values(o))
    )


#: libtpms' MAX_RSA_KEY_BYTES (3072-bit keys); ours is 512 (4096-bit keys).
LIBTPMS_MAX_RSA_BYTES = 384


def _rsa_unique_size(o: Outcome) -> bool:
    """An RSA unique (TPM2B_PUBLIC_KEY_RSA) of 385..512 octets in LoadExternal's inPublic: over
    libtpms' maximum (TPM_RC_SIZE), within ours (which goes on to the next check)."""
    params = sent_params(o)
    if o.step.code != TPM_CC.LoadExternal or Code.of(o.theirs_rc).base != 0x95 or len(params) < 4:
        return False
    at = 2 + int.from_bytes(params[:2], "big") + 2  # past inPrivate and inPublic's size
    if params[at : at + 2] != b"\x00\x01":  # TPM_ALG_RSA
        return False
    at += 8
    at += 2 + int.from_bytes(params[at : at + 2], "big")  # authPolicy
    at += 2 if params[at : at + 2] == b"\x00\x10" else 6  # symmetric
    at += 2 if params[at : at + 2] == b"\x00\x10" else 4  # scheme
    at += 6  # keyBits, exponent
    size = int.from_bytes(params[at : at + 2], "big")
    return LIBTPMS_MAX_RSA_BYTES < size <= 512


def _sequence_update_on_object(o: Outcome) -> bool:
    return (o.theirs_rc, o.ours_rc) == (0x1C9, 0x189)


def _on_external_hmac_key(code: int, params: bytes) -> list[Step]:
    """An external HMAC key loaded, then ``code`` run on it with its password."""
    gen = SequenceGenerator(1, 0)
    gen.steps.append(gen.load_external_hmac())
    gen.steps.append(gen.step(code, [Ref(0)], params))
    return gen.steps


def _unnamed_ecc_key():
    """A P-256 signing public key whose nameAlg is TPM_ALG_NULL."""
    numbers = ec.derive_private_key(12345, ec.SECP256R1()).public_key().public_numbers()
    public = ecc_template(USER_WITH_AUTH | SIGN, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256)
    public.nameAlg = TPM_ALG.NULL
    public.unique = T.TPMS_ECC_POINT(x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"))
    return public


def _steps(*steps: Step) -> Callable[[], list[Step]]:
    return lambda: [dataclasses.replace(s, id=i) for i, s in enumerate(steps)]


def _test_parms(hex_params: str) -> Step:
    return Step(0, TPM_CC.TestParms, (), bytes.fromhex(hex_params))


def _full_slots_then(step: Step) -> list[Step]:
    fill = [
        Step(i, TPM_CC.HashSequenceStart, (), tpm2b(b"") + u16(TPM_ALG.SHA256)) for i in range(LIBTPMS_OBJECT_SLOTS)
    ]
    return fill + [dataclasses.replace(step, id=LIBTPMS_OBJECT_SLOTS)]


#: Every entry has a test in tests/test_differential.py that replays its reproducer and checks
#: both TPMs still answer the recorded codes.
KNOWN_DIFFERENCES: list[KnownDifference] = [
    KnownDifference(
        "aes-192",
        TPM_CC.TestParms,
        "an AES key of 192 bits anywhere in the parameters (TestParms, LoadExternal, ...)",
        theirs=0x1C4,  # TPM_RC_VALUE at parameter 1
        ours=0x000,
        clause="Part 2, TPMI_AES_KEY_BITS: the implemented key sizes are the TPM's choice; "
        "we implement 128, 192 and 256, Debian's libtpms not 192",
        we_follow_spec=False,
        matches=_aes_192,
        reproducer=_steps(_test_parms("0025000600c00010")),
    ),
    KnownDifference(
        "rsa-4096",
        TPM_CC.TestParms,
        "an RSA key of 4096 bits",
        theirs=0x1C4,
        ours=0x000,
        clause="Part 2, TPMI_RSA_KEY_BITS: implementation-dependent sizes; we implement 4096, libtpms up to 3072",
        we_follow_spec=False,
        matches=_rsa_4096,
        reproducer=_steps(_test_parms("0001001000100010000000000000"[:8] + "0010" + "1000" + "00000000")),
    ),
    KnownDifference(
        "ecc-curves",
        TPM_CC.ECC_Parameters,
        "a curve libtpms implements and we do not (BN_P256, BN_P638, SM2_P256)",
        theirs=0x000,
        ours=0x1E6,  # TPM_RC_CURVE at parameter 1
        clause="Part 2, TPMI_ECC_CURVE: the implemented curves are the TPM's choice (the PC Client "
        "profile requires NIST P-256 and P-384); `cryptography` has no BN or SM2 curves",
        we_follow_spec=False,
        matches=_curve_not_ours,
        reproducer=_steps(Step(0, TPM_CC.ECC_Parameters, (), u16(0x0020))),
    ),
    KnownDifference(
        "rsa-exponent-not-prime",
        TPM_CC.TestParms,
        "RSA parameters whose exponent is neither 0 nor an odd prime",
        theirs=0x000,
        ours=0x1C4,
        clause="Part 2, TPMS_RSA_PARMS: exponent is 'a prime number greater than 2'; Part 3 30.3 "
        "TestParms reports whether the combination is supported. libtpms checks it only when a key is made",
        we_follow_spec=True,
        matches=_exponent_not_prime,
        reproducer=_steps(_test_parms("0001001000100800" + "00010000")),
    ),
    KnownDifference(
        "parent-symmetric-not-cfb",
        TPM_CC.TestParms,
        "RSA/ECC parameters with a symmetric definition whose mode is not CFB",
        theirs=0x000,
        ours=0x1D6,  # TPM_RC_SYMMETRIC at parameter 1
        clause="Part 1, 'Protected Storage': a parent protects its children with CFB; Part 2 TPMS_RSA_PARMS / "
        "TPMS_ECC_PARMS: symmetric is NULL unless the key is a restricted decryption (parent) key. No object can "
        "have these parameters, so TestParms (Part 3 30.3) reports them unsupported; libtpms accepts them there",
        we_follow_spec=True,
        matches=_symmetric_not_cfb,
        reproducer=_steps(_test_parms("0001000600800044001008000000" + "0000")),
    ),
    KnownDifference(
        "ecdh-key-with-kdf",
        TPM_CC.TestParms,
        "ECC parameters with the ECDH scheme and a KDF other than TPM_ALG_NULL",
        theirs=0x000,
        ours=0x1CC,  # TPM_RC_KDF at parameter 1
        clause="Part 2, TPMS_ECC_PARMS kdf: 'there are currently no commands where this parameter has "
        "effect' and the reference code needs it NULL; we refuse it for ECDH keys, whose output a caller's KDF "
        "processes; libtpms accepts it at TestParms",
        we_follow_spec=False,
        matches=_ecdh_with_kdf,
        reproducer=_steps(_test_parms("00230010" + "0019000b" + "0003" + "0007000b")),
    ),
    KnownDifference(
        "persistent-handle-with-slots-full",
        TPM_CC.ReadPublic,
        "a persistent handle that does not exist while every transient slot is in use",
        theirs=0x902,  # TPM_RC_OBJECT_MEMORY
        ours=0x18B,  # TPM_RC_HANDLE at handle 1
        clause="Part 3, 5.6 (handle area validation) asks whether the handle references a resident "
        "entity: TPM_RC_HANDLE. libtpms first takes a slot to load the persistent object into and "
        "answers TPM_RC_OBJECT_MEMORY before it finds there is none",
        we_follow_spec=True,
        matches=_persistent_while_full,
        reproducer=lambda: _full_slots_then(Step(0, TPM_CC.ReadPublic, (0x81000001,), b"")),
    ),
    KnownDifference(
        "sequence-update-mode-position",
        TPM_CC.SequenceUpdate,
        "SequenceUpdate naming a loaded object that is not a sequence",
        theirs=0x1C9,  # TPM_RC_MODE at parameter 1
        ours=0x189,  # TPM_RC_MODE at handle 1
        clause="Part 3, 17.4: TPM_RC_MODE when sequenceHandle is no sequence object; sequenceHandle is "
        "handle 1 (Part 2, TPM_RC: N with the P bit clear for a handle). libtpms sets the parameter bit",
        we_follow_spec=True,
        matches=_sequence_update_on_object,
        reproducer=lambda: _on_external_hmac_key(TPM_CC.SequenceUpdate, tpm2b(b"data")),
    ),
    KnownDifference(
        "tdes",
        TPM_CC.TestParms,
        "a symmetric definition naming TDES (TPM_ALG_TDES)",
        theirs=0x000,
        ours=0x1D6,  # TPM_RC_SYMMETRIC at parameter 1
        clause="Part 2, TPMI_ALG_SYM_OBJECT: the implemented block ciphers are the TPM's choice; we implement "
        "AES only (TDES is deprecated by the TCG algorithm registry), Debian's libtpms also TDES",
        we_follow_spec=False,
        matches=_tdes,
        reproducer=_steps(_test_parms("0025000300c00010")),
    ),
    KnownDifference(
        "load-external-without-name",
        TPM_CC.LoadExternal,
        "LoadExternal of a public area whose nameAlg is TPM_ALG_NULL",
        theirs=0x000,
        ours=0x2C3,  # TPM_RC_HASH at parameter 2
        clause="Part 3, 12.3 allows an object without a Name (nameAlg TPM_ALG_NULL) in TPM2_LoadExternal; "
        "we do not implement such objects and answer TPM_RC_HASH (vtpm_cuse/tpm/commands/object.py)",
        we_follow_spec=False,
        matches=_load_external_unnamed,
        reproducer=lambda: [
            Step(
                0,
                TPM_CC.LoadExternal,
                (),
                u16(0) + T.TPM2B_PUBLIC_PLUS.pack(_unnamed_ecc_key()) + u32(TPM_RH.NULL),
            )
        ],
    ),
    KnownDifference(
        "rsa-unique-size",
        TPM_CC.LoadExternal,
        "an RSA public key (unique) of 385 to 512 octets",
        theirs=0x2D5,  # TPM_RC_SIZE at parameter 2
        ours=0x2DA,  # TPM_RC_INSUFFICIENT at parameter 2 (the size reaches past the area)
        clause="Part 2, TPM2B_PUBLIC_KEY_RSA holds up to MAX_RSA_KEY_BYTES, an implementation constant: "
        "512 here (4096-bit keys), 384 in libtpms",
        we_follow_spec=False,
        matches=_rsa_unique_size,
        reproducer=lambda: [
            Step(
                0,
                TPM_CC.LoadExternal,
                (),
                u16(0)
                + u16(0x16)
                + bytes.fromhex("0001000b00040040000000100010080000000000")
                + u16(400)
                + u32(TPM_RH.NULL),
            )
        ],
    ),
    KnownDifference(
        "vendor-authorization-handle",
        TPM_CC.StartAuthSession,
        "a handle in TPM_RH_AUTH_00..TPM_RH_AUTH_FF (vendor authorization values) where TPMI_DH_ENTITY is expected",
        theirs=0x284,  # TPM_RC_VALUE at handle 2
        ours=0x28B,  # TPM_RC_HANDLE at handle 2
        clause="Part 2, TPMI_DH_ENTITY includes TPM_RH_AUTH_00..TPM_RH_AUTH_FF, so the value is of the "
        "right type; we implement none of them: TPM_RC_HANDLE (Part 3, 5.6). libtpms rejects the type",
        we_follow_spec=True,
        matches=_vendor_auth_handle,
        reproducer=_steps(
            Step(
                0,
                TPM_CC.StartAuthSession,
                (TPM_RH.NULL, 0x400000FF),
                tpm2b(bytes(32)) + tpm2b(b"") + bytes([TPM_SE.POLICY]) + u16(TPM_ALG.NULL) + u16(TPM_ALG.SHA256),
            )
        ),
    ),
]


def known_difference(outcome: Outcome) -> KnownDifference | None:
    for entry in KNOWN_DIFFERENCES:
        if entry.matches(outcome):
            return entry
    return None


def response_rest(code: int, response: bytes) -> bytes:
    """A response after its header and response handles: what BYTES compares."""
    decl = COMMANDS.get(code)
    skip = 4 * len(decl.response_handles) if decl is not None else 0
    return response[10 + skip :]


def classify(outcome: Outcome) -> Kind:
    if outcome.our_failure:
        return Kind.OUR_FAILURE
    if outcome.theirs_rc != outcome.ours_rc:
        return Kind.CODE_MISMATCH
    step = outcome.step
    if outcome.ours_rc == 0:
        if step.compare is Compare.SIZE and len(outcome.ours) != len(outcome.theirs):
            return Kind.BYTE_MISMATCH
        if step.compare is Compare.BYTES and response_rest(step.code, outcome.ours) != response_rest(
            step.code, outcome.theirs
        ):
            return Kind.BYTE_MISMATCH
    return Kind.AGREE


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    kind: Kind
    known: KnownDifference | None = None

    @property
    def unexplained(self) -> bool:
        return self.kind is not Kind.AGREE and self.known is None

    def describe(self) -> str:
        o = self.outcome
        text = (
            f"{self.kind.value}: {o.step}\n  command {o.command.hex()}\n"
            f"  libtpms {Code.of(o.theirs_rc)}: {o.theirs.hex()}\n  ours    {Code.of(o.ours_rc)}: {o.ours.hex()}"
        )
        if o.our_failure:
            text += "\n  " + o.our_failure.replace("\n", "\n  ")
        return text


def judge(outcome: Outcome) -> Verdict:
    kind = classify(outcome)
    known = known_difference(outcome) if kind is Kind.CODE_MISMATCH else None
    return Verdict(outcome, kind, known)


def diverged(verdict: Verdict) -> bool:
    """After this step the two TPMs may hold different state: later steps prove nothing."""
    if verdict.kind is Kind.AGREE:
        return False
    o = verdict.outcome
    return verdict.known is None or o.theirs_rc == 0 or o.ours_rc == 0


@dataclasses.dataclass
class SequenceResult:
    verdicts: list[Verdict]

    @property
    def first_unexplained(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.unexplained), None)


def run_sequence(tpms: TwoTpms, steps: Sequence[Step]) -> SequenceResult:
    verdicts: list[Verdict] = []

    def stop(outcome: Outcome) -> bool:
        verdicts.append(judge(outcome))
        return diverged(verdicts[-1])

    tpms.run(steps, stop)
    return SequenceResult(verdicts)


def shrink(tpms: TwoTpms, steps: Sequence[Step], failing: Verdict) -> list[Step]:
    """A shorter sequence that still ends in an unexplained disagreement of the same kind on
    the same command: everything after the failing step dropped, then earlier steps one by
    one while it still disagrees."""
    last = failing.outcome.step
    kept = [s for s in steps[: steps.index(last) + 1]]

    def still_fails(candidate: list[Step]) -> bool:
        result = run_sequence(tpms, candidate)
        bad = result.first_unexplained
        return bad is not None and bad.outcome.step is candidate[-1] and bad.kind is failing.kind

    i = len(kept) - 2
    while i >= 0:
        candidate = kept[:i] + kept[i + 1 :]
        if still_fails(candidate):
            kept = candidate
        i -= 1
    return kept


# --- random values from the declarations -----------------------------------------------------


def field_offsets(decl: Command, params: bytes) -> list[tuple[str, int, TpmType]]:
    """(name, offset, type) of each top-level parameter, as far as ``params`` unmarshals."""
    offsets = []
    r = Reader(params)
    values: dict[str, Any] = {}
    for field in decl.params.fields:
        start = r.pos
        try:
            if field.selector is None:
                values[field.name] = field.type.unmarshal(r)
            else:
                values[field.name] = field.type.unmarshal(r, values[field.selector])
        except (TpmError, KeyError, ValueError):
            break
        offsets.append((field.name, start, field.type))
    return offsets


def random_value(t: TpmType, rng: random.Random, depth: int = 0) -> Any:
    """A value of a declared type that marshals (not necessarily one the command accepts)."""
    if isinstance(t, Interface):
        choices = sorted(t.values) + ([t.null] if t.allow_null else [])
        if t.ranges and (not choices or rng.random() < 0.3):
            lo, hi = rng.choice(t.ranges)
            return rng.randint(lo, hi)
        return rng.choice(choices) if choices else 0
    if isinstance(t, Attributes):
        return rng.getrandbits(8 * t.size) & ~t.reserved_mask
    if isinstance(t, Int):
        return rng.randint(t.min, t.max)
    if isinstance(t, UInt):
        return rng.choice((0, 1, rng.getrandbits(8 * t.size), rng.randint(0, 64)))
    if isinstance(t, FixedBytes):
        return rng.randbytes(t.size)
    if isinstance(t, Sized):
        return rng.randbytes(rng.randint(t.min_size, min(t.max_size, 48)))
    if isinstance(t, SizedStruct):
        if t.allow_empty and (depth > 3 or rng.random() < 0.3):
            return None
        return random_value(t.inner, rng, depth + 1)
    if isinstance(t, ListOf):
        count = rng.randint(0, min(t.max_count, 3 if depth < 3 else 0))
        return [random_value(t.element, rng, depth + 1) for _ in range(count)]
    if isinstance(t, Struct):
        fields: dict[str, Any] = {}
        for field in t.fields:
            if field.selector is None:
                fields[field.name] = random_value(field.type, rng, depth + 1)
                continue
            members = field.type.members
            if fields[field.selector] not in members:
                fields[field.selector] = rng.choice(sorted(members))
            member = members[fields[field.selector]]
            fields[field.name] = None if member is None else random_value(member, rng, depth + 1)
        return t(**fields)
    raise TypeError(f"no random value for {t!r}")


def random_params(decl: Command, rng: random.Random) -> bytes:
    """The parameter area of ``decl`` with every field drawn from its declared type."""
    for _ in range(8):
        value = random_value(decl.params, rng)
        try:
            return decl.params.pack(value)
        except (TpmError, KeyError, ValueError, TypeError, AttributeError, OverflowError):
            continue
    return b""


# --- the generator ---------------------------------------------------------------------------


@dataclasses.dataclass
class Entity:
    """What the generator believes a created handle is."""

    ref: Ref
    #: "external-hmac", "external-ecc", "external-rsa", "external-aes", "primary", "session",
    #: "trial", "sequence" or "hmac-sequence"
    kind: str
    auth: bytes = b""
    #: An external ECC key's private key, to sign digests VerifySignature checks.
    private: Any = None
    hash_alg: int = TPM_ALG.SHA256


@dataclasses.dataclass
class NvIndex:
    index: int
    nt: int
    size: int
    auth: bytes
    #: Believed written (an unwritten index reads as TPM_RC_NV_UNINITIALIZED).
    written: bool = False


WRONG_HANDLES = (
    TPM_RH.NULL,
    TPM_RH.OWNER,
    0x02000000,
    0x03000000,
    0x800000FF,
    0x81000001,
    0x01000000,
    0,
    17,
    0x400000FF,
)


class SequenceGenerator:
    """Random valid-or-slightly-mutated command sequences, from a seed."""

    def __init__(
        self,
        seed: int,
        length: int,
        *,
        codes: frozenset[int] | None = None,
        mutation_rate: float = 0.2,
        generic_rate: float = 0.08,
    ) -> None:
        """``codes``: the commands both TPMs implement (the declared-types generator draws only
        from these; None: every declared command)."""
        self.rng = random.Random(seed)
        self.generic_codes = sorted(
            c.code for c in COMMANDS if (codes is None or c.code in codes) and c.code not in UNSAFE_GENERIC
        )
        self.length = length
        self.mutation_rate = mutation_rate
        self.generic_rate = generic_rate
        self.entities: list[Entity] = []
        self.nv: list[NvIndex] = []
        self.steps: list[Step] = []
        self.recipes: list[Callable[[], Step | None]] = [
            self.pcr_extend,
            self.pcr_event,
            self.pcr_read,
            self.pcr_reset,
            self.hash,
            self.hash_sequence_start,
            self.sequence_update,
            self.sequence_complete,
            self.load_external_hmac,
            self.load_external_ecc,
            self.load_external_rsa,
            self.load_external_aes,
            self.read_public,
            self.hmac,
            self.hmac_start,
            self.verify_signature,
            self.encrypt_decrypt2,
            self.rsa_encrypt,
            self.create_primary,
            self.nv_define,
            self.nv_write,
            self.nv_read,
            self.nv_read_public,
            self.nv_increment_extend_setbits,
            self.nv_undefine,
            self.start_session,
            self.policy_command,
            self.policy_get_digest,
            self.flush,
            self.get_capability,
            self.test_parms,
            self.ecc_parameters,
            self.get_random,
        ]

    # -- plumbing

    def generate(self) -> list[Step]:
        while len(self.steps) < self.length:
            if self.rng.random() < self.generic_rate:
                step = self.generic()
            else:
                step = self.rng.choice(self.recipes)()
            if step is None:
                continue
            if self.rng.random() < self.mutation_rate:
                step = dataclasses.replace(step, mutation=self.mutation(step), compare=Compare.CODE)
            self.steps.append(step)
        return self.steps

    def step(self, code: int, handles: Sequence[HandleValue] = (), params: bytes = b"", **kw) -> Step:
        """A step for ``code``; one password session per authorized handle (the generator's
        belief of its auth value unless ``passwords`` is given)."""
        decl = COMMANDS.get(code)
        passwords = kw.pop("passwords", None)
        if passwords is None:
            passwords = tuple(
                self.auth_of(h) for h, spec in zip(handles, decl.handles, strict=True) if spec.role is not AuthRole.NONE
            )
        return Step(len(self.steps), code, tuple(handles), params, tuple(passwords), **kw)

    def auth_of(self, handle: HandleValue) -> bytes:
        if isinstance(handle, Ref):
            return next((e.auth for e in self.entities if e.ref == handle), b"")
        return next((n.auth for n in self.nv if n.index == handle), b"")

    def created(self, kind: str, **kw) -> Entity:
        entity = Entity(Ref(len(self.steps)), kind, **kw)
        self.entities.append(entity)
        return entity

    def pick(self, *kinds: str) -> Entity | None:
        found = [e for e in self.entities if e.kind in kinds]
        return self.rng.choice(found) if found else None

    def mutation(self, step: Step) -> Mutation:
        rng = self.rng
        decl = COMMANDS.get(step.code)
        sized = [off for _, off, t in field_offsets(decl, step.params) if isinstance(t, Sized | SizedStruct)]
        options = [MutationKind.COMMAND_SIZE]
        if step.params:
            options += [MutationKind.PARAM_BYTE, MutationKind.TRUNCATED]
        if sized:
            options.append(MutationKind.SIZE_OFF_BY_ONE)
        if step.handles:
            options.append(MutationKind.WRONG_HANDLE)
        kind = rng.choice(options)
        if kind is MutationKind.PARAM_BYTE:
            return Mutation(kind, rng.randrange(len(step.params)), rng.choice((0x01, 0x80, 0xFF, rng.randint(1, 255))))
        if kind is MutationKind.SIZE_OFF_BY_ONE:
            return Mutation(kind, rng.choice(sized), rng.choice((1, -1)))
        if kind is MutationKind.WRONG_HANDLE:
            return Mutation(kind, rng.randrange(len(step.handles)), rng.choice(WRONG_HANDLES))
        if kind is MutationKind.TRUNCATED:
            return Mutation(kind, rng.randint(1, min(4, len(step.params))), 0)
        return Mutation(kind, 0, rng.choice((1, -1)))

    def hash_alg(self) -> int:
        return self.rng.choice(HASHES)

    def data(self, most: int = 64) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, most))

    def any_handle(self) -> HandleValue:
        pool: list[HandleValue] = [e.ref for e in self.entities] + [n.index for n in self.nv]
        pool += [TPM_RH.OWNER, TPM_RH.NULL, TPM_RH.ENDORSEMENT, TPM_RH.PLATFORM, 16, 0]
        return self.rng.choice(pool)

    # -- commands without a recipe: parameters from the declaration

    def generic(self) -> Step | None:
        decl = COMMANDS.get(self.rng.choice(self.generic_codes))
        handles = [self.any_handle() for _ in decl.handles]
        return self.step(decl.code, handles, random_params(decl, self.rng), note="declared types")

    # -- PCRs

    def pcr_number(self) -> int:
        return self.rng.choice(RESETTABLE_PCRS + (0, 7, 10, self.rng.randint(0, 23)))

    def pcr_selection(self) -> bytes:
        banks = self.rng.sample(HASHES, self.rng.randint(1, 4))
        out = u32(len(banks))
        for alg in banks:
            out += u16(alg) + b"\x03" + self.rng.randbytes(3)
        return out

    def pcr_extend(self) -> Step:
        banks = self.rng.sample(HASHES, self.rng.randint(1, 4))
        digests = u32(len(banks)) + b"".join(u16(a) + self.rng.randbytes(DIGEST_SIZE[a]) for a in banks)
        return self.step(TPM_CC.PCR_Extend, [self.pcr_number()], digests, compare=Compare.BYTES)

    def pcr_event(self) -> Step:
        return self.step(TPM_CC.PCR_Event, [self.pcr_number()], tpm2b(self.data()), compare=Compare.BYTES)

    def pcr_read(self) -> Step:
        return self.step(TPM_CC.PCR_Read, [], self.pcr_selection(), compare=Compare.BYTES)

    def pcr_reset(self) -> Step:
        return self.step(TPM_CC.PCR_Reset, [self.pcr_number()], compare=Compare.BYTES)

    # -- hashing

    def hash(self) -> Step:
        # With the NULL hierarchy the ticket is the NULL ticket: deterministic.
        params = tpm2b(self.data(120)) + u16(self.hash_alg()) + u32(TPM_RH.NULL)
        return self.step(TPM_CC.Hash, [], params, compare=Compare.BYTES)

    def hash_sequence_start(self) -> Step:
        auth = self.rng.choice((b"", b"seq"))
        alg = self.rng.choice(HASHES + (TPM_ALG.NULL,))
        self.created("sequence", auth=auth, hash_alg=alg)
        return self.step(TPM_CC.HashSequenceStart, [], tpm2b(auth) + u16(alg))

    def sequence_update(self) -> Step | None:
        seq = self.pick("sequence", "hmac-sequence")
        if seq is None:
            return None
        return self.step(TPM_CC.SequenceUpdate, [seq.ref], tpm2b(self.data(100)), compare=Compare.BYTES)

    def sequence_complete(self) -> Step | None:
        seq = self.pick("sequence", "hmac-sequence")
        if seq is None:
            return None
        self.entities.remove(seq)
        if seq.kind == "sequence" and (seq.hash_alg == TPM_ALG.NULL) == (self.rng.random() < 0.9):
            # An event sequence (started with TPM_ALG_NULL) ends in EventSequenceComplete; now and
            # then the other ending, which both TPMs refuse.
            return self.step(
                TPM_CC.EventSequenceComplete, [self.pcr_number(), seq.ref], tpm2b(self.data()), compare=Compare.BYTES
            )
        params = tpm2b(self.data()) + u32(TPM_RH.NULL)
        return self.step(TPM_CC.SequenceComplete, [seq.ref], params, compare=Compare.BYTES)

    # -- external keys

    def load_external(self, sensitive: bytes, public, kind: str, **kw) -> Step:
        params = sensitive + T.TPM2B_PUBLIC.pack(public) + u32(TPM_RH.NULL)
        self.created(kind, **kw)
        return self.step(TPM_CC.LoadExternal, [], params, compare=Compare.BYTES)

    def load_external_hmac(self) -> Step:
        alg = self.hash_alg()
        auth = self.rng.choice((b"", b"key"))
        public = keyedhash_template(USER_WITH_AUTH | SIGN | NO_DA, TPM_ALG.HMAC, alg)
        key = self.rng.randbytes(self.rng.choice((16, 32, 64)))
        sensitive, public.unique = self.bound_secret(TPM_ALG.KEYEDHASH, auth, key)
        return self.load_external(sensitive, public, "external-hmac", auth=auth, hash_alg=alg)

    def bound_secret(self, alg: int, auth: bytes, secret: bytes) -> tuple[bytes, bytes]:
        """A TPM2B_SENSITIVE for a symmetric (keyed-hash or cipher) key and the unique field that
        binds the public area to it: H_nameAlg(seedValue || key) (Part 1, 27.7.3; nameAlg SHA-256)."""
        seed = self.rng.randbytes(DIGEST_SIZE[TPM_ALG.SHA256])
        area = T.TPMT_SENSITIVE(sensitiveType=alg, authValue=auth, seedValue=seed, sensitive=secret)
        return T.TPM2B_SENSITIVE.pack(area), hashlib.sha256(seed + secret).digest()

    def load_external_ecc(self) -> Step:
        private = ec.derive_private_key(self.rng.randint(1, 2**200), ec.SECP256R1())
        numbers = private.public_key().public_numbers()
        alg = self.rng.choice((TPM_ALG.SHA256, TPM_ALG.SHA384))
        public = ecc_template(USER_WITH_AUTH | SIGN, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=alg)
        public.unique = T.TPMS_ECC_POINT(x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big"))
        return self.load_external(b"\x00\x00", public, "external-ecc", private=private, hash_alg=alg)

    def load_external_rsa(self) -> Step:
        modulus = (self.rng.getrandbits(2048) | (1 << 2047) | 1).to_bytes(256, "big")
        public = rsa_template(USER_WITH_AUTH | DECRYPT | SIGN, sym=NO_SYM, unique=modulus)
        return self.load_external(b"\x00\x00", public, "external-rsa")

    def load_external_aes(self) -> Step:
        bits = self.rng.choice((128, 256))
        auth = self.rng.choice((b"", b"aes"))
        public = symcipher_template(USER_WITH_AUTH | DECRYPT | SIGN, bits)
        public.parameters.sym.mode = TPM_ALG.NULL
        sensitive, public.unique = self.bound_secret(TPM_ALG.SYMCIPHER, auth, self.rng.randbytes(bits // 8))
        return self.load_external(sensitive, public, "external-aes", auth=auth)

    def read_public(self) -> Step | None:
        key = self.pick("external-hmac", "external-ecc", "external-rsa", "external-aes", "primary")
        if key is None:
            return None
        compare = Compare.CODE if key.kind == "primary" else Compare.BYTES
        return self.step(TPM_CC.ReadPublic, [key.ref], compare=compare)

    def hmac(self) -> Step | None:
        key = self.pick("external-hmac")
        if key is None:
            return None
        alg = self.rng.choice((TPM_ALG.NULL, key.hash_alg))
        return self.step(TPM_CC.HMAC, [key.ref], tpm2b(self.data(100)) + u16(alg), compare=Compare.BYTES)

    def hmac_start(self) -> Step | None:
        key = self.pick("external-hmac")
        if key is None:
            return None
        step = self.step(TPM_CC.HMAC_Start, [key.ref], tpm2b(b"") + u16(TPM_ALG.NULL))
        self.created("hmac-sequence", auth=b"")
        return step

    def verify_signature(self) -> Step | None:
        key = self.pick("external-ecc")
        if key is None:
            return None
        digest = self.rng.randbytes(DIGEST_SIZE[key.hash_alg])
        signed = digest if self.rng.random() < 0.8 else self.rng.randbytes(len(digest))
        der = key.private.sign(signed, ec.ECDSA(utils.Prehashed(getattr(hashes, PY_HASH[key.hash_alg].upper())())))
        r, s = utils.decode_dss_signature(der)
        signature = u16(TPM_ALG.ECDSA) + u16(key.hash_alg) + tpm2b(r.to_bytes(32, "big")) + tpm2b(s.to_bytes(32, "big"))
        return self.step(TPM_CC.VerifySignature, [key.ref], tpm2b(digest) + signature, compare=Compare.BYTES)

    def encrypt_decrypt2(self) -> Step | None:
        key = self.pick("external-aes")
        if key is None:
            return None
        mode = self.rng.choice((TPM_ALG.CFB, TPM_ALG.CBC, TPM_ALG.ECB, TPM_ALG.CTR, TPM_ALG.OFB))
        data = self.rng.randbytes(16 * self.rng.randint(0, 3) + (self.rng.random() < 0.2))
        params = tpm2b(data) + bytes([self.rng.randint(0, 1)]) + u16(mode) + tpm2b(self.rng.randbytes(16))
        return self.step(TPM_CC.EncryptDecrypt2, [key.ref], params, compare=Compare.BYTES)

    def rsa_encrypt(self) -> Step | None:
        key = self.pick("external-rsa")
        if key is None:
            return None
        message = self.rng.randbytes(self.rng.choice((0, 1, 32, 255)))
        # TPM_ALG_NULL scheme: raw RSA, deterministic.
        return self.step(
            TPM_CC.RSA_Encrypt, [key.ref], tpm2b(message) + u16(TPM_ALG.NULL) + tpm2b(b""), compare=Compare.BYTES
        )

    def create_primary(self) -> Step:
        auth = self.rng.choice((b"", b"primary"))
        template = self.rng.choice(
            (
                ecc_template(),
                keyedhash_template(),
                symcipher_template(),
                ecc_template(USER_WITH_AUTH | SIGN | NO_DA, sym=NO_SYM),
            )
        )
        hierarchy = self.rng.choice((TPM_RH.OWNER, TPM_RH.NULL, TPM_RH.ENDORSEMENT))
        params = (
            T.TPM2B_SENSITIVE_CREATE.pack(T.TPMS_SENSITIVE_CREATE(userAuth=auth, data=b""))
            + T.TPM2B_PUBLIC.pack(template)
            + tpm2b(b"")
            + u32(0)
        )
        step = self.step(TPM_CC.CreatePrimary, [hierarchy], params)
        self.created("primary", auth=auth)
        return step

    # -- NV

    def nv_define(self) -> Step:
        index = NV_BASE + self.rng.randint(0, 7)
        nt = self.rng.choice((0, 0, 1, 2, 4))
        size = {1: 8, 2: 8, 4: DIGEST_SIZE[TPM_ALG.SHA256]}.get(nt, self.rng.choice((1, 16, 64)))
        auth = self.rng.choice((b"", b"nv"))
        attrs = TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD | TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.NO_DA
        attrs |= nt << 4
        if self.rng.random() < 0.2:
            attrs |= self.rng.choice((TPMA_NV.WRITEDEFINE, TPMA_NV.WRITEALL, TPMA_NV.ORDERLY, TPMA_NV.READ_STCLEAR))
        public = u32(index) + u16(TPM_ALG.SHA256) + u32(attrs) + tpm2b(b"") + u16(size)
        step = self.step(TPM_CC.NV_DefineSpace, [TPM_RH.OWNER], tpm2b(auth) + tpm2b(public))
        if all(n.index != index for n in self.nv):
            self.nv.append(NvIndex(index, nt, size, auth))
        return step

    def nv_pick(self, *types: int) -> NvIndex | None:
        found = [n for n in self.nv if n.nt in types]
        return self.rng.choice(found) if found else None

    def nv_auth_handle(self, index: NvIndex) -> tuple[HandleValue, bytes]:
        return (index.index, index.auth) if self.rng.random() < 0.7 else (TPM_RH.OWNER, b"")

    def nv_write(self) -> Step | None:
        index = self.nv_pick(0)
        if index is None:
            return None
        offset = 0 if self.rng.random() < 0.5 else self.rng.randint(0, index.size)
        data = self.rng.randbytes(self.rng.randint(0, max(0, index.size - offset) + 1))
        index.written = True
        auth, pw = self.nv_auth_handle(index)
        return self.step(TPM_CC.NV_Write, [auth, index.index], tpm2b(data) + u16(offset), passwords=[pw])

    def nv_read(self) -> Step | None:
        written = [n for n in self.nv if n.written]
        index = self.rng.choice(written) if written and self.rng.random() < 0.8 else self.nv_pick(0, 1, 2, 4)
        if index is None:
            return None
        offset = self.rng.randint(0, index.size)
        size = self.rng.randint(0, index.size - offset + 1)
        auth, pw = self.nv_auth_handle(index)
        return self.step(
            TPM_CC.NV_Read, [auth, index.index], u16(size) + u16(offset), passwords=[pw], compare=Compare.BYTES
        )

    def nv_read_public(self) -> Step | None:
        index = self.nv_pick(0, 1, 2, 4)
        handle = index.index if index else NV_BASE
        return self.step(TPM_CC.NV_ReadPublic, [handle], compare=Compare.BYTES)

    def nv_increment_extend_setbits(self) -> Step | None:
        index = self.nv_pick(1, 2, 4)
        if index is None:
            return None
        auth, pw = self.nv_auth_handle(index)
        index.written = True
        if index.nt == 1:
            return self.step(TPM_CC.NV_Increment, [auth, index.index], passwords=[pw])
        if index.nt == 2:
            bits = self.rng.getrandbits(64).to_bytes(8, "big")
            return self.step(TPM_CC.NV_SetBits, [auth, index.index], bits, passwords=[pw])
        return self.step(TPM_CC.NV_Extend, [auth, index.index], tpm2b(self.data()), passwords=[pw])

    def nv_undefine(self) -> Step | None:
        index = self.nv_pick(0, 1, 2, 4)
        if index is None:
            return None
        self.nv.remove(index)
        return self.step(TPM_CC.NV_UndefineSpace, [TPM_RH.OWNER, index.index])

    # -- sessions and policies

    def start_session(self) -> Step:
        kind = self.rng.choice((TPM_SE.POLICY, TPM_SE.TRIAL))
        alg = self.rng.choice((TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384))
        params = tpm2b(self.rng.randbytes(DIGEST_SIZE[alg])) + tpm2b(b"") + bytes([kind]) + u16(TPM_ALG.NULL) + u16(alg)
        step = self.step(TPM_CC.StartAuthSession, [TPM_RH.NULL, TPM_RH.NULL], params)
        self.created("trial" if kind == TPM_SE.TRIAL else "session", hash_alg=alg)
        return step

    def policy_command(self) -> Step | None:
        session = self.pick("session", "trial")
        if session is None:
            return None
        rng = self.rng
        alg = session.hash_alg
        choices: list[tuple[int, bytes]] = [
            (
                TPM_CC.PolicyCommandCode,
                u32(rng.choice((TPM_CC.NV_Read, TPM_CC.Sign, TPM_CC.Unseal, TPM_CC.ReadPublic))),
            ),
            (TPM_CC.PolicyAuthValue, b""),
            (TPM_CC.PolicyPassword, b""),
            (TPM_CC.PolicyLocality, bytes([rng.choice((1, 2, 3, 0x1F, 0x20, 0))])),
            (TPM_CC.PolicyNvWritten, bytes([rng.randint(0, 1)])),
            (TPM_CC.PolicyCpHash, tpm2b(rng.randbytes(DIGEST_SIZE[alg]))),
            (TPM_CC.PolicyNameHash, tpm2b(rng.randbytes(DIGEST_SIZE[alg]))),
            (TPM_CC.PolicyTemplate, tpm2b(rng.randbytes(DIGEST_SIZE[alg]))),
            (TPM_CC.PolicyPhysicalPresence, b""),
            (TPM_CC.PolicyRestart, b""),
            (TPM_CC.PolicyOR, u32(2) + tpm2b(rng.randbytes(DIGEST_SIZE[alg])) + tpm2b(rng.randbytes(DIGEST_SIZE[alg]))),
            (
                TPM_CC.PolicyPCR,
                tpm2b(b"" if rng.random() < 0.5 else rng.randbytes(DIGEST_SIZE[alg])) + self.pcr_selection(),
            ),
        ]
        code, params = rng.choice(choices)
        return self.step(code, [session.ref], params, compare=Compare.BYTES)

    def policy_get_digest(self) -> Step | None:
        session = self.pick("session", "trial")
        if session is None:
            return None
        return self.step(TPM_CC.PolicyGetDigest, [session.ref], compare=Compare.BYTES)

    def flush(self) -> Step | None:
        entity = self.pick(*{e.kind for e in self.entities})
        if entity is None:
            return None
        self.entities.remove(entity)
        # FlushContext names its handle as a parameter: resolved per TPM like a handle.
        return self.step(TPM_CC.FlushContext, [], param_handles=(entity.ref,))

    # -- fixed facts

    def get_capability(self) -> Step:
        cap, prop, count = self.rng.choice(AGREEING_CAPABILITIES)
        return self.step(TPM_CC.GetCapability, [], u32(cap) + u32(prop) + u32(count), compare=Compare.BYTES)

    def test_parms(self) -> Step:
        decl = COMMANDS.get(TPM_CC.TestParms)
        if self.rng.random() < 0.5:
            params = random_params(decl, self.rng)
        else:
            template = self.rng.choice(
                (
                    rsa_template(bits=self.rng.choice((1024, 2048, 3072, 4096, 1000))),
                    ecc_template(curve=self.rng.randint(1, 5)),
                    symcipher_template(bits=self.rng.choice((128, 192, 256, 64))),
                )
            )
            params = u16(template.type) + T.TPMU_PUBLIC_PARMS.members[template.type].pack(template.parameters)
        return self.step(TPM_CC.TestParms, [], params, compare=Compare.BYTES)

    def ecc_parameters(self) -> Step:
        return self.step(
            TPM_CC.ECC_Parameters, [], u16(self.rng.choice((1, 2, 3, 4, 5, 0x10, 0x20, 0x99))), compare=Compare.BYTES
        )

    def get_random(self) -> Step:
        return self.step(TPM_CC.GetRandom, [], u16(self.rng.choice((0, 1, 32, 48, 64, 100))), compare=Compare.SIZE)


#: Commands the declared-types generator leaves out: they change the state both TPMs would need
#: to agree on afterwards in ways the comparison cannot follow (seeds, the clock, algorithms),
#: or take seconds (RSA key generation) without telling anything more.
UNSAFE_GENERIC = frozenset(
    {
        TPM_CC.ChangeEPS,
        TPM_CC.ChangePPS,
        TPM_CC.Clear,
        TPM_CC.ClockSet,
        TPM_CC.ClockRateAdjust,
        TPM_CC.Shutdown,
        TPM_CC.Startup,
        TPM_CC.SelfTest,
        TPM_CC.IncrementalSelfTest,
        TPM_CC.GetTestResult,
        TPM_CC.ReadClock,
        TPM_CC.GetTime,
        TPM_CC.SetAlgorithmSet,
        TPM_CC.PCR_Allocate,
        TPM_CC.Vendor_TCG_Test,
        TPM_CC.CreatePrimary,
        TPM_CC.Create,
        TPM_CC.CreateLoaded,
        TPM_CC.GetCapability,
        TPM_CC.FlushContext,
        TPM_CC.HierarchyControl,
        TPM_CC.DictionaryAttackParameters,
        TPM_CC.DictionaryAttackLockReset,
        TPM_CC.PP_Commands,
        TPM_CC.SetCommandCodeAuditStatus,
        TPM_CC.GetRandom,
        TPM_CC.StirRandom,
        TPM_CC.ContextSave,
        TPM_CC.ContextLoad,
    }
)

#: GetCapability requests both TPMs answer identically (vendor strings, revision, firmware,
#: algorithm and command lists and the transient-handle numbering legitimately differ).
AGREEING_CAPABILITIES: tuple[tuple[int, int, int], ...] = (
    (TPM_CAP.PCRS, 0, 1),
    (TPM_CAP.PCR_PROPERTIES, 0, 64),
    (TPM_CAP.HANDLES, 0x01000000, 16),
    (TPM_CAP.HANDLES, 0x40000000, 16),
    (TPM_CAP.HANDLES, 0x81000000, 16),
    (TPM_CAP.TPM_PROPERTIES, 0x100, 2),
    (TPM_CAP.AUTH_POLICIES, 0x40000000, 16),
)


# --- a whole run -----------------------------------------------------------------------------


@dataclasses.dataclass
class RunReport:
    sequences: int = 0
    commands: int = 0
    agreements: int = 0
    by_kind: dict[Kind, int] = dataclasses.field(default_factory=dict)
    known_hits: dict[str, int] = dataclasses.field(default_factory=dict)
    #: command name -> (succeeded on both, ran): shows the generator's valid steps are valid.
    successes: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    #: (seed, shrunk reproducer, the verdict of its last step)
    unexplained: list[tuple[int, list[Step], Verdict]] = dataclasses.field(default_factory=list)


def run_many(
    tpms: TwoTpms, seeds: Iterable[int], length: int, *, shrink_failures: bool = True, on_sequence=None
) -> RunReport:
    report = RunReport()
    for seed in seeds:
        steps = SequenceGenerator(seed, length, codes=tpms.common_codes).generate()
        result = run_sequence(tpms, steps)
        report.sequences += 1
        for verdict in result.verdicts:
            report.commands += 1
            tally = report.successes.setdefault(verdict.outcome.step.name, [0, 0])
            tally[0] += verdict.outcome.theirs_rc == 0 and verdict.outcome.ours_rc == 0
            tally[1] += 1
            if verdict.kind is Kind.AGREE:
                report.agreements += 1
                continue
            report.by_kind[verdict.kind] = report.by_kind.get(verdict.kind, 0) + 1
            if verdict.known is not None:
                report.known_hits[verdict.known.name] = report.known_hits.get(verdict.known.name, 0) + 1
        bad = result.first_unexplained
        if bad is not None:
            small = shrink(tpms, steps, bad) if shrink_failures else list(steps)
            last = run_sequence(tpms, small).first_unexplained or bad
            report.unexplained.append((seed, small, last))
        if on_sequence is not None:
            on_sequence(seed, result)
    return report
