"""Command bytes of the Enhanced Authorization commands (Part 3, clause 23), and the policy
digests they should produce, written from Part 3 independently of the engine's code.

Every builder takes the policy session's handle last, as Part 3's handle areas do; the
``auth_*`` ones add a password session for their authorization handle.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from support.object_templates import NO_SYM, SIGN, USER_WITH_AUTH
from support.session_client import SHA256, digest
from support.tpm_client import command, tpm2b, u16, u32
from vtpm_cuse.tpm import types as T
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC

ST_AUTH_SECRET, ST_AUTH_SIGNED, ST_VERIFIED = 0x8023, 0x8025, 0x8022
ALG_ECDSA = 0x0018


def cc(code: int) -> bytes:
    return u32(code)


def policy(code: int, session: int, body: bytes = b"", handles: bytes = b"", auth: bytes | None = None) -> bytes:
    return command(code, body, handles + u32(session), auth)


def get_digest(session: int) -> bytes:
    return command(TPM_CC.PolicyGetDigest, b"", u32(session))


def ecdsa_signature(hash_alg: int, r: bytes, s: bytes) -> bytes:
    return u16(ALG_ECDSA) + u16(hash_alg) + tpm2b(r) + tpm2b(s)


def authorization_params(nonce: bytes, cp_hash: bytes, ref: bytes, expiration: int) -> bytes:
    return tpm2b(nonce) + tpm2b(cp_hash) + tpm2b(ref) + expiration.to_bytes(4, "big", signed=True)


def signed(session: int, key: int, nonce: bytes, cp_hash: bytes, ref: bytes, expiration: int, sig: bytes) -> bytes:
    return policy(TPM_CC.PolicySigned, session, authorization_params(nonce, cp_hash, ref, expiration) + sig, u32(key))


def secret(session: int, entity: int, nonce=b"", cp_hash=b"", ref=b"", expiration=0, auth: bytes = b"") -> bytes:
    body = authorization_params(nonce, cp_hash, ref, expiration)
    return policy(TPM_CC.PolicySecret, session, body, u32(entity), auth)


def ticket(session: int, timeout: bytes, cp_hash: bytes, ref: bytes, name: bytes, tk: bytes) -> bytes:
    return policy(TPM_CC.PolicyTicket, session, tpm2b(timeout) + tpm2b(cp_hash) + tpm2b(ref) + tpm2b(name) + tk)


def authorize(session: int, approved: bytes, ref: bytes, key_name: bytes, tk: bytes) -> bytes:
    return policy(TPM_CC.PolicyAuthorize, session, tpm2b(approved) + tpm2b(ref) + tpm2b(key_name) + tk)


def null_verified_ticket() -> bytes:
    return u16(ST_VERIFIED) + u32(0x40000007) + tpm2b(b"")


def comparison(operand: bytes, offset: int, operation: int) -> bytes:
    return tpm2b(operand) + u16(offset) + u16(operation)


def nv(session: int, index: int, operand: bytes, offset: int, operation: int, auth_handle: int | None = None) -> bytes:
    handles = u32(auth_handle if auth_handle is not None else index) + u32(index)
    return policy(TPM_CC.PolicyNV, session, comparison(operand, offset, operation), handles, b"")


def authorize_nv(session: int, index: int) -> bytes:
    return policy(TPM_CC.PolicyAuthorizeNV, session, b"", u32(index) + u32(index), b"")


def counter_timer(session: int, operand: bytes, offset: int, operation: int) -> bytes:
    return policy(TPM_CC.PolicyCounterTimer, session, comparison(operand, offset, operation))


def capability(session: int, operand: bytes, offset: int, operation: int, cap: int, prop: int) -> bytes:
    return policy(TPM_CC.PolicyCapability, session, comparison(operand, offset, operation) + u32(cap) + u32(prop))


def duplication_select(session: int, object_name: bytes, parent_name: bytes, include: int) -> bytes:
    body = tpm2b(object_name) + tpm2b(parent_name) + bytes([include])
    return policy(TPM_CC.PolicyDuplicationSelect, session, body)


# --- the digests Part 3 gives ------------------------------------------------------------------


def extend(alg: int, old: bytes, code: int, *parts: bytes) -> bytes:
    return digest(alg, old + cc(code) + b"".join(parts))


def update(alg: int, old: bytes, code: int, name: bytes, ref: bytes) -> bytes:
    """PolicyUpdate: H(H(old || code || Name) || policyRef)."""
    return digest(alg, extend(alg, old, code, name) + ref)


def args_digest(alg: int, operand: bytes, offset: int, operation: int, *more: bytes) -> bytes:
    return digest(alg, operand + u16(offset) + u16(operation) + b"".join(more))


# --- a signing key the caller holds -------------------------------------------------------------


class ExternalKey:
    """A P-256 key held by the caller; its public part is loaded with TPM2_LoadExternal."""

    def __init__(
        self, execute: Callable[[bytes], bytes], hierarchy: int = 0x40000001, scalar: int | None = None
    ) -> None:
        curve = ec.SECP256R1()
        self.private = ec.generate_private_key(curve) if scalar is None else ec.derive_private_key(scalar, curve)
        numbers = self.private.public_key().public_numbers()
        area = T.TPMT_PUBLIC(
            type=TPM_ALG.ECC,
            nameAlg=TPM_ALG.SHA256,
            objectAttributes=SIGN | USER_WITH_AUTH,
            authPolicy=b"",
            parameters=T.TPMS_ECC_PARMS(
                symmetric=NO_SYM,
                scheme=T.TPMT_ECC_SCHEME(scheme=TPM_ALG.ECDSA, details=T.TPMS_SCHEME_HASH(hashAlg=TPM_ALG.SHA256)),
                curveID=0x0003,
                kdf=T.TPMT_KDF_SCHEME(scheme=TPM_ALG.NULL, details=None),
            ),
            unique=T.TPMS_ECC_POINT(x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big")),
        )
        raw = execute(command(TPM_CC.LoadExternal, u16(0) + T.TPM2B_PUBLIC.pack(area) + u32(hierarchy)))
        assert raw[6:10] == bytes(4), f"LoadExternal: 0x{raw[6:10].hex()}"
        self.handle = int.from_bytes(raw[10:14], "big")
        self.name = raw[16 : 16 + int.from_bytes(raw[14:16], "big")]

    def sign(self, data: bytes) -> bytes:
        """TPMT_SIGNATURE (ECDSA, SHA-256) over H(data)."""
        der = self.private.sign(digest(SHA256, data), ec.ECDSA(Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        return ecdsa_signature(SHA256, r.to_bytes(32, "big"), s.to_bytes(32, "big"))
