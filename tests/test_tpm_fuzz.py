"""Random, structured and truncated command buffers always produce a well-formed
response, and never crash a handler.

Every command runs through :class:`support.engine_oracle.EngineOracle`: the
dispatcher turns an exception into a well-formed TPM_RC_FAILURE, so the oracle
fails the test on an unexpected TPM_RC_FAILURE or an ERROR log from the engine,
as well as on a malformed response.

Each example runs against a fresh copy of one prepared engine (restored from
its state blobs, with a deterministic random source), so a failure reproduces
and shrinks.  The prepared engine has a loaded ECC storage primary, an RSA
storage primary, a persistent ECDSA signing key (for the attestation commands),
keyed-hash and AES (CMAC) children, a hash and an event sequence, HMAC (bound and
unbound), policy and trial sessions, so generated commands that name those handles get
past handle lookup.

VTPM_FUZZ_EXAMPLES=N runs every test with N examples (default: small).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import session_client as sc
from support.engine_oracle import EngineOracle
from support.object_templates import (
    NO_SYM,
    SIGNING,
    create_cmd,
    create_primary_cmd,
    creation_params,
    ecc_template,
    keyedhash_template,
    load_cmd,
    rsa_template,
    symcipher_template,
)
from support.tpm_client import Response, command, tpm2b, u16, u32
from support.tpm_strategies import values
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.command import AuthRole
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.marshal import Reader

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
_OVERRIDE = int(os.environ.get("VTPM_FUZZ_EXAMPLES", "0"))


def fuzz_settings(default: int):
    return settings(
        max_examples=_OVERRIDE or default,
        deadline=None,
        database=None if _OVERRIDE else settings().database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def deterministic_random(seed: bytes = b"fuzz"):
    counter = [0]

    def random(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(seed + counter[0].to_bytes(8, "big")).digest()
        return out[:n]

    return random


# --- the prepared engine ---------------------------------------------------------------------------


#: libtpms' transient slot count: the prepared engine keeps slot exhaustion one command away.
SLOTS = 3
#: NV indices of each kind the prepared engine defines (handle, TPM_NT, attributes, size), and a
#: persistent copy of the ECC primary.
NV_AUTH_RW = (1 << 2) | (1 << 18) | (1 << 1) | (1 << 17)  # AUTHWRITE | AUTHREAD | OWNERWRITE | OWNERREAD
NV_INDICES = (
    (0x01500100, 0x0, NV_AUTH_RW, 32),  # ordinary
    (0x01500101, 0x1, NV_AUTH_RW, 8),  # counter
    (0x01500102, 0x2, NV_AUTH_RW, 8),  # bits
    (0x01500103, 0x4, NV_AUTH_RW, 32),  # extend (sha256)
    (0x01500104, 0x9, (1 << 1) | (1 << 17) | (1 << 18), 8),  # PIN pass: OWNERWRITE | OWNERREAD | AUTHREAD
)
PERSISTENT = 0x81000100
#: A persistent ECDSA signing key, so the attestation commands (Quote, Certify, ...) get past
#: their signHandle without taking one of the transient slots.
PERSISTENT_SIGNER = 0x81000101


def _define_nv(ok, names: dict[int, bytes]) -> None:
    for handle, nt, attrs, size in NV_INDICES:
        public = u32(handle) + u16(TPM_ALG.SHA256) + u32(attrs | nt << 4) + u16(0) + u16(size)
        define = command(TPM_CC.NV_DefineSpace, tpm2b(b"") + tpm2b(public), u32(TPM_RH.OWNER), b"")
        assert ok(define).rc == 0
        resp = ok(command(TPM_CC.NV_ReadPublic, handles=u32(handle)))
        r = Reader(resp.params())
        T.TPM2B_NV_PUBLIC.unmarshal(r)
        names[handle] = T.TPM2B_NAME.unmarshal(r)
    pin = u32(0) + u32(5)  # pinCount 0, pinLimit 5
    assert ok(command(TPM_CC.NV_Write, tpm2b(pin) + u16(0), u32(TPM_RH.OWNER) + u32(0x01500104), b"")).rc == 0


TEMPLATES_SIGNER = ecc_template(attrs=SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256)


def _prepare():
    engine = EngineOracle(Engine(random=deterministic_random(b"prepare"), max_objects=SLOTS))
    ok = lambda cmd: Response(engine.execute(cmd))  # noqa: E731
    assert ok(STARTUP_CLEAR).rc == 0
    names: dict[int, bytes] = {}

    def created(resp: Response) -> int:
        assert resp.rc == 0, hex(resp.rc)
        return int.from_bytes(resp.raw[10:14], "big")

    ecc = created(ok(create_primary_cmd(ecc_template())))
    evict = command(TPM_CC.EvictControl, u32(PERSISTENT), u32(TPM_RH.OWNER) + u32(ecc), b"")
    assert ok(evict).rc == 0
    signer = created(ok(create_primary_cmd(TEMPLATES_SIGNER)))
    assert ok(command(TPM_CC.EvictControl, u32(PERSISTENT_SIGNER), u32(TPM_RH.OWNER) + u32(signer), b"")).rc == 0
    assert ok(command(TPM_CC.FlushContext, u32(signer))).rc == 0
    _define_nv(ok, names)
    # Three object slots: the ECC primary and a hash sequence stay loaded, one slot stays free; an
    # RSA primary and a keyed-hash child are context-saved (their contexts feed ContextLoad).
    contexts = []
    rsa = created(ok(create_primary_cmd(rsa_template(bits=1024))))
    child = ok(create_cmd(ecc, keyedhash_template(attrs=SIGNING, scheme=TPM_ALG.HMAC)))
    assert child.rc == 0, hex(child.rc)
    r = Reader(child.params())
    private, public = T.TPM2B_PRIVATE.unmarshal(r), T.TPM2B_PUBLIC.unmarshal(r)
    loadable = T.TPM2B_PRIVATE.pack(private) + T.TPM2B_PUBLIC.pack(public)  # Load parameters under ecc
    hmac_key = created(ok(load_cmd(ecc, private, public)))
    for handle in (rsa, hmac_key):
        saved = ok(command(TPM_CC.ContextSave, handles=u32(handle)))
        assert saved.rc == 0, hex(saved.rc)
        contexts.append(saved.params())
        assert ok(command(TPM_CC.FlushContext, u32(handle))).rc == 0
    # An AES key with no mode and sign, which TPM2_MAC/MAC_Start take for CMAC (context-saved too).
    cmac_area = symcipher_template(attrs=SIGNING)
    cmac_area = dataclasses.replace(
        cmac_area,
        parameters=T.TPMS_SYMCIPHER_PARMS(sym=dataclasses.replace(cmac_area.parameters.sym, mode=TPM_ALG.NULL)),
    )
    r = Reader(ok(create_cmd(ecc, cmac_area)).params())
    cmac_key = created(ok(load_cmd(ecc, T.TPM2B_PRIVATE.unmarshal(r), T.TPM2B_PUBLIC.unmarshal(r))))
    saved = ok(command(TPM_CC.ContextSave, handles=u32(cmac_key)))
    assert saved.rc == 0, hex(saved.rc)
    contexts.append(saved.params())
    assert ok(command(TPM_CC.FlushContext, u32(cmac_key))).rc == 0
    seq = created(ok(command(TPM_CC.HashSequenceStart, u16(0) + u16(TPM_ALG.SHA256))))
    event_seq = created(ok(command(TPM_CC.HashSequenceStart, u16(0) + u16(TPM_ALG.NULL))))
    assert ok(command(TPM_CC.FlushContext, u32(event_seq))).rc == 0  # (a sequence of commands may start one)
    # Names of the objects, for the HMAC sessions' cpHash.
    for handle in (ecc, PERSISTENT, PERSISTENT_SIGNER):
        resp = ok(command(TPM_CC.ReadPublic, handles=u32(handle)))
        r = Reader(resp.params())
        T.TPM2B_PUBLIC.unmarshal(r)
        names[handle] = T.TPM2B_NAME.unmarshal(r)
    for handle in (seq, event_seq):
        names[handle] = u32(handle)
    # Three session slots: an HMAC and a policy session stay loaded, one slot stays free; a trial
    # session is context-saved (ContextLoad brings it back).
    trial = sc.start_session(engine.execute, sc.SE_TRIAL, sc.SHA256, nonce_caller=bytes(16))
    saved = ok(command(TPM_CC.ContextSave, handles=u32(trial.handle)))
    assert saved.rc == 0, hex(saved.rc)
    contexts.append(saved.params())
    sessions = {
        "trial": trial,
        "bound_xor": sc.start_session(
            engine.execute,
            sc.SE_HMAC,
            sc.SHA1,
            sc.XOR_SHA256,
            bind=(TPM_RH.OWNER, u32(TPM_RH.OWNER), b""),
            nonce_caller=bytes(20),
        ),
        "policy": sc.start_session(engine.execute, sc.SE_POLICY, sc.SHA256, sc.AES128, nonce_caller=bytes(16)),
    }
    permanent, volatile = engine.engine.permanent_blob(), engine.engine.volatile_blob()
    # The same TPM after Shutdown(STATE) and a power cycle, for Startup (CLEAR or STATE).
    assert ok(command(TPM_CC.Shutdown, u16(1))).rc == 0
    shut_down = engine.engine.permanent_blob()
    objects = [ecc, seq, event_seq, rsa, hmac_key, cmac_key]
    return permanent, volatile, shut_down, names, sessions, objects, contexts, loadable


PERMANENT, VOLATILE, PERMANENT_SHUT_DOWN, NAMES, SESSIONS, OBJECTS, CONTEXTS, LOADABLE = _prepare()
#: Known-good creation parameters (inSensitive, inPublic, outsideInfo, creationPCR) for
#: CreatePrimary, Create and CreateLoaded (cheap key types only: no RSA key generation).
TEMPLATES = (
    ecc_template(),
    ecc_template(attrs=SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256),
    keyedhash_template(),
    keyedhash_template(attrs=SIGNING, scheme=TPM_ALG.HMAC),
    symcipher_template(),
)
CREATION_PARAMS = [
    creation_params(area, auth=b"a", data=b"s" if area.type == TPM_ALG.KEYEDHASH else b"") for area in TEMPLATES
]
#: CreateLoaded takes only inSensitive and inPublic (a TPM2B_TEMPLATE).
CREATE_LOADED_PARAMS = [
    T.TPM2B_SENSITIVE_CREATE.pack(T.TPMS_SENSITIVE_CREATE(userAuth=b"a", data=b"")) + T.TPM2B_PUBLIC.pack(area)
    for area in TEMPLATES
]
COMMANDS = Engine.from_blobs(PERMANENT, VOLATILE).table  # the engine's own command table
SESSION_HANDLES = [s.handle for s in SESSIONS.values()]
PERMANENT_HANDLES = [TPM_RH.OWNER, TPM_RH.NULL, TPM_RH.ENDORSEMENT, TPM_RH.PLATFORM, TPM_RH.LOCKOUT, TPM_RH.PW]
NV_HANDLES = [handle for handle, *_ in NV_INDICES]
HANDLE_POOL = [int(h) for h in PERMANENT_HANDLES] + list(range(24)) + OBJECTS + SESSION_HANDLES + NV_HANDLES
#: Handles that resolve in the prepared engine: hierarchies, PCRs, the ECC primary and hash
#: sequence, the loaded HMAC and policy sessions, the NV indices and the persistent primary.
LIVE_HANDLES = (
    [int(h) for h in PERMANENT_HANDLES]
    + list(range(24))
    + OBJECTS[:2]
    + SESSION_HANDLES[1:]
    + NV_HANDLES
    + [PERSISTENT, PERSISTENT_SIGNER]
)
CODES = [c.code for c in COMMANDS]


def fresh(cmd=None) -> EngineOracle:
    """A copy of the prepared engine, wrapped in the oracle (for Startup: the prepared TPM
    after Shutdown(STATE) and _TPM_Init).  Physical presence is asserted, so PP_Commands
    reaches its handler."""
    options = {"random": deterministic_random(), "max_objects": SLOTS, "physical_presence": True}
    if cmd is not None and cmd.code == TPM_CC.Startup:
        return EngineOracle(Engine.from_blobs(PERMANENT_SHUT_DOWN, None, **options))
    return EngineOracle(Engine.from_blobs(PERMANENT, VOLATILE, **options))


def name_of(handle: int) -> bytes:
    return NAMES.get(handle, u32(handle))


localities = st.one_of(st.integers(0, 4), st.sampled_from([5, 31, 32, 255]))


@st.composite
def handle_area(draw, cmd) -> list[int]:
    out = []
    for spec in cmd.handles:
        typed = [h for h in LIVE_HANDLES if not hasattr(spec.type, "accepts") or spec.type.accepts(h)]
        choice = draw(st.integers(0, 9))  # (st.one_of does not weight repeated branches)
        if typed and choice < 7:
            out.append(draw(st.sampled_from(typed)))
        else:
            out.append(draw(st.one_of(st.sampled_from(HANDLE_POOL), values(spec.type), st.integers(0, 0xFFFFFFFF))))
    return out


@st.composite
def parameters(draw, cmd) -> bytes:
    """The command's parameters: a valid value of its declaration, sometimes mutated."""
    if cmd.code == TPM_CC.ContextLoad and draw(st.booleans()):
        data = draw(st.sampled_from(CONTEXTS))
    elif cmd.code in (TPM_CC.CreatePrimary, TPM_CC.Create) and draw(st.booleans()):
        data = draw(st.sampled_from(CREATION_PARAMS))
    elif cmd.code == TPM_CC.CreateLoaded and draw(st.booleans()):
        data = draw(st.sampled_from(CREATE_LOADED_PARAMS))
    elif cmd.code == TPM_CC.Load and draw(st.booleans()):
        data = LOADABLE
    else:
        data = cmd.params.pack(draw(values(cmd.params)))
    mutation = draw(st.sampled_from(["none"] * 5 + ["truncate", "flip", "append", "random"]))
    if mutation == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    elif mutation == "append":
        data += draw(st.binary(min_size=1, max_size=8))
    elif mutation == "random":
        data = draw(st.binary(max_size=len(data) + 16))
    return data


