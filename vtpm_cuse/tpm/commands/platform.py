"""Platform controls: TPM2_PP_Commands and TPM2_SetAlgorithmSet (Part 3, clause 26),
and the TCG's vendor test command TPM2_Vendor_TCG_Test.

Field upgrade (TPM2_FieldUpgradeStart, TPM2_FieldUpgradeData, TPM2_FirmwareRead)
is not implemented, as in libtpms: this TPM's "firmware" is the Python package,
upgraded by the host's package manager (see command_codes.NOT_IMPLEMENTED).
"""

from __future__ import annotations

from ..command import AuthRole, H, command
from ..constants import TPM_CC
from ..marshal import UINT32
from ..physical_presence import update_pp_list
from ..types import TPM2B_DATA, TPMI_RH_PLATFORM, TPML_CC


@command(
    TPM_CC.PP_Commands,
    handles=[H("auth", TPMI_RH_PLATFORM, AuthRole.USER)],
    params=[("setList", TPML_CC), ("clearList", TPML_CC)],
    nv=True,
)
def pp_commands(ctx, auth: int, setList: list, clearList: list):
    """Physical presence was checked with the authorization (it is always on the list)."""
    update_pp_list(ctx.engine, setList, clearList)


@command(
    TPM_CC.SetAlgorithmSet,
    handles=[H("authHandle", TPMI_RH_PLATFORM, AuthRole.USER)],
    params=[("algorithmSet", UINT32)],
    nv=True,
)
def set_algorithm_set(ctx, authHandle: int, algorithmSet: int):
    """This TPM has one algorithm set: the value is recorded and reported as
    TPM_PT_ALGORITHM_SET (as libtpms does), and the algorithms stay what they are."""
    ctx.engine.permanent.algorithm_set = algorithmSet


@command(TPM_CC.Vendor_TCG_Test, params=[("inputData", TPM2B_DATA)], response=[("outputData", TPM2B_DATA)])
def vendor_tcg_test(ctx, inputData: bytes):
    """A test hook that echoes its input: it shows a vendor command passes the dispatcher."""
    return ctx.response(outputData=inputData)
