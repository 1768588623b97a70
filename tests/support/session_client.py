"""The caller's side of TPM 2.0 HMAC and policy sessions, for tests.

Written from Part 1 of the Library specification independently of the
engine (none of its session, KDF or encryption code is used): KDFa, KDFe,
the command and response HMACs, and AES-CFB / XOR parameter encryption are
computed here with ``cryptography``, so the tests check the engine against a
second implementation, and the same code drives Debian's swtpm for comparison.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from .tpm_client import tpm2b, u16, u32

try:  # cryptography >= 43 keeps CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

SHA1, SHA256, SHA384, SHA512 = 0x0004, 0x000B, 0x000C, 0x000D
ALG_AES, ALG_XOR, ALG_NULL, ALG_CFB = 0x0006, 0x000A, 0x0010, 0x0043
SE_HMAC, SE_POLICY, SE_TRIAL = 0, 1, 3
RH_NULL, RS_PW = 0x40000007, 0x40000009
ST_NO_SESSIONS, ST_SESSIONS = 0x8001, 0x8002
CC_StartAuthSession = 0x176

CONTINUE, DECRYPT, ENCRYPT = 0x01, 0x20, 0x40

_HASHES = {SHA1: hashes.SHA1, SHA256: hashes.SHA256, SHA384: hashes.SHA384, SHA512: hashes.SHA512}


def digest_size(alg: int) -> int:
    return _HASHES[alg].digest_size


def digest(alg: int, data: bytes) -> bytes:
    h = hashes.Hash(_HASHES[alg]())
    h.update(data)
    return h.finalize()


def mac(alg: int, key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, _HASHES[alg]())
    h.update(data)
    return h.finalize()


def kdfa(alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """SP 800-108 counter-mode KDF with HMAC, as Part 1 defines KDFa."""
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += mac(alg, key, u32(counter) + label + b"\x00" + context_u + context_v + u32(bits))
        counter += 1
    out = out[: (bits + 7) // 8]
    if bits % 8:
        out = bytes([out[0] & (0xFF >> (8 - bits % 8))]) + out[1:]
    return out


def strip(auth: bytes) -> bytes:
    return auth.rstrip(b"\x00")


@dataclasses.dataclass(frozen=True)
class Sym:
    """A session's TPMT_SYM_DEF: AES-CFB with ``bits``, XOR with a hash, or NULL."""

    alg: int = ALG_NULL
    bits: int = 0  # AES key bits; for XOR the hash algorithm

    def marshal(self) -> bytes:
        if self.alg == ALG_AES:
            return u16(ALG_AES) + u16(self.bits) + u16(ALG_CFB)
        if self.alg == ALG_XOR:
            return u16(ALG_XOR) + u16(self.bits)
        return u16(ALG_NULL)


AES128 = Sym(ALG_AES, 128)
XOR_SHA256 = Sym(ALG_XOR, SHA256)


def start_auth_session_command(
    nonce_caller: bytes,
    kind: int = SE_HMAC,
    auth_hash: int = SHA256,
    sym: Sym = Sym(),
    bind: int = RH_NULL,
    tpm_key: int = RH_NULL,
    salt: bytes = b"",
) -> bytes:
    body = u32(tpm_key) + u32(bind) + tpm2b(nonce_caller) + tpm2b(salt) + bytes([kind]) + sym.marshal() + u16(auth_hash)
    return u16(ST_NO_SESSIONS) + u32(10 + len(body)) + u32(CC_StartAuthSession) + body


@dataclasses.dataclass
class ClientSession:
    """What the caller keeps for one session: handle, nonces, key, algorithms."""

    handle: int
    auth_hash: int
    nonce_tpm: bytes
    session_key: bytes
    sym: Sym = dataclasses.field(default_factory=Sym)
    #: Name and authValue of the bind entity (bound HMAC sessions only).
    bind: tuple[bytes, bytes] | None = None
    nonce_size: int = 16

    def hmac_key(self, name: bytes | None, auth: bytes, include_auth: bool | None = None) -> bytes:
        """sessionKey || authValue, leaving authValue out for the entity the session is bound to."""
        if include_auth is None:
            include_auth = self.bind is None or name is None or (name, strip(auth)) != self.bind
        return self.session_key + (strip(auth) if include_auth and name is not None else b"")


