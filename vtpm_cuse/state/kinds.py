"""The three kinds of TPM state and the file names swtpm gives them.

The numeric values are the ``PTM_BLOB_TYPE_*`` numbers of the control channel
(spec §1.3), so a ``type`` field from a GET/SET_STATEBLOB request converts
directly with :meth:`StateKind.from_blob_type`. File names follow swtpm's
``tpm2-00.<name>`` scheme (spec §5.1) so that tooling which looks at a state
directory (libvirt, backup scripts, ``--print-states``) finds what it expects.
"""

from __future__ import annotations

from enum import IntEnum

from .errors import PtmResult, StateError

__all__ = ["StateKind", "FILE_PREFIX", "TEMP_PREFIX"]

#: Prefix of the real state files: TPM 2 ("tpm2"), TPM number 0.
FILE_PREFIX = "tpm2-00."
#: Prefix of the temporary file a state file is written to before rename().
TEMP_PREFIX = "TMP2-00."


class StateKind(IntEnum):
    """A state blob kind; the value is the ``PTM_BLOB_TYPE_*`` number."""

    PERMANENT = 1
    VOLATILE = 2
    SAVESTATE = 3

    @property
    def state_name(self) -> str:
        """libtpms' name for this state (``permall``, ``volatilestate``, ``savestate``)."""
        return _STATE_NAMES[self]

    @property
    def filename(self) -> str:
        """The file name inside the state directory, e.g. ``tpm2-00.permall``."""
        return FILE_PREFIX + self.state_name

    @property
    def temp_filename(self) -> str:
        """The temporary name used while writing, e.g. ``TMP2-00.permall``."""
        return TEMP_PREFIX + self.state_name

    @classmethod
    def from_blob_type(cls, blob_type: int) -> StateKind:
        """Convert a control-channel blob ``type``; unknown types are a
        TPM_BAD_PARAMETER, as in swtpm."""
        try:
            return cls(blob_type)
        except ValueError:
            raise StateError(PtmResult.TPM_BAD_PARAMETER, f"unknown state blob type {blob_type!r}") from None


_STATE_NAMES = {
    StateKind.PERMANENT: "permall",
    StateKind.VOLATILE: "volatilestate",
    StateKind.SAVESTATE: "savestate",
}
