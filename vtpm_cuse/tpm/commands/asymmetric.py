"""Asymmetric primitives (Part 3, clause 14): TPM2_RSA_Encrypt, TPM2_RSA_Decrypt,
TPM2_ECDH_KeyGen, TPM2_ECDH_ZGen, TPM2_ECC_Parameters, TPM2_Commit, TPM2_EC_Ephemeral,
TPM2_ZGen_2Phase, and TPM2_ECC_Encrypt / TPM2_ECC_Decrypt of revision 1.83.

The arithmetic is in :mod:`~vtpm_cuse.tpm.asymmetric`; this module checks keys,
attributes, labels and schemes in the order Part 3 lists them.

TPM2_ECC_Encrypt needs the public key only: like the reference TPM it takes any ECC key,
without authorization or attribute checks; TPM2_ECC_Decrypt wants an unrestricted
decryption key.  Both use the caller's KDF scheme, or the key's if the caller gives
TPM_ALG_NULL, and the only KDF the reference implements for them: KDF2 (TPM_RC_SCHEME
for any other).  Debian's libtpms does not have these commands.

TPM2_Commit is declared because a client must learn that no key can use it: its key must
have an anonymous signing scheme (ECDAA), which needs point addition that ``cryptography``
does not expose, so no such scheme is implemented and Commit answers TPM_RC_SCHEME, as
Part 3 says for a key without one.

TPM2_EC_Ephemeral and TPM2_ZGen_2Phase share the commit state of the reference TPM
(commitNonce, commitCounter, commitArray; see :mod:`~vtpm_cuse.tpm.asymmetric`): the
ephemeral scalar is derived from the nonce and the count, never stored, and each count can
be used once.  ZGen_2Phase implements the full unified model (TPM_ALG_ECDH: two ECDH
operations); ECMQV and SM2 need point addition, are not implemented, and TPMI_ECC_KEY_EXCHANGE
refuses them (TPM_RC_SCHEME).  Both commands change the commit state, which is NV here, without
being TPMA_CC.nv commands (as in the reference TPM, whose STATE_RESET_DATA reaches NV with the
orderly state): they mark the permanent state for writing themselves, so it is stored before
the response is and no (commitNonce, count) -- no ephemeral key -- is handed out twice,
whatever happens to the process.  At TPM Reset the counter starts again at zero with a new
nonce, as Part 1 has it.
"""

from __future__ import annotations

from .. import asymmetric as asym
from ..command import AuthRole, H, command
from ..constants import TPM_ALG, TPM_CC, TPMA_OBJECT
from ..errors import TPM_RC, TpmError
from ..keys import cancel_checkpoint
from ..marshal import UINT16
from ..objects import LoadedObject
from ..persistent import find_object
from ..types import (
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_ECC_PARAMETER,
    TPM2B_ECC_POINT,
    TPM2B_MAX_BUFFER,
    TPM2B_PUBLIC_KEY_RSA,
    TPM2B_SENSITIVE_DATA,
    TPMI_DH_OBJECT,
    TPMI_ECC_CURVE,
    TPMI_ECC_KEY_EXCHANGE,
    TPMS_ALGORITHM_DETAIL_ECC,
    TPMT_KDF_SCHEME,
    TPMT_RSA_DECRYPT,
)


def key_of_type(ctx, handle: int, kind: int, at: str) -> LoadedObject:
    """The object at ``handle`` when it is a key of type ``kind`` (RSA or ECC); TPM_RC_KEY
    otherwise, a sequence included (it is no key at all)."""
    obj = find_object(ctx.engine, handle)
    if obj is None or obj.type != kind:
        raise TpmError(TPM_RC.KEY, f"0x{handle:08x} is not an {TPM_ALG(kind).name} key", at=at)
    return obj


def require_unrestricted_decrypt(key: LoadedObject, handle: int, at: str) -> None:
    """The private-key commands use only a key that decrypts and is not restricted (a
    restricted decryption key would give away what its parent protects)."""
    attrs = key.attributes
    if attrs & TPMA_OBJECT.restricted or not attrs & TPMA_OBJECT.decrypt:
        raise TpmError(TPM_RC.ATTRIBUTES, f"0x{handle:08x} is not an unrestricted decryption key", at=at)


