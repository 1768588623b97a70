"""``vtpm-swtpm``: vtpm-cuse under the name ``swtpm``, for libvirt.

libvirt (qemuTPMEmulatorStart, 9.0) gives the TPM daemon one second to create the Unix
control socket it names with ``--ctrl type=unixio,path=P,mode=M``, and fails the domain's
start otherwise.  ``vtpm-cuse`` needs about 0.6 s of CPU to get there (interpreter,
trio, cryptography, the engine's tables), which a busy host stretches past that second.
This launcher uses nothing but the standard library: it binds and chmods the socket at
once, then execs ``vtpm-cuse`` with the listening socket passed as ``--ctrl fd=N`` (a
listening descriptor is served exactly like the path would have been).  Everything
else on the command line is passed on unchanged; without a unixio ``--ctrl`` it is a
plain exec.  libvirt removes the socket file itself when it stops the TPM.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Sequence

__all__ = ["main", "prebind_control_socket"]

#: ``--ctrl`` keys the launcher understands; any other key leaves the option to the daemon.
PREBIND_KEYS = {"type", "path", "mode", "terminate"}
DEFAULT_MODE = 0o770


def _ctrl_index(argv: Sequence[str]) -> tuple[int, str] | None:
    for i, arg in enumerate(argv):
        if arg == "--ctrl" and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        if arg.startswith("--ctrl="):
            return i, arg[len("--ctrl=") :]
    return None


def prebind_control_socket(argv: list[str]) -> list[str]:
    """``argv`` with a ``type=unixio,path=...`` control option replaced by the listening
    socket's descriptor; unchanged when there is none or it has options we do not handle."""
    if not argv or argv[0] != "socket":
        return argv
    found = _ctrl_index(argv)
    if found is None:
        return argv
    index, value = found
    items = dict(item.partition("=")[::2] for item in value.split(","))
    if items.get("type") != "unixio" or not items.get("path") or set(items) - PREBIND_KEYS:
        return argv
    try:
        mode = int(items["mode"], 8) if "mode" in items else DEFAULT_MODE
    except ValueError:
        return argv  # the daemon reports the bad value
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(items["path"])
    os.chmod(items["path"], mode)
    sock.listen(8)
    sock.set_inheritable(True)
    replacement = f"fd={sock.detach()}" + (",terminate" if "terminate" in items else "")
    result = list(argv)
    result[index] = replacement if result[index] == value else f"--ctrl={replacement}"
    return result


def main() -> None:
    argv = sys.argv[1:]
    try:
        argv = prebind_control_socket(argv)
    except OSError as e:
        print(f"swtpm: cannot create the control socket: {e}", file=sys.stderr)
        sys.exit(1)
    os.execv(sys.executable, [sys.executable, "-m", "vtpm_cuse.cli.entry", *argv])


if __name__ == "__main__":
    main()
