"""TPM response codes and the one place that positions them.

Format-one response codes (bit 7 set) carry the number of the handle, session
or parameter that was wrong.  Handlers never write that number: they name what
is wrong (``TpmError(TPM_RC.TYPE, "...", at="inPublic")``, or a block inside
``with errors_at("inPublic"):``), and the dispatcher, which has the command's
declaration, turns the name into the handle or parameter number, the way the
reference code writes ``TPM_RCS_TYPE + RC_Create_inPublic``.  The marshalling
layer raises bare codes; the dispatcher positions those by the field it was
reading.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator

RC_VER1 = 0x100
RC_FMT1 = 0x080
RC_WARN = 0x900
RC_H = 0x000
RC_P = 0x040
RC_S = 0x800
RC_N_SHIFT = 8
#: Format one: bits 8-11 hold the number, bit 6 says "parameter", bit 11 "session".
RC_N_MASK = 0xF00
#: Format one: the error number (bits 0-5) with the format bit (bit 7).
RC_FMT1_ERROR_MASK = 0x0BF
#: The largest number each area can carry (Part 2, TPM_RC format one).
MAX_PARAMETER_NUMBER = 15
MAX_HANDLE_NUMBER = 7
MAX_SESSION_NUMBER = 7


class Area(enum.IntEnum):
    """Which part of a command a format-one code points at (its bits in the code)."""

    HANDLE = RC_H
    PARAMETER = RC_P
    SESSION = RC_S

    @property
    def max_number(self) -> int:
        return MAX_PARAMETER_NUMBER if self is Area.PARAMETER else MAX_HANDLE_NUMBER


class TPM_RC(enum.IntEnum):
    SUCCESS = 0x000
    BAD_TAG = 0x01E
    # format zero, version 1
    INITIALIZE = RC_VER1 + 0x000
    FAILURE = RC_VER1 + 0x001
    SEQUENCE = RC_VER1 + 0x003
    PRIVATE = RC_VER1 + 0x00B
    HMAC = RC_VER1 + 0x019
    DISABLED = RC_VER1 + 0x020
    EXCLUSIVE = RC_VER1 + 0x021
    AUTH_TYPE = RC_VER1 + 0x024
    AUTH_MISSING = RC_VER1 + 0x025
    POLICY = RC_VER1 + 0x026
    PCR = RC_VER1 + 0x027
    PCR_CHANGED = RC_VER1 + 0x028
    UPGRADE = RC_VER1 + 0x02D
    TOO_MANY_CONTEXTS = RC_VER1 + 0x02E
    AUTH_UNAVAILABLE = RC_VER1 + 0x02F
    REBOOT = RC_VER1 + 0x030
    UNBALANCED = RC_VER1 + 0x031
    COMMAND_SIZE = RC_VER1 + 0x042
    COMMAND_CODE = RC_VER1 + 0x043
    AUTHSIZE = RC_VER1 + 0x044
    AUTH_CONTEXT = RC_VER1 + 0x045
    NV_RANGE = RC_VER1 + 0x046
    NV_SIZE = RC_VER1 + 0x047
    NV_LOCKED = RC_VER1 + 0x048
    NV_AUTHORIZATION = RC_VER1 + 0x049
    NV_UNINITIALIZED = RC_VER1 + 0x04A
    NV_SPACE = RC_VER1 + 0x04B
    NV_DEFINED = RC_VER1 + 0x04C
    BAD_CONTEXT = RC_VER1 + 0x050
    CPHASH = RC_VER1 + 0x051
    PARENT = RC_VER1 + 0x052
    NEEDS_TEST = RC_VER1 + 0x053
    NO_RESULT = RC_VER1 + 0x054
    SENSITIVE = RC_VER1 + 0x055
    # format one
    ASYMMETRIC = RC_FMT1 + 0x001
    ATTRIBUTES = RC_FMT1 + 0x002
    HASH = RC_FMT1 + 0x003
    VALUE = RC_FMT1 + 0x004
    HIERARCHY = RC_FMT1 + 0x005
    KEY_SIZE = RC_FMT1 + 0x007
    MGF = RC_FMT1 + 0x008
    MODE = RC_FMT1 + 0x009
    TYPE = RC_FMT1 + 0x00A
    HANDLE = RC_FMT1 + 0x00B
    KDF = RC_FMT1 + 0x00C
    RANGE = RC_FMT1 + 0x00D
    AUTH_FAIL = RC_FMT1 + 0x00E
    NONCE = RC_FMT1 + 0x00F
    PP = RC_FMT1 + 0x010
    SCHEME = RC_FMT1 + 0x012
    SIZE = RC_FMT1 + 0x015
    SYMMETRIC = RC_FMT1 + 0x016
    TAG = RC_FMT1 + 0x017
    SELECTOR = RC_FMT1 + 0x018
    INSUFFICIENT = RC_FMT1 + 0x01A
    SIGNATURE = RC_FMT1 + 0x01B
    KEY = RC_FMT1 + 0x01C
    POLICY_FAIL = RC_FMT1 + 0x01D
    INTEGRITY = RC_FMT1 + 0x01F
    TICKET = RC_FMT1 + 0x020
    RESERVED_BITS = RC_FMT1 + 0x021
    BAD_AUTH = RC_FMT1 + 0x022
    EXPIRED = RC_FMT1 + 0x023
    POLICY_CC = RC_FMT1 + 0x024
    BINDING = RC_FMT1 + 0x025
    CURVE = RC_FMT1 + 0x026
    ECC_POINT = RC_FMT1 + 0x027
    # warnings
    CONTEXT_GAP = RC_WARN + 0x001
    OBJECT_MEMORY = RC_WARN + 0x002
    SESSION_MEMORY = RC_WARN + 0x003
    MEMORY = RC_WARN + 0x004
    SESSION_HANDLES = RC_WARN + 0x005
    OBJECT_HANDLES = RC_WARN + 0x006
    LOCALITY = RC_WARN + 0x007
    YIELDED = RC_WARN + 0x008
    CANCELED = RC_WARN + 0x009
    TESTING = RC_WARN + 0x00A
    REFERENCE_H0 = RC_WARN + 0x010
    REFERENCE_S0 = RC_WARN + 0x018
    NV_RATE = RC_WARN + 0x020
    LOCKOUT = RC_WARN + 0x021
    RETRY = RC_WARN + 0x022
    NV_UNAVAILABLE = RC_WARN + 0x023


def is_format_one(rc: int) -> bool:
    return bool(rc & RC_FMT1)


class TpmError(Exception):
    """A command failed with a TPM response code.

    ``rc`` is the complete code as it goes on the wire.  ``at`` names the
    handle or parameter (as the command's declaration names it) the code is
    about; the dispatcher turns it into a number.  A position is added only to
    format-one codes and only once (the innermost step that knows the position
    wins), which mirrors how the reference TPM reports errors in nested
    structures: the top-level parameter number.
    """

    def __init__(self, rc: int, detail: str = "", *, at: str | None = None) -> None:
        self.rc = int(rc)
        self.detail = detail
        self.at = at
        super().__init__(f"TPM_RC 0x{self.rc:03x}" + (f": {detail}" if detail else ""))

    @property
    def positioned(self) -> bool:
        """Whether the code already says which handle, parameter or session it is about."""
        return self.at is not None or bool(self.rc & (RC_P | RC_N_MASK))

    def about(self, name: str) -> TpmError:
        """The same error, about ``name`` unless it already names a position."""
        if self.positioned:
            return self
        return TpmError(self.rc, self.detail, at=name)

    def placed(self, area: Area, number: int) -> TpmError:
        """The error with its position as a number (1-based); the dispatcher's job.

        Format-zero codes carry no position; a code that has one keeps it.
        """
        if not is_format_one(self.rc) or self.rc & (RC_P | RC_N_MASK):
            return TpmError(self.rc, self.detail)
        number = min(number, area.max_number)
        return TpmError(self.rc | area | (number << RC_N_SHIFT), self.detail)

    def at_session(self, number: int) -> TpmError:
        """The error concerns session ``number`` of the authorization area."""
        return self.placed(Area.SESSION, number)


@contextlib.contextmanager
def errors_at(name: str) -> Iterator[None]:
    """Errors raised inside the block without a position of their own are about ``name``.

    For checks shared by several commands (``create_checks`` for Create and
    CreatePrimary), which raise bare codes: the command says what they checked.
    """
    try:
        yield
    except TpmError as err:
        if err.positioned:
            raise
        raise err.about(name) from None


def rc_name(rc: int) -> str:
    """A readable name for logs and test failure messages."""
    base = rc
    suffix = ""
    if is_format_one(rc):
        base = rc & RC_FMT1_ERROR_MASK
        number = (rc >> RC_N_SHIFT) & 0xF
        if rc & RC_P:
            suffix = f" + RC_P{number}"
        elif number:
            kind = "S" if number & 0x8 else "H"
            suffix = f" + RC_{kind}{number & 0x7}"
    try:
        return TPM_RC(base).name + suffix
    except ValueError:
        return f"0x{rc:03x}"
