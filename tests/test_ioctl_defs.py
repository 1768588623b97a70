"""Tests for ioctl_defs: the tpm_ioctl.h contract (spec swtpm-compat.md §1, §3.1).

Expected numbers are written out literally from the spec tables on purpose:
the package computes them, the tests must not.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioctl_defs import (
    COMMANDS,
    I386,
    PTM_GET_INFO_I386,
    PTM_GETINFO_SIZE,
    PTM_HDATA_MAX,
    PTM_STATE_BLOB_SIZE,
    STRUCTS,
    TPM_NON_FATAL,
    X86_64,
    Abi,
    IocDir,
    MalformedMessage,
    Part,
    PayloadTooLarge,
    PtmBlobType,
    PtmCap,
    PtmCapNResponse,
    PtmCapResponse,
    PtmCmd,
    PtmConfigFlag,
    PtmEstResponse,
    PtmGetInfoRequest,
    PtmGetInfoResponse,
    PtmGetStateRequest,
    PtmGetStateResponse,
    PtmHdataRequest,
    PtmInitFlag,
    PtmInitRequest,
    PtmIoctl,
    PtmLocRequest,
    PtmResResponse,
    PtmResult,
    PtmSetBufferSizeResponse,
    PtmSetStateRequest,
    PtmStateFlag,
    SwtpmInfo,
    UnknownCommand,
    by_cmd,
    by_ioctl,
    by_name,
    compat_abi,
    host_abi,
    ioc,
    is_non_fatal,
    pack_socket_command,
    result_name,
    split_socket_command,
)
from ioctl_defs.layout import Int

# -- the spec, literally ---------------------------------------------------

# §1.4: nr, name, macro, struct, x86-64 size, x86-64 value, CMD code
SPEC_IOCTLS = [
    (0, "PTM_GET_CAPABILITY", "_IOR", "ptm_cap", 8, 0x80085000, 0x01),
    (1, "PTM_INIT", "_IOWR", "ptm_init", 4, 0xC0045001, 0x02),
    (2, "PTM_SHUTDOWN", "_IOR", "ptm_res", 4, 0x80045002, 0x03),
    (3, "PTM_GET_TPMESTABLISHED", "_IOR", "ptm_est", 8, 0x80085003, 0x04),
    (4, "PTM_SET_LOCALITY", "_IOWR", "ptm_loc", 4, 0xC0045004, 0x05),
    (5, "PTM_HASH_START", "_IOR", "ptm_res", 4, 0x80045005, 0x06),
    (6, "PTM_HASH_DATA", "_IOWR", "ptm_hdata", 4100, 0xD0045006, 0x07),
    (7, "PTM_HASH_END", "_IOR", "ptm_res", 4, 0x80045007, 0x08),
    (8, "PTM_CANCEL_TPM_CMD", "_IOR", "ptm_res", 4, 0x80045008, 0x09),
    (9, "PTM_STORE_VOLATILE", "_IOR", "ptm_res", 4, 0x80045009, 0x0A),
    (10, "PTM_RESET_TPMESTABLISHED", "_IOWR", "ptm_reset_est", 4, 0xC004500A, 0x0B),
    (11, "PTM_GET_STATEBLOB", "_IOWR", "ptm_getstate", 3088, 0xCC10500B, 0x0C),
    (12, "PTM_SET_STATEBLOB", "_IOWR", "ptm_setstate", 3084, 0xCC0C500C, 0x0D),
    (13, "PTM_STOP", "_IOR", "ptm_res", 4, 0x8004500D, 0x0E),
    (14, "PTM_GET_CONFIG", "_IOR", "ptm_getconfig", 8, 0x8008500E, 0x0F),
    (15, "PTM_SET_DATAFD", "_IOR", "ptm_res", 4, 0x8004500F, 0x10),
    (16, "PTM_SET_BUFFERSIZE", "_IOWR", "ptm_setbuffersize", 16, 0xC0105010, 0x11),
    (17, "PTM_GET_INFO", "_IOWR", "ptm_getinfo", 3088, 0xCC105011, 0x12),
    (18, "PTM_LOCK_STORAGE", "_IOWR", "ptm_lockstorage", 4, 0xC0045012, 0x13),
]

# §1.2: sizeof on x86-64 and i386
SPEC_SIZES = {
    "ptm_cap": (8, 8),
    "ptm_cap_n": (8, 8),
    "ptm_est": (8, 8),
    "ptm_reset_est": (4, 4),
    "ptm_init": (4, 4),
    "ptm_loc": (4, 4),
    "ptm_hdata": (4100, 4100),
    "ptm_getstate": (3088, 3088),
    "ptm_setstate": (3084, 3084),
    "ptm_getconfig": (8, 8),
    "ptm_setbuffersize": (16, 16),
    "ptm_getinfo": (3088, 3084),
    "ptm_lockstorage": (4, 4),
    "ptm_res": (4, 4),
}

# §1.5
SPEC_RESULTS = {
    "TPM_SUCCESS": 0x000,
    "TPM_BAD_PARAMETER": 0x003,
    "TPM_FAIL": 0x009,
    "TPM_BAD_ORDINAL": 0x00A,
    "TPM_KEYNOTFOUND": 0x00D,
    "TPM_SIZE": 0x017,
    "TPM_IOERROR": 0x01F,
    "TPM_DECRYPT_ERROR": 0x021,
    "TPM_BAD_KEY_PROPERTY": 0x028,
    "TPM_BAD_MODE": 0x02C,
    "TPM_BAD_VERSION": 0x02E,
    "TPM_BAD_DATASIZE": 0x02B,
    "TPM_BAD_LOCALITY": 0x03D,
    "TPM_RETRY": 0x800,
    "TPM_RC_FAILURE": 0x101,
}

BIG_ENDIAN_64 = Abi("s390x", "big", 8)
PPC64 = Abi("ppc64", "big", 8, ioc.ALTERNATIVE)
ABIS = [X86_64, I386, BIG_ENDIAN_64, PPC64]

ALL_PARTS: list[type[Part]] = [p for s in STRUCTS.values() for p in (s.request, s.response)]
NON_EMPTY_PARTS = [p for p in ALL_PARTS if not p.LAYOUT.is_empty]


def part_values(cls: type[Part], *, success: bool = False, extra_payload: int = 0) -> st.SearchStrategy[Part]:
    """Random instances of ``cls`` with every field in range."""
    kwargs: dict[str, st.SearchStrategy[object]] = {}
    for field in cls.LAYOUT.value_fields:
        if isinstance(field, Int):
            if field.name == "tpm_result" and success:
                kwargs[field.name] = st.just(0)
            else:
                kwargs[field.name] = st.integers(0, field.limit - 1)
        else:
            kwargs[field.name] = st.binary(max_size=field.capacity + extra_payload)
    return st.builds(cls, **kwargs)


def transmitted(part: Part) -> Part:
    """What survives the wire: failed responses carry only their result."""
    return type(part)(tpm_result=part.tpm_result) if part.is_error else part  # type: ignore[attr-defined,call-arg]


# -- ioctl numbers, sizes, command table ------------------------------------


@pytest.mark.parametrize("nr,name,macro,struct_name,size,value,cmd", SPEC_IOCTLS)
def test_ioctl_numbers_and_sizes_match_spec(nr, name, macro, struct_name, size, value, cmd):
    spec = by_name(name)
    assert spec.nr == nr
    assert spec.cmd == cmd
    assert spec.struct.name == struct_name
    assert spec.direction == {"_IOR": IocDir.READ, "_IOWR": IocDir.READ | IocDir.WRITE}[macro]
    assert spec.ioctl_size(X86_64) == size
    assert spec.ioctl_number(X86_64) == value
    assert PtmIoctl[name] == value
    assert by_cmd(cmd) is spec


def test_table_is_complete_and_ordered():
    assert [c.name for c in COMMANDS] == [row[1] for row in SPEC_IOCTLS]
    assert len(PtmIoctl) == 19


@pytest.mark.parametrize("name,sizes", SPEC_SIZES.items())
def test_struct_sizes_match_spec(name, sizes):
    assert (STRUCTS[name].ioctl_size(X86_64), STRUCTS[name].ioctl_size(I386)) == sizes


def test_get_info_differs_on_i386_only():
    assert PTM_GET_INFO_I386 == 0xCC0C5011
    assert by_name("PTM_GET_INFO").ioctl_number(I386) == 0xCC0C5011
    for spec in COMMANDS:
        if spec.name != "PTM_GET_INFO":
            assert spec.ioctl_number(I386) == spec.ioctl_number(X86_64)


def test_alternative_layout_numbers():
    # §1.4: _IOWR identical to the generic layout, _IOR starts with 0x4...
    assert by_name("PTM_GET_CAPABILITY").ioctl_number(PPC64) == 0x40085000
    for spec in COMMANDS:
        generic = spec.ioctl_number(X86_64)
        alternative = spec.ioctl_number(PPC64)
        if spec.direction == IocDir.READ | IocDir.WRITE:
            assert alternative == generic
        else:
            assert alternative == generic - 0x40000000


def test_cmd_is_nr_plus_one():
    assert [c.value for c in PtmCmd] == list(range(0x01, 0x14))
    for cmd in PtmCmd:
        spec = by_cmd(cmd)
        assert spec.nr + 1 == cmd
        assert spec.cmd_name == cmd.name == "CMD_" + spec.name.removeprefix("PTM_")
        assert ioc.decode(spec.ioctl_number(X86_64)).nr + 1 == cmd


def test_get_capability_uses_ptm_cap_n_on_socket():
    spec = by_name("PTM_GET_CAPABILITY")
    assert spec.response is PtmCapResponse
    assert spec.socket_response is PtmCapNResponse
    assert by_name("PTM_INIT").socket_response is by_name("PTM_INIT").response


def test_lookups():
    assert by_name("CMD_GET_INFO") is by_name("PTM_GET_INFO")
    for spec in COMMANDS:
        assert by_ioctl(spec.ioctl_number(X86_64), [X86_64]) == (spec, X86_64)
    match = by_ioctl(0xCC0C5011, [X86_64, I386])
    assert match.command.name == "PTM_GET_INFO" and match.abi == I386
    # default: host ABI and its compat sibling
    host = host_abi()
    assert by_ioctl(by_name("PTM_GET_INFO").ioctl_number(compat_abi(host))).abi == compat_abi(host)
    with pytest.raises(UnknownCommand, match="0xffff"):
        by_cmd(0xFFFF)
    with pytest.raises(UnknownCommand):
        by_ioctl(0xC0045099)
    with pytest.raises(UnknownCommand, match="PTM_NOPE"):
        by_name("PTM_NOPE")


# -- _IOC encoder ---------------------------------------------------------


@given(
    direction=st.sampled_from([IocDir.NONE, IocDir.READ, IocDir.WRITE, IocDir.READ | IocDir.WRITE]),
    type_=st.integers(0, 255),
    nr=st.integers(0, 255),
    size=st.integers(0, (1 << 13) - 1),
    layout=st.sampled_from([ioc.GENERIC, ioc.ALTERNATIVE]),
)
def test_ioc_round_trip(direction, type_, nr, size, layout):
    number = ioc.encode(direction, type_, nr, size, layout)
    assert 0 <= number < 1 << 32
    assert ioc.decode(number, layout) == (direction, type_, nr, size)


def test_ioc_helpers_and_layout_constants():
    assert ioc.ior("P", 0, 8) == 0x80085000
    assert ioc.iowr(0x50, 6, 4100) == 0xD0045006
    assert ioc.iow("P", 1, 4) == 0x40045001
    assert ioc.io("P", 1) == 0x00005001
    assert ioc.io("P", 1, ioc.ALTERNATIVE) == 0x20005001
    assert ioc.iow("P", 1, 4, ioc.ALTERNATIVE) == 0x80045001
    assert ioc.decode(0xCC105011) == (IocDir.READ | IocDir.WRITE, 0x50, 17, 3088)
    assert ioc.GENERIC.max_size == 0x3FFF and ioc.ALTERNATIVE.max_size == 0x1FFF
    assert ioc.host_layout("ppc64le") is ioc.ALTERNATIVE
    assert ioc.host_layout("x86_64") is ioc.GENERIC


def test_ioc_rejects_out_of_range():
    with pytest.raises(ValueError):
        ioc.ior("P", 0, 1 << 14)
    with pytest.raises(ValueError):
        ioc.ior("P", 0, 1 << 13, ioc.ALTERNATIVE)
    with pytest.raises(ValueError):
        ioc.ior("P", 256, 4)
    with pytest.raises(ValueError):
        ioc.ior("PP", 0, 4)
    with pytest.raises(ValueError):
        ioc.decode(1 << 32)
    with pytest.raises(ValueError):  # dir bits 0 do not exist in the alternative layout
        ioc.decode(0x00005001, ioc.ALTERNATIVE)


# -- constants --------------------------------------------------------------


def test_result_codes_match_spec():
    assert {r.name: r.value for r in PtmResult} == SPEC_RESULTS
    assert TPM_NON_FATAL == 0x800 and is_non_fatal(PtmResult.TPM_RETRY)
    assert not is_non_fatal(PtmResult.TPM_FAIL)
    assert result_name(0x3D) == "TPM_BAD_LOCALITY" and result_name(0x1234) == "0x1234"


def test_flag_constants():
    assert PTM_STATE_BLOB_SIZE == 3072 and PTM_GETINFO_SIZE == 3072 and PTM_HDATA_MAX == 4096
    assert PtmInitFlag.PTM_INIT_FLAG_DELETE_VOLATILE == 1
    assert [b.value for b in PtmBlobType] == [1, 2, 3]
    assert PtmStateFlag.PTM_STATE_FLAG_DECRYPTED == 1 and PtmStateFlag.PTM_STATE_FLAG_ENCRYPTED == 2
    assert PtmConfigFlag.PTM_CONFIG_FLAG_FILE_KEY == 1 and PtmConfigFlag.PTM_CONFIG_FLAG_MIGRATION_KEY == 2
    assert [f.value for f in SwtpmInfo] == [1 << i for i in range(8)]
    assert [c.value for c in PtmCap] == [1 << i for i in range(17)]
    assert PtmCap.PTM_CAP_LOCK_STORAGE == 0x10000
    # §1.3: CUSE reports bits 0-11, 13, 14, 16
    cuse = PtmCap((1 << 12) - 1) | PtmCap.PTM_CAP_SET_BUFFERSIZE | PtmCap.PTM_CAP_GET_INFO | PtmCap.PTM_CAP_LOCK_STORAGE
    assert cuse == 0x16FFF


# -- round trips --------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_PARTS, ids=lambda c: c.__name__)
@given(data=st.data())
def test_socket_round_trip(cls, data):
    value = data.draw(part_values(cls, extra_payload=64))
    wire = value.pack_socket()
    assert cls.socket_wanted(wire) == len(wire)
    assert cls.unpack_socket(wire) == transmitted(value)


@pytest.mark.parametrize("cls", ALL_PARTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("abi", ABIS, ids=lambda a: a.name)
@given(data=st.data())
def test_ioctl_round_trip(cls, abi, data):
    value = data.draw(part_values(cls))
    wire = value.pack_ioctl(abi)
    assert len(wire) == cls.ioctl_size(abi)
    if cls.LAYOUT.is_empty:
        assert wire == bytes(len(wire))
    assert cls.unpack_ioctl(wire, abi) == transmitted(value)


@given(value=part_values(PtmSetBufferSizeResponse, success=True))
def test_byte_orders(value):
    fields = (value.tpm_result, value.buffersize, value.minsize, value.maxsize)
    assert value.pack_ioctl(X86_64) == struct.pack("<4I", *fields)
    assert value.pack_ioctl(BIG_ENDIAN_64) == struct.pack(">4I", *fields)
    assert value.pack_socket() == struct.pack(">4I", *fields)


def test_ioctl_defaults_to_host_abi():
    value = PtmGetInfoRequest(flags=SwtpmInfo.SWTPM_INFO_TPMFEATURES, offset=7)
    assert value.pack_ioctl() == value.pack_ioctl(host_abi())
    assert PtmGetInfoRequest.unpack_ioctl(value.pack_ioctl()) == value


def test_ioctl_layout_getinfo():
    value = PtmGetInfoRequest(flags=0x0102030405060708, offset=9)
    wire = value.pack_ioctl(X86_64)
    assert wire[:16] == bytes.fromhex("0807060504030201 09000000 00000000")
    assert len(wire) == 3088 and len(value.pack_ioctl(I386)) == 3084
    resp = PtmGetInfoResponse(totlength=3, buffer=b"{}\0")
    assert resp.pack_ioctl(I386)[:15] == bytes.fromhex("00000000 03000000 03000000 7b7d00")


def test_ioctl_est_and_cap_layouts():
    assert PtmEstResponse(bit=1).pack_ioctl(X86_64) == bytes.fromhex("00000000 01 000000")
    assert PtmCapResponse(caps=0x16FFF).pack_ioctl(X86_64) == struct.pack("<Q", 0x16FFF)


# -- malformed input ------------------------------------------------------------


@pytest.mark.parametrize("cls", NON_EMPTY_PARTS, ids=lambda c: c.__name__)
@given(data=st.data())
def test_truncated_socket_input_raises(cls, data):
    value = data.draw(part_values(cls, success=True))
    wire = value.pack_socket()
    cut = data.draw(st.integers(0, len(wire) - 1))
    short = wire[:cut]
    with pytest.raises(MalformedMessage) as info:
        cls.unpack_socket(short)
    assert info.value.struct == cls.describe()
    assert info.value.transport == "socket"
    assert cls.describe() in str(info.value) and str(len(short)) in str(info.value)


@pytest.mark.parametrize("cls", NON_EMPTY_PARTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_size_ioctl_input_raises(cls, delta):
    wire = cls().pack_ioctl(X86_64)
    bad = wire[: len(wire) + delta] if delta < 0 else wire + b"\0"
    with pytest.raises(MalformedMessage) as info:
        cls.unpack_ioctl(bad, X86_64)
    assert info.value.actual == len(bad) and info.value.expected == len(wire)
    assert cls.describe() in str(info.value)
    assert str(len(bad)) in str(info.value) and str(len(wire)) in str(info.value)


def test_getinfo_i386_buffer_is_wrong_for_x86_64():
    wire = PtmGetInfoRequest(flags=1).pack_ioctl(I386)
    with pytest.raises(MalformedMessage, match="3084.*3088"):
        PtmGetInfoRequest.unpack_ioctl(wire, X86_64)


@pytest.mark.parametrize("cls", ALL_PARTS, ids=lambda c: c.__name__)
@given(blob=st.binary(max_size=64))
def test_garbage_only_raises_malformed(cls, blob):
    for attempt in (lambda: cls.unpack_socket(blob), lambda: cls.unpack_ioctl(blob, X86_64)):
        try:
            attempt()
        except MalformedMessage:
            pass


@pytest.mark.parametrize("cls", [PtmHdataRequest, PtmSetStateRequest, PtmGetStateResponse, PtmGetInfoResponse])
@given(length=st.integers(0, 0xFFFFFFFF))
def test_ioctl_length_field_beyond_capacity(cls, length):
    wire = bytearray(cls().pack_ioctl(X86_64))
    wire[cls.LAYOUT.length_offset : cls.LAYOUT.length_offset + 4] = length.to_bytes(4, "little")
    capacity = cls.LAYOUT.payload.capacity
    if length <= capacity:
        assert cls.unpack_ioctl(bytes(wire), X86_64).length == length
    else:
        with pytest.raises(PayloadTooLarge) as info:
            cls.unpack_ioctl(bytes(wire), X86_64)
        assert (info.value.length, info.value.capacity) == (length, capacity)


def test_payload_too_large_for_ioctl_but_fine_on_socket():
    big = PtmHdataRequest(data=bytes(PTM_HDATA_MAX + 1))
    with pytest.raises(PayloadTooLarge):
        big.pack_ioctl(X86_64)
    assert PtmHdataRequest.unpack_socket(big.pack_socket()) == big
    assert PtmSetStateRequest.unpack_socket(PtmSetStateRequest(data=bytes(10000)).pack_socket()).length == 10000


def test_constructor_validation():
    with pytest.raises(ValueError, match="loc"):
        PtmLocRequest(loc=256)
    with pytest.raises(ValueError):
        PtmInitRequest(init_flags=-1)
    with pytest.raises(TypeError):
        PtmInitRequest(init_flags="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PtmHdataRequest(data="text")  # type: ignore[arg-type]
    assert PtmHdataRequest(data=bytearray(b"ab")).data == b"ab"
    assert PtmGetInfoRequest(flags=1 << 63).flags == 1 << 63


# -- socket framing (§3.1) ------------------------------------------------------


def test_socket_get_capability_example():
    assert by_name("PTM_GET_CAPABILITY").pack_socket_request() == bytes.fromhex("00000001")
    assert PtmCapNResponse(caps=0x1FFFF).pack_socket() == bytes.fromhex("00 00 00 00 00 01 ff ff")
    assert PtmCapNResponse.unpack_socket(bytes.fromhex("00 00 00 00 00 01 7f ff")).caps == 0x17FFF


def test_socket_init_example():
    request = PtmInitRequest(PtmInitFlag.PTM_INIT_FLAG_DELETE_VOLATILE)
    assert by_name("PTM_INIT").pack_socket_request(request) == bytes.fromhex("00000002 00000001")
    cmd, body = split_socket_command(bytes.fromhex("00000002 00000000"))
    assert by_cmd(cmd).socket_request.unpack_socket(body) == PtmInitRequest(0)
    assert PtmResResponse().pack_socket() == bytes.fromhex("00000000")
    # Trailing bytes after a fixed-size body are ignored (ctrl_framing's rule; swtpm
    # refuses them for INIT alone: tests/test_sockets_hostile.py), a short body is refused.
    assert PtmInitRequest.unpack_socket(bytes.fromhex("00000001 ee")) == PtmInitRequest(1)
    with pytest.raises(MalformedMessage, match="got 3 bytes, need at least 4"):
        PtmInitRequest.unpack_socket(bytes(3))


def test_socket_unknown_command_example():
    cmd, body = split_socket_command(bytes.fromhex("0000ffff"))
    assert (cmd, body) == (0xFFFF, b"")
    with pytest.raises(UnknownCommand):
        by_cmd(cmd)
    assert PtmResResponse(tpm_result=PtmResult.TPM_BAD_ORDINAL).pack_socket() == bytes.fromhex("0000000a")
    with pytest.raises(MalformedMessage, match="control command header"):
        split_socket_command(b"\0\0\0")
    assert pack_socket_command(0xFFFF) == bytes.fromhex("0000ffff")


def test_socket_response_sizes():
    # §3.1 response column, successful replies
    assert len(PtmCapNResponse().pack_socket()) == 8
    assert len(PtmEstResponse(bit=1).pack_socket()) == 8
    assert PtmEstResponse(bit=1).pack_socket() == bytes.fromhex("00000000 01 000000")
    for name in [
        "PTM_INIT",
        "PTM_SHUTDOWN",
        "PTM_SET_LOCALITY",
        "PTM_HASH_START",
        "PTM_HASH_DATA",
        "PTM_HASH_END",
        "PTM_CANCEL_TPM_CMD",
        "PTM_STORE_VOLATILE",
        "PTM_RESET_TPMESTABLISHED",
        "PTM_SET_STATEBLOB",
        "PTM_STOP",
        "PTM_SET_DATAFD",
        "PTM_LOCK_STORAGE",
    ]:
        assert len(by_name(name).socket_response().pack_socket()) == 4, name
    assert len(by_name("PTM_GET_CONFIG").socket_response().pack_socket()) == 8
    assert len(PtmSetBufferSizeResponse(buffersize=4096).pack_socket()) == 16
    assert len(PtmGetInfoResponse(totlength=5, buffer=b"abcd\0").pack_socket()) == 12 + 5


def test_socket_request_sizes():
    # §3.1 request column (body after the 4-byte cmd)
    empty = [
        "PTM_GET_CAPABILITY",
        "PTM_SHUTDOWN",
        "PTM_GET_TPMESTABLISHED",
        "PTM_HASH_START",
        "PTM_HASH_END",
        "PTM_CANCEL_TPM_CMD",
        "PTM_STORE_VOLATILE",
        "PTM_STOP",
        "PTM_GET_CONFIG",
        "PTM_SET_DATAFD",
    ]
    for name in empty:
        assert len(by_name(name).pack_socket_request()) == 4, name
    sizes = {
        "PTM_INIT": 4,
        "PTM_SET_LOCALITY": 1,
        "PTM_RESET_TPMESTABLISHED": 1,
        "PTM_GET_STATEBLOB": 12,
        "PTM_SET_BUFFERSIZE": 4,
        "PTM_GET_INFO": 16,
        "PTM_LOCK_STORAGE": 4,
        "PTM_HASH_DATA": 4,
        "PTM_SET_STATEBLOB": 12,
    }
    for name, size in sizes.items():
        assert len(by_name(name).pack_socket_request()) == 4 + size, name


def test_socket_get_stateblob_example():
    request = bytes.fromhex("0000000c 00000000 00000002 00000000")
    cmd, body = split_socket_command(request)
    spec = by_cmd(cmd)
    assert spec.name == "PTM_GET_STATEBLOB"
    parsed = spec.socket_request.unpack_socket(body)
    assert parsed == PtmGetStateRequest(state_flags=0, type=PtmBlobType.PTM_BLOB_TYPE_VOLATILE, offset=0)
    assert spec.pack_socket_request(parsed) == request

    blob = bytes(range(256)) * 4 + bytes(0x4E5 - 1024)
    header = bytes.fromhex("00000000 00000000 000004e5 000004e5")
    response = PtmGetStateResponse(totlength=0x4E5, data=blob)
    assert response.pack_socket() == header + blob
    assert PtmGetStateResponse.socket_wanted(header) == 16 + 0x4E5
    assert PtmGetStateResponse.unpack_socket(header + blob) == response
    with pytest.raises(MalformedMessage, match="got 1268 bytes, expected 1269"):
        PtmGetStateResponse.unpack_socket(header + blob[:-1])


def test_socket_get_stateblob_errors():
    retry = PtmGetStateResponse(tpm_result=PtmResult.TPM_RETRY, totlength=9, data=b"stale")
    assert retry.pack_socket() == bytes.fromhex("00000800 00000000 00000000 00000000")
    assert PtmGetStateResponse.unpack_socket(retry.pack_socket()) == PtmGetStateResponse(tpm_result=0x800)
    not_running = PtmGetStateResponse(tpm_result=PtmResult.TPM_BAD_ORDINAL)
    assert not_running.pack_socket() == bytes.fromhex("0000000a")
    assert PtmGetStateResponse.socket_wanted(bytes.fromhex("0000000a")) == 4
    assert PtmGetStateResponse.socket_wanted(bytes.fromhex("00000800")) == 16
    assert PtmGetStateResponse.unpack_socket(bytes.fromhex("0000000a")).tpm_result == 0xA
    with pytest.raises(MalformedMessage):
        PtmGetStateResponse.unpack_socket(bytes.fromhex("00000800 0000"))


def test_socket_error_responses_are_four_bytes():
    failed = PtmSetBufferSizeResponse(tpm_result=PtmResult.TPM_BAD_ORDINAL, buffersize=1, minsize=2, maxsize=3)
    assert failed.pack_socket() == bytes.fromhex("0000000a")
    assert PtmSetBufferSizeResponse.unpack_socket(bytes.fromhex("0000000a")) == PtmSetBufferSizeResponse(tpm_result=0xA)
    assert PtmGetInfoResponse.unpack_socket(bytes.fromhex("00000003")).tpm_result == PtmResult.TPM_BAD_PARAMETER
    assert PtmEstResponse.unpack_socket(bytes.fromhex("0000000a")).bit == 0


def test_socket_wanted_progression():
    full = PtmGetInfoResponse(totlength=6, buffer=b'{"a"}\0').pack_socket()
    assert PtmGetInfoResponse.socket_wanted(b"") == 4
    assert PtmGetInfoResponse.socket_wanted(full[:4]) == 12
    assert PtmGetInfoResponse.socket_wanted(full[:12]) == 18 == len(full)
    assert PtmHdataRequest.socket_wanted(b"") == 4
    assert PtmHdataRequest.socket_wanted(bytes.fromhex("00001001")) == 4 + 0x1001
    assert PtmSetStateRequest.socket_wanted(bytes(12)) == 12
    assert PtmInitRequest.socket_wanted(b"") == 4
    assert by_name("PTM_STOP").socket_request.socket_wanted(b"") == 0


def test_socket_get_info_request_u64_be():
    flags = SwtpmInfo.SWTPM_INFO_TPMSPECIFICATION | SwtpmInfo.SWTPM_INFO_TPMATTRIBUTES
    wire = by_name("PTM_GET_INFO").pack_socket_request(PtmGetInfoRequest(flags=flags, offset=0x10))
    assert wire == bytes.fromhex("00000012 0000000000000003 00000010 00000000")
    high = PtmGetInfoRequest(flags=0x0100000000000080)
    assert high.pack_socket()[:8] == bytes.fromhex("0100000000000080")
    assert PtmGetInfoRequest.unpack_socket(high.pack_socket()) == high
    with pytest.raises(MalformedMessage):
        PtmGetInfoRequest.unpack_socket(high.pack_socket()[:12])


def test_socket_locality_padding_and_empty_bodies():
    assert by_name("PTM_SET_LOCALITY").pack_socket_request(PtmLocRequest(3)) == bytes.fromhex("00000005 03")
    assert PtmLocRequest.unpack_socket(bytes.fromhex("03000000")) == PtmLocRequest(3)  # QEMU's 4 bytes
    with pytest.raises(MalformedMessage):
        PtmLocRequest.unpack_socket(b"")
    shutdown = by_name("PTM_SHUTDOWN").socket_request
    assert shutdown.unpack_socket(b"") == shutdown()
    with pytest.raises(MalformedMessage):  # §3.1: any body -> BAD_PARAMETER
        shutdown.unpack_socket(b"\0")


def test_socket_hash_data_and_set_stateblob_bodies():
    data = b"x" * 5000
    wire = by_name("PTM_HASH_DATA").pack_socket_request(PtmHdataRequest(data=data))
    assert wire[:8] == bytes.fromhex("00000007 00001388") and wire[8:] == data
    set_state = PtmSetStateRequest(
        state_flags=PtmStateFlag.PTM_STATE_FLAG_ENCRYPTED, type=PtmBlobType.PTM_BLOB_TYPE_VOLATILE, data=b"blob"
    )
    assert (
        by_name("PTM_SET_STATEBLOB").pack_socket_request(set_state)
        == bytes.fromhex("0000000d 00000002 00000002 00000004") + b"blob"
    )
    with pytest.raises(MalformedMessage):  # more data than announced
        PtmSetStateRequest.unpack_socket(set_state.pack_socket() + b"!")


def test_pack_socket_request_checks_type():
    with pytest.raises(TypeError, match="PtmInitRequest"):
        by_name("PTM_INIT").pack_socket_request(PtmLocRequest(1))


def test_empty_ioctl_request_ignores_input():
    # _IOR: the kernel copies nothing in, so the server sees an empty buffer
    request = by_name("PTM_GET_CAPABILITY").request
    assert request.unpack_ioctl(b"") == request()
    assert request().pack_ioctl(X86_64) == bytes(8)


def test_ioctl_error_response_ignores_stale_bytes():
    # after a 4-byte error reply the caller's buffer still holds its request
    buffer = bytearray(PtmGetInfoRequest(flags=1, offset=0xFFFF).pack_ioctl(X86_64))
    buffer[:4] = (PtmResult.TPM_BAD_PARAMETER).to_bytes(4, "little")
    assert PtmGetInfoResponse.unpack_ioctl(bytes(buffer), X86_64) == PtmGetInfoResponse(tpm_result=3)
