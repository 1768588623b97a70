"""The command declaration is the handler's contract, and each part of it is checked.

At declaration (import) time: the handler's signature, the names its errors are
placed at and the fields it responds with, where they are literals.  At run
time: names computed while the command runs, and what the handler returns; a
broken contract is an internal error (logged, TPM_RC_FAILURE), never a wrong
but plausible response.  Positions by name: the dispatcher turns ``at=`` into
the handle or parameter number of the declaration.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest

from support.tpm_client import Response, u16, u32
from support.tpm_client import command as command_bytes
from vtpm_cuse.tpm.command import AuthRole, CommandTable, DeclarationError, H, command
from vtpm_cuse.tpm.commands import COMMANDS
from vtpm_cuse.tpm.constants import TPM_CC, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import RC_H, RC_P, TPM_RC, TpmError, errors_at
from vtpm_cuse.tpm.marshal import UINT16, UINT32
from vtpm_cuse.tpm.types import TPM2B_DIGEST, TPMI_RH_HIERARCHY

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
#: A private code, so the test commands never collide with a real one.
TEST_CC = 0x20000200


def declare(
    handler, *, handles=(), params=(("first", UINT16), ("second", UINT32)), response=(("digest", TPM2B_DIGEST),)
):
    return command(TEST_CC, handles=list(handles), params=list(params), response=list(response))(handler)


def engine_with(cmd) -> Engine:
    engine = Engine(table=CommandTable([COMMANDS.get(TPM_CC.Startup), cmd]))
    assert engine.execute(STARTUP_CLEAR) == bytes.fromhex("80010000000a00000000")
    return engine


def run_test_command(engine: Engine, handles: bytes = b"", auth: bytes | None = None) -> Response:
    return Response(engine.execute(command_bytes(TEST_CC, u16(1) + u32(2), handles=handles, auth=auth)))


# --- error positions by name ------------------------------------------------------------


def test_error_named_after_a_parameter_gets_that_parameters_number():
    def handler(ctx, first, second):
        raise TpmError(TPM_RC.VALUE, "second is wrong", at="second")

    assert run_test_command(engine_with(declare(handler))).rc == TPM_RC.VALUE | RC_P | (2 << 8)


def test_reordering_the_declaration_moves_the_number_with_the_name():
    def handler(ctx, second, first):
        raise TpmError(TPM_RC.VALUE, "second is wrong", at="second")

    cmd = declare(handler, params=(("second", UINT16), ("first", UINT32)))
    assert run_test_command(engine_with(cmd)).rc == TPM_RC.VALUE | RC_P | (1 << 8)


def test_error_named_after_a_handle_gets_that_handles_number():
    def handler(ctx, hierarchy, first, second):
        raise TpmError(TPM_RC.HIERARCHY, "not this one", at="hierarchy")

    cmd = declare(handler, handles=[H("hierarchy", TPMI_RH_HIERARCHY, AuthRole.USER)])
    resp = run_test_command(engine_with(cmd), handles=u32(TPM_RH.OWNER), auth=b"")
    assert resp.rc == TPM_RC.HIERARCHY | RC_H | (1 << 8)


def test_errors_at_places_bare_codes_and_keeps_inner_positions():
    def handler(ctx, first, second):
        with errors_at("first"):
            with errors_at("second"):
                raise TpmError(TPM_RC.SIZE, "the inner name wins")

    assert run_test_command(engine_with(declare(handler))).rc == TPM_RC.SIZE | RC_P | (2 << 8)


def test_format_zero_code_named_after_a_parameter_carries_no_number():
    def handler(ctx, first, second):
        raise TpmError(TPM_RC.SEQUENCE, "format zero", at="first")

    assert run_test_command(engine_with(declare(handler))).rc == TPM_RC.SEQUENCE


def test_declaration_naming_a_missing_parameter_fails_at_declaration():
    def handler(ctx, first, second):
        raise TpmError(TPM_RC.VALUE, "misspelt", at="secnod")

    with pytest.raises(DeclarationError, match="'secnod' is not a handle or parameter"):
        declare(handler)


def test_errors_at_a_missing_parameter_fails_at_declaration():
    def handler(ctx, first, second):
        with errors_at("frist"):
            pass

    with pytest.raises(DeclarationError, match="'frist'"):
        declare(handler)


def test_name_computed_at_run_time_that_is_not_declared_is_an_internal_error(caplog):
    names = ["third"]

    def handler(ctx, first, second):
        raise TpmError(TPM_RC.VALUE, "computed name", at=names[0])

    engine = engine_with(declare(handler))
    with caplog.at_level(logging.ERROR, logger="vtpm_cuse.tpm"):
        assert run_test_command(engine).rc == TPM_RC.FAILURE
    assert "'third', which it does not declare" in caplog.text


def test_names_in_declaration_are_unique():
    def handler(ctx, first, first_again):
        return None

    with pytest.raises(DeclarationError, match="'first' is declared twice"):
        declare(handler, params=(("first", UINT16), ("first", UINT32)))


# --- the handler's signature ------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "def handler(ctx, first): pass",  # a parameter missing
        "def handler(ctx, first, second, third): pass",  # one too many
        "def handler(ctx, second, first): pass",  # out of declaration order
        "def handler(ctx, first, secnod): pass",  # misspelt
        "def handler(ctx, **kwargs): pass",  # hides the names
        "def handler(ctx, *args): pass",
        "def handler(first, second): pass",  # no ctx
    ],
)
def test_handler_with_wrong_signature_fails_at_declaration(source):
    namespace: dict = {}
    exec(source, namespace)
    with pytest.raises(DeclarationError, match=r"must take \(ctx, first, second\)"):
        declare(namespace["handler"])


# --- what the handler returns -----------------------------------------------------------


def test_handler_returns_the_declared_structure():
    def handler(ctx, first, second):
        return ctx.response(digest=bytes([first, second]))

    resp = run_test_command(engine_with(declare(handler)))
    assert resp.rc == 0 and resp.params() == u16(2) + b"\x01\x02"


def test_handler_responding_with_a_misspelt_field_fails_at_declaration():
    def handler(ctx, first, second):
        return ctx.response(digset=b"")

    with pytest.raises(DeclarationError, match="'digset' is not a response field"):
        declare(handler)


def test_handler_leaving_out_a_field_fails_at_declaration():
    def handler(ctx, first, second):
        return ctx.response()

    with pytest.raises(DeclarationError, match="leaves out digest"):
        declare(handler)


@pytest.mark.parametrize(
    "body",
    [
        "return ctx.response(**{'digset': b''})",  # a computed, wrong field
        "return {'digest': b''}",  # not the declared structure
        "return None",  # nothing, where a response is declared
        "return 1 / 0",  # a crash
    ],
)
def test_handler_breaking_the_contract_at_run_time_is_an_internal_error(caplog, body):
    namespace: dict = {}
    exec(f"def handler(ctx, first, second):\n    {body}\n", namespace)
    engine = engine_with(declare(namespace["handler"]))
    with caplog.at_level(logging.ERROR, logger="vtpm_cuse.tpm"):
        assert run_test_command(engine).rc == TPM_RC.FAILURE
    assert "internal error executing CC_20000200" in caplog.text


def test_a_command_declared_twice_in_one_table_is_refused():
    cmd = COMMANDS.get(TPM_CC.Startup)
    with pytest.raises(DeclarationError, match="Startup declared twice"):
        CommandTable([cmd, cmd])


def test_every_engine_command_is_in_the_table_with_a_checked_response_type():
    for cmd in COMMANDS:
        assert list(cmd.output_names) == [h.name for h in cmd.response_handles] + [f.name for f in cmd.response.fields]
        assert cmd.output_names == tuple(f.name for f in dataclasses.fields(cmd.Response))
        assert cmd.input_names == [h.name for h in cmd.handles] + [f.name for f in cmd.params.fields]