@st.composite
def structured_command(draw):
    """(cmd, run(execute) -> response): valid handles, generated parameters, and sessions:
    none, password, or HMAC/policy sessions with correct HMACs and random attributes."""
    cmd = COMMANDS.get(draw(st.sampled_from(CODES)))
    handles = draw(handle_area(cmd))
    params = draw(parameters(cmd))
    auth_count = sum(1 for spec in cmd.handles if spec.role is not AuthRole.NONE)
    mode = draw(
        st.sampled_from(["none", "password", "password", "sessions"])
        if auth_count == 0
        else st.sampled_from(["password", "password", "sessions", "none"])
    )
    if mode == "none":
        body = b"".join(u32(h) for h in handles) + params
        return cmd, lambda tpm, loc: tpm.execute(command(cmd.code, body), loc)
    if mode == "password":
        body = params
        password = draw(st.sampled_from([b"", b"", b"x"]))
        return cmd, lambda tpm, loc: tpm.execute(
            command(cmd.code, body, b"".join(u32(h) for h in handles), password), loc
        )
    uses = []
    auth_specs = [(h, spec) for h, spec in zip(handles, cmd.handles, strict=False) if spec.role is not AuthRole.NONE]
    extra = draw(st.integers(0, 3 - len(auth_specs)))
    for i in range(len(auth_specs) + extra):
        which = draw(st.sampled_from([None] + list(SESSIONS)))
        attrs = draw(
            st.sampled_from(
                [
                    sc.CONTINUE,
                    sc.CONTINUE,
                    sc.CONTINUE | sc.DECRYPT,
                    sc.CONTINUE | sc.ENCRYPT,
                    sc.CONTINUE | sc.DECRYPT | sc.ENCRYPT,
                    0,
                    0x80 | sc.CONTINUE,
                ]
            )
        )
        entity = auth_specs[i][0] if i < len(auth_specs) else None
        uses.append(
            (
                which,
                attrs,
                None if entity is None else name_of(entity),
                draw(st.binary(min_size=16, max_size=16)),
                draw(st.booleans()),
            )
        )
    handle_names = [(h, name_of(h)) for h in handles]

    def run(tpm, loc):
        sessions = {k: dataclasses.replace(s) for k, s in SESSIONS.items()}
        built = [
            sc.Use(
                None if w is None else sessions[w],
                attributes=a if w is not None else sc.CONTINUE,
                name=n,
                nonce=None if w is None else nonce[: sessions[w].nonce_size] or None,
                password=pw and w == "policy",
            )
            for w, a, n, nonce, pw in uses
        ]
        result = sc.run(
            lambda c: tpm.execute(c, loc),
            cmd.code,
            handle_names,
            params,
            built,
            response_handles=len(cmd.response_handles),
            check=False,
        )
        return result.raw

    return cmd, run


