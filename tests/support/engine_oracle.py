"""A test oracle for the engine: a crashing or misbehaving handler fails the test.

The dispatcher turns every unexpected exception into a well-formed
TPM_RC_FAILURE response (and logs it), so "the response is well formed" alone
lets a crashing handler pass.  :class:`EngineOracle` runs commands against an
:class:`~vtpm_cuse.tpm.engine.Engine` and raises :class:`OracleFailure` (an
AssertionError) when

* the response code is TPM_RC_FAILURE (0x101) and the test did not put the
  engine into failure mode on purpose (``expect_failure_mode``), or the engine
  entered failure mode unexpectedly;
* any record at ERROR or above reached the ``vtpm_cuse.tpm`` loggers while the
  command ran (a handler is attached to that logger for the duration of each
  command, so it works inside hypothesis tests, where caplog is not reset
  per example);
* the response is not well formed: at least 10 bytes, responseSize equal to
  the length, tag TPM_ST_NO_SESSIONS or TPM_ST_SESSIONS (TPM_ST_RSP_COMMAND
  only for the 10-byte TPM_RC_BAD_TAG answer), TPM_ST_SESSIONS only for a
  successful TPM_ST_SESSIONS command, a successful command answered with its
  own tag, and every error response exactly 10 bytes.

Use it wherever an Engine is: ``EngineOracle(engine).execute(cmd, locality)``
or, as a drop-in, ``ours = EngineOracle(Engine())`` (other attributes are
forwarded to the engine).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Iterator

TPM_RC_SUCCESS = 0x000
TPM_RC_BAD_TAG = 0x01E
TPM_RC_FAILURE = 0x101
ST_RSP_COMMAND, ST_NO_SESSIONS, ST_SESSIONS = 0x00C4, 0x8001, 0x8002
ENGINE_LOGGER = "vtpm_cuse.tpm"


class OracleFailure(AssertionError):
    """The engine crashed, logged an internal error, or answered malformed bytes."""


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def engine_errors(logger_name: str = ENGINE_LOGGER) -> Iterator[list[logging.LogRecord]]:
    """Collect every ERROR-or-above record of ``logger_name`` (and its children) while active."""
    logger = logging.getLogger(logger_name)
    collector = _Collector()
    saved_level = logger.level
    saved_disable = logging.root.manager.disable
    if logger.getEffectiveLevel() > logging.ERROR:
        logger.setLevel(logging.ERROR)
    if saved_disable >= logging.ERROR:
        logging.disable(logging.NOTSET)
    logger.addHandler(collector)
    try:
        yield collector.records
    finally:
        logger.removeHandler(collector)
        logger.setLevel(saved_level)
        if saved_disable >= logging.ERROR:
            logging.disable(saved_disable)


def describe_records(records: list[logging.LogRecord]) -> str:
    parts = []
    for rec in records:
        text = f"{rec.levelname} {rec.name}: {rec.getMessage()}"
        if rec.exc_info:
            text += "\n" + "".join(traceback.format_exception(*rec.exc_info))
        parts.append(text)
    return "\n".join(parts)


def well_formed_problem(cmd: bytes, resp: bytes) -> str | None:
    """Why ``resp`` is not a well-formed answer to ``cmd`` (None when it is)."""
    if len(resp) < 10:
        return f"response of {len(resp)} bytes (less than a header)"
    tag = int.from_bytes(resp[0:2], "big")
    size = int.from_bytes(resp[2:6], "big")
    rc = int.from_bytes(resp[6:10], "big")
    cmd_tag = int.from_bytes(cmd[0:2], "big") if len(cmd) >= 2 else None
    if size != len(resp):
        return f"responseSize {size} but {len(resp)} bytes"
    if rc != TPM_RC_SUCCESS and len(resp) != 10:
        return f"error response 0x{rc:x} of {len(resp)} bytes (must be 10)"
    if tag == ST_RSP_COMMAND:
        if rc != TPM_RC_BAD_TAG:
            return f"TPM_ST_RSP_COMMAND tag with rc 0x{rc:x} (only for TPM_RC_BAD_TAG)"
    elif tag == ST_SESSIONS:
        if cmd_tag != ST_SESSIONS or rc != TPM_RC_SUCCESS:
            return f"TPM_ST_SESSIONS response to a command tagged {cmd_tag!r} with rc 0x{rc:x}"
    elif tag != ST_NO_SESSIONS:
        return f"response tag 0x{tag:04x}"
    if rc == TPM_RC_SUCCESS and tag != cmd_tag:
        return f"successful command tagged {cmd_tag!r} answered with tag 0x{tag:04x}"
    return None


class EngineOracle:
    """Runs commands against ``engine`` and fails the test on a crash, an internal
    error log or a malformed response."""

    _own = frozenset({"engine", "expect_failure_mode", "logger_name", "log"})

    def __init__(self, engine, *, expect_failure_mode: bool = False, logger_name: str = ENGINE_LOGGER) -> None:
        object.__setattr__(self, "engine", engine)
        object.__setattr__(self, "expect_failure_mode", expect_failure_mode)
        object.__setattr__(self, "logger_name", logger_name)
        #: (command, response) of every command run, newest last (kept short).
        object.__setattr__(self, "log", [])

    # Drop-in for an Engine: everything else goes to the engine.
    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def __setattr__(self, name: str, value) -> None:
        if name in self._own:
            object.__setattr__(self, name, value)
        else:
            setattr(self.engine, name, value)

    def execute(self, cmd: bytes, locality: int = 0, *, expect_failure_mode: bool | None = None, **kwargs) -> bytes:
        expect = self.expect_failure_mode if expect_failure_mode is None else expect_failure_mode
        engine = self.engine
        was_failing = bool(getattr(engine, "failure_mode", False))
        with engine_errors(self.logger_name) as records:
            resp = engine.execute(cmd, locality, **kwargs)
        self.log.append((bytes(cmd), bytes(resp)))
        del self.log[:-8]
        failing = bool(getattr(engine, "failure_mode", False))
        problems = []
        if records:
            problems.append("the engine logged an error:\n" + describe_records(records))
        problem = well_formed_problem(bytes(cmd), bytes(resp))
        if problem:
            problems.append("malformed response: " + problem)
        rc = int.from_bytes(resp[6:10], "big") if len(resp) >= 10 else None
        if rc == TPM_RC_FAILURE and not (expect and failing):
            problems.append(
                "TPM_RC_FAILURE while the engine is not in failure mode on purpose"
                + (f" (it is in failure mode: {getattr(engine, 'failure_reason', '')})" if failing else "")
            )
        elif failing and not was_failing and not expect:
            problems.append(f"the engine entered failure mode: {getattr(engine, 'failure_reason', '')}")
        if problems:
            raise OracleFailure(
                f"command {bytes(cmd).hex()} at locality {locality}\nresponse {bytes(resp).hex()}\n"
                + "\n".join(problems)
            )
        return resp


def checked_execute(engine, cmd: bytes, locality: int = 0, *, expect_failure_mode: bool = False, **kwargs) -> bytes:
    """One command through :class:`EngineOracle`."""
    return EngineOracle(engine, expect_failure_mode=expect_failure_mode).execute(cmd, locality, **kwargs)
