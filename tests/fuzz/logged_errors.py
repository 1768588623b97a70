"""The "no logged internal error" oracle of the transport targets, and exception unwrapping.

The control channel and the CUSE session catch a handler's exception, log it
with its traceback and answer TPM_FAIL / EIO, so that one bug cannot take the
daemon down.  For a fuzz target that answer looks like a correct error; the log
record is what tells them apart.  While active, the handler also keeps the
project's warnings off stderr (a target must not print).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["no_internal_errors", "unwrapped"]


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failures: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.levelno >= logging.ERROR:
            self.failures.append(record)


@contextlib.contextmanager
def no_internal_errors(logger_name: str = "vtpm_cuse") -> Iterator[None]:
    """Fail with AssertionError if anything under ``logger_name`` logged an exception."""
    collector = _Collector()
    logger = logging.getLogger(logger_name)
    logger.addHandler(collector)
    try:
        yield
    finally:
        logger.removeHandler(collector)
    if collector.failures:
        record = collector.failures[0]
        raise AssertionError(f"internal error logged by {record.name}: {record.getMessage()}")


@contextlib.contextmanager
def unwrapped() -> Iterator[None]:
    """Re-raise the first exception inside the groups trio nurseries wrap failures in:
    an oracle's AssertionError stays an AssertionError, and libFuzzer's report shows the
    real traceback instead of "Exceptions from Trio nursery"."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from group
