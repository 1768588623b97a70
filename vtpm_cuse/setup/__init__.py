"""vtpm-setup: manufacture a TPM 2.0 state directory (swtpm_setup's job).

:mod:`.manufacture` runs the engine in process and drives it by declaration
(:mod:`.driver`); :mod:`.ek` holds the EK Credential Profile facts; :mod:`.config`
the configuration files; :mod:`.cli` the command line.
"""

from .manufacture import SetupError, SetupLog, SetupRequest, manufacture

__all__ = ["SetupError", "SetupLog", "SetupRequest", "manufacture"]
