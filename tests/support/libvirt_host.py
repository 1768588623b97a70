"""A private libvirt for tests: ``libvirtd`` in session mode, started and stopped by the test.

Why session mode: a session daemon keeps its configuration, state, sockets and logs
under ``$XDG_CONFIG_HOME`` / ``$XDG_RUNTIME_DIR`` / ``$XDG_CACHE_HOME``, so a test can
point all of them into a temporary directory and touch nothing of the host's libvirt
(``/etc/libvirt``, ``/run/libvirt``, the system daemon, its networks).  As root, libvirt
refuses session mode, so the daemon and every ``virsh`` run as an unprivileged user
(``nobody`` by default) through ``runuser``; QEMU and the TPM programs it starts run as
that user too.  Domains must be ``type='qemu'`` (TCG): there is no KVM here.

``tools`` maps program names to what they should run, as symlinks in a ``bin``
directory put first on the daemon's $PATH; that is how libvirt's lookup of ``swtpm``,
``swtpm_setup`` and ``swtpm_ioctl`` (virFindFileInPath in src/util/virtpm.c) finds
vtpm-cuse's programs instead of Debian's swtpm.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

START_TIMEOUT = 30.0
VIRSH_TIMEOUT = 120
SESSION_URI = "qemu:///session"


class LibvirtHost:
    """One session ``libvirtd`` with private directories; use as a context manager."""

    def __init__(self, tools: Mapping[str, str | os.PathLike[str]] = (), user: str = "nobody") -> None:
        self.as_root = os.geteuid() == 0
        self.user = pwd.getpwnam(user) if self.as_root else pwd.getpwuid(os.geteuid())
        # Not under pytest's tmp_path: that is private to root and the daemon runs as `user`.
        self.root = Path(tempfile.mkdtemp(prefix="vtpm-libvirt-"))
        os.chmod(self.root, 0o755)
        self.bin = self.root / "bin"
        dirs = {"HOME": "home", "XDG_CONFIG_HOME": "config", "XDG_RUNTIME_DIR": "run", "XDG_CACHE_HOME": "cache"}
        self.env = {name: str(self.root / sub) for name, sub in dirs.items()}
        self.env["PATH"] = f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin"
        # virsh would otherwise spawn a second session libvirtd of its own while ours starts.
        self.env["LIBVIRT_AUTOSTART"] = "0"
        for path in (self.bin, *map(Path, self.env_dirs())):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.bin, 0o755)
        for name, target in dict(tools).items():
            (self.bin / name).symlink_to(Path(target).absolute())
        if self.as_root:
            for path in [self.root, *self.root.rglob("*")]:
                os.lchown(path, self.user.pw_uid, self.user.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None

    def env_dirs(self) -> list[str]:
        return [self.env[k] for k in ("HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "XDG_CACHE_HOME")]

    # --- paths libvirt uses in session mode ----------------------------------------------
    @property
    def socket(self) -> Path:
        return Path(self.env["XDG_RUNTIME_DIR"]) / "libvirt" / "libvirt-sock"

    @property
    def log_dir(self) -> Path:
        return Path(self.env["XDG_CACHE_HOME"]) / "libvirt" / "qemu" / "log"

    def swtpm_state(self, uuid: str) -> Path:
        """Where the emulator backend keeps a domain's TPM 2.0 state."""
        return Path(self.env["XDG_CONFIG_HOME"]) / "libvirt" / "qemu" / "swtpm" / uuid / "tpm2"

    @property
    def swtpm_run_dir(self) -> Path:
        """Sockets and pid files of the TPM daemons libvirt starts."""
        return Path(self.env["XDG_RUNTIME_DIR"]) / "libvirt" / "qemu" / "run" / "swtpm"

    # --- running things as the session user ------------------------------------------------
    def command(self, *argv: str) -> list[str]:
        prefix = ["runuser", "-u", self.user.pw_name, "--"] if self.as_root else []
        return [*prefix, "env", *(f"{k}={v}" for k, v in self.env.items()), *argv]

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command("virsh", "-c", SESSION_URI, *args), capture_output=True, text=True, timeout=VIRSH_TIMEOUT
        )
        if check and result.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def write_file(self, name: str, text: str) -> Path:
        """A file the session user can read (domain XML, ...)."""
        path = self.root / name
        path.write_text(text)
        if self.as_root:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    # --- life cycle --------------------------------------------------------------------------
    def start(self) -> LibvirtHost:
        self.proc = subprocess.Popen(
            self.command("libvirtd", "--timeout", "0"),
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "libvirtd.log", "wb"),  # noqa: SIM115 (closed by the child's exit)
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while self.virsh("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "libvirtd.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"libvirtd (session) did not start: {log[-2000:]}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        """Destroy running domains, stop libvirtd (its whole process group), remove the files."""
        if self.proc is not None and self.proc.poll() is None:
            listed = self.virsh("list", "--name", check=False).stdout.split()
            for name in listed:
                self.virsh("destroy", name, check=False)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._stop_helpers()
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop_helpers(self) -> None:
        """The daemons the session libvirtd spawned on its own (virtlogd), by their pid files."""
        for pid_file in Path(self.env["XDG_RUNTIME_DIR"]).rglob("virtlog*.pid"):
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError, PermissionError):
                pass

    def __enter__(self) -> LibvirtHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