def start_session(
    execute: Callable[[bytes], bytes],
    kind: int = SE_HMAC,
    auth_hash: int = SHA256,
    sym: Sym = Sym(),
    bind: tuple[int, bytes, bytes] | None = None,
    nonce_caller: bytes | None = None,
) -> ClientSession:
    """TPM2_StartAuthSession; ``bind`` is (handle, Name, authValue) of the bind entity."""
    nonce_caller = nonce_caller if nonce_caller is not None else os.urandom(digest_size(auth_hash))
    bind_handle = bind[0] if bind else RH_NULL
    resp = execute(start_auth_session_command(nonce_caller, kind, auth_hash, sym, bind_handle))
    rc = int.from_bytes(resp[6:10], "big")
    if rc:
        raise AssertionError(f"StartAuthSession failed: 0x{rc:x}")
    handle = int.from_bytes(resp[10:14], "big")
    size = int.from_bytes(resp[14:16], "big")
    nonce_tpm = resp[16 : 16 + size]
    key = b""
    if bind is not None:
        key = kdfa(auth_hash, strip(bind[2]), b"ATH", nonce_tpm, nonce_caller, 8 * digest_size(auth_hash))
    bound = (bind[1], strip(bind[2])) if bind is not None and kind == SE_HMAC else None
    return ClientSession(handle, auth_hash, nonce_tpm, key, sym, bound, len(nonce_caller))


# --- parameter encryption ------------------------------------------------------------


def _crypt(session: ClientSession, key: bytes, data: bytes, newer: bytes, older: bytes, encrypt: bool) -> bytes:
    if session.sym.alg == ALG_NULL:
        return data  # nothing to do (the TPM refuses such a session for encryption)
    if session.sym.alg == ALG_XOR:
        mask = kdfa(session.auth_hash, key, b"XOR", newer, older, 8 * len(data))
        return bytes(a ^ b for a, b in zip(data, mask, strict=True))
    keybytes = session.sym.bits // 8
    material = kdfa(session.auth_hash, key, b"CFB", newer, older, session.sym.bits + 128)
    cipher = Cipher(algorithms.AES(material[:keybytes]), CFB(material[keybytes:]))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


def crypt_first_tpm2b(
    session: ClientSession, key: bytes, params: bytes, newer: bytes, older: bytes, encrypt: bool
) -> bytes:
    size = int.from_bytes(params[:2], "big")
    return params[:2] + _crypt(session, key, params[2 : 2 + size], newer, older, encrypt) + params[2 + size :]


# --- one command through one or more sessions -------------------------------------------


@dataclasses.dataclass
class Use:
    """One session in one command: attributes, and the entity it authorizes (if any)."""

    session: ClientSession | None  # None: the password session
    attributes: int = CONTINUE
    name: bytes | None = None  # Name of the authorized entity; None for a non-authorization session
    auth: bytes = b""
    include_auth: bool | None = None  # policy sessions: PolicyAuthValue ran
    password: bool = False  # policy sessions: PolicyPassword ran
    hmac_override: bytes | None = None
    nonce: bytes | None = None


@dataclasses.dataclass
class Result:
    rc: int
    raw: bytes
    params: bytes = b""  # decrypted response parameters
    handles: bytes = b""


def cp_hash(alg: int, cc: int, names: list[bytes], params: bytes) -> bytes:
    return digest(alg, u32(cc) + b"".join(names) + params)


