"""Random and truncated command buffers always produce a well-formed error
response, never an exception."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from support.tpm_client import command
from vtpm_cuse.tpm.command import COMMANDS
from vtpm_cuse.tpm.engine import Engine

ENGINE = Engine()
ENGINE.execute(bytes.fromhex("80010000000c000001440000"))


def well_formed(resp: bytes) -> bool:
    return len(resp) >= 10 and int.from_bytes(resp[2:6], "big") == len(resp)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(data):
    assert well_formed(ENGINE.execute(data))


@settings(max_examples=400, deadline=None)
@given(code=st.sampled_from([c.code for c in COMMANDS]), body=st.binary(max_size=120),
       sessions=st.booleans(), locality=st.integers(0, 4))
def test_random_bodies_for_every_command(code, body, sessions, locality):
    cmd = command(code, body, auth=b"" if sessions else None)
    resp = ENGINE.execute(cmd, locality)
    assert well_formed(resp)


@settings(max_examples=200, deadline=None)
@given(code=st.sampled_from([c.code for c in COMMANDS]), body=st.binary(max_size=64), cut=st.integers(0, 80))
def test_truncated_commands(code, body, cut):
    cmd = command(code, body, auth=b"")
    truncated = cmd[:min(cut, len(cmd))]
    resp = ENGINE.execute(truncated)
    assert well_formed(resp) and (truncated == cmd or resp[6:10] != b"\0\0\0\0")
