"""Physical presence: which commands need it, and whether the platform asserts it.

A real TPM learns from a hardware signal (a button, a jumper) that a person is
at the machine.  A virtual TPM has no button: :attr:`Engine.physical_presence`
stands in for it, set by the platform (the daemon's ``--physical-presence``
option, or the Python API).

A command authorized with TPM_RH_PLATFORM needs physical presence too when it
is in the PP list (``PermanentState.pp_commands``, changed by TPM2_PP_Commands
and reported by GetCapability(TPM_CAP_PP_COMMANDS)).  TPM2_PP_Commands itself
always needs it.  A policy session whose policy ran TPM2_PolicyPhysicalPresence
needs it whatever its entity: the policy code calls
:func:`require_physical_presence`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import TPM_CC
from .errors import TPM_RC, TpmError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .engine import Engine

#: Commands that always need physical presence (cannot be taken off the list).
PP_REQUIRED = frozenset({TPM_CC.PP_Commands})

#: Commands TPM2_PP_Commands may put on the list: the "Physical Presence" column of Part 2's
#: TPM_CC table, as the reference implementation's command attributes carry it (commands whose
#: authorization handle may be TPM_RH_PLATFORM and that change the platform's or the TPM's
#: configuration).  Anything else named in setList is ignored.
PP_CAPABLE = PP_REQUIRED | frozenset(
    {
        TPM_CC.NV_UndefineSpaceSpecial,
        TPM_CC.EvictControl,
        TPM_CC.HierarchyControl,
        TPM_CC.NV_UndefineSpace,
        TPM_CC.ChangeEPS,
        TPM_CC.ChangePPS,
        TPM_CC.Clear,
        TPM_CC.ClearControl,
        TPM_CC.ClockSet,
        TPM_CC.HierarchyChangeAuth,
        TPM_CC.NV_DefineSpace,
        TPM_CC.PCR_Allocate,
        TPM_CC.PCR_SetAuthPolicy,
        TPM_CC.SetPrimaryPolicy,
        TPM_CC.FieldUpgradeStart,
        TPM_CC.ClockRateAdjust,
        TPM_CC.CreatePrimary,
        TPM_CC.NV_GlobalWriteLock,
        TPM_CC.SetCommandCodeAuditStatus,
        TPM_CC.CreateLoaded,
        TPM_CC.NV_DefineSpace2,
    }
)


def pp_list(engine: Engine) -> list[int]:
    """The commands that need physical presence with platform authorization, sorted."""
    return sorted(engine.permanent.pp_commands)


def pp_required(engine: Engine, code: int) -> bool:
    return code in engine.permanent.pp_commands


def require_physical_presence(engine: Engine) -> None:
    """TPM_RC_PP unless the platform asserts physical presence (the caller places the error)."""
    if not engine.physical_presence:
        raise TpmError(TPM_RC.PP, "physical presence is not asserted")


def check_platform_authorization(engine: Engine, code: int) -> None:
    """A session authorizing TPM_RH_PLATFORM for ``code``: physical presence, if the list asks for it."""
    if pp_required(engine, code):
        require_physical_presence(engine)


def update_pp_list(engine: Engine, set_list: Iterable[int], clear_list: Iterable[int]) -> None:
    """TPM2_PP_Commands: add ``set_list``, then remove ``clear_list``.

    Codes that are not implemented, or cannot be made to need physical presence, are
    ignored in ``set_list``; PP_REQUIRED codes are ignored in ``clear_list``.
    """
    current = set(engine.permanent.pp_commands)
    current |= {cc for cc in set_list if cc in PP_CAPABLE and engine.table.get(cc) is not None}
    current -= {cc for cc in clear_list if cc not in PP_REQUIRED}
    engine.permanent.pp_commands = sorted(current)
