"""Exceptions of the persistence layer and the ptm result codes they carry.

Every failure that a control-channel command (INIT, GET/SET_STATEBLOB,
LOCK_STORAGE, ...) can report to a client is raised as a :class:`StateError`
whose ``result_code`` is the number the client sees in ``ptm_res``, so the
ioctl/socket layer never has to translate messages into codes itself.

Option parsing errors (``--key``, ``--migration-key``, ``--tpmstate``) are a
separate family (:class:`OptionError`): they happen at start-up, before any
client exists, and end up as a one-line message on stderr.
"""

from __future__ import annotations

from ioctl_defs import PtmResult

__all__ = [
    "PtmResult",
    "StateError",
    "StorageLockError",
    "OptionError",
    "KeyOptionError",
    "TpmStateOptionError",
]


class StateError(Exception):
    """A persistence failure together with the ptm result code to report.

    ``result_code`` is kept as a plain ``int`` compatible value (a
    :class:`PtmResult` member when it is one of ours) so that callers can put
    it straight into a response struct.
    """

    def __init__(self, result_code: int, message: str) -> None:
        try:
            code: int = PtmResult(result_code)
        except ValueError:
            code = int(result_code)
        super().__init__(code, message)
        self.result_code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (TPM result 0x{int(self.result_code):x})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(0x{int(self.result_code):x}, {self.message!r})"


class StorageLockError(StateError):
    """The state directory's ``.lock`` could not be opened or locked.

    swtpm reports a failed LOCK_STORAGE / INIT lock as TPM_FAIL, which is the
    default here; the socket SET_STATEBLOB path reports TPM_IOERROR instead and
    may re-raise with that code.
    """

    def __init__(self, message: str, result_code: int = PtmResult.TPM_FAIL) -> None:
        super().__init__(result_code, message)

    def __reduce__(self) -> tuple[object, ...]:
        # args are (code, message) but __init__ takes (message, code)
        return (type(self), (self.message, self.result_code))


class OptionError(ValueError):
    """A command-line option value is malformed; the message is one line and
    names the offending value."""


class KeyOptionError(OptionError):
    """A ``--key`` / ``--migration-key`` value is malformed, or the key it
    points at cannot be read or has the wrong length/format."""


class TpmStateOptionError(OptionError):
    """A ``--tpmstate`` value (or the ``TPM_PATH`` fallback) is unusable."""