def run(
    execute: Callable[[bytes], bytes],
    cc: int,
    handles: list[tuple[int, bytes]],
    params: bytes,
    uses: list[Use],
    response_handles: int = 0,
    check: bool = True,
) -> Result:
    """Build, send and verify one command with the given sessions.

    Parameter encryption is applied to ``params`` (plaintext in) and to the
    response (plaintext out); response HMACs are verified.
    """
    nonces = []
    for use in uses:
        s = use.session
        nonces.append(b"" if s is None else use.nonce if use.nonce is not None else os.urandom(s.nonce_size))
    keys = [u.session.hmac_key(u.name, u.auth, u.include_auth) if u.session else b"" for u in uses]
    # Parameter encryption keys: sessionKey || authValue of an authorized entity, bound or not.
    crypt_keys = [
        u.session.session_key + (strip(u.auth) if u.name is not None else b"") if u.session else b"" for u in uses
    ]
    for i, use in enumerate(uses):
        if use.attributes & DECRYPT:
            params = crypt_first_tpm2b(use.session, crypt_keys[i], params, nonces[i], use.session.nonce_tpm, True)
    names = [name for _, name in handles]
    area = b""
    dec = next((i for i, u in enumerate(uses) if u.attributes & DECRYPT), None)
    enc = next((i for i, u in enumerate(uses) if u.attributes & ENCRYPT), None)
    for i, use in enumerate(uses):
        s = use.session
        if s is None:
            auth = use.auth
        elif use.password:
            auth = use.auth
        else:
            extra = b""
            if i == 0 and use.name is not None:
                if dec is not None and dec != 0:
                    extra += uses[dec].session.nonce_tpm
                if enc is not None and enc != 0 and enc != dec:
                    extra += uses[enc].session.nonce_tpm
            auth = mac(
                s.auth_hash,
                keys[i],
                cp_hash(s.auth_hash, cc, names, params) + nonces[i] + s.nonce_tpm + extra + bytes([use.attributes]),
            )
        if use.hmac_override is not None:
            auth = use.hmac_override
        handle = RS_PW if s is None else s.handle
        area += u32(handle) + tpm2b(nonces[i]) + bytes([use.attributes]) + tpm2b(auth)
    body = b"".join(u32(h) for h, _ in handles) + u32(len(area)) + area + params
    cmd = u16(ST_SESSIONS) + u32(10 + len(body)) + u32(cc) + body
    raw = execute(cmd)
    rc = int.from_bytes(raw[6:10], "big")
    if rc:
        return Result(rc, raw)
    rest = raw[10:]
    rhandles, rest = rest[: 4 * response_handles], rest[4 * response_handles :]
    psize = int.from_bytes(rest[:4], "big")
    rparams, rest = rest[4 : 4 + psize], rest[4 + psize :]
    for i, use in enumerate(uses):
        s = use.session
        size = int.from_bytes(rest[:2], "big")
        new_nonce, rest = rest[2 : 2 + size], rest[2 + size :]
        attrs, rest = rest[0], rest[1:]
        size = int.from_bytes(rest[:2], "big")
        rmac, rest = rest[2 : 2 + size], rest[2 + size :]
        if s is None:
            continue
        if check and not use.password:
            rp_hash = digest(s.auth_hash, u32(0) + u32(cc) + rparams)
            expected = mac(s.auth_hash, keys[i], rp_hash + new_nonce + nonces[i] + bytes([attrs]))
            if rmac != expected and not (rmac == b"" and keys[i] == b"" and s.session_key == b""):
                raise AssertionError(f"response HMAC of session {i + 1} does not verify")
        s.nonce_tpm = new_nonce
    assert rest == b"", "bytes after the response sessions"
    for i, use in enumerate(uses):
        if use.attributes & ENCRYPT:
            rparams = crypt_first_tpm2b(use.session, crypt_keys[i], rparams, use.session.nonce_tpm, nonces[i], False)
    return Result(rc, raw, rparams, rhandles)


def kdfe(alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """SP 800-56A concatenation KDF, as Part 1 defines KDFe (ECDH salts and seeds)."""
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += digest(alg, u32(counter) + z + label + b"\x00" + party_u + party_v)
        counter += 1
    return out[: (bits + 7) // 8]
