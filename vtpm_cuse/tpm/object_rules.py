"""Consistency rules for object templates and public areas (Part 1 clause 27,
"Object Attributes"; Part 2 TPMA_OBJECT; Part 3 TPM2_Create "Detailed Actions").

Unmarshalling already rejected what no TPM could accept (unknown algorithms,
key sizes, reserved bits); what is left are combinations.  Every function
raises a *bare* response code -- the command adds the parameter number of
the template -- and the checks run in the order the reference TPM runs them,
so a template with several faults gets the same code from us as from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .algorithms import hash_alg
from .constants import TPM_ALG
from .constants import TPMA_OBJECT as A
from .errors import TPM_RC, TpmError

if TYPE_CHECKING:
    from .objects import LoadedObject

_ASYM_SIGN = {TPM_ALG.RSA: (TPM_ALG.RSASSA, TPM_ALG.RSAPSS), TPM_ALG.ECC: (TPM_ALG.ECDSA, TPM_ALG.ECSCHNORR)}
_ASYM_DECRYPT = {TPM_ALG.RSA: (TPM_ALG.RSAES, TPM_ALG.OAEP), TPM_ALG.ECC: (TPM_ALG.ECDH,)}


def _fail(rc: int, why: str) -> None:
    raise TpmError(rc, why)


def adjust_auth(auth: bytes, name_alg: int) -> bytes:
    """An authValue may not be longer than nameAlg's digest (trailing zeros do not count);
    it is kept zero-padded to that size, as it is stored in the sensitive area."""
    size = hash_alg(name_alg).digest_size
    value = auth.rstrip(b"\0")
    if len(value) > size:
        _fail(TPM_RC.SIZE, f"authValue of {len(value)} octets, nameAlg digest is {size}")
    return value.ljust(size, b"\0")


def create_checks(area, parent: LoadedObject | None, data_size: int) -> None:
    """Checks only creation needs: who supplies the sensitive data, then :func:`public_checks`."""
    attrs = area.objectAttributes
    origin = bool(attrs & A.sensitiveDataOrigin)
    if not origin and data_size == 0:
        _fail(TPM_RC.ATTRIBUTES, "sensitiveDataOrigin CLEAR but no sensitive data given")
    if parent is not None and origin and data_size:
        _fail(TPM_RC.ATTRIBUTES, "sensitiveDataOrigin SET and sensitive data given")
    if area.type in (TPM_ALG.KEYEDHASH, TPM_ALG.SYMCIPHER):
        if area.type == TPM_ALG.KEYEDHASH and not attrs & (A.sign | A.decrypt) and origin:
            _fail(TPM_RC.ATTRIBUTES, "a data object's data must come from the caller")
        if attrs & A.restricted and not origin and attrs & (A.fixedParent | A.fixedTPM):
            _fail(TPM_RC.ATTRIBUTES, "a restricted fixed symmetric key must be TPM-generated")
    elif not origin:
        _fail(TPM_RC.ATTRIBUTES, "an asymmetric key's private part cannot be supplied")
    public_checks(area, parent)


def public_checks(area, parent: LoadedObject | None) -> None:
    """Attribute consistency shared by creation and loading."""
    attrs = area.objectAttributes
    if area.nameAlg == TPM_ALG.NULL:
        _fail(TPM_RC.HASH, "nameAlg TPM_ALG_NULL")
    if area.authPolicy and len(area.authPolicy) != hash_alg(area.nameAlg).digest_size:
        _fail(TPM_RC.SIZE, "authPolicy is not a nameAlg digest")
    parent_attrs = parent.attributes if parent is not None else A.fixedTPM
    if parent_attrs & A.fixedTPM:
        # Under a fixedTPM parent (or a seed) fixedTPM and fixedParent go together.
        if bool(attrs & A.fixedParent) != bool(attrs & A.fixedTPM):
            _fail(TPM_RC.ATTRIBUTES, "fixedTPM and fixedParent differ")
    elif attrs & A.fixedTPM:
        _fail(TPM_RC.ATTRIBUTES, "fixedTPM under a parent that is not fixedTPM")
    if bool(attrs & A.sign) == bool(attrs & A.decrypt):
        if attrs & A.restricted:
            _fail(TPM_RC.ATTRIBUTES, "a restricted key is either sign or decrypt")
        if area.type != TPM_ALG.KEYEDHASH and not attrs & A.sign:
            _fail(TPM_RC.ATTRIBUTES, "only a data object has neither sign nor decrypt")
    if attrs & A.fixedTPM and attrs & A.encryptedDuplication:
        _fail(TPM_RC.ATTRIBUTES, "encryptedDuplication on an object that cannot be duplicated")
    if parent is not None and not parent_attrs & A.fixedTPM:
        if bool(attrs & A.encryptedDuplication) != bool(parent_attrs & A.encryptedDuplication):
            _fail(TPM_RC.ATTRIBUTES, "encryptedDuplication differs from the duplicable parent's")
    scheme_checks(area, parent)


def scheme_checks(area, parent: LoadedObject | None) -> None:
    """Schemes and symmetric definitions against sign/decrypt/restricted."""
    attrs = area.objectAttributes
    parms = area.parameters
    sign, decrypt, restricted = bool(attrs & A.sign), bool(attrs & A.decrypt), bool(attrs & A.restricted)
    symmetric = None
    if area.type == TPM_ALG.SYMCIPHER:
        symmetric = parms.sym
    elif area.type == TPM_ALG.KEYEDHASH:
        scheme = parms.scheme.scheme
        if sign == decrypt:
            if scheme != TPM_ALG.NULL:
                _fail(TPM_RC.SCHEME, "a keyed hash that signs and decrypts (or neither) has no scheme")
        elif sign and scheme != TPM_ALG.HMAC:
            _fail(TPM_RC.SCHEME, "a signing keyed hash needs the HMAC scheme")
        elif decrypt:
            if scheme != TPM_ALG.XOR:
                _fail(TPM_RC.SCHEME, "a decrypting keyed hash needs the XOR scheme")
            if restricted and parms.scheme.details.kdf != TPM_ALG.KDF1_SP800_108:
                _fail(TPM_RC.SCHEME, "a derivation parent needs the SP800-108 KDF")
    else:
        scheme = parms.scheme.scheme
        symmetric = parms.symmetric
        if sign == decrypt:
            if scheme != TPM_ALG.NULL:
                _fail(TPM_RC.SCHEME, "a key that signs and decrypts has no scheme")
        elif sign:
            if scheme not in _ASYM_SIGN[area.type] and (restricted or scheme != TPM_ALG.NULL):
                _fail(TPM_RC.SCHEME, f"scheme 0x{scheme:04x} is not a signing scheme")
        elif restricted:
            if scheme != TPM_ALG.NULL:
                _fail(TPM_RC.SCHEME, "a storage key has no scheme")
        elif scheme != TPM_ALG.NULL and scheme not in _ASYM_DECRYPT[area.type]:
            _fail(TPM_RC.SCHEME, f"scheme 0x{scheme:04x} is not a decryption scheme")
        if not (restricted and decrypt) and symmetric.algorithm != TPM_ALG.NULL:
            _fail(TPM_RC.SYMMETRIC, "only a storage key has a symmetric algorithm")
        if area.type == TPM_ALG.ECC and parms.kdf.scheme != TPM_ALG.NULL:
            _fail(TPM_RC.KDF, "an ECC key has no KDF")
    if symmetric is not None and restricted and decrypt:
        # A storage parent: its children are protected with this symmetric definition.
        if symmetric.algorithm == TPM_ALG.NULL:
            _fail(TPM_RC.SYMMETRIC, "a storage key needs a symmetric algorithm")
        if area.type != TPM_ALG.SYMCIPHER and symmetric.mode != TPM_ALG.CFB:
            _fail(TPM_RC.SYMMETRIC, "a storage key protects its children with CFB")
        if attrs & A.fixedParent and parent is not None:
            # A non-duplicable parent uses its own parent's algorithms.
            if area.nameAlg != parent.name_alg:
                _fail(TPM_RC.HASH, "nameAlg differs from the parent's")
            if _sym_bytes(symmetric) != _sym_bytes(protection_symmetric(parent.area)):
                _fail(TPM_RC.SYMMETRIC, "symmetric definition differs from the parent's")


def protection_symmetric(area):
    """The symmetric definition a parent protects its children with (TPMT_SYM_DEF_OBJECT)."""
    return area.parameters.sym if area.type == TPM_ALG.SYMCIPHER else area.parameters.symmetric


def _sym_bytes(sym) -> bytes:
    from .types import TPMT_SYM_DEF_OBJECT_PLUS

    return TPMT_SYM_DEF_OBJECT_PLUS.pack(sym)
