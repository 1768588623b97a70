"""The endorsement keys swtpm_setup creates, from the TCG EK Credential Profile.

Which templates, handles and NV indices (facts checked against Debian's swtpm_setup
0.7.1 and the profile's tables):

=================  ==========  ==========  ============  ==============
EK                 template    handle      cert index    template index
=================  ==========  ==========  ============  ==============
RSA 2048           L-1         0x81010001  0x01c00002    0x01c00004 (*)
RSA 3072           H-3         0x8101001c  0x01c0001c    0x01c0001d
ECC NIST P-384     H-2         0x81010016  0x01c00016    0x01c00017
=================  ==========  ==========  ============  ==============

(*) only written for a non-standard EK (``--allow-signing``), like the others.

The low-range RSA template is the one ``tpm2_createek -G rsa`` uses, so a client
re-deriving the EK from the endorsement seed gets the key its certificate names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..tpm import types as T
from ..tpm.constants import TPM_ALG, TPM_ECC_CURVE, TPMA_NV, TPMA_OBJECT

__all__ = [
    "EK_CERT_NV_ATTRIBUTES",
    "EkKind",
    "EkSpec",
    "PLATFORM_CERT_INDEX",
    "ek_spec",
    "ek_template",
]

#: TCG PolicyA with SHA-256: PolicySecret(TPM_RH_ENDORSEMENT) (EK profile, low range).
POLICY_A_SHA256 = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
#: TCG PolicyB with SHA-384: PolicyOR of PolicyA and the EK-auth policy (high range).
POLICY_B_SHA384 = bytes.fromhex(
    "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12"
)
#: Platform certificate index (PC Client platform certificate range).
PLATFORM_CERT_INDEX = 0x01C08000
#: What swtpm_setup gives every certificate/template index: written by the platform at
#: manufacture (PLATFORMCREATE, PPWRITE), WRITEDEFINE so --lock-nvram's NV_WriteLock is
#: permanent, readable by anyone (AUTHREAD with an empty auth value, OWNERREAD, PPREAD).
EK_CERT_NV_ATTRIBUTES = (
    TPMA_NV.PPWRITE
    | TPMA_NV.WRITEDEFINE
    | TPMA_NV.PPREAD
    | TPMA_NV.OWNERREAD
    | TPMA_NV.AUTHREAD
    | TPMA_NV.NO_DA
    | TPMA_NV.PLATFORMCREATE
)
_STANDARD = (
    TPMA_OBJECT.fixedTPM
    | TPMA_OBJECT.fixedParent
    | TPMA_OBJECT.sensitiveDataOrigin
    | TPMA_OBJECT.adminWithPolicy
    | TPMA_OBJECT.restricted
    | TPMA_OBJECT.decrypt
)


class EkKind(enum.Enum):
    RSA2048 = "RSA 2048"
    RSA3072 = "RSA 3072"
    ECC384 = "ECC"


@dataclass(frozen=True)
class EkSpec:
    """Where one EK lives and how it is derived."""

    kind: EkKind
    handle: int
    cert_index: int
    low_range: bool

    @property
    def template_index(self) -> int:
        return self.cert_index + 2 if self.low_range else self.cert_index + 1

    @property
    def is_rsa(self) -> bool:
        return self.kind is not EkKind.ECC384


_SPECS = {
    EkKind.RSA2048: EkSpec(EkKind.RSA2048, 0x81010001, 0x01C00002, low_range=True),
    EkKind.RSA3072: EkSpec(EkKind.RSA3072, 0x8101001C, 0x01C0001C, low_range=False),
    EkKind.ECC384: EkSpec(EkKind.ECC384, 0x81010016, 0x01C00016, low_range=False),
}


def ek_spec(kind: EkKind) -> EkSpec:
    return _SPECS[kind]


def _attributes(spec: EkSpec, allow_signing: bool, decryption: bool) -> int:
    """The profile's attributes; high-range templates add userWithAuth.  A signing EK
    (swtpm_setup --allow-signing) cannot be restricted, and decrypts only with --decryption."""
    attrs = _STANDARD | (0 if spec.low_range else TPMA_OBJECT.userWithAuth)
    if allow_signing:
        attrs = (attrs & ~TPMA_OBJECT.restricted & ~TPMA_OBJECT.decrypt) | TPMA_OBJECT.sign
        if decryption:
            attrs |= TPMA_OBJECT.decrypt
    return int(attrs)


def ek_template(spec: EkSpec, *, allow_signing: bool = False, decryption: bool = True):
    """The TPMT_PUBLIC to pass to TPM2_CreatePrimary(TPM_RH_ENDORSEMENT)."""
    signing = allow_signing
    name_alg = TPM_ALG.SHA256 if spec.low_range else TPM_ALG.SHA384
    policy = POLICY_A_SHA256 if spec.low_range else POLICY_B_SHA384
    aes_bits = 128 if spec.low_range else 256
    sym = (
        T.TPMT_SYM_DEF_OBJECT_PLUS(algorithm=TPM_ALG.NULL, keyBits=None, mode=None)
        if signing
        else T.TPMT_SYM_DEF_OBJECT_PLUS(algorithm=TPM_ALG.AES, keyBits=aes_bits, mode=TPM_ALG.CFB)
    )
    attrs = _attributes(spec, allow_signing, decryption)
    if spec.is_rsa:
        bits = 2048 if spec.kind is EkKind.RSA2048 else 3072
        return T.TPMT_PUBLIC(
            type=TPM_ALG.RSA,
            nameAlg=name_alg,
            objectAttributes=attrs,
            authPolicy=policy,
            parameters=T.TPMS_RSA_PARMS(
                symmetric=sym,
                scheme=T.TPMT_RSA_SCHEME(scheme=TPM_ALG.NULL, details=None),
                keyBits=bits,
                exponent=0,
            ),
            # Low range: the modulus-sized zero unique of template L-1; high range: empty.
            unique=bytes(bits // 8) if spec.low_range else b"",
        )
    return T.TPMT_PUBLIC(
        type=TPM_ALG.ECC,
        nameAlg=name_alg,
        objectAttributes=attrs,
        authPolicy=policy,
        parameters=T.TPMS_ECC_PARMS(
            symmetric=sym,
            scheme=T.TPMT_ECC_SCHEME(scheme=TPM_ALG.NULL, details=None),
            curveID=TPM_ECC_CURVE.NIST_P384,
            kdf=T.TPMT_KDF_SCHEME(scheme=TPM_ALG.NULL, details=None),
        ),
        unique=T.TPMS_ECC_POINT(x=b"", y=b""),
    )
