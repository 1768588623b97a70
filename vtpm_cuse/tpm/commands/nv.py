"""Non-volatile storage (Part 3, clause 31): TPM2_NV_DefineSpace ... TPM2_NV_ChangeAuth.

Who may read or write an index is decided by its attributes and by which
handle authorizes the command (``authHandle``): the owner needs
OWNERREAD/OWNERWRITE and the platform PPREAD/PPWRITE (checked here), and the
index itself AUTHREAD/AUTHWRITE with its authValue or POLICYREAD/POLICYWRITE
with a policy session, and a PIN index's pinCount below pinLimit -- those are
checked, and PIN uses counted, by the sessions through the index's
:class:`~..nv_index.NvAuthRules`, for any command; the write operations are
declared ``nv_write=True``.  The index's state (WRITTEN, locks) is held in its
attributes and kept by :mod:`..nv_index`, which also decides where an ORDERLY
index lives.
"""

from __future__ import annotations

from ..algorithms import hash_alg
from ..auth import strip_trailing_zeros
from ..command import AuthRole, H, command
from ..constants import (
    MAX_NV_BUFFER_SIZE,
    MAX_NV_INDEX_SIZE,
    TPM_CC,
    TPM_HT,
    TPM_NT,
    TPM_RH,
    TPMA_NV,
    TPMA_NV_TPM_NT_MASK,
    TPMA_NV_TPM_NT_SHIFT,
)
from ..errors import TPM_RC, TpmError
from ..marshal import UINT16, UINT64
from ..nv_index import MAX_ORDERLY_COUNT, NV_UINT64_SIZE, NvIndex, initial_counter, modify, write_through
from ..nv_index import define as nv_define
from ..nv_index import defined as nv_defined
from ..nv_index import get as nv_get
from ..nv_index import undefine as nv_undefine
from ..types import (
    TPM2B_AUTH,
    TPM2B_MAX_NV_BUFFER,
    TPM2B_NAME,
    TPM2B_NV_PUBLIC,
    TPM2B_NV_PUBLIC_2,
    TPMI_RH_NV_AUTH,
    TPMI_RH_NV_INDEX,
    TPMI_RH_PLATFORM,
    TPMI_RH_PROVISION,
    TPMT_NV_PUBLIC_2,
)

#: The attributes a caller may not set in NV_DefineSpace: they are the index's state.
_STATE_BITS = TPMA_NV.WRITTEN | TPMA_NV.WRITELOCKED | TPMA_NV.READLOCKED
_READ_BITS = TPMA_NV.OWNERREAD | TPMA_NV.PPREAD | TPMA_NV.AUTHREAD | TPMA_NV.POLICYREAD
_WRITE_BITS = TPMA_NV.OWNERWRITE | TPMA_NV.PPWRITE | TPMA_NV.AUTHWRITE | TPMA_NV.POLICYWRITE
#: Index types whose data the TPM computes: TPM2_NV_Write cannot change them.
_NO_PLAIN_WRITE = (TPM_NT.COUNTER, TPM_NT.BITS, TPM_NT.EXTEND)


# --- access rules ----------------------------------------------------------------------


def _index(ctx, handle: int) -> NvIndex:
    """The index the handle area resolved (the dispatcher already refused undefined ones)."""
    nv = nv_get(ctx.engine, handle)
    if nv is None:
        raise TpmError(TPM_RC.HANDLE, f"NV index 0x{handle:08x} is not defined", at="nvIndex")
    return nv


def _check_hierarchy_auth(auth_handle: int, nv: NvIndex, owner_flag: TPMA_NV, platform_flag: TPMA_NV) -> None:
    """Owner or platform authorization needs the index's OWNER*/PP* attribute."""
    if auth_handle == TPM_RH.OWNER:
        allowed = nv.has(owner_flag)
    elif auth_handle == TPM_RH.PLATFORM:
        allowed = nv.has(platform_flag)
    else:
        allowed = auth_handle == nv.index
    if not allowed:
        raise TpmError(TPM_RC.NV_AUTHORIZATION, f"0x{auth_handle:08x} may not access index 0x{nv.index:08x}")


def _write_checks(auth_handle: int, nv: NvIndex) -> None:
    """NV write access: not write-locked, and authorized as the attributes allow."""
    if nv.has(TPMA_NV.WRITELOCKED):
        raise TpmError(TPM_RC.NV_LOCKED, f"index 0x{nv.index:08x} is write-locked")
    _check_hierarchy_auth(auth_handle, nv, TPMA_NV.OWNERWRITE, TPMA_NV.PPWRITE)


