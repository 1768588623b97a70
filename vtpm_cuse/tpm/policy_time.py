"""Time limits of policy assertions: expirations, timeouts and the time epoch.

TPM2_PolicySigned and TPM2_PolicySecret may limit how long their authorization
lasts (``expiration``, in seconds); the limit becomes the session's timeout, a
value of Time (ms since _TPM_Init).  Time starts again at every _TPM_Init, so a
timeout is meaningful only in the time epoch it was computed in: the epoch is
(total TPM Resets, TPM Restarts and Resumes), which changes at every Startup
after an _TPM_Init.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import TPM_RC, TpmError

if TYPE_CHECKING:
    from .engine import Engine
    from .sessions import Session

MS_PER_SECOND = 1000
#: restartCount takes the low 32 bits of an epoch, the TPM Reset count the rest.
_RESTART_BITS = 32


def time_epoch(engine: Engine) -> int:
    """A number that changes whenever Time starts again (TPM Reset, Restart or Resume)."""
    perm = engine.permanent
    return (perm.total_reset_count or 0) << _RESTART_BITS | perm.restart_count


def auth_timeout(engine: Engine, session: Session, expiration: int, nonce_tpm: bytes) -> int:
    """The Time at which an authorization with ``expiration`` seconds ends (0: no limit).

    With a nonceTPM the seconds count from the session's start; without one they are an
    absolute Time in seconds, kept at the current millisecond phase so the limit is never
    early.  A negative expiration (which asks for a ticket) limits the same way.
    """
    if expiration == 0:
        return 0
    seconds = abs(expiration)
    if nonce_tpm:
        return session.start_time + seconds * MS_PER_SECOND
    return seconds * MS_PER_SECOND + engine.time() % MS_PER_SECOND


def require_unexpired(engine: Engine, session: Session, timeout: int) -> None:
    """TPM_RC_EXPIRED (bare: the caller places it) when ``timeout`` passed or Time restarted
    since the session began."""
    if timeout == 0:
        return
    now = engine.time()
    if timeout < now or session.epoch != time_epoch(engine):
        raise TpmError(TPM_RC.EXPIRED, f"authorization expired at Time {timeout} ms (now {now} ms)")