# --- the tests ---------------------------------------------------------------------------------------


@fuzz_settings(300)
@given(st.binary(max_size=200), localities)
def test_random_bytes(data, locality):
    fresh().execute(data, locality)


@fuzz_settings(300)
@given(
    st.one_of(st.binary(min_size=10, max_size=200), st.binary(max_size=12)).map(
        lambda b: (b[:2] if len(b) >= 2 else b) + len(b).to_bytes(4, "big") + b[6:]
    )
)
def test_random_bytes_with_correct_size(data):
    fresh().execute(data)


@fuzz_settings(300)
@given(
    code=st.sampled_from(CODES),
    body=st.binary(max_size=120),
    sessions=st.booleans(),
    locality=localities,
    handles=st.lists(st.sampled_from(HANDLE_POOL), max_size=2),
)
def test_random_bodies_for_every_command(code, body, sessions, locality, handles):
    cmd = command(code, body, b"".join(u32(h) for h in handles), auth=b"" if sessions else None)
    fresh().execute(cmd, locality)


@fuzz_settings(500)
@given(structured_command(), localities)
def test_structured_commands(case, locality):
    cmd, run = case
    run(fresh(cmd), locality)


@fuzz_settings(150)
@given(st.lists(structured_command(), min_size=2, max_size=4), st.lists(localities, min_size=4, max_size=4))
def test_command_sequences(cases, locs):
    tpm = fresh()
    for (_, run), loc in zip(cases, locs, strict=False):
        run(tpm, loc)