def _typed_write_target(ctx, auth_handle: int, handle: int, nt: TPM_NT) -> NvIndex:
    """The index NV_Increment / NV_Extend / NV_SetBits write: write access checked, and of the
    one type the command works on (TPM_RC_ATTRIBUTES otherwise)."""
    nv = _index(ctx, handle)
    _write_checks(auth_handle, nv)
    if nv.nt != nt:
        raise TpmError(TPM_RC.ATTRIBUTES, f"{TPM_NT(nv.nt).name} index is not a {nt.name} index", at="nvIndex")
    return nv


def read_checks(auth_handle: int, nv: NvIndex, *, need_written: bool = True) -> None:
    """NV read access: not read-locked, authorized, and (for reading data) written."""
    if nv.has(TPMA_NV.READLOCKED):
        raise TpmError(TPM_RC.NV_LOCKED, f"index 0x{nv.index:08x} is read-locked")
    _check_hierarchy_auth(auth_handle, nv, TPMA_NV.OWNERREAD, TPMA_NV.PPREAD)
    if need_written and not nv.has(TPMA_NV.WRITTEN):
        raise TpmError(TPM_RC.NV_UNINITIALIZED, f"index 0x{nv.index:08x} was never written")


def _store_data(ctx, handle: int, data: bytes, offset: int) -> NvIndex:
    """Write ``data`` at ``offset`` and SET WRITTEN; unwritten octets of a new index read 0xFF."""
    nv = modify(ctx.engine, handle)
    current = nv.data if nv.has(TPMA_NV.WRITTEN) and len(nv.data) == nv.data_size else b"\xff" * nv.data_size
    nv.data = current[:offset] + data + current[offset + len(data) :]
    nv.set(TPMA_NV.WRITTEN)
    return nv


def _store_uint64(ctx, handle: int, value: int) -> NvIndex:
    return _store_data(ctx, handle, value.to_bytes(NV_UINT64_SIZE, "big"), 0)


# --- NV_DefineSpace ------------------------------------------------------------------------


def _define_checks(ctx, authHandle: int, auth: bytes, pub) -> None:
    """The attribute and size consistency rules of TPM2_NV_DefineSpace."""
    attrs = pub.attributes
    digest_size = hash_alg(pub.nameAlg).digest_size
    platform = authHandle == TPM_RH.PLATFORM
    if pub.authPolicy and len(pub.authPolicy) != digest_size:
        raise TpmError(TPM_RC.SIZE, f"authPolicy of {len(pub.authPolicy)} bytes", at="publicInfo")
    if len(strip_trailing_zeros(auth)) > digest_size:
        raise TpmError(TPM_RC.SIZE, f"auth of {len(auth)} bytes exceeds the nameAlg digest", at="auth")
    if platform and not ctx.engine.volatile.ph_enable_nv:
        raise TpmError(TPM_RC.HIERARCHY, "platform NV is disabled (phEnableNV CLEAR)", at="authHandle")
    nt = (attrs & TPMA_NV_TPM_NT_MASK) >> TPMA_NV_TPM_NT_SHIFT
    if nt not in TPM_NT._value2member_map_:
        raise TpmError(TPM_RC.ATTRIBUTES, f"TPM_NT 0x{nt:x} is not an index type", at="publicInfo")
    _define_size_checks(nt, pub.dataSize, digest_size)
    _define_type_checks(nt, attrs)
    _define_attribute_checks(attrs, platform, pub.dataSize)


def _define_size_checks(nt: int, data_size: int, digest_size: int) -> None:
    if nt == TPM_NT.ORDINARY:
        wrong = data_size > MAX_NV_INDEX_SIZE
    elif nt == TPM_NT.EXTEND:
        wrong = data_size != digest_size
    else:
        wrong = data_size != NV_UINT64_SIZE
    if wrong:
        raise TpmError(TPM_RC.SIZE, f"dataSize {data_size} for index type {TPM_NT(nt).name}", at="publicInfo")


