"""Primary keys derived ahead (derive_ahead.py): the first CreatePrimary of the usual EKs and
SRKs is a cache hit, with exactly the bytes a fresh derivation gives.

The child process that derives them must never put a key of a replaced seed into the
cache, must not break cancel, and must not outlive its engine (closed) or its process.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support.daemon import Daemon
from support.object_templates import NO_SYM, SIGNING, create_primary_cmd, rsa_template
from support.tpm2_tools import tpm2_runner
from support.tpm_client import Response, command, u32
from vtpm_cuse.setup.ek import EkKind, ek_spec, ek_template
from vtpm_cuse.tpm.constants import TPM_CC, TPM_RH
from vtpm_cuse.tpm.derive_ahead import WELL_KNOWN_PRIMARIES, AheadDeriver, AheadTemplate
from vtpm_cuse.tpm.engine import Engine
from vtpm_cuse.tpm.errors import TPM_RC
from vtpm_cuse.tpm.keys import PrimaryCache, seed_digest
from vtpm_cuse.tpm.types import TPMT_PUBLIC

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
WAIT = 120

#: inPublic of the CreatePrimary commands tpm2-tools 5.4 sends (recorded with strace from
#: tpm2_createek -G rsa, tpm2_createek -G ecc and tpm2_createprimary -C o against swtpm).
TOOLS_TEMPLATES = {
    "EK RSA-2048 (L-1)": "0001000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"
    "00060080004300100800000000000100" + "00" * 256,
    "EK ECC-P256 (L-2)": "0023000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"
    "0006008000430010000300100020" + "00" * 32 + "0020" + "00" * 32,
    "SRK RSA-2048 (tpm2_createprimary)": "0001000b00030072000000060080004300100800000000000000",
}


def started(engine: Engine) -> Engine:
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


def create_primary(engine: Engine, template, hierarchy: int) -> bytes:
    """The response to CreatePrimary (flushed again), without its handle."""
    resp = engine.execute(create_primary_cmd(template, hierarchy))
    assert Response(resp).rc == 0, hex(Response(resp).rc)
    engine.execute(command(TPM_CC.FlushContext, resp[10:14]))
    return resp[:10] + resp[14:]


def is_gone(pid: int) -> bool:
    """No such process, or a zombie waiting for whoever adopted it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_templates_are_the_ones_the_tools_send():
    by_name = {t.name: t for t in WELL_KNOWN_PRIMARIES}
    for name, octets in TOOLS_TEMPLATES.items():
        assert by_name[name].template.hex() == octets, name
    # swtpm_setup's (and vtpm-setup's) RSA-2048 EK is the same template.
    assert by_name["EK RSA-2048 (L-1)"].template == TPMT_PUBLIC.pack(ek_template(ek_spec(EkKind.RSA2048)))
    guidance = TPMT_PUBLIC.unpack(by_name["SRK RSA-2048 (Provisioning Guidance)"].template)
    assert guidance.objectAttributes == 0x00030472 and guidance.unique == bytes(256) and not guidance.authPolicy


def test_keys_derived_ahead_equal_fresh_ones_and_hit_the_cache():
    engine = started(Engine(derive_ahead=True))
    try:
        assert engine.wait_derived_ahead(WAIT)
        fresh = started(Engine(engine.permanent))
        for number, known in enumerate(WELL_KNOWN_PRIMARIES, 1):
            assert create_primary(engine, known.area, known.hierarchy) == create_primary(
                fresh, known.area, known.hierarchy
            ), known.name
            stats = engine.primary_cache.stats()
            assert (stats.hits, stats.misses) == (number, 0), known.name
    finally:
        engine.close()


def test_off_by_default():
    engine = started(Engine())
    assert engine.wait_derived_ahead(0)
    create_primary(engine, WELL_KNOWN_PRIMARIES[0].area, TPM_RH.ENDORSEMENT)
    assert engine.primary_cache.stats().misses == 1


