"""Debian's tpm2-tools against ``vtpm-cuse socket``: persistent objects (tpm2_evictcontrol and
the tools that take a persistent handle), persistence across a daemon restart, the transient
slot count without a resource manager, and the ``--object-slots`` option.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import DAEMON, REPO, Daemon, env_with_repo
from tests.support.tpm2_tools import Tpm2Runner, tpm2_runner

PERSISTENT = "0x81000001"
#: What libtpms holds; a tpm2-tools run without a resource manager easily keeps more loaded.
LIBTPMS_SLOTS = 3


def tools(daemon: Daemon) -> Tpm2Runner:
    return tpm2_runner(daemon.data_port)


@pytest.fixture
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture
def daemon(state_dir: Path):
    d = Daemon(state_dir, extra=["--flags", "not-need-init"]).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def tpm2(daemon: Daemon):
    run = tools(daemon)
    run("startup", "-c")
    return run


def handles(tpm2, kind: str) -> list[int]:
    return [int(h, 16) for h in re.findall(r"0x[0-9a-fA-F]+", tpm2("getcap", f"handles-{kind}").stdout.decode())]


def test_evictcontrol_persist_use_and_remove(tpm2, tmp_path: Path) -> None:
    primary = str(tmp_path / "primary.ctx")
    tpm2("createprimary", "-C", "o", "-c", primary)
    out = tpm2("evictcontrol", "-C", "o", "-c", primary, PERSISTENT).stdout.decode()
    assert "persistent-handle: 0x81000001" in out and "action: persisted" in out
    tpm2("flushcontext", "-t")
    assert handles(tpm2, "persistent") == [int(PERSISTENT, 16)]
    # The persistent key parents children and reads back like a loaded one.
    pub, priv = str(tmp_path / "key.pub"), str(tmp_path / "key.priv")
    tpm2("create", "-C", PERSISTENT, "-G", "ecc256", "-u", pub, "-r", priv)
    tpm2("load", "-C", PERSISTENT, "-u", pub, "-r", priv, "-c", str(tmp_path / "key.ctx"))
    assert "name:" in tpm2("readpublic", "-c", PERSISTENT).stdout.decode()
    tpm2("flushcontext", "-t")
    out = tpm2("evictcontrol", "-C", "o", "-c", PERSISTENT).stdout.decode()
    assert "action: evicted" in out
    assert handles(tpm2, "persistent") == []
    assert tpm2("readpublic", "-c", PERSISTENT, check=False).returncode != 0


def test_persistent_objects_survive_a_daemon_restart(state_dir: Path, tmp_path: Path) -> None:
    first = Daemon(state_dir, extra=["--flags", "not-need-init"]).start()
    try:
        tpm2 = tools(first)
        tpm2("startup", "-c")
        tpm2("createprimary", "-C", "o", "-G", "rsa2048", "-c", str(tmp_path / "p.ctx"))
        tpm2("evictcontrol", "-C", "o", "-c", str(tmp_path / "p.ctx"), PERSISTENT)
        before = tpm2("readpublic", "-c", PERSISTENT, "-o", str(tmp_path / "before.pub")).stdout
    finally:
        first.stop()
    second = Daemon(state_dir, extra=["--flags", "not-need-init"]).start()
    try:
        tpm2 = tools(second)
        tpm2("startup", "-c")
        assert handles(tpm2, "persistent") == [int(PERSISTENT, 16)]
        after = tpm2("readpublic", "-c", PERSISTENT, "-o", str(tmp_path / "after.pub")).stdout
        assert after == before
        assert (tmp_path / "after.pub").read_bytes() == (tmp_path / "before.pub").read_bytes()
        tpm2("create", "-C", PERSISTENT, "-u", str(tmp_path / "k.pub"), "-r", str(tmp_path / "k.priv"))
    finally:
        second.stop()


def test_more_loaded_objects_than_libtpms_without_a_resource_manager(tpm2, tmp_path: Path) -> None:
    """Every tool leaves what it loaded: more than three objects at once must fit."""
    primary = str(tmp_path / "primary.ctx")
    tpm2("createprimary", "-C", "o", "-c", primary)
    pub, priv = str(tmp_path / "key.pub"), str(tmp_path / "key.priv")
    tpm2("create", "-C", primary, "-G", "ecc256", "-u", pub, "-r", priv)
    for i in range(LIBTPMS_SLOTS + 2):
        tpm2("load", "-C", primary, "-u", pub, "-r", priv, "-c", str(tmp_path / f"key{i}.ctx"))
    assert len(handles(tpm2, "transient")) > LIBTPMS_SLOTS
    tpm2("flushcontext", "-t")
    assert handles(tpm2, "transient") == []


def test_object_slots_option_limits_the_slots(state_dir: Path, tmp_path: Path) -> None:
    d = Daemon(state_dir, extra=["--flags", "not-need-init", "--object-slots", "2"]).start()
    try:
        tpm2 = tools(d)
        tpm2("startup", "-c")
        fixed = tpm2("getcap", "properties-fixed").stdout.decode()
        assert re.search(r"TPM2_PT_HR_TRANSIENT_MIN:\s+raw: 0x2\b", fixed)
        tpm2("createprimary", "-C", "o", "-c", str(tmp_path / "a.ctx"))
        tpm2("createprimary", "-C", "e", "-c", str(tmp_path / "b.ctx"))
        result = tpm2("createprimary", "-C", "p", "-c", str(tmp_path / "c.ctx"), check=False)
        assert result.returncode != 0 and b"0x902" in result.stderr  # TPM_RC_OBJECT_MEMORY
    finally:
        d.stop()


@pytest.mark.parametrize("value", ["0", "256", "many", "-1"])
@pytest.mark.parametrize("mode", ["socket", "cuse"])
def test_bad_object_slots_is_one_line_and_exit_1(mode: str, value: str, tmp_path: Path) -> None:
    argv = [*DAEMON, mode, "--tpm2", "--tpmstate", f"dir={tmp_path}", f"--object-slots={value}"]
    if mode == "cuse":
        argv += ["-n", "vtpm-slots-test"]
    result = subprocess.run(argv, cwd=REPO, env=env_with_repo(), capture_output=True, timeout=30)
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "--object-slots" in lines[0], lines