@fuzz_settings(200)
@given(code=st.sampled_from(CODES), body=st.binary(max_size=64), cut=st.integers(0, 80))
def test_truncated_commands(code, body, cut):
    cmd = command(code, body, auth=b"")
    truncated = cmd[: min(cut, len(cmd))]
    resp = fresh().execute(truncated)
    assert truncated == cmd or resp[6:10] != b"\0\0\0\0"


@fuzz_settings(200)
@given(structured_command(), st.data())
def test_truncated_structured_commands(case, data):
    cmd, run = case
    sent = []

    class Capture:
        def execute(self, c, loc=0):
            sent.append(c)
            return bytes.fromhex("80010000000a00000101")

    try:
        run(Capture(), 0)
    except Exception:
        pass
    full = sent[0]
    cut = data.draw(st.integers(0, len(full) - 1))
    truncated = full[:cut]
    # Keep the size field honest for some cuts so the body, not the header, is short.
    if cut >= 6 and data.draw(st.booleans()):
        truncated = truncated[:2] + len(truncated).to_bytes(4, "big") + truncated[6:]
    # (A cut at a parameter boundary may still be a valid, shorter command: only the oracle judges.)
    fresh().execute(truncated)


def test_prepared_engine_has_its_handles():
    tpm = fresh()
    assert Response(tpm.execute(command(TPM_CC.ReadPublic, handles=u32(OBJECTS[0])))).rc == 0
    assert Response(tpm.execute(command(TPM_CC.ContextLoad, CONTEXTS[-1]))).rc == 0  # the trial session
    assert Response(tpm.execute(command(TPM_CC.ContextLoad, CONTEXTS[0]))).rc == 0  # the RSA primary
    assert Response(tpm.execute(command(TPM_CC.FlushContext, u32(OBJECTS[1])))).rc == 0  # the sequence
    assert Response(tpm.execute(command(TPM_CC.ContextLoad, CONTEXTS[1]))).rc == 0  # the keyed-hash key
    assert len(SESSION_HANDLES) == 3
