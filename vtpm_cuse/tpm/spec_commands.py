"""Which TPM_CC the Library specification defines, and why this TPM leaves some out.

The engine claims one revision of the TPM 2.0 Library specification
(properties.SPEC_REVISION, reported as TPM_PT_REVISION).  Every command code
that revision defines is either implemented (it is in the command table) or
listed in :data:`NOT_IMPLEMENTED` with the reason; tests/test_command_table.py
checks both directions, and scripts/command_table.py prints the table next to
libtpms'.
"""

from __future__ import annotations

from .constants import TPM_CC

#: The command codes of Part 2's TPM_CC table, by the revision that introduced them (later
#: revisions define everything earlier ones do).  1.59 runs up to TPM_CC_ACT_SetTimeout and
#: defines the vendor test command; 1.83 adds ECC_Encrypt/ECC_Decrypt and 0x019B-0x019F (up to
#: SetCapability, as the TCG reference implementation of 1.83 lists them); 1.84 adds 0x01A0-0x01A1.
INTRODUCED_IN: dict[int, frozenset[int]] = {
    159: frozenset(cc for cc in TPM_CC if cc <= TPM_CC.ACT_SetTimeout or cc == TPM_CC.Vendor_TCG_Test),
    183: frozenset(
        {
            TPM_CC.ECC_Encrypt,
            TPM_CC.ECC_Decrypt,
            TPM_CC.PolicyCapability,
            TPM_CC.PolicyParameters,
            TPM_CC.NV_DefineSpace2,
            TPM_CC.NV_ReadPublic2,
            TPM_CC.SetCapability,
        }
    ),
    184: frozenset({TPM_CC.ReadOnlyControl, TPM_CC.PolicyTransportSPDM}),
}

_NO_FIELD_UPGRADE = (
    "no field upgrade: this TPM's firmware is the vtpm-cuse package, upgraded by the host's "
    "package manager, and its state survives that (libtpms answers TPM_RC_COMMAND_CODE too)"
)
_NO_AC = "no Attached Components: a virtual TPM has no AC bus (TPM_CAP_AC is empty)"

#: Command codes of the claimed revision that this TPM does not implement, and why.  A code
#: here is answered TPM_RC_COMMAND_CODE and is absent from GetCapability(TPM_CAP_COMMANDS).
NOT_IMPLEMENTED: dict[int, str] = {
    TPM_CC.FieldUpgradeStart: _NO_FIELD_UPGRADE,
    TPM_CC.FieldUpgradeData: _NO_FIELD_UPGRADE,
    TPM_CC.FirmwareRead: _NO_FIELD_UPGRADE,
    TPM_CC.AC_GetCapability: _NO_AC,
    TPM_CC.AC_Send: _NO_AC,
    TPM_CC.Policy_AC_SendSelect: _NO_AC,
    TPM_CC.ACT_SetTimeout: (
        "no Authenticated Countdown Timers: nothing on a virtual platform acts when one expires "
        "(GetCapability(TPM_CAP_ACT) reports none)"
    ),
    TPM_CC.SetCapability: (
        "no platform specification this TPM follows defines a settable capability (the TCG reference "
        "implementation, which has none either, answers every request TPM_RC_VALUE)"
    ),
    TPM_CC.ReadOnlyControl: (
        "no read-only mode: which commands it must refuse is not modelled, so TPM_PT_MODES reports none"
    ),
    TPM_CC.PolicyTransportSPDM: "no SPDM secure transport: commands arrive over CUSE or swtpm's sockets",
}


def spec_commands(revision: int) -> frozenset[int]:
    """Every TPM_CC the Library specification of ``revision`` (e.g. 159 for 1.59) defines."""
    known = [r for r in INTRODUCED_IN if r <= revision]
    if not known:
        raise ValueError(f"revision {revision} predates the revisions listed ({min(INTRODUCED_IN)})")
    return frozenset().union(*(INTRODUCED_IN[r] for r in known))