def test_commands_during_the_job_derive_themselves_and_cancel_works():
    engine = started(Engine(derive_ahead=True))
    try:
        ek = WELL_KNOWN_PRIMARIES[0]
        mine = create_primary(engine, ek.area, ek.hierarchy)  # the job is only starting
        result: list[int] = []
        big = create_primary_cmd(rsa_template(SIGNING, bits=4096, sym=NO_SYM))
        thread = threading.Thread(target=lambda: result.append(Response(engine.execute(big)).rc))
        thread.start()
        time.sleep(0.05)
        engine.request_cancel()
        thread.join(30)
        assert result == [TPM_RC.CANCELED]
        assert engine.wait_derived_ahead(WAIT)
        assert mine == create_primary(started(Engine(engine.permanent)), ek.area, ek.hierarchy)
        assert create_primary(engine, ek.area, ek.hierarchy) == mine
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("change", "hierarchy"),
    [
        (command(TPM_CC.ChangeEPS, handles=u32(TPM_RH.PLATFORM), auth=b""), TPM_RH.ENDORSEMENT),
        (command(TPM_CC.Clear, handles=u32(TPM_RH.LOCKOUT), auth=b""), TPM_RH.OWNER),
    ],
    ids=["ChangeEPS", "Clear"],
)
def test_a_seed_change_during_the_job_caches_only_keys_of_the_new_seed(change, hierarchy):
    engine = started(Engine(derive_ahead=True))
    try:
        old = {TPM_RH.ENDORSEMENT: engine.permanent.eps, TPM_RH.OWNER: engine.permanent.sps}[hierarchy]
        assert Response(engine.execute(change)).rc == 0  # while the first job runs
        assert engine.wait_derived_ahead(WAIT)
        fresh = started(Engine(engine.permanent))
        for known in (k for k in WELL_KNOWN_PRIMARIES if k.hierarchy == hierarchy):
            assert create_primary(engine, known.area, hierarchy) == create_primary(fresh, known.area, hierarchy)
        assert engine.primary_cache.stats().misses == 0
        assert all(key[0] != seed_digest(old) for key in engine.primary_cache._entries)
    finally:
        engine.close()


def test_a_result_for_a_replaced_seed_never_enters_the_cache():
    """The job for seed A completes; by the time the engine looks, its seed is B."""
    cache = PrimaryCache()
    deriver = AheadDeriver(cache, WELL_KNOWN_PRIMARIES[:1])
    try:
        deriver.follow({TPM_RH.ENDORSEMENT: b"A" * 64})
        assert deriver.wait(WAIT)
        cache.drop_retired([b"B" * 64])
        assert len(cache) == 0
        deriver.follow({TPM_RH.ENDORSEMENT: b"B" * 64})
        assert deriver.wait(WAIT)
        cache.drop_retired([b"B" * 64])
        assert [key[0] for key in cache._entries] == [seed_digest(b"B" * 64)]
    finally:
        deriver.close()


def slow_job() -> tuple[AheadDeriver, int | None]:
    """A job long enough to be caught running (RSA-4096 keys), and its child's pid once forked."""
    slow = [AheadTemplate(str(i), TPM_RH.OWNER, rsa_template(bits=4096, unique=bytes([i]))) for i in range(20)]
    deriver = AheadDeriver(PrimaryCache(), slow)
    deriver.follow({TPM_RH.OWNER: b"seed" * 16})
    return deriver, deriver.child_pid(30)


def test_the_child_is_gone_after_close():
    deriver, pid = slow_job()
    assert pid is not None and not is_gone(pid)
    deriver.close()
    assert is_gone(pid)
    # The engine's own: closed, it derives nothing more and still answers.
    engine = started(Engine(derive_ahead=True))
    pid = engine.ahead.child_pid(30)
    engine.close()
    assert pid is not None and is_gone(pid)
    assert engine.wait_derived_ahead(0)
    assert Response(engine.execute(command(TPM_CC.GetRandom, b"\x00\x08"))).rc == 0


CRASHING_PARENT = """
import os, sys
sys.path.insert(0, "tests")
from test_key_ahead import slow_job
deriver, pid = slow_job()
print(pid, os.waitpid(pid, os.WNOHANG)[0], flush=True)
os._exit(0)
"""


def test_the_child_dies_with_its_process():
    """The parent ends abruptly (no close, no atexit): EOF on the control pipe ends the child."""
    out = subprocess.run(
        [sys.executable, "-c", CRASHING_PARENT],
        capture_output=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    pid, exited = map(int, out.stdout.split())
    assert exited == 0  # still deriving when its parent went away
    deadline = time.monotonic() + 10
    while not is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert is_gone(pid)


def test_the_daemon_derives_ahead_under_its_seccomp_filter(tmp_path):
    """fork is allowed by the default filter (execve is not); EKs come out as always."""
    daemon = Daemon(tmp_path / "state", extra=["--flags", "not-need-init,startup-clear"])
    (tmp_path / "state").mkdir()
    daemon.start()
    try:
        run = tpm2_runner(daemon.data_port)
        run("createek", "-G", "rsa", "-c", str(tmp_path / "ek.ctx"), "-u", str(tmp_path / "ek1.pub"))
        run("flushcontext", "-t")
        run("createek", "-G", "rsa", "-c", str(tmp_path / "ek.ctx"), "-u", str(tmp_path / "ek2.pub"))
        run("createprimary", "-C", "o", "-c", str(tmp_path / "srk.ctx"))
        assert (tmp_path / "ek1.pub").read_bytes() == (tmp_path / "ek2.pub").read_bytes()
        assert daemon.proc is not None and daemon.proc.poll() is None
        deadline = time.monotonic() + WAIT
        while children(daemon.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not children(daemon.proc.pid)  # the job ended and was reaped
    finally:
        daemon.stop()


def children(pid: int) -> list[str]:
    """Child processes of any thread of ``pid``."""
    return [c for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