def _define_type_checks(nt: int, attrs: int) -> None:
    def refuse(why: str) -> None:
        raise TpmError(TPM_RC.ATTRIBUTES, f"{TPM_NT(nt).name} index: {why}", at="publicInfo")

    if nt == TPM_NT.COUNTER and attrs & TPMA_NV.CLEAR_STCLEAR:
        refuse("a counter cannot have CLEAR_STCLEAR")
    if nt == TPM_NT.PIN_FAIL and not attrs & TPMA_NV.NO_DA:
        refuse("a PIN Fail index needs NO_DA")
    if nt in (TPM_NT.PIN_FAIL, TPM_NT.PIN_PASS) and attrs & (
        TPMA_NV.AUTHWRITE | TPMA_NV.GLOBALLOCK | TPMA_NV.WRITEDEFINE
    ):
        refuse("AUTHWRITE, GLOBALLOCK and WRITEDEFINE are not allowed")


def _define_attribute_checks(attrs: int, platform: bool, data_size: int) -> None:
    def refuse(why: str, at: str = "publicInfo") -> None:
        raise TpmError(TPM_RC.ATTRIBUTES, f"TPMA_NV 0x{attrs:08x}: {why}", at=at)

    if attrs & _STATE_BITS:
        refuse("WRITTEN, WRITELOCKED and READLOCKED are set by the TPM")
    if not attrs & _READ_BITS:
        refuse("no way to read the index")
    if not attrs & _WRITE_BITS:
        refuse("no way to write the index")
    if attrs & TPMA_NV.CLEAR_STCLEAR and attrs & TPMA_NV.WRITEDEFINE:
        refuse("CLEAR_STCLEAR with WRITEDEFINE")
    if bool(attrs & TPMA_NV.PLATFORMCREATE) != platform:
        refuse("PLATFORMCREATE must be SET exactly when the platform defines the index", at="authHandle")
    if attrs & TPMA_NV.POLICY_DELETE and not platform:
        refuse("POLICY_DELETE needs platform authorization")
    if attrs & TPMA_NV.WRITEALL and data_size > MAX_NV_BUFFER_SIZE:
        raise TpmError(TPM_RC.SIZE, f"WRITEALL index of {data_size} bytes", at="publicInfo")


@command(
    TPM_CC.NV_DefineSpace,
    handles=[H("authHandle", TPMI_RH_PROVISION, AuthRole.USER)],
    params=[("auth", TPM2B_AUTH), ("publicInfo", TPM2B_NV_PUBLIC)],
    nv=True,
)
def nv_define_space(ctx, authHandle: int, auth: bytes, publicInfo):
    _define_index(ctx, authHandle, auth, publicInfo)


@command(
    TPM_CC.NV_DefineSpace2,
    handles=[H("authHandle", TPMI_RH_PROVISION, AuthRole.USER)],
    params=[("auth", TPM2B_AUTH), ("publicInfo", TPM2B_NV_PUBLIC_2)],
    nv=True,
)
def nv_define_space2(ctx, authHandle: int, auth: bytes, publicInfo):
    """1.83's NV_DefineSpace with TPMS_NV_PUBLIC_2: this TPM's only handle type is
    TPM_HT_NV_INDEX (the union refuses the others), which is NV_DefineSpace's index."""
    _define_index(ctx, authHandle, auth, publicInfo.nvPublic2)


def _define_index(ctx, authHandle: int, auth: bytes, publicInfo) -> None:
    _define_checks(ctx, authHandle, auth, publicInfo)
    if nv_get(ctx.engine, publicInfo.nvIndex) is not None:
        raise TpmError(TPM_RC.NV_DEFINED, f"index 0x{publicInfo.nvIndex:08x} is already defined")
    nv_define(
        ctx.engine,
        NvIndex(
            index=publicInfo.nvIndex,
            name_alg=publicInfo.nameAlg,
            attributes=publicInfo.attributes,
            auth_policy=publicInfo.authPolicy,
            data_size=publicInfo.dataSize,
            auth_value=strip_trailing_zeros(auth),
        ),
    )


# --- NV_UndefineSpace, NV_UndefineSpaceSpecial ------------------------------------------------


@command(
    TPM_CC.NV_UndefineSpace,
    handles=[H("authHandle", TPMI_RH_PROVISION, AuthRole.USER), H("nvIndex", TPMI_RH_NV_INDEX)],
    nv=True,
)
def nv_undefine_space(ctx, authHandle: int, nvIndex: int):
    nv = _index(ctx, nvIndex)
    if nv.has(TPMA_NV.POLICY_DELETE):
        raise TpmError(TPM_RC.ATTRIBUTES, "a POLICY_DELETE index needs NV_UndefineSpaceSpecial", at="nvIndex")
    if authHandle == TPM_RH.OWNER and nv.has(TPMA_NV.PLATFORMCREATE):
        raise TpmError(TPM_RC.NV_AUTHORIZATION, "the owner cannot delete a platform index")
    nv_undefine(ctx.engine, nvIndex)


