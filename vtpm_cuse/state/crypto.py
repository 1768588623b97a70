"""Authenticated encryption of state files and migration blobs.

swtpm encrypts with AES-CBC and authenticates with a separate HMAC-SHA256 over
ciphertext and IV. We use AES-GCM instead (AES-128-GCM or AES-256-GCM,
following the key length): one primitive that authenticates by construction,
with no padding to get wrong. The *container* stays swtpm's (spec §5.2), only
the contents of the encrypted TLVs differ. The ``mode=`` of ``--key`` picks
only the key length: ``aes-256-cbc`` means AES-256-GCM here, ``aes-cbc`` /
``aes-128-cbc`` mean AES-128-GCM (see :mod:`vtpm_cuse.state.keyoption`).

Layout of one encryption layer (state key or migration key)::

    TLV(ENCRYPTED_DATA | ENCRYPTED_MIGRATION_DATA)   ciphertext || 16-byte GCM tag
    TLV(IVEC_ENCRYPTED_DATA | IVEC_..._MIGRATION_DATA) 12-byte random nonce
    TLV(VTPM_AEAD_SCHEME = 0x7601)                   1 byte: 1 = AES-GCM

and in the container header the flag bits swtpm uses for the same layer:
``ENCRYPTED`` (+ ``ENCRYPTED_256BIT_KEY``) for the state key,
``MIGRATION_ENCRYPTED`` (+ ``MIGRATION_256BIT_KEY``) for the migration key.

The GCM additional authenticated data is
``b"vtpm-cuse state aes-gcm v1" || u8 layer || u8 kind`` (layer 1 = state
key, 2 = migration key; kind = PTM blob type), so a ciphertext cannot be
replayed as another kind of state (volatile as permanent) or moved between the
two layers, even when both use the same key.

Never confused with swtpm's scheme: we never write an HMAC TLV (swtpm's reader
fails on our blobs for lack of it) and we refuse encrypted data without our
``VTPM_AEAD_SCHEME`` TLV with TPM_BAD_MODE instead of misinterpreting it.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .blobformat import BlobFlag, Tag, Tlv, find_tlv, require_tlv
from .errors import PtmResult, StateError

__all__ = [
    "AeadScheme",
    "AAD_LABEL",
    "NONCE_SIZE",
    "GCM_TAG_SIZE",
    "KEY_SIZES",
    "StateKey",
    "EncryptionLayer",
    "STATE_LAYER",
    "MIGRATION_LAYER",
    "seal",
    "unseal",
]

NONCE_SIZE = 12
GCM_TAG_SIZE = 16
#: Allowed key lengths in bytes (AES-128 and AES-256).
KEY_SIZES = (16, 32)
AAD_LABEL = b"vtpm-cuse state aes-gcm v1"


class AeadScheme(IntEnum):
    """Content of the ``VTPM_AEAD_SCHEME`` TLV."""

    AES_GCM = 1


class StateKey:
    """An AES key for state or migration encryption.

    The key bytes are deliberately hard to leak: ``repr``/``str`` show only the
    algorithm, the object refuses to be pickled, and equality is constant-time.
    (Python cannot reliably wipe memory, so no zeroisation is attempted.)
    """

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        material = bytes(material)
        if len(material) not in KEY_SIZES:
            raise StateError(
                PtmResult.TPM_BAD_KEY_PROPERTY,
                f"AES key must be 16 or 32 bytes, not {len(material)}",
            )
        self._material = material

    @property
    def size(self) -> int:
        """Key length in bytes (16 or 32)."""
        return len(self._material)

    @property
    def bits(self) -> int:
        return 8 * len(self._material)

    @property
    def algorithm(self) -> str:
        return f"AES-{self.bits}-GCM"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateKey):
            return NotImplemented
        return hmac.compare_digest(self._material, other._material)

    __hash__ = None  # type: ignore[assignment]  # keys are not dict keys

    def __repr__(self) -> str:
        return f"<StateKey {self.algorithm}>"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("StateKey objects are not picklable (they hold key material)")


@dataclass(frozen=True)
class EncryptionLayer:
    """Which TLV tags and header flags one encryption layer uses."""

    name: str
    #: byte put into the AAD so the two layers' ciphertexts are not interchangeable
    aad_role: int
    data_tag: Tag
    ivec_tag: Tag
    encrypted_flag: BlobFlag
    key256_flag: BlobFlag


#: Encryption with the state-file key (``--key``).
STATE_LAYER = EncryptionLayer(
    name="state",
    aad_role=1,
    data_tag=Tag.ENCRYPTED_DATA,
    ivec_tag=Tag.IVEC_ENCRYPTED_DATA,
    encrypted_flag=BlobFlag.ENCRYPTED,
    key256_flag=BlobFlag.ENCRYPTED_256BIT_KEY,
)

#: Encryption with the migration key (``--migration-key``).
MIGRATION_LAYER = EncryptionLayer(
    name="migration",
    aad_role=2,
    data_tag=Tag.ENCRYPTED_MIGRATION_DATA,
    ivec_tag=Tag.IVEC_ENCRYPTED_MIGRATION_DATA,
    encrypted_flag=BlobFlag.MIGRATION_ENCRYPTED,
    key256_flag=BlobFlag.MIGRATION_256BIT_KEY,
)


def _aad(layer: EncryptionLayer, kind: int) -> bytes:
    return AAD_LABEL + bytes((layer.aad_role, int(kind)))


def seal(key: StateKey, layer: EncryptionLayer, kind: int, plaintext: bytes) -> tuple[BlobFlag, tuple[Tlv, ...]]:
    """Encrypt ``plaintext``; return the header flags to OR in and the TLVs.

    A fresh random 96-bit nonce is drawn for every call; with at most a few
    writes per TPM command the 2**32-messages-per-key bound of random GCM
    nonces is out of reach.
    """
    nonce = os.urandom(NONCE_SIZE)
    ciphertext = AESGCM(key._material).encrypt(nonce, plaintext, _aad(layer, kind))
    flags = layer.encrypted_flag
    if key.size == 32:
        flags |= layer.key256_flag
    return flags, (
        Tlv(layer.data_tag, ciphertext),
        Tlv(layer.ivec_tag, nonce),
        Tlv(Tag.VTPM_AEAD_SCHEME, bytes((AeadScheme.AES_GCM,))),
    )


def unseal(
    key: StateKey,
    layer: EncryptionLayer,
    kind: int,
    flags: BlobFlag,
    tlvs: Sequence[Tlv],
    *,
    where: str = "state blob",
) -> bytes:
    """Check and decrypt one layer sealed by :func:`seal`.

    Errors: ciphertext or nonce TLV missing -> TPM_FAIL (as swtpm); not our
    scheme -> TPM_BAD_MODE; key length differs from what the
    header flag records -> TPM_BAD_KEY_PROPERTY (as swtpm); wrong key or any
    modification of ciphertext, nonce, tag, kind or layer -> TPM_DECRYPT_ERROR.
    """
    ciphertext = require_tlv(tlvs, layer.data_tag, where=where)
    nonce = require_tlv(tlvs, layer.ivec_tag, where=where)
    scheme = find_tlv(tlvs, Tag.VTPM_AEAD_SCHEME)
    if scheme is None:
        if find_tlv(tlvs, Tag.HMAC) is not None:
            detail = "swtpm's AES-CBC+HMAC scheme, which vtpm-cuse does not read"
        else:
            detail = "an unknown scheme (no VTPM_AEAD_SCHEME TLV)"
        raise StateError(PtmResult.TPM_BAD_MODE, f"{where} is encrypted with {layer.name} key using {detail}")
    if scheme != bytes((AeadScheme.AES_GCM,)):
        raise StateError(PtmResult.TPM_BAD_MODE, f"{where} uses unknown AEAD scheme 0x{scheme.hex()}")

    expected = 32 if flags & layer.key256_flag else 16
    if key.size != expected:
        raise StateError(
            PtmResult.TPM_BAD_KEY_PROPERTY,
            f"{where} was encrypted with a {expected * 8}-bit {layer.name} key "
            f"but the configured {layer.name} key has {key.bits} bits",
        )

    failure = StateError(
        PtmResult.TPM_DECRYPT_ERROR,
        f"{where} failed authentication with the {layer.name} key (wrong key or modified data)",
    )
    if len(nonce) != NONCE_SIZE or len(ciphertext) < GCM_TAG_SIZE:
        raise failure
    try:
        return AESGCM(key._material).decrypt(nonce, ciphertext, _aad(layer, kind))
    except InvalidTag:
        raise failure from None
