"""What ``--flags`` and ``--locality`` ask of a vTPM (swtpm §2.12).

Kept apart from :mod:`vtpm_cuse.vtpm` so the command-line parser can build
these values without importing the engine (only its constants).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .tpm.limits import MAX_LOCALITY


class StartupMode(enum.Enum):
    """``--flags startup-*``: the TPM2_Startup to send once the TPM has started
    without INIT.  The values are the flag names."""

    CLEAR = "startup-clear"
    STATE = "startup-state"
    NONE = "startup-none"  # start the TPM, send no Startup


@dataclass(frozen=True)
class VtpmFlags:
    """``--flags [not-need-init][,startup-clear|startup-state|startup-none][,disable-auto-shutdown]``."""

    #: Start the TPM at program start instead of waiting for INIT.
    not_need_init: bool = False
    #: None when no ``startup-*`` flag was given.
    startup: StartupMode | None = None
    #: Do not send TPM2_Shutdown(STATE) when the TPM is stopped.
    disable_auto_shutdown: bool = False

    @property
    def start_immediately(self) -> bool:
        """swtpm starts the TPM before serving clients for ``not-need-init`` or any ``startup-*``."""
        return self.not_need_init or self.startup is not None


@dataclass(frozen=True)
class LocalityPolicy:
    """``--locality [reject-locality-4][,allow-set-locality]``: which localities clients may select."""

    reject_locality_4: bool = False
    #: Honour swtpm's in-band TPM2_CC_SET_LOCALITY vendor command.
    allow_set_locality: bool = False

    def allows(self, locality: int) -> bool:
        if locality < 0 or locality > MAX_LOCALITY:
            return False
        return not (locality == MAX_LOCALITY and self.reject_locality_4)
