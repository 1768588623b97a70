"""The engine oracle (tests/support/engine_oracle.py) catches what the dispatcher's
catch-all hides: a handler that raises, a handler that logs an internal error,
an unexpected TPM_RC_FAILURE, and malformed responses."""

from __future__ import annotations

import inspect
import logging

import pytest

from support.engine_oracle import EngineOracle, OracleFailure, checked_execute, well_formed_problem
from support.tpm_client import command as build
from support.tpm_client import u16
from vtpm_cuse.tpm.command import CommandTable, command
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.marshal import UINT16

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
GET_RANDOM = 0x17B
GET_RANDOM_8 = build(GET_RANDOM, u16(8))


def declare(table: CommandTable, code: int, params: list, handler) -> None:
    """Declare ``handler`` for ``code`` in ``table`` (with or without the decorator's ``table=``)."""
    if "table" in inspect.signature(command).parameters:
        command(code, params=params, response=[], table=table)(handler)
    else:
        table.add(command(code, params=params, response=[])(handler))


def crashing_get_random(ctx, bytesRequested):
    ctx.engine.last_request = bytesRequested // 0  # an engine bug: ZeroDivisionError


def error_logging_get_random(ctx, bytesRequested):
    logging.getLogger("vtpm_cuse.tpm.commands.broken").error("internal error: %d bytes", bytesRequested)


def quiet_get_random(ctx, bytesRequested):
    logging.getLogger("somewhere.else").error("not the engine's logger")
    logging.getLogger("vtpm_cuse.tpm.commands.quiet").warning("a warning is fine")


def engine_with(handler) -> Engine:
    table = CommandTable()
    declare(table, GET_RANDOM, [("bytesRequested", UINT16)], handler)
    table.add(Engine().table.get(0x144))  # the real Startup declaration
    engine = Engine(table=table)
    assert engine.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
    return engine


def test_oracle_fails_a_crashing_handler():
    engine = engine_with(crashing_get_random)
    # Without the oracle the crash is an ordinary-looking, well-formed TPM_RC_FAILURE.
    assert engine.execute(GET_RANDOM_8) == bytes.fromhex("80010000000a00000101")
    with pytest.raises(OracleFailure) as err:
        EngineOracle(engine).execute(GET_RANDOM_8)
    message = str(err.value)
    assert "ZeroDivisionError" in message and "TPM_RC_FAILURE" in message and GET_RANDOM_8.hex() in message
    assert isinstance(err.value, AssertionError)


def test_oracle_passes_the_real_engine_with_the_same_command():
    engine = Engine()
    oracle = EngineOracle(engine)
    assert oracle.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
    resp = oracle.execute(GET_RANDOM_8)
    assert resp[6:10] == bytes(4) and len(resp) == 10 + 2 + 8


def test_oracle_fails_a_handler_that_logs_an_error():
    engine = engine_with(error_logging_get_random)
    assert engine.execute(GET_RANDOM_8)[6:10] == bytes(4)  # looks like a success
    with pytest.raises(OracleFailure, match="(?s)logged an error.*internal error: 8 bytes"):
        checked_execute(engine, GET_RANDOM_8)


def test_oracle_ignores_other_loggers_and_warnings():
    engine = engine_with(quiet_get_random)
    checked_execute(engine, GET_RANDOM_8)


def test_oracle_error_capture_ends_with_the_command():
    engine = engine_with(quiet_get_random)
    oracle = EngineOracle(engine)
    oracle.execute(GET_RANDOM_8)
    logging.getLogger("vtpm_cuse.tpm.dispatcher").error("between commands: not this command's doing")
    oracle.execute(GET_RANDOM_8)
    assert not any(
        isinstance(h, logging.Handler) and type(h).__name__ == "_Collector"
        for h in logging.getLogger("vtpm_cuse.tpm").handlers
    )


def test_failure_mode_on_purpose_is_allowed_only_when_declared():
    engine = Engine()
    checked_execute(engine, STARTUP_CLEAR)
    engine.failure_mode, engine.failure_reason = True, "forced by the test"
    assert engine.execute(GET_RANDOM_8)[6:10] == (0x101).to_bytes(4, "big")
    with pytest.raises(OracleFailure, match="failure mode"):
        checked_execute(engine, GET_RANDOM_8)
    checked_execute(engine, GET_RANDOM_8, expect_failure_mode=True)
    # ...but even then a TPM_RC_FAILURE from an engine that is not in failure mode fails.
    with pytest.raises(OracleFailure):
        checked_execute(engine_with(crashing_get_random), GET_RANDOM_8, expect_failure_mode=True)


def test_oracle_is_a_drop_in_for_the_engine():
    engine = Engine()
    oracle = EngineOracle(engine)
    assert oracle.volatile is engine.volatile and oracle.table is engine.table
    oracle.max_response_size = 1234
    assert engine.max_response_size == 1234


class Canned:
    """An "engine" that answers every command with fixed bytes."""

    failure_mode = False

    def __init__(self, response: bytes) -> None:
        self.response = response

    def execute(self, cmd: bytes, locality: int = 0) -> bytes:
        return self.response


NO_SESSIONS_CMD = GET_RANDOM_8
SESSIONS_CMD = build(GET_RANDOM, u16(8), auth=b"")


@pytest.mark.parametrize(
    "cmd, resp, why",
    [
        (NO_SESSIONS_CMD, bytes.fromhex("800100000000"), "less than a header"),
        (NO_SESSIONS_CMD, bytes.fromhex("80010000000b00000000"), "responseSize 11"),
        (NO_SESSIONS_CMD, bytes.fromhex("80010000000c000000840000"), "must be 10"),
        (NO_SESSIONS_CMD, bytes.fromhex("80020000000a00000000"), "TPM_ST_SESSIONS response"),
        (SESSIONS_CMD, bytes.fromhex("80020000000a00000084"), "TPM_ST_SESSIONS response"),
        (NO_SESSIONS_CMD, bytes.fromhex("00c40000000a00000084"), "only for TPM_RC_BAD_TAG"),
        (NO_SESSIONS_CMD, bytes.fromhex("00c10000000a00000000"), "response tag 0x00c1"),
        (SESSIONS_CMD, bytes.fromhex("80010000000a00000000"), "answered with tag 0x8001"),
    ],
)
def test_malformed_responses_fail(cmd, resp, why):
    assert why in well_formed_problem(cmd, resp)
    with pytest.raises(OracleFailure, match="malformed response"):
        EngineOracle(Canned(resp)).execute(cmd)


@pytest.mark.parametrize(
    "cmd, resp",
    [
        (NO_SESSIONS_CMD, bytes.fromhex("80010000000a00000084")),
        (SESSIONS_CMD, bytes.fromhex("80010000000a00000084")),
        (SESSIONS_CMD, bytes.fromhex("80020000000e0000000000000000")),
        (bytes.fromhex("00c10000000a000000f1"), bytes.fromhex("00c40000000a0000001e")),
        (b"", bytes.fromhex("80010000000a0000001e")),
    ],
)
def test_well_formed_responses_pass(cmd, resp):
    assert well_formed_problem(cmd, resp) is None
    EngineOracle(Canned(resp)).execute(cmd)