@command(
    TPM_CC.NV_UndefineSpaceSpecial,
    handles=[H("nvIndex", TPMI_RH_NV_INDEX, AuthRole.ADMIN), H("platform", TPMI_RH_PLATFORM, AuthRole.USER)],
    nv=True,
)
def nv_undefine_space_special(ctx, nvIndex: int, platform: int):
    nv = _index(ctx, nvIndex)
    if not nv.has(TPMA_NV.POLICY_DELETE):
        raise TpmError(TPM_RC.ATTRIBUTES, "index does not have POLICY_DELETE", at="nvIndex")
    nv_undefine(ctx.engine, nvIndex)


# --- NV_ReadPublic ------------------------------------------------------------------------------


@command(
    TPM_CC.NV_ReadPublic,
    handles=[H("nvIndex", TPMI_RH_NV_INDEX)],
    response=[("nvPublic", TPM2B_NV_PUBLIC), ("nvName", TPM2B_NAME)],
)
def nv_read_public(ctx, nvIndex: int):
    nv = _index(ctx, nvIndex)
    return ctx.response(nvPublic=nv.public(), nvName=nv.name)


@command(
    TPM_CC.NV_ReadPublic2,
    handles=[H("nvIndex", TPMI_RH_NV_INDEX)],
    response=[("nvPublic", TPM2B_NV_PUBLIC_2), ("nvName", TPM2B_NAME)],
)
def nv_read_public2(ctx, nvIndex: int):
    nv = _index(ctx, nvIndex)
    public = TPMT_NV_PUBLIC_2(handleType=TPM_HT.NV_INDEX, nvPublic2=nv.public())
    return ctx.response(nvPublic=public, nvName=nv.name)


# --- writing ------------------------------------------------------------------------------------

_ACCESS_HANDLES = [H("authHandle", TPMI_RH_NV_AUTH, AuthRole.USER), H("nvIndex", TPMI_RH_NV_INDEX)]


@command(
    TPM_CC.NV_Write,
    handles=_ACCESS_HANDLES,
    params=[("data", TPM2B_MAX_NV_BUFFER), ("offset", UINT16)],
    nv=True,
    nv_write=True,
)
def nv_write(ctx, authHandle: int, nvIndex: int, data: bytes, offset: int):
    nv = _index(ctx, nvIndex)
    _write_checks(authHandle, nv)
    if nv.nt in _NO_PLAIN_WRITE:
        raise TpmError(TPM_RC.ATTRIBUTES, f"{TPM_NT(nv.nt).name} index cannot be written with NV_Write")
    if offset > nv.data_size:
        raise TpmError(TPM_RC.VALUE, f"offset {offset} beyond dataSize {nv.data_size}", at="offset")
    if len(data) > nv.data_size - offset:
        raise TpmError(TPM_RC.NV_RANGE, f"{len(data)} bytes at {offset} exceed dataSize {nv.data_size}")
    if nv.has(TPMA_NV.WRITEALL) and len(data) < nv.data_size:
        raise TpmError(TPM_RC.NV_RANGE, f"WRITEALL index needs all {nv.data_size} bytes, got {len(data)}")
    _store_data(ctx, nvIndex, data, offset)


@command(TPM_CC.NV_Increment, handles=_ACCESS_HANDLES, nv=True, nv_write=True)
def nv_increment(ctx, authHandle: int, nvIndex: int):
    nv = _typed_write_target(ctx, authHandle, nvIndex, TPM_NT.COUNTER)
    value = (nv.counter if nv.has(TPMA_NV.WRITTEN) else initial_counter(ctx.engine)) + 1
    live = _store_uint64(ctx, nvIndex, value)
    if live.has(TPMA_NV.ORDERLY) and value & MAX_ORDERLY_COUNT == 0:
        # The low bits rolled over: the NV copy keeps the high-water mark for a disorderly reset.
        write_through(ctx.engine, live)


@command(TPM_CC.NV_Extend, handles=_ACCESS_HANDLES, params=[("data", TPM2B_MAX_NV_BUFFER)], nv=True, nv_write=True)
def nv_extend(ctx, authHandle: int, nvIndex: int, data: bytes):
    nv = _typed_write_target(ctx, authHandle, nvIndex, TPM_NT.EXTEND)
    old = nv.data if nv.has(TPMA_NV.WRITTEN) else bytes(nv.data_size)
    _store_data(ctx, nvIndex, hash_alg(nv.name_alg).new(old + data).digest(), 0)


