"""TPM result codes that appear in ``ptm_res`` / ``tpm_result`` fields.

Control commands report failures *inside* the struct (the ioctl itself still
succeeds), with TPM 1.2 style codes from libtpms plus one TPM 2 code.  Tests
of real clients compare these values literally (e.g. ``0xa``, ``0x3d``,
``0x101``), so they are part of the contract.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = ["PtmResult", "TPM_NON_FATAL", "is_non_fatal", "result_name"]


class PtmResult(IntEnum):
    """Result codes a control command may return."""

    TPM_SUCCESS = 0x000
    TPM_BAD_PARAMETER = 0x003
    TPM_FAIL = 0x009
    TPM_BAD_ORDINAL = 0x00A
    TPM_KEYNOTFOUND = 0x00D
    TPM_SIZE = 0x017
    TPM_IOERROR = 0x01F
    TPM_DECRYPT_ERROR = 0x021
    TPM_BAD_KEY_PROPERTY = 0x028
    TPM_BAD_DATASIZE = 0x02B
    TPM_BAD_MODE = 0x02C
    TPM_BAD_VERSION = 0x02E
    TPM_BAD_LOCALITY = 0x03D
    TPM_RC_FAILURE = 0x101
    TPM_RETRY = 0x800


TPM_NON_FATAL: Final = 0x800
"""Mask: results with this bit set (e.g. TPM_RETRY for an absent blob) are not fatal to clients."""


def is_non_fatal(result: int) -> bool:
    """Whether a client should treat ``result`` as a soft failure."""
    return bool(result & TPM_NON_FATAL)


def result_name(result: int) -> str:
    """``"TPM_BAD_ORDINAL"`` for known codes, ``"0x1234"`` otherwise (for logs)."""
    try:
        return PtmResult(result).name
    except ValueError:
        return f"{result:#x}"