def rsa_scheme(key: LoadedObject, inScheme, label: bytes) -> asym.RsaScheme:
    """The label check and the scheme selection RSA_Encrypt and RSA_Decrypt share."""
    if not asym.label_well_formed(label):
        raise TpmError(TPM_RC.VALUE, f"label of {len(label)} octets does not end with a zero octet", at="label")
    scheme = asym.select_rsa_scheme(key.area.parameters.scheme, inScheme)
    if scheme is None:
        raise TpmError(TPM_RC.SCHEME, f"inScheme 0x{inScheme.scheme:04x} differs from the key's scheme", at="inScheme")
    return scheme


@command(
    TPM_CC.RSA_Encrypt,
    handles=[H("keyHandle", TPMI_DH_OBJECT)],
    params=[("message", TPM2B_PUBLIC_KEY_RSA), ("inScheme", TPMT_RSA_DECRYPT), ("label", TPM2B_DATA)],
    response=[("outData", TPM2B_PUBLIC_KEY_RSA)],
)
def rsa_encrypt(ctx, keyHandle: int, message: bytes, inScheme, label: bytes):
    """Encryption uses only the public key, so any RSA key with decrypt SET may encrypt,
    restricted or not, without authorization."""
    key = key_of_type(ctx, keyHandle, TPM_ALG.RSA, at="keyHandle")
    if not key.attributes & TPMA_OBJECT.decrypt:
        raise TpmError(TPM_RC.ATTRIBUTES, f"0x{keyHandle:08x} does not have decrypt SET", at="keyHandle")
    scheme = rsa_scheme(key, inScheme, label)
    # Part 3 returns what the encryption reports as it is, without a parameter number.
    return ctx.response(outData=asym.rsa_encrypt(key, scheme, label, message))


