"""Object commands (Part 3, clause 12): TPM2_Create, TPM2_Load, TPM2_ReadPublic,
TPM2_ObjectChangeAuth, TPM2_CreateLoaded, TPM2_Unseal, TPM2_LoadExternal.

An ordinary object is created with the TPM's RNG and leaves the TPM only as
its public area plus a TPM2B_PRIVATE protected under its parent
(:mod:`~vtpm_cuse.tpm.protection`); TPM2_Load checks that protection, the
attributes and the binding of public and private parts before the object
takes a slot.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.asymmetric import ec

from ..algorithms import HASHES, hash_alg
from ..command import AuthRole, H, command
from ..constants import HR_SHIFT, TPM_ALG, TPM_CC, TPM_HT, TPM_RH, TPMA_OBJECT
from ..creation import creation_outputs
from ..errors import TPM_RC, TpmError, errors_at
from ..hierarchy import hierarchy_enabled
from ..keys import CURVES, cancel_checkpoint, check_binding, create_object
from ..marshal import Reader
from ..object_rules import adjust_auth, create_checks, public_checks, scheme_checks
from ..objects import LoadedObject, load, object_name, qualified_name, require_free_slot
from ..persistent import find_object
from ..protection import credential_to_secret, secret_to_credential, unwrap_sensitive, wrap_sensitive
from ..secret_exchange import IDENTITY_LABEL, decrypt_secret, encrypt_secret
from ..symmetric import symmetric_unique
from ..types import (
    TPM2B_AUTH,
    TPM2B_CREATION_DATA,
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_NAME,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_PUBLIC_PLUS,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPM2B_SENSITIVE_OR_EMPTY,
    TPM2B_TEMPLATE,
    TPM_HANDLE,
    TPMI_DH_OBJECT,
    TPMI_DH_PARENT,
    TPMI_RH_HIERARCHY,
    TPML_PCR_SELECTION,
    TPMT_PUBLIC,
    TPMT_SENSITIVE,
    TPMT_TK_CREATION,
)
from .hierarchy import make_primary
from .symmetric import require_private_part


def loaded_object(ctx, handle: int, at: str) -> LoadedObject:
    """The object at the transient or persistent ``handle`` (the handle named ``at``); a
    sequence there is TPM_RC_TYPE (it has no public area)."""
    obj = find_object(ctx.engine, handle)
    if obj is None:
        raise TpmError(TPM_RC.TYPE, f"0x{handle:08x} is a sequence, not an object", at=at)
    return obj


def storage_parent(ctx, handle: int, at: str) -> LoadedObject:
    parent = find_object(ctx.engine, handle)
    if parent is None or not parent.is_storage_parent:
        raise TpmError(TPM_RC.TYPE, f"0x{handle:08x} is not a storage parent", at=at)
    return parent


def _create_child(ctx, parent: LoadedObject, in_sensitive, in_public):
    """Create an ordinary object under ``parent``: (created parts, public octets, Name, private blob).

    Shared by Create and CreateLoaded, which both name their parameters inSensitive and inPublic.
    """
    require_free_slot(ctx.engine.volatile)  # the reference TPM builds the object in a free slot
    with errors_at("inPublic"):
        create_checks(in_public, parent, len(in_sensitive.data))
    with errors_at("inSensitive"):
        auth = adjust_auth(in_sensitive.userAuth, in_public.nameAlg)
    data = b"" if in_public.objectAttributes & TPMA_OBJECT.sensitiveDataOrigin else in_sensitive.data
    created = create_object(in_public, auth, data, ctx.engine.random, cancel_checkpoint(ctx))
    public = TPMT_PUBLIC.pack(created.area)
    name = object_name(in_public.nameAlg, public)
    sensitive = _sensitive_area(created)
    private = wrap_sensitive(parent, name, sensitive, ctx.engine.random)
    return created, public, name, private


def _sensitive_area(created):
    return TPMT_SENSITIVE(
        sensitiveType=created.area.type,
        authValue=created.auth_value,
        seedValue=created.seed_value,
        sensitive=created.sensitive,
    )


@command(
    TPM_CC.Create,
    handles=[H("parentHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[
        ("inSensitive", TPM2B_SENSITIVE_CREATE),
        ("inPublic", TPM2B_PUBLIC),
        ("outsideInfo", TPM2B_DATA),
        ("creationPCR", TPML_PCR_SELECTION),
    ],
    response=[
        ("outPrivate", TPM2B_PRIVATE),
        ("outPublic", TPM2B_PUBLIC),
        ("creationData", TPM2B_CREATION_DATA),
        ("creationHash", TPM2B_DIGEST),
        ("creationTicket", TPMT_TK_CREATION),
    ],
    cancelable=True,
)
def create(ctx, parentHandle: int, inSensitive, inPublic, outsideInfo: bytes, creationPCR: list):
    parent = storage_parent(ctx, parentHandle, at="parentHandle")
    created, public, name, private = _create_child(ctx, parent, inSensitive, inPublic)
    return ctx.response(
        outPrivate=private,
        outPublic=created.area,
        **creation_outputs(
            ctx.engine,
            ctx.locality,
            inPublic.nameAlg,
            name,
            parent.hierarchy,
            creationPCR,
            outsideInfo,
            parent.name_alg,
            parent.name,
            parent.qualified_name,
        ),
    )


def _child(parent: LoadedObject, public: bytes, name: bytes, sensitive) -> LoadedObject:
    attrs = TPMT_PUBLIC.unpack(public).objectAttributes
    return LoadedObject(
        public=public,
        hierarchy=parent.hierarchy,
        qualified_name=qualified_name(int.from_bytes(name[:2], "big"), parent.qualified_name, name),
        auth_value=sensitive.authValue,
        seed_value=sensitive.seedValue,
        sensitive=sensitive.sensitive,
        st_clear=bool(attrs & TPMA_OBJECT.stClear) or parent.st_clear,
    )


def loadable_checks(area, parent: LoadedObject, sensitive, public_at: str, private_at: str) -> None:
    """What makes a public area and a recovered sensitive area a loadable object under ``parent``
    (Load, and Import under a fixedTPM parent): errors placed at the public or private parameter."""
    digest_size = hash_alg(area.nameAlg).digest_size
    if len(sensitive.seedValue) > digest_size:
        raise TpmError(TPM_RC.KEY_SIZE, "seedValue longer than a nameAlg digest", at=private_at)
    with errors_at(public_at):
        public_checks(area, parent)
    if len(sensitive.authValue.rstrip(b"\0")) > digest_size:
        raise TpmError(TPM_RC.SIZE, "authValue longer than a nameAlg digest", at=private_at)
    with errors_at(public_at):
        check_binding(area, sensitive.sensitiveType, sensitive.sensitive)


@command(
    TPM_CC.Load,
    handles=[H("parentHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("inPrivate", TPM2B_PRIVATE), ("inPublic", TPM2B_PUBLIC)],
    response_handles=[H("objectHandle", TPM_HANDLE)],
    response=[("name", TPM2B_NAME)],
)
def load_(ctx, parentHandle: int, inPrivate: bytes, inPublic):
    vol = ctx.engine.volatile
    require_free_slot(vol)
    if not inPrivate:
        raise TpmError(TPM_RC.SIZE, "empty inPrivate", at="inPrivate")
    parent = storage_parent(ctx, parentHandle, at="parentHandle")
    if inPublic.nameAlg not in HASHES:
        raise TpmError(TPM_RC.HASH, "an object without nameAlg cannot be loaded", at="inPublic")
    public = TPMT_PUBLIC.pack(inPublic)
    name = object_name(inPublic.nameAlg, public)
    with errors_at("inPrivate"):
        sensitive = unwrap_sensitive(parent, name, inPrivate)
    loadable_checks(inPublic, parent, sensitive, public_at="inPublic", private_at="inPrivate")
    handle = load(vol, _child(parent, public, name, sensitive))
    return ctx.response(objectHandle=handle, name=name)


@command(
    TPM_CC.ReadPublic,
    handles=[H("objectHandle", TPMI_DH_OBJECT)],
    response=[("outPublic", TPM2B_PUBLIC), ("name", TPM2B_NAME), ("qualifiedName", TPM2B_NAME)],
)
def read_public(ctx, objectHandle: int):
    obj = find_object(ctx.engine, objectHandle)
    if obj is None:  # the handle resolved, so it is a sequence
        raise TpmError(TPM_RC.SEQUENCE, "a sequence object has no public area")
    return ctx.response(outPublic=obj.area, name=obj.name, qualifiedName=obj.qualified_name)


@command(
    TPM_CC.ObjectChangeAuth,
    handles=[H("objectHandle", TPMI_DH_OBJECT, AuthRole.ADMIN), H("parentHandle", TPMI_DH_OBJECT)],
    params=[("newAuth", TPM2B_AUTH)],
    response=[("outPrivate", TPM2B_PRIVATE)],
)
def object_change_auth(ctx, objectHandle: int, parentHandle: int, newAuth: bytes):
    obj = loaded_object(ctx, objectHandle, at="objectHandle")
    with errors_at("newAuth"):
        auth = adjust_auth(newAuth, obj.name_alg)
    parent = find_object(ctx.engine, parentHandle)
    if parent is None or qualified_name(obj.name_alg, parent.qualified_name, obj.name) != obj.qualified_name:
        raise TpmError(TPM_RC.TYPE, "parentHandle is not the object's parent", at="parentHandle")
    # The loaded object keeps its old authValue; the caller loads the new blob to use the new one.
    return ctx.response(outPrivate=wrap_sensitive(parent, obj.name, obj.sensitive_area(auth), ctx.engine.random))


@command(
    TPM_CC.CreateLoaded,
    handles=[H("parentHandle", TPMI_DH_PARENT.plus(), AuthRole.USER)],
    params=[("inSensitive", TPM2B_SENSITIVE_CREATE), ("inPublic", TPM2B_TEMPLATE)],
    response_handles=[H("objectHandle", TPM_HANDLE)],
    response=[("outPrivate", TPM2B_PRIVATE), ("outPublic", TPM2B_PUBLIC), ("name", TPM2B_NAME)],
    cancelable=True,
)
def create_loaded(ctx, parentHandle: int, inSensitive, inPublic: bytes):
    """Create and load in one step; under a hierarchy this is CreatePrimary without creation data.

    Derivation parents (keyed-hash restricted decrypt keys) are not implemented: TPM_RC_TYPE.
    """
    with errors_at("inPublic"):
        area = _parse_template(inPublic)
    if parentHandle >> HR_SHIFT == TPM_HT.PERMANENT:
        handle, obj = make_primary(ctx, parentHandle, inSensitive, area)
        return ctx.response(objectHandle=handle, outPrivate=b"", outPublic=obj.area, name=obj.name)
    parent = storage_parent(ctx, parentHandle, at="parentHandle")
    created, public, name, private = _create_child(ctx, parent, inSensitive, area)
    handle = load(ctx.engine.volatile, _child(parent, public, name, _sensitive_area(created)))
    return ctx.response(objectHandle=handle, outPrivate=private, outPublic=created.area, name=name)


def _parse_template(data: bytes):
    r = Reader(data)
    area = TPMT_PUBLIC.unmarshal(r)
    if r.remaining:
        raise TpmError(TPM_RC.SIZE, "trailing octets after the template")
    return area


# --- credentials (Part 3, 12.5 and 12.6) ------------------------------------------------------------


def credential_key(ctx, handle: int, at: str) -> LoadedObject:
    """The key a credential is protected by: an asymmetric restricted decryption key (a storage
    key or an EK), the only kind with a symmetric definition to encrypt the credential with."""
    key = loaded_object(ctx, handle, at=at)
    attrs = key.attributes
    if (
        key.type not in (TPM_ALG.RSA, TPM_ALG.ECC)
        or not attrs & TPMA_OBJECT.decrypt
        or not attrs & TPMA_OBJECT.restricted
    ):
        raise TpmError(TPM_RC.TYPE, f"0x{handle:08x} is not an asymmetric restricted decryption key", at=at)
    return key


@command(
    TPM_CC.MakeCredential,
    handles=[H("handle", TPMI_DH_OBJECT)],
    params=[("credential", TPM2B_DIGEST), ("objectName", TPM2B_NAME)],
    response=[("credentialBlob", TPM2B_ID_OBJECT), ("secret", TPM2B_ENCRYPTED_SECRET)],
)
def make_credential(ctx, handle: int, credential: bytes, objectName: bytes):
    """Protect ``credential`` so only the TPM holding ``handle``'s private key, with the object
    named ``objectName`` loaded, can recover it (what a privacy CA does, done here by the TPM)."""
    key = credential_key(ctx, handle, at="handle")
    limit = hash_alg(key.name_alg).digest_size
    if len(credential) > limit:
        raise TpmError(
            TPM_RC.SIZE, f"credential of {len(credential)} octets, nameAlg digest is {limit}", at="credential"
        )
    with errors_at("handle"):
        seed, secret = encrypt_secret(key, IDENTITY_LABEL, ctx.engine.random)
    return ctx.response(credentialBlob=secret_to_credential(key, objectName, seed, credential), secret=secret)


@command(
    TPM_CC.ActivateCredential,
    handles=[H("activateHandle", TPMI_DH_OBJECT, AuthRole.ADMIN), H("keyHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    params=[("credentialBlob", TPM2B_ID_OBJECT), ("secret", TPM2B_ENCRYPTED_SECRET)],
    response=[("certInfo", TPM2B_DIGEST)],
)
def activate_credential(ctx, activateHandle: int, keyHandle: int, credentialBlob: bytes, secret: bytes):
    """Recover a credential made for ``activateHandle``'s Name under ``keyHandle``: a blob made
    for another Name or tampered with fails the integrity check (TPM_RC_INTEGRITY)."""
    activated = loaded_object(ctx, activateHandle, at="activateHandle")
    key = credential_key(ctx, keyHandle, at="keyHandle")
    with errors_at("secret"):
        seed = decrypt_secret(key, IDENTITY_LABEL, secret, exact_ecc_codes=True)
    with errors_at("credentialBlob"):
        cert_info = credential_to_secret(key, activated.name, seed, credentialBlob)
    return ctx.response(certInfo=cert_info)


# --- TPM2_Unseal -------------------------------------------------------------------------


@command(
    TPM_CC.Unseal,
    handles=[H("itemHandle", TPMI_DH_OBJECT, AuthRole.USER)],
    response=[("outData", TPM2B_SENSITIVE_DATA)],
)
def unseal(ctx, itemHandle: int):
    """The data of a sealed data object: a keyed hash that neither signs nor decrypts.

    Its authorization (password, HMAC or a policy such as PolicyPCR) is all that guards
    the data, so a key -- which could be used to learn about its own value -- is refused.
    """
    item = loaded_object(ctx, itemHandle, at="itemHandle")
    if item.type != TPM_ALG.KEYEDHASH:
        raise TpmError(TPM_RC.TYPE, f"0x{itemHandle:08x} is not a keyed-hash object", at="itemHandle")
    if item.attributes & (TPMA_OBJECT.sign | TPMA_OBJECT.decrypt | TPMA_OBJECT.restricted):
        raise TpmError(TPM_RC.ATTRIBUTES, f"0x{itemHandle:08x} is a key, not a sealed data object", at="itemHandle")
    require_private_part(item, itemHandle)
    return ctx.response(outData=item.sensitive)


# --- TPM2_LoadExternal -------------------------------------------------------------------

#: Attributes an object loaded with its private part may not claim: it was not made by this
#: TPM, so it must not look like a key that never left one (or a parent of such keys).
_EXTERNAL_FORBIDDEN = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.restricted
#: The largest keyed-hash data object (a NULL scheme): TPM2B_SENSITIVE_DATA's buffer.
_MAX_SEALED_DATA = 128
#: The smallest public exponent a loaded RSA key may have (0 stands for 65537).
_MIN_RSA_EXPONENT = 7


def _check_external_public(area) -> None:
    """A public part that public-key operations can use: right sizes, an ECC point on its curve.

    Bare codes: the command places them at inPublic.
    """
    if area.type == TPM_ALG.RSA:
        parms = area.parameters
        if len(area.unique) != parms.keyBits // 8 or area.unique[0] < 0x80:
            raise TpmError(TPM_RC.KEY, f"RSA modulus of {len(area.unique)} octets for keyBits {parms.keyBits}")
        if parms.exponent and parms.exponent < _MIN_RSA_EXPONENT:
            raise TpmError(TPM_RC.VALUE, f"RSA exponent {parms.exponent}")
    elif area.type == TPM_ALG.ECC:
        curve = CURVES[area.parameters.curveID]
        x, y = area.unique.x, area.unique.y
        if len(x) != curve.size or len(y) != curve.size:
            raise TpmError(TPM_RC.KEY, f"ECC point coordinates of {len(x)}/{len(y)} octets")
        try:
            ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve.curve()
            ).public_key()
        except ValueError:
            raise TpmError(TPM_RC.ECC_POINT, "the public point is not on the curve") from None
    elif len(area.unique) != hash_alg(area.nameAlg).digest_size:
        raise TpmError(TPM_RC.KEY, f"unique of {len(area.unique)} octets is not a nameAlg digest")


def _private_size_limit(area) -> int:
    """How long the sensitive value of a symmetric or keyed-hash object must (or may) be."""
    if area.type == TPM_ALG.SYMCIPHER:
        return area.parameters.sym.keyBits // 8
    scheme = area.parameters.scheme
    return _MAX_SEALED_DATA if scheme.scheme == TPM_ALG.NULL else hash_alg(scheme.details.hashAlg).block_size


def _check_external_private(area, sensitive) -> None:
    """The private part fits the public part (sizes; placed by the caller at inPrivate)."""
    digest_size = hash_alg(area.nameAlg).digest_size
    if sensitive.sensitiveType != area.type:
        raise TpmError(TPM_RC.TYPE, "inPrivate is of another type than inPublic")
    if len(sensitive.authValue) > digest_size:
        raise TpmError(TPM_RC.SIZE, f"authValue of {len(sensitive.authValue)} octets")
    value = sensitive.sensitive
    if area.type == TPM_ALG.RSA:
        if 2 * len(value) != area.parameters.keyBits // 8 or value[0] < 0x80:
            raise TpmError(TPM_RC.KEY_SIZE, f"RSA prime of {len(value)} octets")
    elif area.type == TPM_ALG.ECC:
        curve = CURVES[area.parameters.curveID]
        if len(value) > curve.size or not 0 < int.from_bytes(value, "big") < curve.order:
            raise TpmError(TPM_RC.KEY_SIZE, "ECC private scalar out of range")
    else:
        limit = _private_size_limit(area)
        if area.type == TPM_ALG.SYMCIPHER and len(value) != limit:
            raise TpmError(TPM_RC.KEY_SIZE, f"symmetric key of {len(value)} octets, keyBits say {limit}")
        if len(value) > limit:
            raise TpmError(TPM_RC.KEY_SIZE, f"keyed-hash value of {len(value)} octets exceeds {limit}")
        if len(sensitive.seedValue) != digest_size:
            raise TpmError(TPM_RC.KEY_SIZE, f"seedValue of {len(sensitive.seedValue)} octets")
    if len(sensitive.seedValue) > digest_size:
        raise TpmError(TPM_RC.KEY_SIZE, f"seedValue of {len(sensitive.seedValue)} octets")


def _check_external_binding(area, sensitive) -> None:
    """The public part names the private one (bare TPM_RC_BINDING; placed at inPublic)."""
    if area.type in (TPM_ALG.SYMCIPHER, TPM_ALG.KEYEDHASH):
        expected = symmetric_unique(area.nameAlg, sensitive.seedValue, sensitive.sensitive)
        if not hmac.compare_digest(expected, area.unique):
            raise TpmError(TPM_RC.BINDING, "unique is not H(seedValue || key)")
    else:
        check_binding(area, sensitive.sensitiveType, sensitive.sensitive)


@command(
    TPM_CC.LoadExternal,
    params=[
        ("inPrivate", TPM2B_SENSITIVE_OR_EMPTY),
        ("inPublic", TPM2B_PUBLIC_PLUS),
        ("hierarchy", TPMI_RH_HIERARCHY.plus()),
    ],
    response_handles=[H("objectHandle", TPM_HANDLE)],
    response=[("name", TPM2B_NAME)],
)
def load_external(ctx, inPrivate, inPublic, hierarchy: int):
    """Load a key from outside: its public part only (any hierarchy), or with its private part
    in the clear, which only TPM_RH_NULL may hold (the object must not look TPM-made)."""
    vol = ctx.engine.volatile
    require_free_slot(vol)
    if not hierarchy_enabled(ctx.engine, hierarchy):
        raise TpmError(TPM_RC.HIERARCHY, f"hierarchy 0x{hierarchy:08x} is disabled", at="hierarchy")
    if inPrivate is not None:
        if hierarchy != TPM_RH.NULL:
            raise TpmError(TPM_RC.HIERARCHY, "a private part may only be loaded under TPM_RH_NULL", at="hierarchy")
        if inPublic.objectAttributes & _EXTERNAL_FORBIDDEN:
            raise TpmError(TPM_RC.ATTRIBUTES, "fixedTPM, fixedParent or restricted with a private part", at="inPublic")
    if inPublic.nameAlg == TPM_ALG.NULL:
        raise TpmError(TPM_RC.HASH, "an object without a Name (nameAlg TPM_ALG_NULL) is not supported", at="inPublic")
    with errors_at("inPublic"):
        if inPrivate is None:
            scheme_checks(inPublic, None)
            _check_external_public(inPublic)
        else:
            public_checks(inPublic, None)
    if inPrivate is not None:
        with errors_at("inPrivate"):
            _check_external_private(inPublic, inPrivate)
        # Unplaced, as the reference code and libtpms answer it: the mismatch is between the two
        # parameters, not in either (Part 3 12.3 lists TPM_RC_BINDING without a parameter).
        _check_external_binding(inPublic, inPrivate)
    public = TPMT_PUBLIC.pack(inPublic)
    name = object_name(inPublic.nameAlg, public)
    obj = LoadedObject(
        public=public,
        hierarchy=hierarchy,
        # An external object has no parent to qualify its Name with: its Qualified Name is its
        # Name, whatever the hierarchy (TPM 2.0 Part 4, ObjectSetLoadedAttributes; libtpms alike).
        qualified_name=name,
        auth_value=inPrivate.authValue if inPrivate is not None else b"",
        seed_value=inPrivate.seedValue if inPrivate is not None else b"",
        sensitive=inPrivate.sensitive if inPrivate is not None else b"",
        st_clear=bool(inPublic.objectAttributes & TPMA_OBJECT.stClear),
        public_only=inPrivate is None,
    )
    return ctx.response(objectHandle=load(vol, obj), name=name)