@command(TPM_CC.NV_SetBits, handles=_ACCESS_HANDLES, params=[("bits", UINT64)], nv=True, nv_write=True)
def nv_set_bits(ctx, authHandle: int, nvIndex: int, bits: int):
    nv = _typed_write_target(ctx, authHandle, nvIndex, TPM_NT.BITS)
    old = nv.counter if nv.has(TPMA_NV.WRITTEN) else 0
    _store_uint64(ctx, nvIndex, old | bits)


@command(TPM_CC.NV_WriteLock, handles=_ACCESS_HANDLES, nv=True, nv_write=True)
def nv_write_lock(ctx, authHandle: int, nvIndex: int):
    nv = _index(ctx, nvIndex)
    try:
        _write_checks(authHandle, nv)
    except TpmError as err:
        if err.rc != TPM_RC.NV_LOCKED:
            raise
        return  # already locked: not an error
    if not nv.has(TPMA_NV.WRITEDEFINE) and not nv.has(TPMA_NV.WRITE_STCLEAR):
        raise TpmError(TPM_RC.ATTRIBUTES, "index has neither WRITEDEFINE nor WRITE_STCLEAR", at="nvIndex")
    modify(ctx.engine, nvIndex).set(TPMA_NV.WRITELOCKED)


@command(TPM_CC.NV_GlobalWriteLock, handles=[H("authHandle", TPMI_RH_PROVISION, AuthRole.USER)], nv=True)
def nv_global_write_lock(ctx, authHandle: int):
    for nv in nv_defined(ctx.engine):
        if nv.has(TPMA_NV.GLOBALLOCK) and not nv.has(TPMA_NV.WRITELOCKED):
            modify(ctx.engine, nv.index).set(TPMA_NV.WRITELOCKED)


# --- reading ------------------------------------------------------------------------------------


@command(
    TPM_CC.NV_Read,
    handles=_ACCESS_HANDLES,
    params=[("size", UINT16), ("offset", UINT16)],
    response=[("data", TPM2B_MAX_NV_BUFFER)],
)
def nv_read(ctx, authHandle: int, nvIndex: int, size: int, offset: int):
    nv = _index(ctx, nvIndex)
    read_checks(authHandle, nv)
    if size > MAX_NV_BUFFER_SIZE:
        raise TpmError(TPM_RC.VALUE, f"size {size} exceeds MAX_NV_BUFFER_SIZE", at="size")
    if offset > nv.data_size:
        raise TpmError(TPM_RC.VALUE, f"offset {offset} beyond dataSize {nv.data_size}", at="offset")
    if size > nv.data_size - offset:
        raise TpmError(TPM_RC.NV_RANGE, f"{size} bytes at {offset} exceed dataSize {nv.data_size}")
    return ctx.response(data=nv.data[offset : offset + size])


@command(TPM_CC.NV_ReadLock, handles=_ACCESS_HANDLES, nv=True)
def nv_read_lock(ctx, authHandle: int, nvIndex: int):
    nv = _index(ctx, nvIndex)
    try:
        read_checks(authHandle, nv, need_written=False)
    except TpmError as err:
        if err.rc != TPM_RC.NV_LOCKED:
            raise
    if not nv.has(TPMA_NV.READ_STCLEAR):
        raise TpmError(TPM_RC.ATTRIBUTES, "index does not have READ_STCLEAR", at="nvIndex")
    modify(ctx.engine, nvIndex).set(TPMA_NV.READLOCKED)


# --- NV_ChangeAuth ------------------------------------------------------------------------------


@command(
    TPM_CC.NV_ChangeAuth,
    handles=[H("nvIndex", TPMI_RH_NV_INDEX, AuthRole.ADMIN)],
    params=[("newAuth", TPM2B_AUTH)],
    nv=True,
)
def nv_change_auth(ctx, nvIndex: int, newAuth: bytes):
    nv = _index(ctx, nvIndex)
    new_auth = strip_trailing_zeros(newAuth)
    if len(new_auth) > hash_alg(nv.name_alg).digest_size:
        raise TpmError(TPM_RC.SIZE, f"newAuth of {len(new_auth)} bytes exceeds the nameAlg digest", at="newAuth")
    modify(ctx.engine, nvIndex).auth_value = new_auth