@command(
    TPM_CC.RSA_Decrypt,
    handles=[H("keyHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("cipherText", TPM2B_PUBLIC_KEY_RSA), ("inScheme", TPMT_RSA_DECRYPT), ("label", TPM2B_DATA)],
    response=[("message", TPM2B_PUBLIC_KEY_RSA)],
    cancelable=True,
)
def rsa_decrypt(ctx, keyHandle: int, cipherText: bytes, inScheme, label: bytes):
    key = key_of_type(ctx, keyHandle, TPM_ALG.RSA, at="keyHandle")
    require_unrestricted_decrypt(key, keyHandle, at="keyHandle")
    scheme = rsa_scheme(key, inScheme, label)
    # As for RSA_Encrypt, the decryption's TPM_RC_SIZE / TPM_RC_VALUE carry no parameter number.
    out = asym.rsa_decrypt(key, scheme, label, cipherText, ctx.engine.random, cancel_checkpoint(ctx))
    return ctx.response(message=out)


@command(
    TPM_CC.ECDH_KeyGen,
    handles=[H("keyHandle", TPMI_DH_OBJECT)],
    response=[("zPoint", TPM2B_ECC_POINT), ("pubPoint", TPM2B_ECC_POINT)],
)
def ecdh_keygen(ctx, keyHandle: int):
    """A fresh ephemeral key pair (de, Qe) and Z = de * Qs for the key's public point Qs:
    the caller's half of a one-pass ECDH with the key's owner.  Only the public key is used."""
    key = key_of_type(ctx, keyHandle, TPM_ALG.ECC, at="keyHandle")
    curve_id = key.area.parameters.curveID
    try:
        static = asym.public_key(curve_id, key.area.unique)
    except TpmError:
        raise TpmError(TPM_RC.KEY, "the key's public point is not on its curve", at="keyHandle") from None
    scalar, ephemeral = asym.ephemeral_key(curve_id, ctx.engine.random)
    return ctx.response(zPoint=asym.multiply(curve_id, scalar, static), pubPoint=asym.point_of(curve_id, ephemeral))


@command(
    TPM_CC.ECDH_ZGen,
    handles=[H("keyHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("inPoint", TPM2B_ECC_POINT)],
    response=[("outPoint", TPM2B_ECC_POINT)],
)
def ecdh_zgen(ctx, keyHandle: int, inPoint):
    """Z = d * inPoint with the key's private scalar d (the recipient's half of ECDH)."""
    key = key_of_type(ctx, keyHandle, TPM_ALG.ECC, at="keyHandle")
    require_unrestricted_decrypt(key, keyHandle, at="keyHandle")
    scheme = key.area.parameters.scheme.scheme
    if scheme not in (TPM_ALG.ECDH, TPM_ALG.NULL):
        raise TpmError(TPM_RC.SCHEME, f"the key's scheme 0x{scheme:04x} is not ECDH", at="keyHandle")
    curve_id = key.area.parameters.curveID
    try:
        peer = asym.public_key(curve_id, inPoint)
    except TpmError as err:
        raise err.about("inPoint") from None
    return ctx.response(outPoint=asym.multiply(curve_id, asym.private_scalar(key), peer))


def _kdf_scheme(key: LoadedObject, inScheme):
    scheme = asym.select_kdf_scheme(key.area.parameters.kdf, inScheme)
    if scheme is None:
        raise TpmError(TPM_RC.SCHEME, "no KDF scheme, or not the key's", at="inScheme")
    if scheme.scheme != asym.ECC_ENCRYPT_KDF:
        raise TpmError(TPM_RC.SCHEME, f"KDF 0x{scheme.scheme:04x} is not KDF2", at="inScheme")
    return scheme


@command(
    TPM_CC.ECC_Encrypt,
    handles=[H("keyHandle", TPMI_DH_OBJECT)],
    params=[("plainText", TPM2B_MAX_BUFFER), ("inScheme", TPMT_KDF_SCHEME)],
    response=[("C1", TPM2B_ECC_POINT), ("C2", TPM2B_MAX_BUFFER), ("C3", TPM2B_DIGEST)],
)
def ecc_encrypt(ctx, keyHandle: int, plainText: bytes, inScheme):
    key = key_of_type(ctx, keyHandle, TPM_ALG.ECC, at="keyHandle")
    scheme = _kdf_scheme(key, inScheme)
    curve_id = key.area.parameters.curveID
    try:
        recipient = asym.public_key(curve_id, key.area.unique)
    except TpmError:
        raise TpmError(TPM_RC.KEY, "the key's public point is not on its curve", at="keyHandle") from None
    out = asym.ecc_encrypt(curve_id, recipient, scheme.details.hashAlg, plainText, ctx.engine.random)
    return ctx.response(C1=out.c1, C2=out.c2, C3=out.c3)


@command(
    TPM_CC.ECC_Decrypt,
    handles=[H("keyHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("C1", TPM2B_ECC_POINT), ("C2", TPM2B_MAX_BUFFER), ("C3", TPM2B_DIGEST), ("inScheme", TPMT_KDF_SCHEME)],
    response=[("plainText", TPM2B_MAX_BUFFER)],
)
def ecc_decrypt(ctx, keyHandle: int, C1, C2: bytes, C3: bytes, inScheme):
    key = key_of_type(ctx, keyHandle, TPM_ALG.ECC, at="keyHandle")
    require_unrestricted_decrypt(key, keyHandle, at="keyHandle")
    scheme = _kdf_scheme(key, inScheme)
    curve_id = key.area.parameters.curveID
    try:
        c1 = asym.public_key(curve_id, C1)
    except TpmError as err:
        raise err.about("C1") from None
    message = asym.ecc_decrypt(curve_id, asym.private_scalar(key), c1, C2, C3, scheme.details.hashAlg)
    return ctx.response(plainText=message)


@command(
    TPM_CC.ECC_Parameters,
    params=[("curveID", TPMI_ECC_CURVE)],
    response=[("parameters", TPMS_ALGORITHM_DETAIL_ECC)],
)
def ecc_parameters(ctx, curveID: int):
    """Unmarshalling already refused every curve the engine does not implement (TPM_RC_CURVE)."""
    return ctx.response(parameters=asym.curve_parameters(curveID))


@command(
    TPM_CC.Commit,
    handles=[H("signHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("P1", TPM2B_ECC_POINT), ("s2", TPM2B_SENSITIVE_DATA), ("y2", TPM2B_ECC_PARAMETER)],
    response=[("K", TPM2B_ECC_POINT), ("L", TPM2B_ECC_POINT), ("E", TPM2B_ECC_POINT), ("counter", UINT16)],
)
def commit(ctx, signHandle: int, P1, s2: bytes, y2: bytes):
    """The first phase of an anonymous signature.  The key must be an ECC key whose scheme is
    anonymous; TPMI_ALG_ECC_SCHEME admits none (see the module docstring), so every ECC key
    is refused with TPM_RC_SCHEME, the first check that concerns the scheme."""
    key = key_of_type(ctx, signHandle, TPM_ALG.ECC, at="signHandle")
    scheme = key.area.parameters.scheme.scheme
    raise TpmError(TPM_RC.SCHEME, f"the key's scheme 0x{scheme:04x} is not an anonymous scheme", at="signHandle")


@command(
    TPM_CC.EC_Ephemeral,
    params=[("curveID", TPMI_ECC_CURVE)],
    response=[("Q", TPM2B_ECC_POINT), ("counter", UINT16)],
)
def ec_ephemeral(ctx, curveID: int):
    """Q = r * G for a one-time r derived from commitNonce and the count just committed;
    ZGen_2Phase derives r again from the counter returned.  The unmarshalling refused every
    curve the engine does not implement (TPM_RC_CURVE)."""
    engine = ctx.engine
    count = asym.commit(engine)
    engine.mark_permanent_dirty()
    q = asym.generator_multiple(curveID, asym.commit_scalar(engine.permanent, curveID, count))
    return ctx.response(Q=q, counter=count & asym.COMMIT_COUNTER_MASK)


@command(
    TPM_CC.ZGen_2Phase,
    handles=[H("keyA", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[
        ("inQsB", TPM2B_ECC_POINT),
        ("inQeB", TPM2B_ECC_POINT),
        ("inScheme", TPMI_ECC_KEY_EXCHANGE),
        ("counter", UINT16),
    ],
    response=[("outZ1", TPM2B_ECC_POINT), ("outZ2", TPM2B_ECC_POINT)],
)
def zgen_2phase(ctx, keyA: int, inQsB, inQeB, inScheme: int, counter: int):
    """The TPM's half of a two-phase key exchange as party A, with keyA's static scalar dsA
    and the ephemeral r of ``counter`` (from EC_Ephemeral): for TPM_ALG_ECDH (SP800-56A
    C(2e, 2s), the full unified model) outZ1 = dsA * QsB and outZ2 = r * QeB.  The
    commitment of ``counter`` is used up by a successful exchange."""
    key = key_of_type(ctx, keyA, TPM_ALG.ECC, at="keyA")
    require_unrestricted_decrypt(key, keyA, at="keyA")
    # The key's scheme, when it has one, is the only one allowed; without one, the caller's.
    key_scheme = key.area.parameters.scheme.scheme
    if key_scheme != TPM_ALG.NULL and key_scheme != inScheme:
        raise TpmError(
            TPM_RC.SCHEME, f"inScheme 0x{inScheme:04x} differs from the key's 0x{key_scheme:04x}", at="inScheme"
        )
    scheme = inScheme  # TPM_ALG_NULL is no TPMI_ECC_KEY_EXCHANGE: the unmarshalling refused it
    curve_id = key.area.parameters.curveID
    try:
        static_b = asym.public_key(curve_id, inQsB)
    except TpmError as err:
        raise err.about("inQsB") from None
    try:
        ephemeral_b = asym.public_key(curve_id, inQeB)
    except TpmError as err:
        raise err.about("inQeB") from None
    perm = ctx.engine.permanent
    count = asym.committed(perm, counter)
    if count is None:
        raise TpmError(TPM_RC.VALUE, f"counter 0x{counter:04x} names no unused commitment", at="counter")
    if scheme != TPM_ALG.ECDH:
        raise TpmError(TPM_RC.SCHEME, f"key exchange scheme 0x{scheme:04x} is not implemented", at="inScheme")
    r = asym.commit_scalar(perm, curve_id, count)
    z1 = asym.multiply(curve_id, asym.private_scalar(key), static_b)
    z2 = asym.multiply(curve_id, r, ephemeral_b)
    asym.end_commit(perm, count)
    ctx.engine.mark_permanent_dirty()
    return ctx.response(outZ1=z1, outZ2=z2)
