"""The per-engine cache of derived primary objects (keys.PrimaryCache).

A repeated TPM2_CreatePrimary must give exactly what a fresh derivation
gives (public area, private prime, seedValue), with the authValue of the
command that asked; a new seed (TPM2_Clear, ChangeEPS, ChangePPS) must give a
new key and drop the old entries from memory; a cancelled derivation must
leave nothing behind.
"""

from __future__ import annotations

import threading
import time

import pytest

from support.object_templates import (
    NO_SYM,
    SIGNING,
    create_primary_cmd,
    ecc_template,
    rsa_template,
)
from support.tpm_client import Response, command, u32
from vtpm_cuse.tpm.constants import TPM_CC, TPM_RH
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import TPM_RC
from vtpm_cuse.tpm.keys import PrimaryCache, seed_digest

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")


def new_engine() -> Engine:
    engine = Engine()
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


def primary(engine: Engine, template=None, hierarchy: int = TPM_RH.OWNER, **kw):
    """(public, sensitive, seedValue, authValue) of a new primary object, flushed again."""
    resp = Response(engine.execute(create_primary_cmd(template or rsa_template(), hierarchy, **kw)))
    assert resp.rc == 0, hex(resp.rc)
    handle = int.from_bytes(resp.raw[10:14], "big")
    obj = engine.volatile.objects.loaded[handle]
    params = resp.params(1)
    assert params[2 : 2 + int.from_bytes(params[:2], "big")] == obj.public
    engine.execute(command(TPM_CC.FlushContext, u32(handle)))
    return obj.public, obj.sensitive, obj.seed_value, obj.auth_value


def test_cached_primary_equals_a_fresh_derivation():
    engine = new_engine()
    first = primary(engine)
    assert len(engine.primary_cache) == 1
    start = time.perf_counter()
    again = primary(engine)
    cached_time = time.perf_counter() - start
    assert again == first
    # The same seeds in another engine, without the cache: the same key.
    fresh = Engine(engine.permanent)
    fresh.execute(STARTUP_CLEAR)
    fresh.primary_cache.size = 0
    assert primary(fresh) == first
    assert len(fresh.primary_cache) == 0
    assert cached_time < 0.05


def test_cache_key_covers_template_data_and_hierarchy_but_not_auth():
    engine = new_engine()
    srk = primary(engine)
    other_unique = primary(engine, rsa_template(unique=b"\x01"))
    with_data = primary(engine, ecc_template(), data=b"")
    endorsement = primary(engine, hierarchy=TPM_RH.ENDORSEMENT)
    assert len({srk[0], other_unique[0], endorsement[0]}) == 3
    assert with_data[0] != srk[0]
    # A new authValue does not change the key, and the cache answers with the new authValue.
    with_auth = primary(engine, auth=b"secret")
    assert with_auth[:3] == srk[:3]
    assert with_auth[3].rstrip(b"\0") == b"secret" and not srk[3].rstrip(b"\0")
    assert not primary(engine)[3].rstrip(b"\0")


@pytest.mark.parametrize(
    ("change", "hierarchy", "seed_field"),
    [
        (command(TPM_CC.Clear, handles=u32(TPM_RH.LOCKOUT), auth=b""), TPM_RH.OWNER, "sps"),
        (command(TPM_CC.ChangeEPS, handles=u32(TPM_RH.PLATFORM), auth=b""), TPM_RH.ENDORSEMENT, "eps"),
        (command(TPM_CC.ChangePPS, handles=u32(TPM_RH.PLATFORM), auth=b""), TPM_RH.PLATFORM, "pps"),
    ],
    ids=["Clear", "ChangeEPS", "ChangePPS"],
)
def test_a_new_seed_gives_a_new_key_and_drops_the_old_entries(change, hierarchy, seed_field):
    engine = new_engine()
    old_seed = getattr(engine.permanent, seed_field)
    before = primary(engine, hierarchy=hierarchy)
    assert Response(engine.execute(change)).rc == 0
    assert getattr(engine.permanent, seed_field) != old_seed
    after = primary(engine, hierarchy=hierarchy)
    assert after[0] != before[0] and after[1] != before[1]
    # No entry of the retired seed is left in memory.
    assert all(key[0] != seed_digest(old_seed) for key in engine.primary_cache._entries)
    # The new key is itself a fresh derivation from the new seed.
    fresh = Engine(engine.permanent)
    fresh.execute(STARTUP_CLEAR)
    assert primary(fresh, hierarchy=hierarchy) == after


def test_clear_keeps_other_hierarchies_cached_keys_valid():
    engine = new_engine()
    ek = primary(engine, hierarchy=TPM_RH.ENDORSEMENT)
    assert Response(engine.execute(command(TPM_CC.Clear, handles=u32(TPM_RH.LOCKOUT), auth=b""))).rc == 0
    assert primary(engine, hierarchy=TPM_RH.ENDORSEMENT) == ek  # the EPS is not replaced by Clear


def test_cancelled_derivation_is_not_cached():
    engine = new_engine()
    result: list[Response] = []
    template = rsa_template(SIGNING, bits=4096, sym=NO_SYM)
    thread = threading.Thread(target=lambda: result.append(Response(engine.execute(create_primary_cmd(template)))))
    thread.start()
    time.sleep(0.05)
    engine.request_cancel()
    thread.join(30)
    assert result[0].rc == TPM_RC.CANCELED
    assert len(engine.primary_cache) == 0


def test_cache_is_bounded_and_not_in_the_state_blobs():
    cache = PrimaryCache(size=2)
    made = []

    def maker(i):
        def create():
            from vtpm_cuse.tpm.keys import CreatedObject

            made.append(i)
            return CreatedObject(area=i, auth_value=b"a", seed_value=b"s", sensitive=b"k%d" % i)

        return create

    for i in range(3):
        cache.get_or_create(b"seed", b"t%d" % i, b"", b"", maker(i))
    assert len(cache) == 2 and made == [0, 1, 2]
    cache.get_or_create(b"seed", b"t0", b"", b"", maker(0))  # evicted: derived again
    assert made == [0, 1, 2, 0]
    cache.drop_retired([b"another seed"])
    assert len(cache) == 0
    engine = new_engine()
    public, sensitive, _, _ = primary(engine)
    assert sensitive not in engine.permanent_blob() and sensitive not in engine.volatile_blob()
